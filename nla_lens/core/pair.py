"""The core NLA pair: an AV and (optionally) an AR, with scores and provenance.

Knows nothing of subject models or workflows: the public :class:`nla_lens.NLA`
(in :mod:`nla_lens.lens`) adds the notebook methods on top of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from functools import cached_property
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import PairMismatchError, VectorError
from .backend import GenerationBackend
from .explanation import Explanation, Explanations
from .loading import CheckpointSource
from .metrics import Baseline, BaselineFit, Scores, baseline_for, check_fit, estimate_baseline
from .provenance import CheckpointRecord, Provenance, baseline_fields
from .reconstructor import Reconstructor
from .sampling import Sampling
from .streaming import EventStream, stream_rows
from .vectors import as_vector_batch
from .verbalizer import Verbalizer

__all__ = ["ExplainCache", "NLAPair"]


P = TypeVar("P", bound="NLAPair")


@runtime_checkable
class ExplainCache(Protocol):
    """What ``explain(cache=...)`` needs (met by :class:`nla_lens.serving.ExplanationCache`)."""

    def explain_rows(
        self, nla: NLAPair, v: Tensor, sampling: Sampling, *, score: bool, progress: bool | None
    ) -> list[Explanation]: ...


TOY_BASE_MODEL = "nla-lens/toy-gemma3-subject"


def _record(
    source: CheckpointSource | None, sidecar_sha: str, quantization: str | None = None
) -> CheckpointRecord:
    if source is None:
        return CheckpointRecord(
            "<in memory>", "", None, None, None, "", sidecar_sha, quantization=quantization
        )
    return CheckpointRecord(
        name=source.name,
        path=str(source.path),
        hub_id=source.hub_id,
        revision=source.revision,
        commit=source.commit,
        content_sha256=source.content_hash(),
        sidecar_sha256=sidecar_sha,
        quantization=quantization,
    )


#: The toy's default baseline: the distribution its AV and AR were measured on at build time.
TOY_DEFAULT_BASELINE = "generic"


def shipped_baselines(
    source: CheckpointSource | None, base_model: str | None
) -> dict[str, Baseline]:
    """The named baselines that come with a pair: ``{"published": ...}`` for a released
    pair, the toy builder's (``"generic"``, ``"task"``, ``"chat"``) for the toy pair."""
    if source is None:
        return {}
    published = baseline_for(source.hub_id)
    if published is not None:
        return {"published": published}
    quality = source.path.parent / "quality.json"
    if base_model != TOY_BASE_MODEL or not quality.is_file():
        return {}
    data = json.loads(quality.read_text(encoding="utf-8"))
    named = data.get("baselines")
    if named is None:  # a toy built before the named baselines
        return {
            "generic": Baseline(
                float(data["baseline_var"]), "toy held-out random sequences", data.get("n"), "build"
            )
        }
    return {
        name: Baseline(float(b["variance"]), str(b["source"]), b.get("n"), "build")
        for name, b in named.items()
    }


def default_baseline(source: CheckpointSource | None, base_model: str | None) -> Baseline | None:
    """The fve baseline a pair gets by default: the published one of a released pair, the
    toy builder's generic one for the toy pair, else None."""
    shipped = shipped_baselines(source, base_model)
    return shipped.get("published", shipped.get(TOY_DEFAULT_BASELINE))


class NLAPair:
    """A Natural Language Autoencoder pair reading layer ``K`` of a subject model.

    ``nla.explain(vectors)`` verbalizes vectors with the AV and, when an AR is
    loaded, scores each explanation by how well the AR reconstructs the vector
    from it (``mse_nrm``, ``cos``, and ``fve_nrm`` against a baseline).
    """

    def __init__(
        self,
        av: Verbalizer,
        ar: Reconstructor | None = None,
        *,
        baseline: Baseline | float | None = None,
    ) -> None:
        if ar is not None:
            if ar.d_model != av.d_model:
                raise PairMismatchError(
                    f"AV {av.meta.source} reads d_model={av.d_model} but AR {ar.meta.source} has "
                    f"d_model={ar.d_model}: they are not one pair. Load the AR released with this AV."
                )
            if av.layer is not None and ar.meta.layer is not None and av.layer != ar.meta.layer:
                raise PairMismatchError(
                    f"AV reads layer {av.layer} but AR reconstructs layer {ar.meta.layer}: not one pair."
                )
            a, r = av.meta.base_model, ar.meta.base_model
            if a is not None and r is not None and a.strip().lower() != r.strip().lower():
                raise PairMismatchError(
                    f"AV {av.meta.source} was trained on base model {a!r} but AR {ar.meta.source} "
                    f"on {r!r}: they read different models' residuals, so the scores would be "
                    "meaningless. Load the AR released with this AV (same base model and layer)."
                )
        self.av = av
        self.ar = ar
        #: Named baselines shipped with the pair (``nla.set_baseline(name)`` picks one).
        self.baselines: dict[str, Baseline] = shipped_baselines(av.source, av.meta.base_model)
        self.baseline: Baseline | None = default_baseline(av.source, av.meta.base_model)
        if baseline is not None:
            self.set_baseline(baseline)

    @classmethod
    def from_pretrained(
        cls: type[P],
        av: str | os.PathLike[str],
        ar: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        ar_revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        backend: GenerationBackend | None = None,
        baseline: Baseline | float | None = None,
        strict_sidecar: bool = False,
        quantization: str | None = None,
        ar_quantization: str | None = None,
    ) -> P:
        """Load a pair from local directories or hub ids.

        ``quantization="int8" | "4bit" | "nf4" | "torchao-int8"`` loads AV and AR quantized
        (``nla-lens[quant]``; ``nla_lens.plan`` says which fits); ``ar_quantization``
        sets the AR's apart (default: as the AV; ``"none"`` for full precision). Both are
        recorded in every result's provenance, cache key and job fingerprint.

        >>> nla = NLA.from_pretrained("kitft/nla-gemma3-12b-L32-av", "kitft/nla-gemma3-12b-L32-ar")  # doctest: +SKIP
        >>> nla = NLA.from_pretrained(av, ar, quantization="4bit", ar_quantization="int8")  # doctest: +SKIP
        """
        verbalizer = Verbalizer.from_pretrained(
            av,
            device=device,
            dtype=dtype,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            backend=backend,
            strict_sidecar=strict_sidecar,
            quantization=quantization,
        )
        reconstructor = None
        if ar is not None:
            reconstructor = Reconstructor.from_pretrained(
                ar,
                device=device,
                dtype=dtype,
                revision=ar_revision,
                token=token,
                cache_dir=cache_dir,
                strict_sidecar=strict_sidecar,
                quantization=quantization if ar_quantization is None else ar_quantization,
            )
        return cls(verbalizer, reconstructor, baseline=baseline)

    # ---- what the pair reads -------------------------------------------------
    @property
    def d_model(self) -> int:
        return self.av.d_model

    @property
    def layer(self) -> int:
        """K: the pair reads the residual output of decoder block K (HF ``hidden_states[K+1]``)."""
        layer = (
            self.av.layer
            if self.av.layer is not None
            else (self.ar.meta.layer if self.ar else None)
        )
        if layer is None:
            raise PairMismatchError(
                f"{self.av.meta.source}: the sidecar has no extraction_layer_index."
            )
        return layer

    @property
    def hook_name(self) -> str:
        """The TransformerLens hook point of the residual the pair reads."""
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def base_model(self) -> str | None:
        return self.av.meta.base_model

    # ---- explaining -------------------------------------------------------------
    def explain(
        self,
        vectors: Any,
        *,
        sampling: Sampling | None = None,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        top_p: float | None = None,
        samples: int | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        score: bool = True,
        progress: bool | None = None,
        cache: ExplainCache | None = None,
    ) -> Explanations:
        """Explain one ``[d]`` vector or a ``[n, d]`` batch (tensor or array, any float dtype).

        Greedy (``temperature=0``) by default, for reproducible decodes; the AV was
        trained at temperature 1.0. The settings form one :class:`Sampling`
        (pass ``sampling=`` or its fields). Returns ``samples`` explanations per
        vector, vector-major, each scored through the AR when one is loaded. With
        an :class:`~nla_lens.serving.ExplanationCache`, rows already explained with
        the same checkpoints and settings are read back instead of recomputed.
        """
        s = Sampling.of(
            sampling, temperature=temperature, max_new_tokens=max_new_tokens, top_p=top_p,
            samples=samples, seed=seed, batch_size=batch_size,
        )  # fmt: skip
        v = as_vector_batch(vectors, self.d_model)
        rows = self.explain_rows(v, s, score=score, progress=progress, cache=cache)
        return Explanations(rows, baseline_fit=self.baseline_fit(v) if score else None)

    def explain_stream(
        self,
        vectors: Any,
        sampling: Sampling | None = None,
        stop: Any = None,
        batch_size: int | None = None,
        **settings: Any,
    ) -> EventStream:
        """Explain as :meth:`explain` does, yielding events as the AV writes.

        ``TextDelta`` (a row's text so far), ``SegmentScored`` (a completed line, or
        sentence of a long line, with the AR's score of the prefix up to it, scored in
        batches across rows) and, last for each row, ``RowFinished`` with its
        :class:`Explanation`. ``stop`` ends rows early: after N segments (``stop=1``), or
        when a function of the row's scored segments returns True (e.g.
        :func:`nla_lens.stop_when_flat`); such rows are flagged ``cut_short``. Run to the
        end (``stop=None``), the explanations are exactly those ``explain`` returns.
        ``settings`` are :class:`Sampling` fields (``temperature=``, ...).

        >>> for event in nla.explain_stream(vectors, stop=1):  # doctest: +SKIP
        ...     print(event)
        """
        s = Sampling.of(sampling, batch_size=batch_size, **settings)
        v = as_vector_batch(vectors, self.d_model)
        return stream_rows(self, v, s, stop)

    def baseline_fit(self, vectors: Any) -> BaselineFit | None:
        """The baseline fit check (see :class:`~nla_lens.core.metrics.BaselineFit`): do
        ``vectors`` spread like the baseline's distribution? None without an AR or a
        baseline, or for fewer than 32 vectors."""
        if self.ar is None:
            return None
        v = vectors if isinstance(vectors, Tensor) else as_vector_batch(vectors, self.d_model)
        return check_fit(v, self.baseline, mse_scale=self.ar.mse_scale)

    def explain_rows(
        self,
        v: Float[Tensor, "n d_model"],
        sampling: Sampling,
        *,
        score: bool = True,
        progress: bool | None = None,
        cache: ExplainCache | None = None,
    ) -> list[Explanation]:
        """:meth:`explain` on an already validated float32 ``[n, d]`` batch (no re-checks)."""
        if cache is not None:
            return cache.explain_rows(self, v, sampling, score=score, progress=progress)
        explanations = self.av.explain_rows(v, sampling, progress=progress)
        if score and self.ar is not None:
            explanations = self._scored(explanations, v, sampling.batch_size, progress)
        prov = self.provenance(sampling)
        return [replace(e, provenance=prov) for e in explanations]

    def _scored(
        self,
        explanations: list[Explanation],
        v: torch.Tensor,
        batch_size: int,
        progress: bool | None = None,
    ) -> list[Explanation]:
        rows = v[[e.index for e in explanations]]
        base = None if self.baseline is None else self.baseline.variance
        s = self._need_ar("score").score_rows(
            [e.text for e in explanations],
            rows,
            baseline=base,
            batch_size=batch_size,
            progress=progress,
        )
        fve = s.fve_nrm
        return [
            e.with_scores(
                float(s.mse_nrm[i]), float(s.cos[i]), None if fve is None else float(fve[i])
            )
            for i, e in enumerate(explanations)
        ]

    def reconstruct(self, explanations: Any, *, batch_size: int = 64) -> torch.Tensor:
        """AR reconstruction of explanation text(s), ``[n, d_model]``."""
        return self._need_ar("reconstruct").reconstruct(explanations, batch_size=batch_size)

    def score(self, explanations: Any, vectors: Any, *, batch_size: int = 64) -> Scores:
        """Round-trip scores of explanations against vectors (``fve_nrm`` needs a baseline)."""
        base = None if self.baseline is None else self.baseline.variance
        return self._need_ar("score").score(
            explanations, vectors, baseline=base, batch_size=batch_size
        )

    def set_baseline(self, vectors_or_variance: Any) -> Baseline:
        """Use another baseline for ``fve_nrm``: activations to estimate ``Var(v_n)`` from
        (a few hundred like the ones you explain), a number, a :class:`Baseline`, or the
        name of one shipped with the pair (``nla.baselines``: ``"published"``; the toy's
        ``"generic"``, ``"task"``, ``"chat"``)."""
        if isinstance(vectors_or_variance, Baseline):
            self.baseline = vectors_or_variance
        elif isinstance(vectors_or_variance, str):
            if vectors_or_variance not in self.baselines:
                raise VectorError(
                    f"no baseline named {vectors_or_variance!r} ships with this pair; it has "
                    f"{sorted(self.baselines) or 'none'}. Pass activations to estimate one "
                    "(nla.set_baseline(vectors)) or a variance."
                )
            self.baseline = self.baselines[vectors_or_variance]
        elif isinstance(vectors_or_variance, (int, float)):
            variance = float(vectors_or_variance)
            if not (variance > 0 and variance < float("inf")):
                raise VectorError(
                    f"a baseline Var(v_n) must be a positive finite number, got {vectors_or_variance!r}."
                )
            self.baseline = Baseline(variance, "given by the user")
        else:
            v = as_vector_batch(vectors_or_variance, self.d_model)
            mse_scale = self.ar.mse_scale if self.ar is not None else None
            self.baseline = estimate_baseline(v, mse_scale=mse_scale)
        return self.baseline

    def _need_ar(self, what: str) -> Reconstructor:
        if self.ar is None:
            raise PairMismatchError(
                f"{what}() needs the AR (reconstructor); load the pair with "
                "NLA.from_pretrained(av, ar) to get scores."
            )
        return self.ar

    # ---- provenance -------------------------------------------------------------
    @cached_property
    def _records(self) -> tuple[CheckpointRecord, CheckpointRecord | None]:
        av = _record(self.av.source, self.av.meta.sha256, self.av.quantization)
        ar = self.ar
        return av, None if ar is None else _record(ar.source, ar.meta.sha256, ar.quantization)

    def provenance(self, sampling: Sampling | None = None) -> Provenance:
        """A :class:`Provenance` for results produced now with these sampling settings."""
        av, ar = self._records
        s = sampling or Sampling()
        settings = s.to_dict()
        settings.pop("seed")
        return Provenance(
            av=av,
            ar=ar,
            dtype=str(self.av.dtype).removeprefix("torch."),
            backend=self.av.backend.name,
            sampling=settings,
            seed=s.seed,
            **baseline_fields(self.baseline),
        )

    def __repr__(self) -> str:
        ar = self.ar.source.name if self.ar is not None and self.ar.source else None
        av = self.av.source.name if self.av.source else "<in memory>"
        quant = {"av": self.av.quantization, "ar": self.ar.quantization if self.ar else None}
        q = "".join(f", {k}_quantization={v!r}" for k, v in quant.items() if v is not None)
        return f"{type(self).__name__}(av={av!r}, ar={ar!r}, layer={self.av.layer}, d_model={self.d_model}, backend={self.av.backend.name!r}{q})"
