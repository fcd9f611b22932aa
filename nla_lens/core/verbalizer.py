"""The AV adapter: vectors in, explanations out.

Implements the AV recipe (docs/recipe.md, section 3): the canonical prompt is tokenized
once through the chat template, embedded (with the architecture's embedding
scale), each vector is rescaled to ``injection_scale`` (norm in fp32) and
written over the one marker row whose neighbours match the sidecar, and a
generation backend decodes from the embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import IncompleteResultsError, InjectionError, QuantizationError
from .arch import text_only_lm
from .backend import GenerationBackend, GenerationOutput
from .checkpoint import open_checkpoint, role_mismatch
from .explanation import Explanation, extract_explanation
from .loading import CheckpointSource, load_causal_lm, load_tokenizer
from .local_backend import LocalBackend
from .metrics import normalize
from .progress import bar_options
from .quantization import quantization_of, resolve_quantization
from .sampling import Sampling
from .sidecar import NLAMeta, av_prompt_ids, verify_tokenizer
from .vectors import as_vector_batch

__all__ = ["Verbalizer"]

Embedder = Callable[[Tensor], Tensor]


class Verbalizer:
    """The activation verbalizer (AV) of an NLA pair.

    Build it with :meth:`from_pretrained`; by default it decodes in-process with
    transformers, or pass ``backend=`` (an SGLang or vLLM client) to decode on
    a server, in which case only the embedding table is loaded here.
    """

    def __init__(
        self,
        meta: NLAMeta,
        tokenizer: Any,
        embedder: Embedder,
        backend: GenerationBackend,
        *,
        source: CheckpointSource | None = None,
        model: nn.Module | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if meta.role != "av":
            raise role_mismatch(meta, "av", "Verbalizer")
        self.meta = meta
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.backend = backend
        self.source = source
        self.model = model
        self.dtype = dtype
        #: What the AV's weights are quantized with (read from the model; None = not).
        self.quantization: str | None = quantization_of(model)
        pos = verify_tokenizer(meta, tokenizer)
        if pos is None:
            raise InjectionError(f"{meta.source}: no injection site in the AV prompt")
        self.injection_position: int = pos
        self.prompt_ids: list[int] = av_prompt_ids(meta, tokenizer)
        self._base: Tensor | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        backend: GenerationBackend | None = None,
        strict_sidecar: bool = False,
        quantization: str | None = None,
    ) -> Verbalizer:
        """Load an AV from a local directory or a hub id (e.g. ``kitft/nla-gemma3-12b-L32-av``).

        ``quantization="int8" | "4bit" | "nf4" | "torchao-int8"`` loads the decoder's Linear weights
        quantized (:mod:`nla_lens.core.quantization`; needs ``nla-lens[quant]``).
        """
        if backend is not None and resolve_quantization(quantization) is not None:
            raise QuantizationError(
                f"quantization={quantization!r} with backend={backend.name!r}: the AV decodes on "
                "the server, so quantize it there (e.g. the server's --quantization option); "
                "only the embedding table is loaded here."
            )
        ck = open_checkpoint(
            name_or_path,
            "av",
            "Verbalizer",
            device=device,
            dtype=dtype,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            strict_sidecar=strict_sidecar,
            quantization=quantization,
        )
        source, meta, dev, dt = ck.source, ck.meta, ck.device, ck.dtype
        tokenizer = load_tokenizer(source.path)
        model: Any = None
        embedder: Embedder
        if backend is None:
            model = load_causal_lm(source.path, dt, ck.quantization, dev)
            model = text_only_lm(model)  # multimodal wrappers: decoder + head only
            if ck.quantization is None:  # a quantized model was loaded onto dev
                model = model.to(dev)
            model = model.eval()
            backend = LocalBackend(model, tokenizer)
            embedder = model.get_input_embeddings()
        else:
            from .embedding import EmbeddingTable

            embedder = EmbeddingTable.from_checkpoint(source.path, dtype=dt)
        return cls(meta, tokenizer, embedder, backend, source=source, model=model, dtype=dt)

    @property
    def d_model(self) -> int:
        return self.meta.d_model

    @property
    def layer(self) -> int | None:
        return self.meta.layer

    def _base_embeds(self) -> Tensor:
        if self._base is None:
            device = (
                next(self.model.parameters()).device
                if self.model is not None
                else torch.device("cpu")
            )
            ids = torch.tensor([self.prompt_ids], device=device)
            with torch.inference_mode():
                self._base = self.embedder(ids)[0].detach().clone()
        return self._base

    def prompt_embeds(self, vectors: Any) -> Float[Tensor, "n seq d_model"]:
        """The AV prompt's embeddings with each vector injected at the marker row."""
        return self._embeds(as_vector_batch(vectors, self.d_model))

    def _embeds(self, v: Float[Tensor, "n d_model"]) -> Float[Tensor, "n seq d_model"]:
        scale = self.meta.injection_scale
        if scale is None:  # parse_sidecar refuses AV sidecars without one
            raise InjectionError(f"{self.meta.source}: no injection_scale")
        base = self._base_embeds()
        out = base.unsqueeze(0).repeat(v.shape[0], 1, 1)
        out[:, self.injection_position] = normalize(v, scale).to(out.device, out.dtype)
        return out

    def generate(
        self, vectors: Any, sampling: Sampling | None = None, *, progress: bool | None = None
    ) -> list[GenerationOutput]:
        """Raw decodes, ``sampling.samples`` per vector, vector-major (all of vector 0's samples first)."""
        return self._generate(
            as_vector_batch(vectors, self.d_model), Sampling.check(sampling), progress
        )

    def _generate(
        self, v: Float[Tensor, "n d_model"], sampling: Sampling, progress: bool | None
    ) -> list[GenerationOutput]:
        rows = v.repeat_interleave(sampling.samples, dim=0)
        outputs: list[GenerationOutput] = []
        bar = tqdm(total=rows.shape[0], desc="explaining", unit="decode", **bar_options(progress))
        for start in range(0, rows.shape[0], sampling.batch_size):
            chunk = rows[start : start + sampling.batch_size]
            p = sampling
            if sampling.seed is not None:  # a distinct, reproducible seed per batch
                p = sampling.replace(seed=sampling.seed + start)
            try:
                outputs += self.backend.generate(self._embeds(chunk), p)
                bar.update(len(chunk))
            except Exception as exc:
                bar.close()
                if not outputs:
                    raise
                raise IncompleteResultsError(
                    f"decoding failed after {len(outputs)} of {rows.shape[0]} decodes ({exc}); the finished "
                    "ones are in `.partial` (vector-major). Fix the cause and explain the rest, or use "
                    "nla_lens.explain_dataset for resumable runs.",
                    outputs,
                ) from exc
        bar.close()
        return outputs

    def explain(
        self,
        vectors: Any,
        sampling: Sampling | None = None,
        *,
        progress: bool | None = None,
        **settings: Any,
    ) -> list[Explanation]:
        """Explanations (unscored), ``samples`` per vector, vector-major. ``settings`` are
        :class:`Sampling` fields (``temperature=``, ``max_new_tokens=``, ...)."""
        v = as_vector_batch(vectors, self.d_model)
        return self.explain_rows(v, Sampling.of(sampling, **settings), progress=progress)

    def explain_rows(
        self, v: Float[Tensor, "n d_model"], sampling: Sampling, *, progress: bool | None = None
    ) -> list[Explanation]:
        """:meth:`explain` on an already validated float32 batch."""
        outs = self._generate(v, sampling, progress)
        k = sampling.samples
        result = []
        for i, out in enumerate(outs):
            text, truncated = extract_explanation(out.text)
            result.append(
                Explanation(
                    text=text, raw=out.text, truncated=truncated, index=i // k, sample=i % k
                )
            )
        return result
