"""The :class:`Explanation` result type and explanation-tag extraction."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .metrics import BaselineFit
    from .provenance import Provenance

__all__ = [
    "EXPLANATION_CLOSE",
    "EXPLANATION_OPEN",
    "Explanation",
    "Explanations",
    "baseline_notes",
    "extract_explanation",
    "fmt",
    "notes_html",
]

EXPLANATION_OPEN = "<explanation>"
EXPLANATION_CLOSE = "</explanation>"
_RE = re.compile(re.escape(EXPLANATION_OPEN) + r"(.*?)" + re.escape(EXPLANATION_CLOSE), re.DOTALL)


def extract_explanation(raw: str) -> tuple[str, bool]:
    """``(text, truncated)``: the stripped text between the tags, or, when the
    close tag is missing (a truncated generation), the raw text after any open
    tag, flagged ``truncated=True``."""
    m = _RE.search(raw)
    if m is not None:
        return m.group(1).strip(), False
    start = raw.find(EXPLANATION_OPEN)
    tail = raw[start + len(EXPLANATION_OPEN) :] if start >= 0 else raw
    return tail.strip(), True


@dataclass(frozen=True)
class Explanation:
    """One AV decode of one vector, with its AR round-trip scores.

    ``index`` is the vector's row in the input batch and ``sample`` the sample
    number (0 for greedy). Scores are None when there is no AR (all three) or
    no baseline (``fve_nrm``). ``skipped`` holds the reason when an experiment
    could not explain the vector (a zero or non-finite residual): the row is
    kept, flagged, with empty text. ``cut_short`` is True when ``explain_stream``'s
    ``stop=`` ended the decode early: ``text`` is then the segments decoded before the
    stop (scored as such) and ``raw`` what the AV had written when it was stopped.
    ``provenance`` says what produced it (kept out of the repr).
    """

    text: str
    raw: str
    truncated: bool
    index: int = 0
    sample: int = 0
    mse_nrm: float | None = None
    cos: float | None = None
    fve_nrm: float | None = None
    provenance: Provenance | None = field(default=None, repr=False, compare=False)
    skipped: str | None = None
    cut_short: bool = False

    def with_scores(self, mse_nrm: float, cos: float, fve_nrm: float | None) -> Explanation:
        return replace(self, mse_nrm=mse_nrm, cos=cos, fve_nrm=fve_nrm)

    @property
    def baseline(self) -> str | None:
        """The baseline behind ``fve_nrm``, in one line (from the provenance)."""
        return None if self.provenance is None else self.provenance.baseline_label

    def to_dict(self) -> dict[str, Any]:
        """One table row: ``explanation`` is the text (the column name every frame uses)."""
        return {
            "index": self.index,
            "sample": self.sample,
            "explanation": self.text,
            "raw": self.raw,
            "truncated": self.truncated,
            "mse_nrm": self.mse_nrm,
            "cos": self.cos,
            "fve_nrm": self.fve_nrm,
            "baseline": self.baseline if self.fve_nrm is not None else None,
            "skipped": self.skipped,
            "cut_short": self.cut_short,
        }

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:59] + "…"
        extra = f", skipped={self.skipped!r}" if self.skipped else ""
        trunc = (", truncated" if self.truncated else "") + (
            ", cut_short" if self.cut_short else ""
        )
        return (
            f"Explanation({text!r}, cos={fmt(self.cos)}, fve_nrm={fmt(self.fve_nrm)}{trunc}{extra})"
        )

    def __str__(self) -> str:
        if self.cos is None:
            return self.text
        fve = "n/a" if self.fve_nrm is None else f"{self.fve_nrm:.3f}"
        return f"{self.text}  [cos={self.cos:.3f} mse_nrm={self.mse_nrm:.3f} fve_nrm={fve}]"


def baseline_notes(baseline: str | None, fit: BaselineFit | None) -> list[str]:
    """The lines every scored result shows: the baseline behind fve_nrm, and the fit check
    (``BASELINE DOES NOT FIT: ...`` when it failed)."""
    out = [] if baseline is None else [f"fve_nrm against {baseline}"]
    return out + ([] if fit is None else [str(fit)])


def notes_html(notes: Sequence[str]) -> str:
    """:func:`baseline_notes` as HTML lines (a failed fit check in red)."""
    return "".join(
        f"<div class='nla-note' style='color:{'#b00' if n.startswith('BASELINE DOES NOT') else '#555'}'>"
        f"{html.escape(n)}</div>"
        for n in notes
    )


def fmt(x: float | None, spec: str = ".3f") -> str:
    """A score for display: ``n/a`` when absent."""
    return "n/a" if x is None else format(x, spec)


class Explanations(list[Explanation]):
    """What ``nla.explain`` returns: a list of :class:`Explanation` (vector-major, every
    sample of vector 0 first), with a table view for notebooks.

    ``labels`` names each input row when the input had more structure than a flat
    batch (``{"batch": b, "position": p}`` for a ``[batch, pos, d]`` tensor), and
    the frame keeps those columns. ``baseline_fit`` is the call's baseline fit check
    (:class:`~nla_lens.core.metrics.BaselineFit`; None below 32 vectors or without a
    baseline): when it does not fit, every ``fve_nrm`` here is relative to another
    distribution's spread, and the table says so. ``input_notes`` says what the input
    left unknown (e.g. a batch given without the mask of its padding).
    """

    def __init__(
        self,
        items: Iterable[Explanation] = (),
        labels: Sequence[dict[str, Any]] | None = None,
        baseline_fit: BaselineFit | None = None,
        input_notes: Sequence[str] = (),
    ) -> None:
        super().__init__(items)
        self.labels: list[dict[str, Any]] | None = None if labels is None else list(labels)
        self.baseline_fit = baseline_fit
        self.input_notes: list[str] = list(input_notes)

    @property
    def baseline(self) -> str | None:
        """The baseline behind these ``fve_nrm`` (None when they have none)."""
        return next((e.baseline for e in self if e.fve_nrm is not None), None)

    def notes(self) -> list[str]:
        """What a reader must know before reading the scores: the baseline, the fit check,
        and what the input left unknown."""
        return baseline_notes(self.baseline, self.baseline_fit) + self.input_notes

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self]

    def to_frame(self) -> pd.DataFrame:
        """One row per explanation, with the input's labels (``batch``, ``position``, ...)."""
        import pandas as pd

        rows = []
        for e in self:
            label = self.labels[e.index] if self.labels is not None else {}
            rows.append({**label, **e.to_dict()})
        frame = pd.DataFrame(rows)
        frame.attrs["baseline"] = self.baseline
        if self.baseline_fit is not None:
            frame.attrs["baseline_fit"] = str(self.baseline_fit)
            frame.attrs["baseline_fits"] = self.baseline_fit.fits
        if self.input_notes:
            frame.attrs["input_notes"] = list(self.input_notes)
        return frame

    def __repr__(self) -> str:
        n_vec = len({e.index for e in self})
        head = ", ".join(repr(e.text) for e in self[:3]) + (", …" if len(self) > 3 else "")
        return f"Explanations({len(self)} for {n_vec} vectors: [{head}])"

    def _repr_html_(self) -> str:
        cols = ["index", "sample", "explanation", "cos", "fve_nrm"]
        label_cols = list(self.labels[0]) if self.labels else []
        head = "".join(f"<th>{html.escape(c)}</th>" for c in [*label_cols, *cols])
        body = ""
        for e in self:
            label = self.labels[e.index] if self.labels is not None else {}
            cells = [*(str(label.get(c, "")) for c in label_cols), str(e.index), str(e.sample)]
            text = e.text if not e.skipped else f"(skipped: {e.skipped})"
            body += (
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                + f"<td style='text-align:left'>{html.escape(text)}</td>"
                + f"<td>{fmt(e.cos)}</td><td>{fmt(e.fve_nrm)}</td></tr>"
            )  # fmt: skip
        notes = notes_html(self.notes())
        return (
            f"<div><b>Explanations</b>: {len(self)}</div>{notes}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
