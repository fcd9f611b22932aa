"""The explorer's view of a streamed explanation: JSON-ready messages, one per event.

The explorer reads explanations through ``nla.explain_stream`` (the streaming API of
issue 21: ``TextDelta``, ``SegmentScored`` and ``RowFinished`` events) when the pair
has it. Where it does not yet, :func:`fallback_stream` stands in: one ``explain`` call,
then the explanation's lines are replayed as segments and every cumulative prefix is
scored by the AR in one batched call. Either way :func:`messages` turns the events into
the plain dicts that the web app and the notebook widget send to the front end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..errors import ExplorerError

__all__ = [
    "FallbackRowFinished",
    "FallbackSegmentScored",
    "FallbackTextDelta",
    "Stop",
    "event_message",
    "event_stream",
    "fallback_stream",
    "messages",
    "split_lines",
]

#: ``stop=`` as the streaming API takes it: None, a number of segments, or a predicate
#: ``(row_segments) -> bool``. Typed Any: a bad value gets ExplorerError, not a type error.
Stop = Any


@dataclass(frozen=True)
class FallbackTextDelta:
    row: int
    text: str
    delta: str


@dataclass(frozen=True)
class FallbackSegmentScored:
    row: int
    index: int
    segment: str
    prefix: str
    cos: float | None
    fve_nrm: float | None
    baseline_label: str | None


@dataclass(frozen=True)
class FallbackRowFinished:
    row: int
    explanation: Explanation
    cut_short: bool


def split_lines(text: str) -> list[str]:
    """The non-empty lines of an explanation, in order (the fallback's segments)."""
    return [line for line in text.splitlines() if line.strip()]


def _check_stop(stop: Stop) -> Stop:
    if stop is None or callable(stop):
        return stop
    if isinstance(stop, bool) or not isinstance(stop, int) or stop < 1:
        raise ExplorerError(
            f"stop must be None, a number of segments >= 1, or a function of the row's "
            f"segments, got {stop!r}."
        )
    return stop


def fallback_stream(
    nla: NLAPair,
    vectors: Float[Tensor, "n d_model"],
    *,
    sampling: Sampling | None = None,
    stop: Stop = None,
) -> Iterator[Any]:
    """The events of the streaming API, made from one ``explain`` call (see module docs)."""
    stop = _check_stop(stop)
    explained = nla.explain(vectors, sampling=sampling)
    label = None if nla.baseline is None else nla.baseline.label
    for e in explained:
        segments = split_lines(e.text)
        prefixes = ["\n".join(segments[: k + 1]) for k in range(len(segments))]
        cos: Sequence[float | None] = [None] * len(prefixes)
        fve: Sequence[float | None] = [None] * len(prefixes)
        if prefixes and nla.ar is not None:
            s = nla.score(prefixes, vectors[e.index].expand(len(prefixes), -1))
            cos = [float(c) for c in s.cos]
            fve = [None] * len(prefixes) if s.fve_nrm is None else [float(f) for f in s.fve_nrm]
        done: list[Any] = []
        for k, seg in enumerate(segments):
            yield FallbackTextDelta(e.index, prefixes[k], ("\n" if k else "") + seg)
            event = FallbackSegmentScored(e.index, k, seg, prefixes[k], cos[k], fve[k], label)
            done.append(event)
            yield event
            last = k == len(segments) - 1
            if (
                not last
                and stop is not None
                and (len(done) >= stop if isinstance(stop, int) else stop(done))
            ):
                c = cos[k]
                cut = replace(
                    e, text=prefixes[k], cos=c, fve_nrm=fve[k],
                    mse_nrm=None if c is None else 2 * (1 - c),
                )  # fmt: skip
                yield FallbackRowFinished(e.index, cut, True)
                break
        else:
            yield FallbackRowFinished(e.index, e, False)


def event_stream(
    nla: NLAPair,
    vectors: Float[Tensor, "n d_model"],
    *,
    sampling: Sampling | None = None,
    stop: Stop = None,
) -> Iterator[Any]:
    """``nla.explain_stream`` where the pair has it, else :func:`fallback_stream`."""
    stream = getattr(nla, "explain_stream", None)
    if stream is not None:
        return iter(stream(vectors, sampling=sampling, stop=stop))
    return fallback_stream(nla, vectors, sampling=sampling, stop=stop)


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def event_message(event: Any, index: int) -> dict[str, Any]:
    """One streaming event as the front end's message (``index`` = the strip's token)."""
    kind = type(event).__name__.removeprefix("Fallback")
    if kind == "TextDelta":
        return {"type": "delta", "index": index, "text": event.text, "delta": event.delta}
    if kind == "SegmentScored":
        return {
            "type": "segment", "index": index, "segment_index": int(event.index),
            "segment": event.segment, "prefix": event.prefix, "cos": _num(event.cos),
            "fve_nrm": _num(event.fve_nrm), "baseline": event.baseline_label,
        }  # fmt: skip
    if kind == "RowFinished":
        e: Explanation = event.explanation
        return {
            "type": "finished", "index": index, "text": e.text, "cos": _num(e.cos),
            "mse_nrm": _num(e.mse_nrm), "fve_nrm": _num(e.fve_nrm), "truncated": e.truncated,
            "cut_short": bool(event.cut_short), "baseline": e.baseline,
        }  # fmt: skip
    raise ExplorerError(f"unknown streaming event {type(event).__name__}")


def messages(
    nla: NLAPair,
    vector: Float[Tensor, " d_model"],
    index: int,
    *,
    sampling: Sampling | None = None,
    stop: Stop = None,
) -> Iterator[dict[str, Any]]:
    """The front end's messages for explaining one token's vector, as they arrive."""
    v = vector.detach().to("cpu", torch.float32).reshape(1, -1)
    for event in event_stream(nla, v, sampling=sampling, stop=stop):
        yield event_message(event, index)
