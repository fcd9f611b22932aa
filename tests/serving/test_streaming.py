"""explain_stream through SGLang's and vLLM's own streaming responses, on the loopback server."""

from __future__ import annotations

import pytest

from nla_lens import NLA, RowFinished, SegmentScored, TextDelta, Verbalizer
from nla_lens.backends.sglang import SGLangBackend
from nla_lens.backends.vllm import VLLMServerBackend
from nla_lens.errors import BackendError

from .loopback import Faults

CLIENTS = ["sglang", "vllm"]


@pytest.fixture(scope="module")
def toy_pair(nla_or_none):
    if nla_or_none is None:
        pytest.fail("these tests need the toy checkpoints (python -m nla_lens.toy build)")
    return nla_or_none


def served(kind: str, loopback, toy_pair, **kw) -> NLA:
    nla, ck, _ = toy_pair
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 30.0)
    client = (
        SGLangBackend(loopback.url, **kw)
        if kind == "sglang"
        else VLLMServerBackend(loopback.url, "toy-av", **kw)
    )
    return NLA(Verbalizer.from_pretrained(ck.av, backend=client), nla.ar)


def finished(events) -> dict[int, RowFinished]:
    return {e.row: e for e in events if isinstance(e, RowFinished)}


@pytest.mark.parametrize("kind", CLIENTS)
def test_streams_through_the_server_and_equals_explain(kind, loopback, toy_pair):
    local, _, vectors = toy_pair
    loopback.reset()
    nla = served(kind, loopback, toy_pair)
    events = list(nla.explain_stream(vectors))
    assert loopback.stats.streams == len(vectors)  # every row came as server-sent events
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > len(vectors)  # text arrived in pieces, not once per row
    loopback.reset()
    whole = nla.explain(vectors, progress=False)
    done = finished(events)
    assert [done[i].explanation for i in range(len(vectors))] == list(whole)
    assert [e.text for e in whole] == [e.text for e in local.explain(vectors, progress=False)]
    segs = [e for e in events if isinstance(e, SegmentScored)]
    assert {s.row for s in segs} == set(range(len(vectors)))


@pytest.mark.parametrize("kind", CLIENTS)
def test_stop_cancels_the_server_streams(kind, loopback, toy_pair):
    local, _, vectors = toy_pair
    loopback.reset()
    nla = served(kind, loopback, toy_pair)
    got = finished(nla.explain_stream(vectors, stop=1))
    want = finished(local.explain_stream(vectors, stop=1))
    assert {r: e.explanation.text for r, e in got.items()} == {
        r: e.explanation.text for r, e in want.items()
    }
    assert {r: e.cut_short for r, e in got.items()} == {r: e.cut_short for r, e in want.items()}


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_stream_dropped_midway_is_retried(kind, loopback, toy_pair):
    _, _, vectors = toy_pair
    nla = served(kind, loopback, toy_pair, max_in_flight=1)
    loopback.reset()
    want = nla.explain(vectors[:3], progress=False)
    # request 1 loses its connection halfway, request 2 (its retry) ends early without a finish
    loopback.reset(Faults(drop_stream_on={1}, end_stream_on={2}))
    events = list(nla.explain_stream(vectors[:3]))
    assert loopback.stats.requests == 5  # three prompts, one of them sent three times
    done = finished(events)
    assert [done[i].explanation for i in range(3)] == list(want)
    for row in range(3):  # text seen before the drop is not handed on twice
        deltas = [e for e in events if isinstance(e, TextDelta) and e.row == row]
        assert "".join(d.delta for d in deltas).strip() == want[row].text


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_stream_that_keeps_dropping_fails_clearly(kind, loopback, toy_pair):
    _, _, vectors = toy_pair
    nla = served(kind, loopback, toy_pair, max_in_flight=1, retries=1)
    loopback.reset(Faults(drop_stream_on=set(range(1, 10))))
    events = []
    with pytest.raises(BackendError, match="stream failed after 2 attempts"):
        events.extend(nla.explain_stream(vectors[:2]))
    assert not any(isinstance(e, RowFinished) for e in events)
