"""The AR adapter: explanations in, vectors out, and round-trip scores.

Implements the AR recipe (docs/recipe.md, section 4): the truncated backbone (K+1
blocks) with its final norm replaced by identity and no LM head, the prompt
``ar_template.format(explanation=...)`` tokenized WITH special tokens (BOS),
the last real token's hidden state, and ``value_head = Linear(d, d, bias=False)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import CheckpointError, MissingValueHeadError, SidecarError, VectorError
from .arch import arch_for, text_config, text_model
from .checkpoint import open_checkpoint, role_mismatch
from .loading import CheckpointSource, load_causal_lm, load_tokenizer
from .metrics import Scores, score_vectors
from .progress import bar_options
from .quantization import quantization_of
from .sidecar import NLAMeta, verify_tokenizer
from .tokens import batch_encoder
from .vectors import as_vector_batch

__all__ = ["Reconstructor"]

VALUE_HEAD = "value_head.safetensors"


class Reconstructor:
    """The activation reconstructor (AR) of an NLA pair."""

    def __init__(
        self,
        meta: NLAMeta,
        tokenizer: Any,
        backbone: nn.Module,
        value_head: nn.Linear,
        *,
        source: CheckpointSource | None = None,
    ) -> None:
        if meta.role != "ar":
            raise role_mismatch(meta, "ar", "Reconstructor")
        if meta.ar_template is None:
            raise SidecarError(f"{meta.source}: AR sidecar has no prompt_templates.ar.")
        verify_tokenizer(meta, tokenizer)
        self.meta = meta
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.value_head = value_head
        self.source = source
        #: What the backbone's weights are quantized with (read from it; the value head never is).
        self.quantization: str | None = quantization_of(backbone)
        self.template: str = meta.ar_template
        if meta.mse_scale is None:  # parse_sidecar refuses AR sidecars without one
            raise SidecarError(
                f"{meta.source}: the AR sidecar has no usable extraction.mse_scale; set it to the "
                "norm the AR was trained with (usually 'sqrt_d_model')."
            )
        self.mse_scale: float = meta.mse_scale

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
        strict_sidecar: bool = False,
        quantization: str | None = None,
    ) -> Reconstructor:
        """Load an AR from a local directory or a hub id (e.g. ``kitft/nla-gemma3-12b-L32-ar``).

        ``quantization="int8" | "4bit" | "nf4" | "torchao-int8"`` loads the backbone's Linear weights
        quantized (needs ``nla-lens[quant]``); the value head stays at ``dtype``.
        """
        ck = open_checkpoint(
            name_or_path,
            "ar",
            "Reconstructor",
            device=device,
            dtype=dtype,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            strict_sidecar=strict_sidecar,
            quantization=quantization,
        )
        source, meta, config, dev, dt = ck.source, ck.meta, ck.config, ck.device, ck.dtype
        head_path = source.path / VALUE_HEAD
        if not head_path.is_file():
            raise MissingValueHeadError(
                f"{source.name} has no {VALUE_HEAD}: an NLA AR ships its trained value head beside the "
                "backbone, and it cannot be derived from it. Re-download the full checkpoint."
            )
        n_layers = config.get(
            "num_hidden_layers", config.get("text_config", {}).get("num_hidden_layers")
        )
        if meta.layer is not None and n_layers is not None and n_layers != meta.layer + 1:
            raise SidecarError(
                f"{source.name}: config.json has num_hidden_layers={n_layers}, but an AR for layer "
                f"K={meta.layer} must have K+1={meta.layer + 1} blocks. Wrong config or sidecar."
            )
        tokenizer = load_tokenizer(source.path)
        full = load_causal_lm(source.path, dt, ck.quantization, dev)
        backbone = text_model(full)
        # the value head reads the raw block-K residual: the final norm becomes the identity
        setattr(backbone, arch_for(full.config).final_norm_attr, nn.Identity())
        d = text_config(full.config).hidden_size
        head = nn.Linear(d, d, bias=False, dtype=dt)
        try:
            state = load_file(str(head_path))
        except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
            raise CheckpointError(
                f"{head_path}: cannot read the value head ({type(exc).__name__}: {exc}); the file "
                "is truncated or corrupt. Re-download the AR checkpoint."
            ) from exc
        try:
            head.load_state_dict(state)
        except RuntimeError as exc:
            raise MissingValueHeadError(
                f"{head_path}: not a Linear({d}, {d}) value head ({exc})."
            ) from exc
        if ck.quantization is None:  # a quantized backbone was loaded onto dev
            backbone = backbone.to(dev)
        return cls(meta, tokenizer, backbone.eval(), head.to(dev).eval(), source=source)

    @property
    def d_model(self) -> int:
        return self.meta.d_model

    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    def prompt(self, explanation: str) -> str:
        return self.template.format(explanation=explanation.strip())

    @torch.inference_mode()
    def reconstruct(
        self,
        explanations: str | Sequence[str],
        *,
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> Float[Tensor, "n d_model"]:
        """Predicted (raw, unnormalised) vectors for the explanations, float32 on CPU.

        Each distinct explanation runs through the AR once (a repeated one, e.g. the
        same first line of many rows, or equal samples, gets a copy of that result)."""
        texts = [explanations] if isinstance(explanations, str) else list(explanations)
        if not texts:
            return torch.zeros(0, self.d_model)
        if not all(isinstance(t, str) for t in texts):
            raise VectorError("reconstruct() takes explanation strings.")
        prompts = [self.prompt(t) for t in texts]
        where: dict[str, int] = {}
        copies: list[int] = []
        for p in prompts:
            if p not in where:
                where[p] = len(where)
                copies.append(0)
            copies[where[p]] += 1
        distinct = list(where)
        # Sort by length so batches carry little padding; restore the order at the end.
        order = sorted(range(len(distinct)), key=lambda i: len(distinct[i]))
        out = torch.empty(len(distinct), self.d_model)
        bar = tqdm(total=len(prompts), desc="reconstructing", unit="text", **bar_options(progress))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = self._right_padded([distinct[i] for i in idx])
            hidden = self.backbone(
                input_ids=ids, attention_mask=mask, use_cache=False
            ).last_hidden_state
            last = mask.sum(dim=1) - 1  # last real token under right padding
            h = hidden[torch.arange(len(idx), device=ids.device), last]
            out[idx] = self.value_head(h.to(self.value_head.weight.dtype)).float().cpu()
            bar.update(sum(copies[i] for i in idx))
        bar.close()
        if len(distinct) == len(prompts):
            return out
        return out[[where[p] for p in prompts]]

    def _right_padded(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids (with special tokens) of ``prompts``, right-padded, and the mask. Padded
        here rather than by the tokenizer: Llama-3's has no pad token, and any id serves
        under the mask."""
        # On the CPU, row by row: the Rust pool's threads would compete with torch's.
        rows = batch_encoder(self.tokenizer, parallel=self.device.type != "cpu")(prompts)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        width = max(len(r) for r in rows)
        ids = torch.tensor([[*r, *[int(pad)] * (width - len(r))] for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        return ids.to(self.device), mask.to(self.device)

    def score(
        self,
        explanations: str | Sequence[str],
        vectors: Any,
        *,
        baseline: float | None = None,
        batch_size: int = 64,
    ) -> Scores:
        """``mse_nrm`` / ``cos`` / ``fve_nrm`` of each explanation against its vector."""
        v = as_vector_batch(vectors, self.d_model)
        return self.score_rows(explanations, v, baseline=baseline, batch_size=batch_size)

    def score_rows(
        self,
        explanations: str | Sequence[str],
        v: Float[Tensor, "n d_model"],
        *,
        baseline: float | None = None,
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> Scores:
        """:meth:`score` against an already validated float32 batch."""
        pred = self.reconstruct(explanations, batch_size=batch_size, progress=progress)
        if pred.shape[0] != v.shape[0]:
            raise VectorError(
                f"{pred.shape[0]} explanations but {v.shape[0]} vectors; pass one of each per row."
            )
        return score_vectors(pred, v, mse_scale=self.mse_scale, baseline=baseline)
