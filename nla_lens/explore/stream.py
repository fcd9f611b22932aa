"""The explorer's view of a streamed explanation: JSON-ready messages, one per event.

The explorer reads explanations through ``nla.explain_stream`` (``TextDelta``,
``SegmentScored`` and ``RowFinished`` events: :mod:`nla_lens.core.streaming`), and
:func:`messages` turns the events into the plain dicts that the web app and the
notebook widget send to the front end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..errors import ExplorerError

__all__ = ["Stop", "event_message", "event_stream", "messages"]

#: ``stop=`` as the streaming API takes it: None, a number of segments, or a predicate
#: ``(row_segments) -> bool``. Typed Any: a bad value gets SamplingError, not a type error.
Stop = Any


def event_stream(
    nla: NLAPair,
    vectors: Float[Tensor, "n d_model"],
    *,
    sampling: Sampling | None = None,
    stop: Stop = None,
) -> Iterator[Any]:
    """The events of ``nla.explain_stream`` for ``vectors``."""
    return iter(nla.explain_stream(vectors, sampling=sampling, stop=stop))


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def event_message(event: Any, index: int) -> dict[str, Any]:
    """One streaming event as the front end's message (``index`` = the strip's token)."""
    kind = type(event).__name__
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
