"""The explorer's stream adapter: nla.explain_stream when the pair has it, else the fallback
(one explain call, its lines replayed as scored segments); both give the same messages."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nla_lens.core.explanation import Explanation
from nla_lens.errors import ExplorerError, NLAError
from nla_lens.explore import event_message, event_stream, fallback_stream, messages
from nla_lens.explore.stream import split_lines
from nla_lens.toy import read_explanation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vectors(toy_residuals):
    return toy_residuals[0][:3].float()


def test_fallback_run_to_the_end_equals_explain(nla, vectors):
    events = list(fallback_stream(nla, vectors))
    finished = [e for e in events if type(e).__name__.endswith("RowFinished")]
    want = nla.explain(vectors)
    assert [f.explanation.text for f in finished] == want.texts
    assert [f.explanation.cos for f in finished] == [e.cos for e in want]
    assert not any(f.cut_short for f in finished)
    for f in finished:  # the last segment's prefix is the whole explanation, scored the same
        segs = [e for e in events if type(e).__name__.endswith("SegmentScored") and e.row == f.row]
        assert segs and segs[-1].prefix == f.explanation.text
        assert segs[-1].cos == pytest.approx(f.explanation.cos, abs=1e-5)
        assert segs[-1].baseline_label == nla.baseline.label


def test_segments_are_lines_and_stop_after_one_is_flagged(nla, vectors, monkeypatch):
    assert split_lines("a\n\n b \nc") == ["a", " b ", "c"]
    three = [Explanation("one\ntwo\nthree", "raw", False, index=0)]  # as the new toy writes
    monkeypatch.setattr(nla, "explain", lambda v, sampling=None: three)
    events = list(fallback_stream(nla, vectors[:1], stop=1))
    assert [type(e).__name__ for e in events] == [
        "FallbackTextDelta", "FallbackSegmentScored", "FallbackRowFinished"
    ]  # fmt: skip
    assert events[-1].cut_short and events[-1].explanation.text == "one"
    assert events[-1].explanation.cos == events[1].cos  # the cut row carries its prefix's score
    full = list(fallback_stream(nla, vectors[:1], stop=lambda segs: False))
    assert [e.delta for e in full if hasattr(e, "delta")] == ["one", "\ntwo", "\nthree"]
    assert not full[-1].cut_short


@pytest.mark.parametrize("stop", [0, -1, True, "2", 1.5])
def test_bad_stop_is_refused(nla, vectors, stop):
    with pytest.raises(ExplorerError, match="stop must be"):
        list(fallback_stream(nla, vectors, stop=stop))
    assert issubclass(ExplorerError, NLAError)


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
