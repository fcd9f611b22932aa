"""Round-trip metrics: ``mse_nrm``, ``cos`` and ``fve_nrm`` (docs/recipe.md, section 6).

Both vectors are L2-normalised to ``mse_scale`` (= sqrt(d)) before the MSE, so
``mse_nrm = mean((v'_n - v_n)^2) = 2 (1 - cos)``: 0 is perfect, 2 orthogonal.
``fve_nrm = 1 - mse_nrm / Var(v_n)`` compares against the predict-the-mean
baseline of a reference set of activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import VectorError

__all__ = [
    "FIT_MIN_VECTORS",
    "FIT_RATIO",
    "PUBLISHED_BASELINES",
    "Baseline",
    "BaselineFit",
    "BaselineKind",
    "Scores",
    "baseline_for",
    "check_fit",
    "estimate_baseline",
    "normalize",
    "score_vectors",
]


BaselineKind = Literal["published", "build", "estimated", "user"]


@dataclass(frozen=True)
class Baseline:
    """A predict-the-mean baseline ``Var(v_n)`` and where it came from.

    ``kind`` says how it was obtained: ``"published"`` (the released pair's own
    training distribution), ``"build"`` (measured by the toy builder on a named
    distribution), ``"estimated"`` (from activations you passed to
    ``nla.set_baseline``) or ``"user"`` (a number you gave). ``n`` is the number of
    vectors it was measured on, where known.
    """

    variance: float
    source: str
    n: int | None = None
    kind: BaselineKind = "user"

    @property
    def label(self) -> str:
        """One line for tables and pages: ``Var(v_n) 0.0670, build: <source>, n=1000``."""
        n = "" if self.n is None else f", n={self.n}"
        return f"Var(v_n) {self.variance:.4g}, {self.kind}: {self.source}{n}"


#: Var(v_n) on each released pair's training distribution (docs/recipe.md, section 7), keyed by AV hub id.
PUBLISHED_BASELINES: dict[str, Baseline] = {
    "kitft/nla-gemma3-12b-L32-av": Baseline(
        0.0302, "Gemma-3-12B L32 training distribution", kind="published"
    ),
    "kitft/nla-gemma3-27b-L41-av": Baseline(
        0.0579, "Gemma-3-27B L41 training distribution", kind="published"
    ),
    "kitft/nla-qwen2.5-7b-L20-av": Baseline(
        0.7335, "Qwen2.5-7B L20 training distribution", kind="published"
    ),
    "kitft/Llama-3.3-70B-NLA-L53-av": Baseline(
        0.9169, "Llama-3.3-70B L53 training distribution", kind="published"
    ),
}


def baseline_for(av_id: str | None) -> Baseline | None:
    """The published baseline for a released AV hub id (AR id also accepted), else None."""
    if av_id is None:
        return None
    key = av_id[:-3] + "-av" if av_id.endswith("-ar") else av_id
    return PUBLISHED_BASELINES.get(key)


def normalize(v: Float[Tensor, "*batch d_model"], scale: float) -> Float[Tensor, "*batch d_model"]:
    """Rescale each row to L2 norm ``scale``, returned in float32.

    The direction is taken in float64 after dividing by the row's largest entry,
    so rows of any finite norm (1e-30 or 1e30) keep it. A row with no direction
    (all zero, or NaN/inf) is refused rather than scored as garbage.
    """
    v64 = v.double()
    peak = v64.abs().amax(dim=-1, keepdim=True)
    bad = ~(torch.isfinite(peak) & (peak > 0))
    if bool(bad.any()):
        rows = bad.flatten().nonzero().flatten()[:8].tolist()
        raise VectorError(
            f"cannot normalise rows {rows}: they are all zero or hold NaN/inf, so they have no "
            "direction. Drop or fix those rows (an AR that predicts zeros or NaN is broken: "
            "check its value head)."
        )
    u = v64 / peak
    return (u * (scale / u.norm(dim=-1, keepdim=True))).float()


def estimate_baseline(
    vectors: Float[Tensor, "n d_model"], *, mse_scale: float | None = None
) -> Baseline:
    """Estimate ``Var(v_n)`` from your own activations: the mean squared deviation
    of the normalised vectors from their mean (the predict-the-mean MSE)."""
    if vectors.ndim != 2 or vectors.shape[0] < 2:
        raise VectorError(
            f"estimate_baseline needs a [n, d_model] batch with n >= 2, got shape {tuple(vectors.shape)}."
        )
    scale = mse_scale if mse_scale is not None else vectors.shape[-1] ** 0.5
    vn = normalize(vectors, scale)
    var = ((vn - vn.mean(dim=0, keepdim=True)) ** 2).mean().item()
    return Baseline(var, "your activations", n=vectors.shape[0], kind="estimated")


#: The fit check runs when one call explains at least this many vectors ...
FIT_MIN_VECTORS = 32
#: ... and flags their own spread when it is more than this factor off the baseline, either way.
FIT_RATIO = 2.0


@dataclass(frozen=True)
class BaselineFit:
    """Do the explained vectors look like the baseline's distribution?

    ``spread`` is the vectors' own ``Var(v_n)`` (the baseline they would give),
    ``ratio = spread / baseline.variance``; ``fits`` is False when the ratio is
    more than :data:`FIT_RATIO` off either way. Then every ``fve_nrm`` of the call is
    measured against another distribution's spread: too high a ratio makes good
    explanations score far below 0, too low a ratio flatters them.
    """

    spread: float
    baseline: Baseline
    ratio: float
    n: int
    fits: bool

    @property
    def message(self) -> str:
        """What the check found and, when it does not fit, the fix."""
        head = (
            f"these {self.n} vectors spread {self.ratio:.2g}x as much as the fve_nrm baseline "
            f"(their own Var(v_n) {self.spread:.4g} vs {self.baseline.label})"
        )
        if self.fits:
            return head + ": the baseline fits them."
        why = (
            "so fve_nrm reads far below what the words capture (correct explanations can score < 0)"
            if self.ratio > 1
            else "so fve_nrm flatters every explanation"
        )
        return (
            f"{head}: the baseline comes from another distribution, {why}. Score against your "
            "own distribution: nla.set_baseline(activations) with a few hundred residuals like "
            "these (these very vectors will do), or a baseline shipped with the pair "
            "(nla.baselines). If these vectors are a deliberately narrow slice (one token, one "
            "prompt), keep the baseline and compare scores within the slice."
        )

    def __str__(self) -> str:
        return ("baseline fits: " if self.fits else "BASELINE DOES NOT FIT: ") + self.message


def check_fit(
    vectors: Float[Tensor, "n d_model"],
    baseline: Baseline | None,
    *,
    mse_scale: float,
    min_vectors: int = FIT_MIN_VECTORS,
    ratio: float = FIT_RATIO,
) -> BaselineFit | None:
    """The baseline fit check of one call (None with no baseline or fewer than ``min_vectors``)."""
    if baseline is None or vectors.ndim != 2 or vectors.shape[0] < min_vectors:
        return None
    spread = estimate_baseline(vectors, mse_scale=mse_scale).variance
    r = spread / baseline.variance
    fits = math.isfinite(r) and 1.0 / ratio <= r <= ratio
    return BaselineFit(spread, baseline, r, int(vectors.shape[0]), fits)


@dataclass(frozen=True)
class Scores:
    """Per-row round-trip scores."""

    mse_nrm: Float[Tensor, " n"]
    cos: Float[Tensor, " n"]
    fve_nrm: Float[Tensor, " n"] | None


def score_vectors(
    predicted: Float[Tensor, "n d_model"],
    original: Float[Tensor, "n d_model"],
    *,
    mse_scale: float,
    baseline: float | None = None,
) -> Scores:
    """``mse_nrm``, ``cos`` and (with a baseline) ``fve_nrm`` of each row."""
    if predicted.shape != original.shape:
        raise VectorError(
            f"shape mismatch: predicted {tuple(predicted.shape)} vs original {tuple(original.shape)}"
        )
    p = normalize(predicted, mse_scale)
    g = normalize(original.to(p.device), mse_scale)
    mse = ((p - g) ** 2).mean(dim=-1)
    cos = (p * g).sum(dim=-1) / (mse_scale**2)
    fve = None if baseline is None else 1.0 - mse / baseline
    return Scores(mse_nrm=mse.cpu(), cos=cos.cpu(), fve_nrm=None if fve is None else fve.cpu())
