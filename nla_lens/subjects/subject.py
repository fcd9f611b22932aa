"""One adapter for a subject model, whatever framework it lives in.

:func:`as_subject` detects the framework once (Hugging Face, TransformerBridge,
nnsight) and wraps the model in a :class:`Subject`: encode inputs, run one
forward with edits and read the layer-K residual, generate greedily, and answer
what the model is (tokenizer, block count, width, name). Everything above this
layer (runs, patching, steering, transcripts) talks to a ``Subject`` and never
compares framework names itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core.arch import decoder_layers, text_config
from ..errors import CaptureError
from .bridge import TLHook, run_bridge
from .edits import BoundEdit
from .frameworks import Framework, detect_framework, hf_model_of
from .guards import SubjectInfo, check_subject, subject_info
from .hf import HFHook, first_device, install_edits, run_hf
from .inputs import Encoded, PaddingSide, encode, token_strings

__all__ = ["Subject", "as_subject"]


def _tokenizer_of(model: Any, framework: Framework) -> Any:
    if framework == "hf":
        return None
    try:
        return getattr(model, "tokenizer", None)
    except Exception:  # an nnsight envoy may raise something other than AttributeError
        return None


class Subject:
    """A subject model with its framework found once; see the module docs."""

    def __init__(self, model: Any, tokenizer: Any = None) -> None:
        self.model = model
        self.framework: Framework = detect_framework(model)
        self.hf: Any = hf_model_of(model)
        self.tokenizer = (
            tokenizer if tokenizer is not None else _tokenizer_of(model, self.framework)
        )

    def __repr__(self) -> str:
        return f"Subject({self.framework}, {self.info.name_or_path!r}, layers={self.n_layers})"

    # ---- what the model is -------------------------------------------------------------
    @cached_property
    def info(self) -> SubjectInfo:
        return subject_info(self.model)

    @property
    def n_layers(self) -> int:
        return self.info.n_layers

    @property
    def d_model(self) -> int:
        return self.info.d_model

    def check(self, *, d_model: int, layer: int, base_model: str | None) -> SubjectInfo:
        """Refuse a subject that the pair cannot read (see :func:`check_subject`)."""
        return check_subject(self.model, d_model=d_model, layer=layer, base_model=base_model)

    @property
    def bos_token_id(self) -> int | None:
        bos = getattr(self.tokenizer, "bos_token_id", None) if self.tokenizer is not None else None
        if bos is None:
            bos = getattr(text_config(self.hf.config), "bos_token_id", None)
        return bos if isinstance(bos, int) else None

    def eos_ids(self) -> set[int]:
        eos = getattr(getattr(self.hf, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is None:
            return set()
        return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}

    def pad_id(self) -> int:
        for value in (
            getattr(self.tokenizer, "pad_token_id", None),
            getattr(self.hf.config, "pad_token_id", None),
        ):
            if isinstance(value, int):
                return value
        return min(self.eos_ids(), default=0)

    # ---- inputs ------------------------------------------------------------------------
    def encode(
        self,
        inputs: Any,
        *,
        add_generation_prompt: bool | None = None,
        padding_side: PaddingSide | None = None,
    ) -> Encoded:
        """Text, chats or token ids as a padded batch (see :func:`encode`); every id must
        be a row of the model's embedding table."""
        encoded = encode(
            inputs,
            self.tokenizer,
            add_generation_prompt=add_generation_prompt,
            padding_side=padding_side,
            bos_token_id=self.bos_token_id,
        )
        self._check_vocab(encoded)
        return encoded

    def vocab_size(self) -> int | None:
        """Rows of the input-embedding table (the ids the model can read)."""
        get = getattr(self.hf, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        n = getattr(emb, "num_embeddings", None)
        if n is None:
            n = getattr(text_config(self.hf.config), "vocab_size", None)
        return int(n) if isinstance(n, int) else None

    def _check_vocab(self, encoded: Encoded) -> None:
        n = self.vocab_size()
        ids = encoded.input_ids
        if n is None or ids.numel() == 0:
            return
        bad = (ids < 0) | (ids >= n)
        if bool(bad.any()):
            where = bad.nonzero()[:5].tolist()
            values = sorted({int(ids[r, c]) for r, c in where})
            raise CaptureError(
                f"token ids {values} (at [row, column] {where}) are outside the model's vocabulary "
                f"of {n} ids (valid 0..{n - 1}). The ids were made by another tokenizer, or are "
                "offsets/padding markers such as -100: encode the text with this model's tokenizer."
            )

    def token_strings(self, encoded: Encoded) -> list[list[str]] | None:
        return token_strings(self.tokenizer, encoded)

    # ---- running -----------------------------------------------------------------------
    def run(
        self,
        encoded: Encoded,
        layer: int,
        *,
        edits: Sequence[BoundEdit] = (),
        fwd_hooks: Sequence[TLHook] = (),
        hf_hooks: Sequence[HFHook] = (),
        intervene: Callable[[Any], Any] | None = None,
    ) -> tuple[Float[Tensor, "batch seq d_model"], Float[Tensor, "batch seq vocab"]]:
        """One forward: (the residual output of block ``layer``, the logits), on the model's device.

        ``edits`` are bound edits (:meth:`ResidualEdit.bind`); the native options
        (``fwd_hooks`` for a TransformerBridge, ``hf_hooks`` for Hugging Face,
        ``intervene`` for nnsight) are the framework's own idioms and are refused
        on another framework's model.
        """
        self._check_native(fwd_hooks, hf_hooks, intervene)
        ids, mask = encoded.input_ids.cpu(), encoded.attention_mask.cpu()
        if self.framework == "hf":
            full, logits = run_hf(self.model, ids, mask, layer, hf_hooks=hf_hooks, edits=edits)
        elif self.framework == "transformer_lens":
            full, logits = run_bridge(
                self.model, ids, mask, layer, fwd_hooks=fwd_hooks, edits=edits
            )
        else:
            from .nnsight import capture

            full, logits = capture(self.model, ids, mask, layer, intervene=intervene, edits=edits)
        if logits.ndim != 3 or logits.shape[:2] != ids.shape:
            raise CaptureError(
                f"the model returned logits of shape {tuple(logits.shape)} for a batch of shape "
                f"{tuple(ids.shape)}; expected [batch, seq, vocab]"
            )
        return full, logits

    def _check_native(self, fwd_hooks: Any, hf_hooks: Any, intervene: Any) -> None:
        misplaced = []
        if fwd_hooks and self.framework != "transformer_lens":
            misplaced.append("fwd_hooks (TransformerLens hooks) need a TransformerBridge")
        if hf_hooks and self.framework != "hf":
            misplaced.append("hf_hooks (torch forward hooks) need a plain Hugging Face model")
        if intervene is not None and self.framework != "nnsight":
            misplaced.append(
                "intervene (a callable run inside an nnsight trace) needs an nnsight model"
            )
        if misplaced:
            raise CaptureError(
                f"the subject is a {self.framework!r} model, but " + "; ".join(misplaced) + ". "
                "Use the option that matches the model: fwd_hooks for a TransformerBridge, "
                "hf_hooks for a Hugging Face model, intervene for an nnsight model, or edits= "
                "(e.g. from add_direction / residual_edit) for any of them."
            )

    def generate(
        self,
        encoded: Encoded,
        max_new_tokens: int,
        *,
        edits: Sequence[BoundEdit] = (),
        exact_length: bool = False,
    ) -> Int[Tensor, "batch total"]:
        """Greedy decode from left-padded ``encoded`` on the underlying Hugging Face module
        (the same for all three frameworks); ``edits`` apply at every step. Returns the
        prompt + new token ids on the CPU. ``exact_length`` forbids an early stop."""
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 1
        ):
            raise CaptureError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        config = copy.deepcopy(self.hf.generation_config)
        config.do_sample, config.num_beams = False, 1
        config.temperature = config.top_p = config.top_k = None
        config.max_new_tokens, config.max_length = max_new_tokens, None
        config.min_new_tokens = max_new_tokens if exact_length else None
        config.pad_token_id = self.pad_id()
        device = first_device(self.hf)
        handles = install_edits(decoder_layers(self.hf), edits)
        try:
            with torch.inference_mode():
                out = self.hf.generate(
                    input_ids=encoded.input_ids.to(device),
                    attention_mask=encoded.attention_mask.to(device),
                    generation_config=config,
                )
        finally:
            for h in handles:
                h.remove()
        return out.detach().cpu()


def as_subject(model: Any, tokenizer: Any = None) -> Subject:
    """Wrap ``model`` (or return it, when it is already a :class:`Subject`)."""
    if isinstance(model, Subject):
        if tokenizer is not None and tokenizer is not model.tokenizer:
            return Subject(model.model, tokenizer)
        return model
    return Subject(model, tokenizer)
