"""Capture the residuals of a reply the subject generates itself.

Simple and exact: decode greedily with the Hugging Face model, then run one
ordinary forward over prompt + reply and capture it like any other input (so
the residuals are those of a plain forward, with no KV-cache numerics, and the
user's hooks apply to that forward as usual).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from .capture import Captured, capture_residual
from .inputs import Encoded, pad_rows
from .positions import Positions
from .subject import as_subject

__all__ = ["GeneratedCapture", "generate_and_capture", "left_align"]


@dataclass(frozen=True)
class GeneratedCapture:
    """A generated reply and the residuals of prompt + reply.

    Attributes:
        captured: the capture over the full sequences (``captured.input_ids`` is
            prompt + reply, left-padded prompts, reply tokens after the first
            EOS masked out).
        is_prompt: True at the prompt's real tokens, ``[batch, seq]``.
        is_reply: True at the generated tokens up to and including the first
            EOS, ``[batch, seq]``.
        prompt_length: the padded prompt width; replies start at this column.
        reply_text: each row's decoded reply (special tokens skipped), or None
            without a tokenizer.
    """

    captured: Captured
    is_prompt: Bool[Tensor, "batch seq"]
    is_reply: Bool[Tensor, "batch seq"]
    prompt_length: int
    reply_text: list[str] | None


def left_align(encoded: Encoded, pad_id: int) -> Encoded:
    """Move every row's real tokens to the right edge (left padding), as batched generation needs."""
    rows = [
        [int(t) for t in ids[mask.bool()].tolist()]
        for ids, mask in zip(encoded.input_ids, encoded.attention_mask, strict=True)
    ]
    return pad_rows(rows, pad_id=pad_id, padding_side="left")


def generate_and_capture(
    model: Any,
    inputs: Any,
    layer: int,
    max_new_tokens: int,
    *,
    tokenizer: Any = None,
    positions: Positions = None,
    add_generation_prompt: bool | None = None,
    keep_logits: bool = False,
) -> GeneratedCapture:
    """Greedily generate a reply to ``inputs``, then capture layer ``layer`` over prompt + reply.

    Works for a Hugging Face model, a TransformerBridge or an nnsight model (the
    decode runs on the underlying Hugging Face module; the capture goes through
    :func:`capture_residual` on ``model`` itself). Prompts are left-padded for
    the decode. ``positions`` are counted over each row's real tokens of prompt
    + reply (``-1`` = the reply's last token); use ``is_reply`` to pick reply
    positions from an all-positions capture.
    """
    subject = as_subject(model, tokenizer)
    encoded = subject.encode(
        inputs, add_generation_prompt=add_generation_prompt, padding_side="left"
    )
    prompt = left_align(encoded, subject.pad_id())
    width = prompt.input_ids.shape[1]
    sequences = subject.generate(prompt, max_new_tokens)
    reply = sequences[:, width:]
    eos = torch.tensor(sorted(subject.eos_ids()), dtype=torch.long)
    is_eos = torch.isin(reply, eos) if eos.numel() else torch.zeros_like(reply, dtype=torch.bool)
    # real reply tokens: everything up to and including the first EOS
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    reply_mask = (~after_eos).long()
    attention_mask = torch.cat([prompt.attention_mask, reply_mask], dim=1)
    captured = capture_residual(
        subject,
        {"input_ids": sequences, "attention_mask": attention_mask},
        layer,
        positions=positions,
        keep_logits=keep_logits,
    )
    is_prompt = torch.zeros_like(attention_mask, dtype=torch.bool)
    is_prompt[:, :width] = prompt.attention_mask.bool()
    is_reply = torch.zeros_like(attention_mask, dtype=torch.bool)
    is_reply[:, width:] = reply_mask.bool()
    reply_text = None
    tokenizer = subject.tokenizer
    if tokenizer is not None and hasattr(tokenizer, "decode"):
        reply_text = [
            str(tokenizer.decode(row[mask.bool()].tolist(), skip_special_tokens=True))
            for row, mask in zip(reply, reply_mask, strict=True)
        ]
    return GeneratedCapture(
        captured=captured,
        is_prompt=is_prompt,
        is_reply=is_reply,
        prompt_length=width,
        reply_text=reply_text,
    )
