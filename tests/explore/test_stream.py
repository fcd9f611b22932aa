"""The explorer's stream adapter: nla.explain_stream's events as the front end's messages."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nla_lens.core.explanation import Explanation
from nla_lens.errors import ExplorerError, NLAError, SamplingError
from nla_lens.explore import Explorer, event_message, event_stream, messages
from nla_lens.toy import read_explanation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vectors(toy_residuals):
    return toy_residuals[0][:3].float()


@pytest.mark.parametrize("stop", [0, -1, True, "2", 1.5, lambda: True])
def test_bad_stop_is_refused(nla, vectors, stop):
    """The explorer checks stop= as explain_stream does, when it is made (not at a click)."""
    with pytest.raises(SamplingError, match="stop"):
        Explorer(nla, stop=stop)
    with pytest.raises(SamplingError, match="stop"):
        list(event_stream(nla, vectors, stop=stop))
    assert issubclass(SamplingError, NLAError)


def test_stop_after_one_segment_gives_the_first_line_flagged(nla, vectors):
    out = list(messages(nla, vectors[0], 4, stop=1))
    whole = nla.explain(vectors[:1])[0].text
    segments = [m for m in out if m["type"] == "segment"]
    assert [m["segment_index"] for m in segments] == [0]
    assert out[-1]["type"] == "finished" and out[-1]["cut_short"] is True
    assert out[-1]["text"] == whole.splitlines()[0] and len(whole.splitlines()) == 3
    assert all(m["index"] == 4 for m in out)


@dataclass(frozen=True)
class TextDelta:
    row: int
    text: str
    delta: str


@dataclass(frozen=True)
class SegmentScored:
    row: int
    index: int
    segment: str
    prefix: str
    cos: float
    fve_nrm: float | None
    baseline_label: str | None


@dataclass(frozen=True)
class RowFinished:
    row: int
    explanation: Explanation
    cut_short: bool


def test_the_streaming_api_is_used_when_the_pair_has_it(nla, vectors, monkeypatch):
    """The events of the stream spec (names and fields) become the front end's messages."""
    e = Explanation(
        "token : a", "<explanation>token : a</explanation>", False, cos=0.5, mse_nrm=1.0
    )

    called = []

    def explain_stream(v, sampling=None, stop=None):
        called.append((tuple(v.shape), stop))
        yield TextDelta(0, "token : a", "token : a")
        yield SegmentScored(0, 0, "token : a", "token : a", 0.5, None, "base")
        yield RowFinished(0, e, False)

    monkeypatch.setattr(nla, "explain_stream", explain_stream, raising=False)
    out = list(messages(nla, vectors[0], 7, stop=3))
    assert called == [((1, vectors.shape[1]), 3)]
    assert [m["type"] for m in out] == ["delta", "segment", "finished"]
    assert all(m["index"] == 7 for m in out)
    assert out[1]["baseline"] == "base" and out[1]["cos"] == 0.5 and out[1]["fve_nrm"] is None
    assert out[2]["text"] == "token : a" and out[2]["cut_short"] is False
    assert next(iter(event_stream(nla, vectors[:1]))) == TextDelta(0, "token : a", "token : a")
    with pytest.raises(ExplorerError, match="unknown streaming event"):
        event_message(object(), 0)


def test_messages_on_the_toy_name_the_token(nla, toy_residuals, subject):
    _, tok = subject
    v, ids = toy_residuals
    out = list(messages(nla, v[0], 0))
    assert out[-1]["type"] == "finished" and out[-1]["fve_nrm"] is not None
    reading = read_explanation(out[-1]["text"])
    assert reading.token is not None and reading.token.strip() == tok.decode([int(ids[0])]).strip()
