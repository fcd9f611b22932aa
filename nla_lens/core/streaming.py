"""``explain_stream``: explanations read as they are written, each segment scored.

Events (all frozen, all with ``row``, the row's position in what ``explain`` would
return: the vector's index when ``samples == 1``):

* :class:`TextDelta`: a row's explanation text so far and the newly decoded part;
* :class:`SegmentScored`: a completed segment (a line, or a sentence of a long
  line; see :mod:`.segments`) and the AR's score of the cumulative prefix, scored
  in batches across rows;
* :class:`RowFinished`: the row's :class:`~nla_lens.Explanation`, flagged
  ``cut_short`` when ``stop=`` ended it early.

Run to completion, every :class:`RowFinished` holds exactly what ``explain`` returns:
the decode is the backend's own (the local backend's ``generate`` drains the same
loop), and the rows that end on their own are scored together at the end, by the
same call ``explain`` makes, so the last segment's score and the row's are that
call's. Segments completed mid-decode are scored as they come, a few steps'
worth in one AR batch. A line is complete at its newline, so when the AV closes the
explanation right after one, its last line was already scored mid-decode: it is
scored again with the row, a second :class:`SegmentScored` of the same ``index``
that replaces the first (its numbers are the row's).
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from ..errors import BackendError, NLAError, SamplingError
from .backend import DecodeStream, open_stream
from .explanation import Explanation, extract_explanation, fmt
from .sampling import Sampling
from .segments import explanation_view, may_end, segment_spans


@runtime_checkable
class StreamPair(Protocol):
    """What a stream reads from its pair (``nla_lens.core.pair.NLAPair`` has it; named
    here, not imported, because the pair imports this module to open streams)."""

    @property
    def av(self) -> Any: ...
    @property
    def ar(self) -> Any: ...
    @property
    def baseline(self) -> Any: ...
    def provenance(self, sampling: Sampling | None = None) -> Any: ...
    def _need_ar(self, what: str) -> Any: ...
    def _scored(
        self,
        explanations: list[Explanation],
        v: Tensor,
        batch_size: int,
        progress: bool | None = None,
    ) -> list[Explanation]: ...


__all__ = [
    "EventStream",
    "RowFinished",
    "SegmentScored",
    "StopRule",
    "StreamEvent",
    "TextDelta",
    "check_stop",
    "stop_when_flat",
    "stream_rows",
]

#: Segments completed mid-decode wait at most this many decode steps for company in an AR
#: batch: a row's first segment (the first score a reader sees) ``SCORE_WAIT_STEPS``, later
#: ones ``LATER_WAIT_STEPS``. An AR call costs about the same for 3 prefixes as for 30 on a
#: small model, so later segments, whose text is already shown, wait for more company.
SCORE_WAIT_STEPS = 4
LATER_WAIT_STEPS = 8


@dataclass(frozen=True)
class TextDelta:
    """Row ``row``'s explanation ``text`` so far, of which ``delta`` is new."""

    row: int
    text: str
    delta: str

    def _repr_html_(self) -> str:
        return f"<div>row {self.row}: <code>{html.escape(self.text)}</code></div>"


@dataclass(frozen=True)
class SegmentScored:
    """Segment ``index`` (from 0) of row ``row``, and the AR's score of ``prefix``, the
    explanation up to and including it. Scores are None without an AR (``fve_nrm`` also
    without a baseline); ``baseline_label`` names the baseline behind ``fve_nrm``. A
    second event of the same ``row`` and ``index`` replaces the first (a last line scored
    mid-decode, then with its row)."""

    row: int
    index: int
    segment: str
    prefix: str
    cos: float | None
    fve_nrm: float | None
    baseline_label: str | None
    mse_nrm: float | None = None

    @property
    def score(self) -> float | None:
        """``fve_nrm`` where there is a baseline, else ``cos``."""
        return self.fve_nrm if self.fve_nrm is not None else self.cos

    def _repr_html_(self) -> str:
        return (
            f"<div>row {self.row}, segment {self.index}: <code>{html.escape(self.segment)}</code> "
            f"prefix cos={fmt(self.cos)} fve_nrm={fmt(self.fve_nrm)}"
            f"{'' if self.baseline_label is None else ' (' + html.escape(self.baseline_label) + ')'}</div>"
        )


@dataclass(frozen=True)
class RowFinished:
    """Row ``row`` is done: ``explanation`` is what ``explain`` returns for it, unless
    ``cut_short`` (then it holds the segments decoded before ``stop=`` ended it)."""

    row: int
    explanation: Explanation
    cut_short: bool

    def _repr_html_(self) -> str:
        flag = " <b>(cut short)</b>" if self.cut_short else ""
        return f"<div>row {self.row} finished{flag}: {html.escape(repr(self.explanation))}</div>"


StreamEvent = TextDelta | SegmentScored | RowFinished
StopRule = int | Callable[[list[SegmentScored]], bool] | None


def stop_when_flat(min_gain: float = 0.0) -> Callable[[list[SegmentScored]], bool]:
    """A ``stop=`` rule: end a row once a segment raises its prefix score (``fve_nrm``, or
    ``cos`` without a baseline) by no more than ``min_gain`` over the best before it."""
    if isinstance(min_gain, bool) or not isinstance(min_gain, (int, float)) or min_gain != min_gain:
        raise SamplingError(f"min_gain must be a number, got {min_gain!r}.")

    def flat(segments: list[SegmentScored]) -> bool:
        scores = [s.score for s in segments]
        if any(s is None for s in scores):
            raise SamplingError(
                "stop_when_flat compares prefix scores, and these segments have none: load the "
                "pair with its AR (NLA.from_pretrained(av, ar)) or stop after N segments (stop=N)."
            )
        if len(scores) < 2:
            return False
        best = max(s for s in scores[:-1] if s is not None)
        last = scores[-1]
        return last is not None and last - best <= min_gain

    flat.__qualname__ = f"stop_when_flat(min_gain={min_gain!r})"
    return flat


def check_stop(stop: Any) -> StopRule:
    """``stop`` if it is None, a positive whole number of segments, or a callable of one
    argument (a row's scored segments)."""
    if stop is None:
        return None
    if callable(stop):
        try:
            signature = inspect.signature(stop)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            return stop  # type: ignore[no-any-return]
        try:
            signature.bind([])
        except TypeError as exc:
            raise SamplingError(
                f"stop={stop!r} cannot be called with a row's scored segments ({exc}); a stop "
                "function takes one argument, the list of SegmentScored so far, and returns "
                "True to stop the row, e.g. stop=lambda segments: len(segments) >= 2 or "
                "nla_lens.stop_when_flat()."
            ) from None
        return stop  # type: ignore[no-any-return]
    if isinstance(stop, bool) or not isinstance(stop, int):
        raise SamplingError(
            f"stop must be None, a number of segments (stop=1) or a function of a row's scored "
            f"segments returning True to stop (e.g. nla_lens.stop_when_flat()), got {stop!r}."
        )
    if stop < 1:
        raise SamplingError(f"stop={stop}: a row needs at least one segment; use stop >= 1.")
    return stop


@dataclass
class _Row:
    """One row's state in a stream."""

    raw: str = ""
    shown: str = ""
    segments: int = 0  # segments found so far (handed to scoring)
    ended: int = 0  # where the last of them ends in the text shown
    scored: list[SegmentScored] = field(default_factory=list)
    cut: int | None = None  # stopped after this many segments
    done: bool = False  # its RowFinished is decided (cut) or it ended on its own
    cancelled: bool = False  # its decode was cancelled (or had ended)


_Pending = tuple[int, int, str, str]  # row, segment index, segment, prefix


class _Stream:
    """The state of one ``explain_stream`` call (see :func:`stream_rows`)."""

    def __init__(self, pair: StreamPair, v: Tensor, sampling: Sampling, stop: StopRule) -> None:
        self.pair, self.v, self.sampling, self.stop = pair, v, sampling, stop
        self.k = sampling.samples
        self.total = v.shape[0] * self.k
        self.rows = [_Row() for _ in range(self.total)]
        self.pending: list[_Pending] = []  # completed mid-decode, to score in batches
        self.last: list[_Pending] = []  # each row's last segment: scored with the row at the end
        self.waited = 0
        self.chunk = (0, 0)  # the rows of the batch being decoded
        self.finished: dict[int, Explanation] = {}  # rows that ended on their own, unscored
        self.provenance = pair.provenance(sampling)
        self.score = pair.ar is not None
        self.label = None if pair.baseline is None else pair.baseline.label

    def _explanation(self, row: int, text: str, raw: str, truncated: bool) -> Explanation:
        return Explanation(
            text=text, raw=raw, truncated=truncated, index=row // self.k, sample=row % self.k,
            provenance=self.provenance,
        )  # fmt: skip

    # ---- text to segments ---------------------------------------------------------------
    def _new_segments(self, row: int, text: str, final: bool) -> None:
        state = self.rows[row]
        spans = segment_spans(text, final=final)
        if final and spans and state.segments >= len(spans):
            # the explanation closed right after a newline: its last line, completed (and
            # perhaps scored) mid-decode, is scored with the row, as explain scores it
            i, (a, b) = len(spans) - 1, spans[-1]
            self.pending = [x for x in self.pending if (x[0], x[1]) != (row, i)]
            self.last.append((row, i, text[a:b].strip(), text[:b].strip()))
            return
        for i in range(state.segments, len(spans)):
            a, b = spans[i]
            item = (row, i, text[a:b].strip(), text[:b].strip())
            if final and i == len(spans) - 1:
                self.last.append(item)
            else:
                self.pending.append(item)
            state.segments, state.ended = i + 1, b
            n = self.stop if isinstance(self.stop, int) else None
            # mid-decode, the decode goes on after every completed segment; at the end, the
            # row is cut only if text follows its N-th
            if n is not None and i + 1 == n and (not final or len(spans) > n):
                state.cut = n  # more text follows its N-th segment: stop here
                return

    def _on_text(self, row: int, raw: str) -> Iterator[StreamEvent]:
        state = self.rows[row]
        state.raw = raw
        view = explanation_view(raw)
        if view is None or state.cut is not None or state.done:
            return
        if view.startswith(state.shown) and len(view) > len(state.shown):
            yield TextDelta(row, view, view[len(state.shown) :])
            state.shown = view
            if may_end(view, state.ended):
                self._new_segments(row, view, final=False)

    def _on_output(self, row: int, raw: str) -> Iterator[StreamEvent]:
        state = self.rows[row]
        state.raw, state.cancelled = raw, True
        if state.cut is not None or state.done:
            return
        text, truncated = extract_explanation(raw)
        shown = state.shown.rstrip()
        if text.startswith(shown) and len(text) > len(shown):
            yield TextDelta(row, text, text[len(shown) :])
        state.shown = text
        self._new_segments(row, text, final=True)
        if state.cut is None:
            state.done = True
            self.finished[row] = self._explanation(row, text, raw, truncated)

    # ---- scoring and stopping ----------------------------------------------------------
    def _score(self, batch: list[_Pending]) -> list[SegmentScored]:
        if not self.score:
            return [SegmentScored(r, i, seg, p, None, None, None) for r, i, seg, p in batch]
        ar = self.pair._need_ar("explain_stream")
        base = None if self.pair.baseline is None else self.pair.baseline.variance
        rows = self.v[[r // self.k for r, *_ in batch]]
        texts = [p for *_, p in batch]
        # one AR batch where it is at most twice the decode batch (short prefixes): the last
        # row's first segment waits for the whole call, and a call split in two costs more
        bs = self.sampling.batch_size
        s = ar.score_rows(
            texts, rows, baseline=base, batch_size=max(bs, min(len(batch), 2 * bs)), progress=False
        )
        fve = s.fve_nrm
        out = []
        for j, (r, i, seg, p) in enumerate(batch):
            f = None if fve is None else float(fve[j])
            label = self.label if f is not None else None
            out.append(SegmentScored(r, i, seg, p, float(s.cos[j]), f, label, float(s.mse_nrm[j])))
        return out

    def _live(self, item: _Pending) -> bool:
        cut = self.rows[item[0]].cut
        return cut is None or item[1] < cut

    def _flush(self, force: bool) -> tuple[list[StreamEvent], list[int]]:
        """Score the pending mid-decode segments once enough wait (or ``force``): the events
        to yield, in order, and the rows whose decode to cancel."""
        self.pending = [x for x in self.pending if self._live(x)]
        if not self.pending:
            self.waited = 0
            return [], []
        self.waited += 1
        first = any(x[1] == 0 for x in self.pending)
        if not force and self.waited < (SCORE_WAIT_STEPS if first else LATER_WAIT_STEPS):
            waiting = {x[0] for x in self.pending}
            running = [r for r in range(*self.chunk) if not self.rows[r].cancelled]
            if any(r not in waiting for r in running):
                return [], []  # a running row may complete a segment soon: score them together
        batch, self.pending, self.waited = self.pending, [], 0
        events: list[StreamEvent] = []
        cancel: list[int] = []
        for e in self._score(batch):
            state = self.rows[e.row]
            if state.cut is not None and e.index >= state.cut:
                continue  # decoded before the stop took effect: not part of the row
            state.scored.append(e)
            events.append(e)
            if state.cut is None and callable(self.stop):
                verdict = self.stop(list(state.scored))
                if verdict not in (True, False):
                    raise SamplingError(
                        f"the stop= function returned {verdict!r}; it must return True (stop the "
                        "row) or False (go on)."
                    )
                if verdict:
                    state.cut = e.index + 1
            if state.cut == e.index + 1:
                events.append(self._cut_row(e.row, e))
                if not state.cancelled:
                    state.cancelled = True
                    cancel.append(e.row)
        return events, cancel

    def _cut_row(self, row: int, last: SegmentScored) -> RowFinished:
        state = self.rows[row]
        state.done = True
        self.finished.pop(row, None)
        self.last = [x for x in self.last if x[0] != row]
        e = replace(
            self._explanation(row, last.prefix, state.raw, truncated=False),
            mse_nrm=last.mse_nrm, cos=last.cos, fve_nrm=last.fve_nrm, cut_short=True,
        )  # fmt: skip
        return RowFinished(row, e, True)

    # ---- the call -----------------------------------------------------------------------
    def run(self) -> Iterator[StreamEvent]:
        bs = self.sampling.batch_size
        rows_v = self.v.repeat_interleave(self.k, dim=0)
        for start in range(0, self.total, bs):
            chunk = rows_v[start : start + bs]
            p = self.sampling
            if p.seed is not None:  # as Verbalizer: a distinct, reproducible seed per batch
                p = p.replace(seed=p.seed + start)
            decode = open_stream(self.pair.av.backend, self.pair.av._embeds(chunk), p)
            try:
                yield from self._chunk(decode, start)
            finally:
                decode.close()
        yield from self._finish()

    def _updates(self, decode: DecodeStream, start: int, size: int) -> Iterator[list[Any]]:
        """The backend's updates for rows ``start .. start + size``; a stream that breaks or
        names a row it was not given is a :class:`BackendError`, never a raw exception."""
        name = self.pair.av.backend.name
        rows = list(range(start, start + size))
        updates = iter(decode)
        while True:
            try:
                batch = next(updates)
            except StopIteration:
                return
            except NLAError:
                raise
            except Exception as exc:  # a dropped connection, a server error mid-stream
                raise BackendError(
                    f"the {name} backend's stream broke midway ({type(exc).__name__}: {exc}); "
                    f"rows {rows[:8]} did not finish and no explanation of theirs is returned as "
                    "complete. Retry the call (or check the server)."
                ) from exc
            for u in batch:
                if isinstance(u.row, bool) or not isinstance(u.row, int) or not 0 <= u.row < size:
                    raise BackendError(
                        f"the {name} backend's stream sent an update for row {u.row!r}, but it "
                        f"was given rows 0-{size - 1} of this batch; its stream is not to be "
                        "trusted, so nothing of it is returned. Retry the call, or report the "
                        "backend's bug."
                    )
            yield batch

    def _chunk(self, decode: DecodeStream, start: int) -> Iterator[StreamEvent]:
        size = min(self.sampling.batch_size, self.total - start)
        self.chunk = (start, start + size)
        for updates in self._updates(decode, start, size):
            for u in updates:
                row = start + u.row
                if u.output is None:
                    yield from self._on_text(row, u.text)
                else:
                    yield from self._on_output(row, u.output.text)
            events, cancel = self._flush(force=False)
            yield from events
            for r in range(start, min(start + self.sampling.batch_size, self.total)):
                state = self.rows[r]
                if state.cut is not None and not state.cancelled:  # stopped after N segments
                    state.cancelled = True
                    cancel.append(r)
            if cancel:
                decode.cancel([r - start for r in cancel])
        missing = [
            r
            for r in range(start, min(start + self.sampling.batch_size, self.total))
            if not self.rows[r].cancelled
        ]
        if missing:
            raise BackendError(
                f"the {self.pair.av.backend.name} backend's stream ended without finishing rows "
                f"{missing[:8]}; no explanation of theirs is returned as complete. Retry the call."
            )

    def _finish(self) -> Iterator[StreamEvent]:
        events, _ = self._flush(force=True)
        yield from events
        order = sorted(self.finished)
        explanations = [self.finished[r] for r in order]
        if self.score and explanations:  # the very call explain makes: its numbers exactly
            explanations = self.pair._scored(
                explanations, self.v, self.sampling.batch_size, progress=False
            )
        by_row = dict(zip(order, explanations, strict=True))
        last = {x[0]: x for x in self.last}
        for row in order:
            if row in last:
                _, i, seg, prefix = last[row]
                e = by_row[row]
                label = self.label if e.fve_nrm is not None else None
                yield SegmentScored(row, i, seg, prefix, e.cos, e.fve_nrm, label, e.mse_nrm)
            yield RowFinished(row, by_row[row], False)


class EventStream(Iterator[StreamEvent]):
    """What ``explain_stream`` returns: its events, in order, as an iterator, and what
    ``explain`` would say of the same input: ``labels`` (each row's ``batch`` / ``position``
    for a ``[batch, pos, d]`` input or capture, else None) and ``input_notes`` (e.g. that a
    multi-row batch came without a padding mask). ``close()`` ends the decode early."""

    def __init__(
        self,
        events: Iterator[StreamEvent],
        labels: list[dict[str, Any]] | None = None,
        input_notes: tuple[str, ...] | list[str] = (),
    ) -> None:
        self._events = events
        self.labels = labels
        self.input_notes: list[str] = list(input_notes)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def close(self) -> None:
        """Stop here: the backend's decode is closed and no further event comes."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def notes(self) -> list[str]:
        """What to know about the input (as :meth:`Explanations.notes` lists it)."""
        return list(self.input_notes)

    def __repr__(self) -> str:
        rows = "" if self.labels is None else f", {len(self.labels)} labelled rows"
        return f"<EventStream{rows}, {len(self.input_notes)} input notes>"


def stream_rows(
    pair: StreamPair, v: Float[Tensor, "n d_model"], sampling: Sampling, stop: Any = None
) -> EventStream:
    """The events of explaining the validated float32 batch ``v`` (see the module doc)."""
    return EventStream(_Stream(pair, v, sampling, check_stop(stop)).run())
