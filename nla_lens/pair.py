"""The NLA pair: an AV and (optionally) an AR, with scores and provenance."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from .backends.base import GenerationBackend
from .errors import PairMismatchError
from .explanation import Explanation
from .loading import CheckpointSource
from .metrics import Baseline, Scores, baseline_for, estimate_baseline
from .provenance import CheckpointRecord, Provenance
from .reconstructor import Reconstructor
from .vectors import as_vector_batch
from .verbalizer import Verbalizer

if TYPE_CHECKING:
    from .cache import ExplanationCache
    from .reading import SearchHit
    from .runs import ExplainedRun
    from .transcript import Transcript

__all__ = ["NLA"]

TOY_BASE_MODEL = "nla-lens/toy-gemma3-subject"


def _record(source: CheckpointSource | None, sidecar_sha: str) -> CheckpointRecord:
    if source is None:
        return CheckpointRecord("<in memory>", "", None, None, None, "", sidecar_sha)
    return CheckpointRecord(
        name=source.name,
        path=str(source.path),
        hub_id=source.hub_id,
        revision=source.revision,
        commit=source.commit,
        content_sha256=source.content_hash(),
        sidecar_sha256=sidecar_sha,
    )


def _default_baseline(av: Verbalizer) -> Baseline | None:
    if av.source is None:
        return None
    published = baseline_for(av.source.hub_id)
    if published is not None:
        return published
    # A toy pair (python -m nla_lens.toy build) carries the baseline its builder measured.
    quality = av.source.path.parent / "quality.json"
    if av.meta.base_model == TOY_BASE_MODEL and quality.is_file():
        data = json.loads(quality.read_text())
        return Baseline(
            float(data["baseline_var"]), "toy pair: measured at build time", n=data.get("n")
        )
    return None


class NLA:
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
        self.av = av
        self.ar = ar
        if isinstance(baseline, (int, float)):
            baseline = Baseline(float(baseline), "given by the user")
        self.baseline: Baseline | None = baseline if baseline is not None else _default_baseline(av)

    @classmethod
    def from_pretrained(
        cls,
        av: str | os.PathLike[str],
        ar: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        ar_revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        backend: GenerationBackend | None = None,
        baseline: Baseline | float | None = None,
        strict_sidecar: bool = False,
    ) -> NLA:
        """Load a pair from local directories or hub ids.

        >>> nla = NLA.from_pretrained("kitft/nla-gemma3-12b-L32-av", "kitft/nla-gemma3-12b-L32-ar")  # doctest: +SKIP
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
        temperature: float = 0.0,
        max_new_tokens: int = 200,
        top_p: float = 1.0,
        samples: int = 1,
        seed: int | None = None,
        batch_size: int = 64,
        score: bool = True,
        progress: bool | None = None,
        cache: ExplanationCache | None = None,
    ) -> list[Explanation]:
        """Explain one ``[d]`` vector or a ``[n, d]`` batch (tensor or array, any float dtype).

        Greedy (``temperature=0``) by default, for reproducible decodes; the AV was
        trained at temperature 1.0. Returns ``samples`` explanations per vector,
        vector-major, each scored through the AR when one is loaded. With an
        :class:`~nla_lens.cache.ExplanationCache`, rows already explained with the
        same checkpoints and sampling settings are read back instead of recomputed.
        """
        v = as_vector_batch(vectors, self.d_model)
        kwargs: dict[str, Any] = {
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "top_p": top_p,
            "seed": seed,
            "batch_size": batch_size,
            "score": score,
            "progress": progress,
        }
        if cache is not None:
            return cache.explain(self, v, samples=samples, explain=self._explain, **kwargs)
        return self._explain(v, samples=samples, **kwargs)

    def _explain(
        self,
        v: torch.Tensor,
        *,
        temperature: float,
        max_new_tokens: int,
        top_p: float,
        samples: int,
        seed: int | None,
        batch_size: int,
        score: bool,
        progress: bool | None,
    ) -> list[Explanation]:
        explanations = self.av.explain(
            v,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            top_p=top_p,
            samples=samples,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        if score and self.ar is not None:
            explanations = self._scored(explanations, v, batch_size)
        prov = self.provenance(
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            top_p=top_p,
            samples=samples,
            seed=seed,
        )
        return [replace(e, provenance=prov) for e in explanations]

    def _scored(
        self, explanations: list[Explanation], v: torch.Tensor, batch_size: int
    ) -> list[Explanation]:
        rows = v[[e.index for e in explanations]]
        s = self.score([e.text for e in explanations], rows, batch_size=batch_size)
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
        """Use your own baseline: a variance, or activations to estimate ``Var(v_n)`` from."""
        if isinstance(vectors_or_variance, (int, float)):
            self.baseline = Baseline(float(vectors_or_variance), "given by the user")
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

    # ---- reading a subject model --------------------------------------------------
    def residual(self, model: Any) -> Any:
        """Inside an nnsight ``model.trace(...)``: the layer-K output (call ``.save()`` on it)."""
        from .capture import residual

        return residual(model, self.layer)

    def check_subject(self, model: Any) -> Any:
        """Refuse a subject that does not match the pair (d_model, layer range, base model)."""
        from .capture import check_subject

        return check_subject(
            model, d_model=self.d_model, layer=self.layer, base_model=self.base_model
        )

    def capture(
        self,
        model: Any,
        inputs: Any,
        *,
        positions: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> Float[Tensor, "batch pos d_model"]:
        """The layer-K residual of a Hugging Face model, TransformerBridge or nnsight model.

        Text and chats are tokenized with the model's tokenizer and chat template
        (exactly one BOS); see :func:`nla_lens.capture.capture_residual` for the
        inputs, positions and padding rules.
        """
        from .capture import capture_residual

        self.check_subject(model)
        return capture_residual(model, inputs, self.layer, positions=positions, **kwargs).residual

    def transcript(self, model: Any, text_or_messages: Any, **kwargs: Any) -> Transcript:
        """Per-token transcript of a prompt (and optionally a generated reply); see
        :func:`nla_lens.reading.build_transcript`."""
        from .reading import build_transcript

        return build_transcript(self, model, text_or_messages, **kwargs)

    def search(
        self, description: str, activations: Any, *, top_k: int = 5, centered: bool = False
    ) -> list[SearchHit]:
        """Where does the model represent ``description``? Rank captured positions by how
        closely their residual matches the AR's reconstruction of the description."""
        from .reading import search

        return search(self, description, activations, top_k=top_k, centered=centered)

    def explain_run(self, model: Any, inputs: Any, **kwargs: Any) -> ExplainedRun:
        """Run the subject once under an intervention and explain layer K; see
        :func:`nla_lens.runs.explain_run`."""
        from .runs import explain_run

        return explain_run(self, model, inputs, **kwargs)

    def steering_vector(self, description: str, **kwargs: Any) -> Float[Tensor, " d_model"]:
        """A layer-K steering direction for a description; see :func:`nla_lens.steering.steering_vector`."""
        from .steering import steering_vector

        return steering_vector(self, description, **kwargs)

    # ---- provenance -------------------------------------------------------------
    @cached_property
    def _records(self) -> tuple[CheckpointRecord, CheckpointRecord | None]:
        av = _record(self.av.source, self.av.meta.sha256)
        ar = None if self.ar is None else _record(self.ar.source, self.ar.meta.sha256)
        return av, ar

    def provenance(self, *, seed: int | None = None, **sampling: Any) -> Provenance:
        """A :class:`Provenance` for results produced now with these sampling settings."""
        av, ar = self._records
        return Provenance(
            av=av,
            ar=ar,
            dtype=str(self.av.dtype).removeprefix("torch."),
            backend=self.av.backend.name,
            sampling=dict(sampling),
            seed=seed,
            baseline=None if self.baseline is None else self.baseline.variance,
            baseline_source=None if self.baseline is None else self.baseline.source,
        )

    def __repr__(self) -> str:
        ar = self.ar.source.name if self.ar is not None and self.ar.source else None
        av = self.av.source.name if self.av.source else "<in memory>"
        return f"NLA(av={av!r}, ar={ar!r}, layer={self.av.layer}, d_model={self.d_model}, backend={self.av.backend.name!r})"
