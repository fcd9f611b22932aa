"""Difference explanations: what does ``a - b`` say?

The AV rescales every vector it reads to ``injection_scale``, so it reads only the
direction of ``a - b``: a steering direction, what a patch changed, what one
prompt has that another lacks. :func:`explain_difference` explains the
difference (and, by default, both sides) in one batched AV call and scores the
difference's explanation against the difference through the AR.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..core.vectors import as_vector_batch
from ..errors import VectorError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DifferenceExplanation", "explain_difference", "is_unchanged"]

#: ``a - b`` counts as no change when its norm is below this fraction of ``max(||a||, ||b||)``.
UNCHANGED_RTOL = 1e-5


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def is_unchanged(a: Tensor, b: Tensor, rtol: float = UNCHANGED_RTOL) -> Tensor:
    """Per row: is ``||a - b||`` negligible next to ``max(||a||, ||b||)``?"""
    scale = torch.maximum(a.norm(dim=-1), b.norm(dim=-1)).clamp_min(1e-12)
    return (a - b).norm(dim=-1) <= rtol * scale


@dataclass(frozen=True)
class DifferenceExplanation:
    """Explanations of ``a - b`` per row, with ``||a - b||`` and, when asked, both sides.

    ``explanations[i]`` is None where ``a[i]`` and ``b[i]`` are equal (nothing to read);
    its scores compare the AR's reconstruction with the difference vector itself.
    """

    differences: Float[Tensor, "n d_model"]
    explanations: tuple[Explanation | None, ...]
    a: tuple[Explanation, ...] | None = None
    b: tuple[Explanation, ...] | None = None
    label_a: str = "a"
    label_b: str = "b"

    def __len__(self) -> int:
        return len(self.explanations)

    @property
    def texts(self) -> list[str | None]:
        return [None if e is None else e.text for e in self.explanations]

    @property
    def norms(self) -> list[float]:
        return self.differences.norm(dim=-1).tolist()

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for i, e in enumerate(self.explanations):
            row: dict[str, Any] = {
                "index": i,
                "difference": None if e is None else e.text,
                "difference_norm": self.norms[i],
                "difference_cos": None if e is None else e.cos,
                "difference_fve_nrm": None if e is None else e.fve_nrm,
                "unchanged": e is None,
            }
            if self.a is not None and self.b is not None:
                row[f"explanation_{self.label_a}"] = self.a[i].text
                row[f"explanation_{self.label_b}"] = self.b[i].text
            rows.append(row)
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        sa, sb = self.a, self.b
        sides = sa is not None and sb is not None
        body = ""
        for i, e in enumerate(self.explanations):
            d = "<i>unchanged</i>" if e is None else html.escape(e.text)
            extra = ""
            if sa is not None and sb is not None:
                extra = (
                    f"<td style='text-align:left'>{html.escape(sa[i].text)}</td>"
                    f"<td style='text-align:left'>{html.escape(sb[i].text)}</td>"
                )
            body += (
                f"<tr><td>{i}</td><td style='text-align:left'><b>{d}</b></td>"
                f"<td>{self.norms[i]:.3g}</td><td>{_f(None if e is None else e.cos)}</td>{extra}</tr>"
            )
        head = (
            f"<th>{html.escape(self.label_a)}</th><th>{html.escape(self.label_b)}</th>"
            if sides
            else ""
        )
        return (
            f"<div><b>DifferenceExplanation</b> {html.escape(self.label_a)} - {html.escape(self.label_b)}</div>"
            "<table><thead><tr><th>row</th><th>difference</th><th>norm</th><th>cos</th>"
            f"{head}</tr></thead><tbody>{body}</tbody></table>"
        )


def _pair_up(a: Any, b: Any, d: int) -> tuple[Tensor, Tensor]:
    va = as_vector_batch(a, d, what="a")
    vb = as_vector_batch(b, d, what="b")
    if va.shape[0] != vb.shape[0]:
        if vb.shape[0] == 1:
            vb = vb.expand_as(va)
        elif va.shape[0] == 1:
            va = va.expand_as(vb)
        else:
            raise VectorError(
                f"explain_difference needs as many rows in a as in b (or one of them a single "
                f"vector), got {va.shape[0]} and {vb.shape[0]}."
            )
    return va, vb


def explain_difference(
    nla: NLAPair,
    a: Any,
    b: Any,
    *,
    sides: bool = True,
    label_a: str = "a",
    label_b: str = "b",
    sampling: Sampling | None = None,
    progress: bool | None = None,
    **settings: Any,
) -> DifferenceExplanation:
    """Explain ``a - b`` (rows paired up; a single vector on either side broadcasts).

    With ``sides=True`` both ``a`` and ``b`` are explained too, in the same AV call.
    Rows where ``a`` equals ``b`` get no explanation (``None``). ``sampling`` and
    ``settings`` are as for :meth:`NLAPair.explain`; the first sample per row is kept.
    """
    va, vb = _pair_up(a, b, nla.d_model)
    diff = va - vb
    changed = (~is_unchanged(va, vb)).nonzero().flatten().tolist()
    parts = [diff[changed]] + ([va, vb] if sides else [])
    flat = torch.cat(parts)
    exps: list[Explanation] = []
    if flat.shape[0]:
        s = Sampling.of(sampling, **settings)
        exps = [e for e in nla.explain_rows(flat, s, progress=progress) if e.sample == 0]
    m, n = len(changed), va.shape[0]
    per_row: list[Explanation | None] = [None] * n
    for j, i in enumerate(changed):
        per_row[i] = exps[j]
    return DifferenceExplanation(
        differences=diff,
        explanations=tuple(per_row),
        a=tuple(exps[m : m + n]) if sides else None,
        b=tuple(exps[m + n :]) if sides else None,
        label_a=label_a,
        label_b=label_b,
    )
