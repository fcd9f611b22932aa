"""Explaining an experiment's residuals without letting one bad vector abort the experiment.

A residual that is all zero or holds NaN/inf has no direction to explain. Raw
user vectors given to ``nla.explain`` are still refused; inside runs,
transcripts and patching such a row is kept, flagged with the reason in
``Explanation.skipped`` and left unexplained, and every other row is explained
in the usual single batched call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation, Explanations
from ..core.pair import NLAPair
from ..core.sampling import Sampling

__all__ = ["FlaggedScores", "explain_flagged", "score_flagged", "why_unexplainable"]


def why_unexplainable(v: Float[Tensor, "n d"]) -> list[str | None]:
    """Per row: None if it can be explained, else the reason."""
    finite = torch.isfinite(v).all(dim=1)
    zero = (v == 0).all(dim=1)
    return [
        None if ok and not z else ("non-finite values (NaN/inf)" if not ok else "all-zero vector")
        for ok, z in zip(finite.tolist(), zero.tolist(), strict=True)
    ]


def explain_flagged(
    nla: NLAPair, vectors: Float[Tensor, "n d"], sampling: Sampling, **options: Any
) -> Explanations:
    """Vector-major explanations of every row (``sampling.samples`` each); rows that cannot be
    explained get placeholders with ``skipped`` set. ``options`` go to ``nla.explain``
    (``score=``, ``progress=``, ``cache=``)."""
    v = vectors.detach().to("cpu", torch.float32)
    reasons = why_unexplainable(v)
    good = [i for i, r in enumerate(reasons) if r is None]
    by_row: dict[int, list[Explanation]] = {}
    fit = None
    if good:
        explained = nla.explain(v[good], sampling=sampling, **options)
        fit = explained.baseline_fit
        for e in explained:
            by_row.setdefault(good[e.index], []).append(replace(e, index=good[e.index]))
    out = Explanations(baseline_fit=fit)
    for i, reason in enumerate(reasons):
        if reason is None:
            out.extend(by_row[i])
        else:
            out.extend(
                Explanation("", "", False, index=i, sample=k, skipped=reason)
                for k in range(sampling.samples)
            )
    return out


@dataclass(frozen=True)
class FlaggedScores:
    """Per-row scores, None where the row could not be scored."""

    mse_nrm: list[float | None]
    cos: list[float | None]
    fve_nrm: list[float | None]


def score_flagged(
    nla: NLAPair, texts: list[str], vectors: Float[Tensor, "n d"], skip: list[bool] | None = None
) -> FlaggedScores:
    """``nla.score`` over the rows that can be scored (a real vector, an explanation that was
    made); None elsewhere. One batched AR call."""
    v = vectors.detach().to("cpu", torch.float32)
    bad = [r is not None for r in why_unexplainable(v)]
    keep = [i for i in range(len(texts)) if not bad[i] and not (skip and skip[i])]
    n = len(texts)
    out: dict[str, list[float | None]] = {k: [None] * n for k in ("mse_nrm", "cos", "fve_nrm")}
    if keep:
        s = nla.score([texts[i] for i in keep], v[keep])
        for j, i in enumerate(keep):
            out["mse_nrm"][i] = float(s.mse_nrm[j])
            out["cos"][i] = float(s.cos[j])
            out["fve_nrm"][i] = None if s.fve_nrm is None else float(s.fve_nrm[j])
    return FlaggedScores(out["mse_nrm"], out["cos"], out["fve_nrm"])
