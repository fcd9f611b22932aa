"""One entry point for residual capture, whatever framework the subject model lives in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float, Int
from torch import Tensor

from .bridge import TLHook
from .edits import as_edits
from .frameworks import Framework
from .hf import HFHook
from .inputs import PaddingSide
from .positions import Positions, gather_positions, relative_positions, resolve_positions
from .subject import as_subject

__all__ = ["Captured", "capture_residual"]


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

    @property
    def relative(self) -> Int[Tensor, "batch pos"]:
        """Each captured position as an index over its row's real tokens (0 = first real token)."""
        return relative_positions(self.attention_mask, self.positions)

    def real_tokens(self) -> list[list[str]]:
        """Each row's real tokens as strings (ids as strings without a tokenizer), pads dropped."""
        rows = self.tokens or [[str(t) for t in r] for r in self.input_ids.tolist()]
        return [
            [t for t, m in zip(row, mask, strict=True) if m]
            for row, mask in zip(rows, self.attention_mask.tolist(), strict=True)
        ]


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
    edits: Any = (),
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
        edits: framework-independent edits (:class:`~nla_lens.subjects.ResidualEdit`,
            e.g. from ``add_direction``), applied at each row's own positions.
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
    subject = as_subject(model, tokenizer)
    encoded = subject.encode(
        inputs, add_generation_prompt=add_generation_prompt, padding_side=padding_side
    )
    input_ids, attention_mask = encoded.input_ids.cpu(), encoded.attention_mask.cpu()
    absolute = resolve_positions(attention_mask, positions)
    bound = [e.bind(attention_mask) for e in as_edits(edits)]
    full, logits = subject.run(
        encoded, layer, edits=bound, fwd_hooks=fwd_hooks, hf_hooks=hf_hooks, intervene=intervene
    )
    return Captured(
        residual=gather_positions(full, absolute) if positions is not None else full,
        input_ids=input_ids,
        attention_mask=attention_mask,
        positions=absolute,
        layer=layer,
        framework=subject.framework,
        logits=logits if keep_logits else None,
        tokens=subject.token_strings(encoded),
    )
