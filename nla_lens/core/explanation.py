"""The :class:`Explanation` result type and explanation-tag extraction."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .provenance import Provenance

__all__ = ["EXPLANATION_CLOSE", "EXPLANATION_OPEN", "Explanation", "extract_explanation"]

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
    no baseline (``fve_nrm``).
    """

    text: str
    raw: str
    truncated: bool
    index: int = 0
    sample: int = 0
    mse_nrm: float | None = None
    cos: float | None = None
    fve_nrm: float | None = None
    provenance: Provenance | None = None

    def with_scores(self, mse_nrm: float, cos: float, fve_nrm: float | None) -> Explanation:
        return replace(self, mse_nrm=mse_nrm, cos=cos, fve_nrm=fve_nrm)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sample": self.sample,
            "explanation": self.text,
            "raw": self.raw,
            "truncated": self.truncated,
            "mse_nrm": self.mse_nrm,
            "cos": self.cos,
            "fve_nrm": self.fve_nrm,
        }

    def __str__(self) -> str:
        if self.cos is None:
            return self.text
        fve = "n/a" if self.fve_nrm is None else f"{self.fve_nrm:.3f}"
        return f"{self.text}  [cos={self.cos:.3f} mse_nrm={self.mse_nrm:.3f} fve_nrm={fve}]"
