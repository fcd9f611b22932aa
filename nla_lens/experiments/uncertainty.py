"""Sampling uncertainty you can act on: k explanations per vector, scored, compared.

:func:`sample_explanations` draws ``k`` explanations per vector at ``temperature > 0``
in one batched AV call, reconstructs each distinct text once with the AR, and
returns per vector: the samples with their scores, an ``agreement`` measure
and a ``hedge`` flag when they disagree. ``best`` is the sample the AR
reconstructs best (best-of-k).

Two kinds of agreement. Without a ``reader`` it is how well the samples' AR
reconstructions predict one another (on the ``fve_nrm`` scale): it moves with any
difference the AR hears, wording of the context included. With ``reader=`` (a
function of a text returning the continuations it names, or an object with
``.continuations``, e.g. ``nla_lens.toy.read_explanation``) it is the share of pairs
of samples that name the same first continuation: an estimate of sum_w p(w)^2 over
the AV's guesses of the next token, so ``hedge`` (below 0.5) flags vectors where no
continuation holds most samples, i.e. where the explanations are unsure what comes
next. The reconstruction agreement is kept beside it. :func:`bootstrap_delta` turns the per-sample
scores of two sides into an interval, so an intervention's effect can be told
from sampling noise (used by ``ExplainedRun.diff`` and activation patching).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation
from ..core.metrics import normalize, score_vectors
from ..core.pair import ExplainCache, NLAPair
from ..core.sampling import Sampling
from ..core.vectors import as_vector_batch
from ..errors import SamplingError
from .patching_metrics import Reader, read_continuations

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_HEDGE_BELOW",
    "Interval",
    "SampledExplanations",
    "TextScorer",
    "VectorSamples",
    "best_of_k",
    "bootstrap_delta",
    "sample_explanations",
    "sampling_for_samples",
]

#: ``hedge`` is set when the samples' mutual agreement (pairwise fve_nrm of their
#: AR reconstructions) falls below this.
DEFAULT_HEDGE_BELOW = 0.5


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _rank_key(e: Explanation) -> tuple[float, int]:
    """Lower is better: the AR's mse_nrm (fve_nrm and cos are monotone in it), then sample."""
    return (float("inf") if e.mse_nrm is None else e.mse_nrm, e.sample)


@dataclass(frozen=True)
class VectorSamples:
    """The ``k`` sampled explanations of one vector and how much they agree.

    ``agreement`` is the mean, over pairs of samples, of ``1 - mse_nrm(R_i, R_j) /
    Var(v_n)`` between their AR reconstructions ``R`` (the fve_nrm one sample's
    words would get on the other's reconstruction); 1 when every sample says the
    same. Without a baseline it is the mean pairwise cosine. ``mode_share`` is the
    share of samples equal to the most common text.

    Made with a ``reader``, ``readings`` holds each sample's first continuation (None
    where the reader finds none) and ``agreement`` is the share of sample pairs whose
    readings are equal; ``reconstruction_agreement`` is then the AR measure above.
    """

    index: int
    samples: tuple[Explanation, ...]
    agreement: float
    mode_share: float
    hedge: bool
    readings: tuple[str | None, ...] | None = None
    reconstruction_agreement: float | None = None

    @property
    def best(self) -> Explanation:
        """The sample the AR reconstructs best (lowest mse_nrm; the first on ties)."""
        return min(self.samples, key=_rank_key)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.samples]

    @property
    def n_distinct(self) -> int:
        return len(set(self.texts))

    def scores(self, metric: str = "fve_nrm") -> list[float | None]:
        return [getattr(e, metric) for e in self.samples]


@dataclass(frozen=True)
class SampledExplanations:
    """:func:`sample_explanations`'s result: one :class:`VectorSamples` per vector."""

    vectors: tuple[VectorSamples, ...]
    sampling: Sampling
    hedge_below: float
    agreement_metric: str

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, i: int) -> VectorSamples:
        return self.vectors[i]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.vectors)

    @property
    def best(self) -> list[Explanation]:
        """Best-of-k: one explanation per vector."""
        return [v.best for v in self.vectors]

    @property
    def hedged(self) -> list[int]:
        """Indices of the vectors whose samples disagree."""
        return [v.index for v in self.vectors if v.hedge]

    def to_frame(self) -> pd.DataFrame:
        """One row per vector: the best sample, the spread of the sample scores, agreement, hedge."""
        import pandas as pd

        rows = []
        for v in self.vectors:
            best = v.best
            fve = [x for x in v.scores("fve_nrm") if x is not None]
            rows.append(
                {
                    "index": v.index,
                    "best": best.text,
                    "best_sample": best.sample,
                    "best_cos": best.cos,
                    "best_fve_nrm": best.fve_nrm,
                    "mean_fve_nrm": sum(fve) / len(fve) if fve else None,
                    "min_fve_nrm": min(fve) if fve else None,
                    "agreement": v.agreement,
                    "reconstruction_agreement": v.reconstruction_agreement,
                    "readings": None if v.readings is None else list(v.readings),
                    "mode_share": v.mode_share,
                    "n_distinct": v.n_distinct,
                    "hedge": v.hedge,
                    "samples": v.texts,
                }
            )
        return pd.DataFrame(rows)

    def samples_frame(self) -> pd.DataFrame:
        """One row per (vector, sample), with each sample's scores."""
        import pandas as pd

        return pd.DataFrame(
            [
                {**e.to_dict(), "is_best": e.sample == v.best.sample, "hedge": v.hedge}
                for v in self.vectors
                for e in v.samples
            ]
        )

    def _repr_html_(self) -> str:
        body = ""
        for v in self.vectors:
            best = v.best
            others = "<br>".join(
                f"{html.escape(e.text)} <small>({_f(e.fve_nrm)})</small>"
                for e in v.samples
                if e.sample != best.sample
            )
            flag = "<b style='color:#b00'>hedge</b>" if v.hedge else ""
            body += (
                f"<tr><td>{v.index}</td><td style='text-align:left'>{html.escape(best.text)}</td>"
                f"<td>{_f(best.fve_nrm)}</td><td>{v.agreement:.3f}</td><td>{flag}</td>"
                f"<td style='text-align:left'>{others}</td></tr>"
            )
        return (
            f"<div><b>SampledExplanations</b>: {len(self)} vectors x {self.sampling.samples} samples "
            f"(temperature {self.sampling.temperature:g}; hedge when {self.agreement_metric} agreement < "
            f"{self.hedge_below:g})</div>"
            "<table><thead><tr><th>index</th><th>best</th><th>fve_nrm</th><th>agreement</th>"
            f"<th></th><th>other samples</th></tr></thead><tbody>{body}</tbody></table>"
        )


class TextScorer:
    """Scores texts against vectors through the AR, reconstructing each distinct text once."""

    def __init__(self, nla: NLAPair, *, batch_size: int = 64) -> None:
        self.nla = nla
        self.ar = nla._need_ar("scoring samples")
        self.batch_size = batch_size
        self._row: dict[str, int] = {}
        self._rec: Tensor = torch.zeros(0, nla.d_model)
        base = nla.baseline
        self.baseline: float | None = None if base is None else base.variance

    @property
    def metric(self) -> str:
        return "cos" if self.baseline is None else "fve_nrm"

    def reconstructions(self, texts: Sequence[str]) -> Float[Tensor, "n d_model"]:
        new = [t for t in dict.fromkeys(texts) if t not in self._row]
        if new:
            rec = self.ar.reconstruct(new, batch_size=self.batch_size).float().cpu()
            self._row.update({t: len(self._row) + i for i, t in enumerate(new)})
            self._rec = torch.cat([self._rec, rec])
        return self._rec[[self._row[t] for t in texts]]

    def scores(self, texts: Sequence[str], vectors: Float[Tensor, "n d_model"]) -> Any:
        """:class:`~nla_lens.core.metrics.Scores` of ``texts[i]`` against ``vectors[i]``."""
        return score_vectors(
            self.reconstructions(texts),
            vectors.float().cpu(),
            mse_scale=self.ar.mse_scale,
            baseline=self.baseline,
        )

    def values(self, texts: Sequence[str], vectors: Float[Tensor, "n d_model"]) -> list[float]:
        """The headline metric (fve_nrm, else cos) of ``texts[i]`` against ``vectors[i]``."""
        if not texts:
            return []
        s = self.scores(texts, vectors)
        return (s.cos if s.fve_nrm is None else s.fve_nrm).tolist()

    def agreement(self, texts: Sequence[str]) -> float:
        """Mean pairwise fve_nrm (else cos) between the reconstructions of ``texts``."""
        return self.agreements([texts])[0]

    def agreements(self, groups: Sequence[Sequence[str]]) -> list[float]:
        """:meth:`agreement` of each group of ``k`` texts (all groups the same size), in one pass."""
        if not groups:
            return []
        k = len(groups[0])
        if any(len(g) != k for g in groups):
            sizes = sorted({len(g) for g in groups})
            raise SamplingError(
                f"agreements compares groups of one size (k samples each), got sizes {sizes}; "
                "call agreement() on each group instead."
            )
        if k < 2:
            return [1.0] * len(groups)
        flat = [t for g in groups for t in g]
        r = normalize(self.reconstructions(flat), self.ar.mse_scale).view(len(groups), k, -1)
        mse = ((r.unsqueeze(1) - r.unsqueeze(2)) ** 2).mean(-1)  # (groups, k, k)
        i, j = torch.triu_indices(k, k, 1).unbind()
        pair = mse[:, i, j]
        scale = 2.0 if self.baseline is None else self.baseline
        return (1 - pair / scale).mean(-1).tolist()


def sampling_for_samples(
    sampling: Sampling | None,
    *,
    samples: int | None = None,
    temperature: float | None = None,
    **settings: Any,
) -> Sampling:
    """The Sampling for a k-sample call: ``samples=4, temperature=1.0`` unless given; k >= 2."""
    defaults: dict[str, Any] = {} if sampling is not None else {"samples": 4, "temperature": 1.0}
    given = {"samples": samples, "temperature": temperature, **settings}
    s = Sampling.of(sampling, **{**defaults, **{k: v for k, v in given.items() if v is not None}})
    if s.samples < 2:
        raise SamplingError(
            f"uncertainty needs samples >= 2 explanations per vector, got samples={s.samples}; "
            "pass samples=4 (and temperature > 0; the AV was trained at 1.0)."
        )
    return s


def sample_explanations(
    nla: NLAPair,
    vectors: Any,
    *,
    samples: int | None = None,
    temperature: float | None = None,
    sampling: Sampling | None = None,
    hedge_below: float = DEFAULT_HEDGE_BELOW,
    reader: Any = None,  # a Reader (checked below, with a message that says what it takes)
    progress: bool | None = None,
    cache: ExplainCache | None = None,
    **settings: Any,
) -> SampledExplanations:
    """Explain each vector ``samples`` times (default 4, at temperature 1.0) and compare the samples.

    The ``n * k`` decodes run in one batched AV call (reproducible with ``seed=``);
    every sample is scored through the AR, each distinct text reconstructed once.
    ``reader`` (see the module docstring) makes ``agreement`` and ``hedge`` about the
    continuations the samples name rather than everything the AR hears.
    """
    if reader is not None and not callable(reader):
        raise SamplingError(
            f"reader={reader!r} must be a function of an explanation's text returning the "
            "continuations it names (a word, a list of words, or an object with "
            ".continuations), e.g. nla_lens.toy.read_explanation; or None."
        )
    s = sampling_for_samples(sampling, samples=samples, temperature=temperature, **settings)
    v = as_vector_batch(vectors, nla.d_model)
    exps = nla.explain_rows(v, s, score=False, progress=progress, cache=cache)
    scorer = TextScorer(nla, batch_size=s.batch_size)
    sc = scorer.scores([e.text for e in exps], v[[e.index for e in exps]])
    fve = sc.fve_nrm
    exps = [
        e.with_scores(
            float(sc.mse_nrm[i]), float(sc.cos[i]), None if fve is None else float(fve[i])
        )
        for i, e in enumerate(exps)
    ]
    k = s.samples
    groups = [tuple(exps[i * k : (i + 1) * k]) for i in range(v.shape[0])]
    texts = [[e.text for e in group] for group in groups]
    out = []
    for i, (group, rec) in enumerate(zip(groups, scorer.agreements(texts), strict=True)):
        mode = max(texts[i].count(t) for t in set(texts[i])) / k
        if reader is None:
            out.append(VectorSamples(i, group, rec, mode, rec < hedge_below))
            continue
        readings = tuple(_first_continuation(reader, t) for t in texts[i])
        agreement = _pair_share(readings)
        out.append(VectorSamples(i, group, agreement, mode, agreement < hedge_below, readings, rec))
    metric = scorer.metric if reader is None else "reading"
    return SampledExplanations(tuple(out), s, hedge_below, metric)


def _first_continuation(reader: Reader, text: str) -> str | None:
    got = read_continuations(reader, text)
    return got[0] if got else None


def _pair_share(readings: Sequence[str | None]) -> float:
    """The share of pairs of samples with equal readings (1 for one sample)."""
    k = len(readings)
    if k < 2:
        return 1.0
    same = sum(readings[a] == readings[b] for a in range(k) for b in range(a + 1, k))
    return same / (k * (k - 1) / 2)


def best_of_k(nla: NLAPair, vectors: Any, **kwargs: Any) -> list[Explanation]:
    """Best-of-k: for each vector, the one of its ``samples`` explanations the AR
    reconstructs best (see :func:`sample_explanations` for the arguments)."""
    return sample_explanations(nla, vectors, **kwargs).best


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval for ``mean(own) - mean(other)`` over explanation samples."""

    estimate: float
    low: float
    high: float
    level: float
    n_own: int
    n_other: int

    @property
    def width(self) -> float:
        return self.high - self.low

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def bootstrap_delta(
    own: Sequence[float],
    other: Sequence[float],
    *,
    level: float = 0.9,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of ``mean(own) - mean(other)``, resampling each
    side's samples with replacement. ``own`` and ``other`` are per-sample scores (for
    example each sample's fve_nrm against one vector); the interval is 0-wide when the
    samples of each side score alike, and narrows as ``sqrt(k)`` when they do not."""
    if not own or not other:
        raise SamplingError("bootstrap_delta needs at least one score on each side.")
    if not 0 < level < 1:
        raise SamplingError(f"level must be in (0, 1), got {level}.")
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor(list(own), dtype=torch.float64)
    b = torch.tensor(list(other), dtype=torch.float64)
    ia = torch.randint(len(a), (n_boot, len(a)), generator=g)
    ib = torch.randint(len(b), (n_boot, len(b)), generator=g)
    deltas = a[ia].mean(1) - b[ib].mean(1)
    lo, hi = torch.quantile(
        deltas, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    )
    est = float(a.mean() - b.mean())
    return Interval(est, min(float(lo), est), max(float(hi), est), level, len(a), len(b))
