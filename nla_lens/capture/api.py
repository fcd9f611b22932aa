"""One entry point for residual capture, whatever framework the subject model lives in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float, Int
from torch import Tensor

from ..arch import text_config
from ..errors import CaptureError
from .frameworks import Framework, detect_framework, hf_model_of
from .hf import HFHook, run_hf
from .inputs import PaddingSide, encode, token_strings
from .positions import Positions, gather_positions, resolve_positions
from .tlens import TLHook, run_bridge

__all__ = ["Captured", "capture_residual", "model_tokenizer"]


@dataclass(frozen=True)
class Captured:
    """Layer-K residuals read from a subject model, with the tokens they came from.

    Attributes:
        residual: the residual at the chosen positions, ``[batch, pos, d_model]``,
            on the model's device and in its dtype.
        input_ids: the padded token ids that were run, ``[batch, seq]`` (CPU).
        attention_mask: 1 for real tokens, 0 for padding, ``[batch, seq]`` (CPU).
        positions: absolute column indices into ``input_ids`` of each residual
            row, ``[batch, pos]`` (CPU): ``residual[b, i]`` is the residual of
            token ``input_ids[b, positions[b, i]]``.
        layer: the block K whose output was read.
        framework: ``"hf"``, ``"transformer_lens"`` or ``"nnsight"``.
        logits: the model's logits over the whole batch, ``[batch, seq, vocab]``
            (None when ``keep_logits=False``).
        tokens: each row's tokens as strings, pads included (indices match
            ``input_ids``), or None when no tokenizer is known.
    """

    residual: Float[Tensor, "batch pos d_model"]
    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    positions: Int[Tensor, "batch pos"]
    layer: int
    framework: Framework
    logits: Float[Tensor, "batch seq vocab"] | None = None
    tokens: list[list[str]] | None = None

    def position_tokens(self) -> list[list[str]] | None:
        """The token string at each captured position, ``[batch][pos]`` (None without a tokenizer)."""
        if self.tokens is None:
            return None
        return [
            [row_tokens[int(p)] for p in row_positions]
            for row_tokens, row_positions in zip(self.tokens, self.positions.tolist(), strict=True)
        ]


def model_tokenizer(model: Any, framework: Framework | None = None) -> Any:
    """The tokenizer a model carries (TransformerBridge / nnsight), or None (plain HF models)."""
    framework = framework or detect_framework(model)
    if framework == "hf":
        return None
    try:
        return getattr(model, "tokenizer", None)
    except Exception:  # an nnsight envoy may raise something other than AttributeError
        return None


def _config_bos(model: Any) -> int | None:
    config = getattr(hf_model_of(model), "config", None)
    bos = getattr(text_config(config), "bos_token_id", None) if config is not None else None
    return bos if isinstance(bos, int) else None


def _check_options(framework: Framework, fwd_hooks: Any, hf_hooks: Any, intervene: Any) -> None:
    misplaced = []
    if fwd_hooks and framework != "transformer_lens":
        misplaced.append("fwd_hooks (TransformerLens hooks) need a TransformerBridge")
    if hf_hooks and framework != "hf":
        misplaced.append("hf_hooks (torch forward hooks) need a plain Hugging Face model")
    if intervene is not None and framework != "nnsight":
        misplaced.append(
            "intervene (a callable run inside an nnsight trace) needs an nnsight model"
        )
    if misplaced:
        raise CaptureError(
            f"the subject is a {framework!r} model, but " + "; ".join(misplaced) + ". "
            "Use the option that matches the model: fwd_hooks for a TransformerBridge, "
            "hf_hooks for a Hugging Face model, intervene for an nnsight model."
        )


def capture_residual(
    model: Any,
    inputs: Any,
    layer: int,
    *,
    positions: Positions = None,
    tokenizer: Any = None,
    fwd_hooks: Sequence[TLHook] = (),
    hf_hooks: Sequence[HFHook] = (),
    intervene: Callable[[Any], Any] | None = None,
    add_generation_prompt: bool | None = None,
    padding_side: PaddingSide | None = None,
    keep_logits: bool = True,
) -> Captured:
    """Run ``model`` on ``inputs`` and read the layer-``layer`` residual (output of block ``layer``).

    Dispatches on :func:`detect_framework`: a Hugging Face model is read with a
    forward hook on its decoder block, a TransformerBridge at
    ``blocks.{layer}.hook_resid_post``, an nnsight model at
    ``<layers>[layer].output`` inside a trace. All three give the same vectors
    (Hugging Face ``hidden_states[layer + 1]`` for all but the last block).

    Args:
        model: a Hugging Face causal LM (or Gemma-3 multimodal wrapper), a
            TransformerBridge booted without weight processing, or an nnsight model.
        inputs: text, a list of texts, chat messages (or a list of chats), token
            ids, or a dict with ``input_ids``/``attention_mask``; see
            :func:`nla_lens.capture.inputs.encode`. Text is encoded with one BOS,
            chats are tokenized in one step with the chat template.
        layer: the block K to read.
        positions: which tokens to keep, counted over each row's real tokens:
            ``None`` = every column of the padded batch (pads included); an int
            or a sequence of ints, where ``0`` is a row's first real token and
            ``-1`` its last, whatever the padding. With left padding, row ``b``'s
            real tokens start at column ``seq - attention_mask[b].sum()``, so
            ``positions=-1`` is column ``seq - 1`` for every row; with right
            padding, ``positions=-1`` is column ``attention_mask[b].sum() - 1``.
            ``Captured.positions`` holds the absolute columns used.
        tokenizer: for text/chat inputs and token strings; default the model's
            own (``bridge.tokenizer``, nnsight's ``model.tokenizer``). Required
            for text with a plain Hugging Face model.
        fwd_hooks: TransformerBridge only: ``(hook_name, fn)`` hooks active during
            the run (e.g. edits); the residual reflects them.
        hf_hooks: Hugging Face only: ``(module or dotted name, forward_hook)``
            pairs active during the run; the residual reflects them.
        intervene: nnsight only: ``intervene(model)`` is called inside the trace
            before layer ``layer`` is read (edit earlier layers there).
        add_generation_prompt: for chat inputs; default adds the model-turn
            header unless the last message is the assistant's.
        padding_side: for batches of text/chats; default the tokenizer's.
        keep_logits: return the logits (``[batch, seq, vocab]`` can be large).

    Raises:
        CaptureError: bad inputs (wrong type, empty text, a double BOS, no
            tokenizer for text), positions out of range, an option that does not
            fit the model's framework.
        SubjectMismatchError: ``layer`` is not a block of the model; a
            TransformerBridge whose weight processing changed the residuals.
    """
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise CaptureError(f"layer must be an int (the block index K), got {layer!r}")
    framework = detect_framework(model)
    _check_options(framework, fwd_hooks, hf_hooks, intervene)
    tokenizer = tokenizer if tokenizer is not None else model_tokenizer(model, framework)
    encoded = encode(
        inputs,
        tokenizer,
        add_generation_prompt=add_generation_prompt,
        padding_side=padding_side,
        bos_token_id=_config_bos(model),
    )
    input_ids, attention_mask = encoded.input_ids.cpu(), encoded.attention_mask.cpu()
    absolute = resolve_positions(attention_mask, positions)
    if framework == "hf":
        full, logits = run_hf(model, input_ids, attention_mask, layer, hf_hooks=hf_hooks)
    elif framework == "transformer_lens":
        full, logits = run_bridge(model, input_ids, attention_mask, layer, fwd_hooks=fwd_hooks)
    else:
        from .nns import capture

        full, logits = capture(model, input_ids, attention_mask, layer, intervene=intervene)
    if logits.ndim != 3 or logits.shape[:2] != input_ids.shape:
        raise CaptureError(
            f"the model returned logits of shape {tuple(logits.shape)} for a batch of shape "
            f"{tuple(input_ids.shape)}; expected [batch, seq, vocab]"
        )
    return Captured(
        residual=gather_positions(full, absolute) if positions is not None else full,
        input_ids=input_ids,
        attention_mask=attention_mask,
        positions=absolute,
        layer=layer,
        framework=framework,
        logits=logits if keep_logits else None,
        tokens=token_strings(tokenizer, encoded),
    )
