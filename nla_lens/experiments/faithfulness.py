"""Faithfulness checks: which words carry the information, and do the words matter?

* **Per-segment FVE**: score each prefix of an explanation (first line, first two
  lines, ...) with the AR; the gain of segment ``k`` is how much the score rose
  when it was added, so the line that carries the information stands out.
* **Stability**: the score after shuffling the segments, after swapping one
  segment for a segment of an unrelated explanation, and after a user-supplied
  paraphrase. A faithful reading drops when unrelated words are swapped in and
  survives a meaning-preserving paraphrase.

:func:`faithfulness_report` puts these in one frame (one row per explanation).
Segments are lines when an explanation has several, else sentences (split after
``.``, ``!``, ``?`` and at ``;``); pass ``unit=`` to choose (``"word"`` too) or a
function ``text -> list[str]``.
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..core.explanation import Explanation
from ..core.pair import NLAPair
from ..core.vectors import as_vector_batch
from ..errors import VectorError
from .uncertainty import TextScorer

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FaithfulnessReport", "FaithfulnessRow", "faithfulness_report", "split_segments"]

Unit = Literal["auto", "line", "sentence", "word"] | Callable[[str], list[str]]

_SEPARATORS = {
    "line": re.compile(r"\s*\n\s*"),
    "sentence": re.compile(r"(?<=[.!?])\s+|\s*;\s*"),
    "word": re.compile(r"\s+"),
}
_JOIN = {"line": "\n", "sentence": " ", "word": " "}


def _resolve(text: str, unit: Unit) -> str | Callable[[str], list[str]]:
    if callable(unit):
        return unit
    if unit == "auto":
        return "line" if len([ln for ln in text.splitlines() if ln.strip()]) > 1 else "sentence"
    if unit not in _SEPARATORS:
        raise VectorError(
            f"unit must be 'auto', 'line', 'sentence', 'word' or a function, got {unit!r}."
        )
    return unit


def _parts(text: str, unit: Unit) -> tuple[list[str], list[str]]:
    """Segments and the separators between them (``len(seps) == len(segments) - 1``)."""
    how = _resolve(text.strip(), unit)
    if callable(how):
        segs = [s for s in how(text) if s.strip()]
        return segs, ["\n"] * max(len(segs) - 1, 0)
    pieces = _SEPARATORS[how].split(text.strip())
    seps = [m.group(0) for m in _SEPARATORS[how].finditer(text.strip())]
    segs, kept_seps = [], []
    for i, piece in enumerate(pieces):
        if not piece.strip():
            continue
        if segs:
            kept_seps.append(
                seps[i - 1] if i - 1 < len(seps) and seps[i - 1].strip() else _JOIN[how]
            )
        segs.append(piece)
    return segs, kept_seps


def split_segments(text: str, unit: Unit = "auto") -> list[str]:
    """The segments (lines, sentences or words) of an explanation, in order."""
    return _parts(text, unit)[0]


def _join(segs: Sequence[str], seps: Sequence[str]) -> str:
    out = segs[0] if segs else ""
    for sep, seg in zip(seps, segs[1:], strict=False):
        out += sep + seg
    return out


@dataclass(frozen=True)
class FaithfulnessRow:
    """The checks for one explanation (scores are fve_nrm, or cos without a baseline)."""

    index: int
    text: str
    segments: tuple[str, ...]
    prefix_scores: tuple[float, ...]
    score: float
    shuffled: str | None
    shuffled_score: float | None
    swapped: str | None
    swapped_score: float | None
    paraphrased: str | None
    paraphrased_score: float | None

    @property
    def gains(self) -> list[float]:
        """How much each segment raised the score when added (the first from 0)."""
        p = self.prefix_scores
        return [p[0]] + [p[k] - p[k - 1] for k in range(1, len(p))]

    @property
    def carrier(self) -> int:
        """The segment whose addition raised the score most."""
        g = self.gains
        return max(range(len(g)), key=g.__getitem__)

    @property
    def monotone(self) -> bool:
        """Does the score never fall as segments are added (to 1e-4)?"""
        p = self.prefix_scores
        return all(p[k] >= p[k - 1] - 1e-4 for k in range(1, len(p)))


@dataclass(frozen=True)
class FaithfulnessReport:
    """:func:`faithfulness_report`'s result: one :class:`FaithfulnessRow` per explanation."""

    rows: tuple[FaithfulnessRow, ...]
    metric: str

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> FaithfulnessRow:
        return self.rows[i]

    def to_frame(self) -> pd.DataFrame:
        """One row per explanation: score, per-prefix scores, the carrying segment, stability."""
        import pandas as pd

        def drop(x: float | None, base: float) -> float | None:
            return None if x is None else base - x

        return pd.DataFrame(
            [
                {
                    "index": r.index,
                    "explanation": r.text,
                    "metric": self.metric,
                    "score": r.score,
                    "n_segments": len(r.segments),
                    "prefix_scores": list(r.prefix_scores),
                    "monotone": r.monotone,
                    "carrier": r.carrier,
                    "carrier_segment": r.segments[r.carrier],
                    "shuffled_score": r.shuffled_score,
                    "swapped_score": r.swapped_score,
                    "paraphrased_score": r.paraphrased_score,
                    "shuffle_drop": drop(r.shuffled_score, r.score),
                    "swap_drop": drop(r.swapped_score, r.score),
                    "paraphrase_drop": drop(r.paraphrased_score, r.score),
                    "shuffled": r.shuffled,
                    "swapped": r.swapped,
                    "paraphrased": r.paraphrased,
                }
                for r in self.rows
            ]
        )

    def prefix_frame(self) -> pd.DataFrame:
        """Long form: one row per (explanation, segment) with the prefix score and the gain."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "index": r.index,
                    "segment_number": k,
                    "segment": seg,
                    "prefix_score": r.prefix_scores[k],
                    "gain": r.gains[k],
                    "carrier": k == r.carrier,
                }
                for r in self.rows
                for k, seg in enumerate(r.segments)
            ]
        )

    def _repr_html_(self) -> str:
        def cell(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        body = ""
        for r in self.rows:
            segs = "".join(
                f"<span style='background:hsl(120,60%,{95 - 35 * max(0.0, min(1.0, g)):.0f}%)' "
                f"title='prefix {self.metric} {p:.3f}, gain {g:+.3f}'>{html.escape(seg)}</span> | "
                for seg, p, g in zip(r.segments, r.prefix_scores, r.gains, strict=True)
            )
            body += (
                f"<tr><td>{r.index}</td><td style='text-align:left'>{segs}</td><td>{r.score:.3f}</td>"
                f"<td>{cell(r.shuffled_score)}</td><td>{cell(r.swapped_score)}</td>"
                f"<td>{cell(r.paraphrased_score)}</td></tr>"
            )
        return (
            f"<div><b>FaithfulnessReport</b> ({self.metric}; segments shaded by their gain)</div>"
            "<table><thead><tr><th>index</th><th>segments</th><th>score</th><th>shuffled</th>"
            f"<th>swapped</th><th>paraphrased</th></tr></thead><tbody>{body}</tbody></table>"
        )


def _texts_and_rows(explanations: Sequence[Any], n_vectors: int) -> tuple[list[str], list[int]]:
    texts, rows = [], []
    for i, e in enumerate(explanations):
        if isinstance(e, Explanation):
            texts.append(e.text)
            rows.append(e.index)
        elif isinstance(e, str):
            texts.append(e)
            rows.append(i)
        else:
            raise VectorError(
                f"explanations must be Explanation objects or strings, got {type(e).__name__}."
            )
    bad = [r for r in rows if not 0 <= r < n_vectors]
    if bad:
        raise VectorError(
            f"explanations point at vector rows {bad[:5]} but {n_vectors} vectors were given; pass "
            "the vectors the explanations were made from (strings pair with vectors by position)."
        )
    return texts, rows


def faithfulness_report(
    nla: NLAPair,
    explanations: Sequence[Explanation | str],
    vectors: Any,
    *,
    unit: Unit = "auto",
    paraphrase: Callable[[str], str] | None = None,
    donors: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> FaithfulnessReport:
    """Per-segment scores and stability checks for each explanation of ``vectors``.

    ``explanations`` are :class:`Explanation` objects (paired with ``vectors`` by
    their ``index``) or strings (paired by position). The swap check replaces one
    random segment with a different segment of an unrelated explanation: one of
    ``donors``, else another explanation in the list with a different text (None when
    no donor has a segment that differs from the one it would replace). Shuffling needs two or more segments (None otherwise). ``paraphrase``
    maps a text to a paraphrase of it. Randomness is seeded by ``seed``.
    """
    v = as_vector_batch(vectors, nla.d_model)
    texts, rows = _texts_and_rows(explanations, v.shape[0])
    scorer = TextScorer(nla, batch_size=batch_size)
    rng = random.Random(seed)
    split = [_parts(t, unit) for t in texts]
    # one AR batch over every text the checks need
    prefixes = [[_join(segs[: k + 1], seps[:k]) for k in range(len(segs))] for segs, seps in split]
    shuffled: list[str | None] = []
    swapped: list[str | None] = []
    for i, (segs, seps) in enumerate(split):
        shuffled.append(_shuffle(segs, seps, rng))
        pool = list(donors) if donors is not None else [t for t in texts if t != texts[i]]
        pool = [t for t in pool if t.strip() and t != texts[i]]
        swapped.append(_swap(segs, seps, pool, unit, rng))
    paraphrased = [paraphrase(t) for t in texts] if paraphrase is not None else [None] * len(texts)
    wanted: list[tuple[str, int]] = []
    for i in range(len(texts)):
        wanted += [(p, rows[i]) for p in prefixes[i]] + [(texts[i], rows[i])]
        wanted += [(t, rows[i]) for t in (shuffled[i], swapped[i], paraphrased[i]) if t is not None]
    values = scorer.values([t for t, _ in wanted], v[[r for _, r in wanted]])
    score = dict(zip(wanted, values, strict=True))

    def get(t: str | None, r: int) -> float | None:
        return None if t is None else score[(t, r)]

    out = []
    for i, (segs, _) in enumerate(split):
        r = rows[i]
        out.append(
            FaithfulnessRow(
                index=r,
                text=texts[i],
                segments=tuple(segs) if segs else ("",),
                prefix_scores=tuple(score[(p, r)] for p in prefixes[i]) or (score[(texts[i], r)],),
                score=score[(texts[i], r)],
                shuffled=shuffled[i],
                shuffled_score=get(shuffled[i], r),
                swapped=swapped[i],
                swapped_score=get(swapped[i], r),
                paraphrased=paraphrased[i],
                paraphrased_score=get(paraphrased[i], r),
            )
        )
    return FaithfulnessReport(tuple(out), scorer.metric)


def _swap(
    segs: list[str], seps: list[str], pool: list[str], unit: Unit, rng: random.Random
) -> str | None:
    """One random segment replaced by a different segment of a random donor in ``pool``.

    Donors are tried in a random order; the first with a segment that differs from the
    one it would replace gives the swap, drawn among those (position, segment) choices,
    so the swapped text always differs from the text (None when no donor can).
    """
    if not segs or not pool:
        return None

    def donors():  # one random donor; the rest in a random order only where it cannot swap
        yield rng.choice(pool)
        yield from rng.sample(pool, len(pool))

    for donor in donors():
        choices = [
            (k, d)
            for k in range(len(segs))
            for d in split_segments(donor, unit)
            if d.strip() != segs[k].strip()
        ]
        if choices:
            k, d = rng.choice(choices)
            new = list(segs)
            new[k] = d
            return _join(new, seps)
    return None


def _shuffle(segs: list[str], seps: list[str], rng: random.Random) -> str | None:
    """The segments in a random order other than their own (None with fewer than two)."""
    if len(set(segs)) < 2:
        return None
    order = list(range(len(segs)))
    while order == sorted(order):
        rng.shuffle(order)
    return _join([segs[j] for j in order], seps)
