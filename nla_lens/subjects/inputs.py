"""Turn what a user hands in (text, chat messages, token ids) into ``input_ids`` + ``attention_mask``.

Rules that keep positions honest:

- plain text is encoded with ``add_special_tokens=True`` (the tokenizer adds its
  own BOS, exactly once);
- chat messages are rendered AND tokenized in one step with the tokenizer's chat
  template (``apply_chat_template(..., tokenize=True, return_dict=True)``): the
  template writes the BOS, and a two-step render-then-encode would add a second;
- token ids are passed through untouched;
- any result whose first two real tokens are both BOS is refused
  (:class:`~nla_lens.errors.CaptureError`): a double BOS shifts every position
  and changes every residual.

Batches are padded here (with ``pad_token_id``, else ``eos_token_id``, else 0:
the value never matters, the mask hides it) rather than by the tokenizer, so
the user's tokenizer is never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from ..errors import CaptureError

__all__ = [
    "Encoded",
    "check_known_words",
    "check_single_bos",
    "encode",
    "is_conversation",
    "pad_rows",
    "token_strings",
    "token_text",
]

PaddingSide = Literal["left", "right"]
_ASSISTANT_ROLES = ("assistant", "model")


@dataclass(frozen=True)
class Encoded:
    """A padded batch of token ids and its 0/1 attention mask (1 = real token)."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]


def is_conversation(obj: Any) -> bool:
    """True for one chat: a non-empty list of ``{"role": ..., "content": ...}`` dicts."""
    return (
        isinstance(obj, Sequence)
        and not isinstance(obj, str)
        and len(obj) > 0
        and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in obj)
    )


def _pad_value(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None) if tokenizer is not None else None
        if isinstance(value, int):
            return value
    return 0


def pad_rows(rows: Sequence[Sequence[int]], *, pad_id: int, padding_side: PaddingSide) -> Encoded:
    """Pad ragged rows of token ids into one batch with a matching attention mask."""
    if padding_side not in ("left", "right"):
        raise CaptureError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        sl = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[i, sl] = torch.tensor(list(row), dtype=torch.long)
        mask[i, sl] = 1
    return Encoded(input_ids=ids, attention_mask=mask)


def _require_tokenizer(tokenizer: Any, what: str) -> Any:
    if tokenizer is None:
        raise CaptureError(
            f"{what} needs a tokenizer, and none was given or found on the model. "
            "Pass tokenizer=AutoTokenizer.from_pretrained(<subject id>), or pass token ids."
        )
    return tokenizer


def _encode_text(tokenizer: Any, text: str, index: int | None) -> list[int]:
    where = "" if index is None else f" (batch item {index})"
    if not text.strip():
        raise CaptureError(f"empty text{where}: there is nothing to capture a residual from.")
    ids = [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]
    check_known_words(tokenizer, text, ids, where)
    return ids


def check_known_words(tokenizer: Any, text: str, ids: Sequence[int], where: str = "") -> None:
    """Refuse text the tokenizer can only read as its unknown token (a word-level vocabulary,
    like the toy's, would otherwise silently turn each unknown word into ``<unk>``)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if not isinstance(unk, int) or unk not in ids:
        return
    words = []
    for word in text.split():
        if unk in tokenizer(word, add_special_tokens=False)["input_ids"] and word not in words:
            words.append(word)
    if not words:  # the unknown token comes from a template or special text, not the user's words
        return
    shown = ", ".join(repr(w) for w in words[:10])
    raise CaptureError(
        f"the tokenizer does not know {shown}{where}: it would read "
        f"{'them' if len(words) != 1 else 'it'} as {tokenizer.unk_token!r} and the residuals "
        "would be those of the unknown token. Use words from its vocabulary "
        "(the toy subject knows a small English vocabulary: tokenizer.get_vocab())."
    )


def _encode_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool | None
) -> list[int]:
    if getattr(tokenizer, "chat_template", None) is None:
        raise CaptureError(
            f"{type(tokenizer).__name__} has no chat template, so chat messages cannot be "
            "rendered. Pass plain text, or a tokenizer with a chat_template (an -it / Instruct model's)."
        )
    if add_generation_prompt is None:
        add_generation_prompt = str(messages[-1]["role"]) not in _ASSISTANT_ROLES
    enc = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=True
    )
    ids = enc["input_ids"]
    if isinstance(ids, Tensor):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # some versions batch a single chat
        ids = ids[0]
    out = [int(i) for i in ids]
    text = " ".join(str(m.get("content", "")) for m in messages)
    check_known_words(tokenizer, text, out, " (in a chat message)")
    return out


def _from_ids(input_ids: Any, attention_mask: Any) -> Encoded:
    try:
        ids = torch.as_tensor(input_ids)
    except (ValueError, TypeError) as exc:
        raise CaptureError(
            "token ids must form a rectangular [batch, seq] array; for rows of different "
            "lengths pass them padded with an attention_mask, or pass the texts themselves "
            f"({exc})"
        ) from exc
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise CaptureError(
            f"token ids must be an integer tensor, got dtype {ids.dtype}. "
            "(Capturing from input embeddings is not supported: pass token ids or text.)"
        )
    if ids.ndim == 1:
        ids = ids.unsqueeze(0)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise CaptureError(
            f"token ids must have shape [batch, seq] with both > 0, got {tuple(ids.shape)}"
        )
    if attention_mask is None:
        mask = torch.ones_like(ids, dtype=torch.long)
    else:
        mask = torch.as_tensor(attention_mask).to(device=ids.device)
        if mask.ndim == 1:
            mask = mask.unsqueeze(0)
        if mask.shape != ids.shape:
            raise CaptureError(
                f"attention_mask shape {tuple(mask.shape)} does not match input_ids shape {tuple(ids.shape)}"
            )
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise CaptureError("attention_mask must hold only 0 and 1")
        mask = mask.long()
    return Encoded(input_ids=ids.long(), attention_mask=mask)


def check_single_bos(encoded: Encoded, bos_token_id: int | None) -> None:
    """Refuse rows whose first two real tokens are both BOS (a double BOS)."""
    if bos_token_id is None:
        return
    ids, mask = encoded.input_ids, encoded.attention_mask
    for row in range(ids.shape[0]):
        real = ids[row][mask[row].bool()]
        if real.numel() >= 2 and int(real[0]) == bos_token_id and int(real[1]) == bos_token_id:
            raise CaptureError(
                f"batch row {row} starts with two BOS tokens (id {bos_token_id}), which shifts "
                "every position and changes every residual. Usual cause: text that already "
                "contains the BOS string, or a chat template rendered to text and then encoded "
                "with special tokens. Fix: pass the raw text / the chat messages themselves "
                "(nla_lens tokenizes them in one step), or drop the extra BOS from the token ids."
            )


def encode(
    inputs: Any,
    tokenizer: Any = None,
    *,
    add_generation_prompt: bool | None = None,
    padding_side: PaddingSide | None = None,
    bos_token_id: int | None = None,
) -> Encoded:
    """Encode ``inputs`` for ``tokenizer`` into a padded batch.

    Args:
        inputs: one of
            - ``str``: one row, encoded with special tokens (one BOS);
            - ``list[str]``: a batch of rows;
            - chat messages, ``[{"role": "user", "content": ...}, ...]``: one row
              rendered with the chat template; a list of such lists is a batch;
            - an integer tensor ``[seq]`` or ``[batch, seq]`` of token ids
              (all positions real);
            - a mapping / ``BatchEncoding`` with ``input_ids`` and optionally
              ``attention_mask``.
        tokenizer: needed for text and chat inputs; also used to check for a
            double BOS.
        add_generation_prompt: for chat inputs; ``None`` adds the model-turn
            header unless the last message is the assistant's.
        padding_side: for batches built here; default the tokenizer's own
            ``padding_side`` (else right). Token ids passed in keep their padding.
        bos_token_id: the BOS id for the double-BOS check when ``tokenizer`` has
            none (e.g. token ids with no tokenizer: pass the model config's).

    Raises:
        CaptureError: wrong input type, empty text or batch, missing tokenizer
            or chat template, a double BOS.
    """
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    if bos is None:
        bos = bos_token_id
    if isinstance(inputs, Tensor):
        encoded = _from_ids(inputs, None)
    elif isinstance(inputs, Mapping) and "input_ids" in inputs:
        encoded = _from_ids(inputs["input_ids"], inputs.get("attention_mask"))
    else:
        rows: list[list[int]]
        if isinstance(inputs, str):
            rows = [_encode_text(_require_tokenizer(tokenizer, "text input"), inputs, None)]
        elif is_conversation(inputs):
            tok = _require_tokenizer(tokenizer, "chat input")
            rows = [_encode_chat(tok, inputs, add_generation_prompt)]
        elif isinstance(inputs, Sequence) and not isinstance(inputs, (bytes, bytearray)):
            if len(inputs) == 0:
                raise CaptureError("empty batch: pass at least one text, chat or token row.")
            if all(isinstance(x, str) for x in inputs):
                tok = _require_tokenizer(tokenizer, "text input")
                rows = [_encode_text(tok, x, i) for i, x in enumerate(inputs)]
            elif all(is_conversation(x) for x in inputs):
                tok = _require_tokenizer(tokenizer, "chat input")
                rows = [_encode_chat(tok, x, add_generation_prompt) for x in inputs]
            else:
                kinds = sorted({type(x).__name__ for x in inputs})
                raise CaptureError(
                    f"a batch must be all strings or all chats (lists of role/content dicts); "
                    f"got items of type {kinds}. A chat message needs both 'role' and 'content'."
                )
        else:
            raise CaptureError(
                f"cannot capture from inputs of type {type(inputs).__name__}; pass a str, a list "
                "of str, chat messages (list of role/content dicts, or a list of those), "
                "an integer token-id tensor, or a dict with input_ids/attention_mask."
            )
        side = padding_side or getattr(tokenizer, "padding_side", None) or "right"
        encoded = pad_rows(rows, pad_id=_pad_value(tokenizer), padding_side=side)
    if not bool((encoded.attention_mask.sum(dim=1) > 0).all()):
        raise CaptureError("a batch row has no real tokens (its attention_mask is all zero)")
    check_single_bos(encoded, bos)
    return encoded


def token_text(tokenizer: Any, token_id: int) -> str:
    """One token as the text it stands for (``" are"``), not its vocabulary piece
    (SentencePiece ``"▁are"``, byte-level ``"Ġare"``); special tokens by name (``"<bos>"``)."""
    return str(
        tokenizer.decode(
            [int(token_id)], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
    )


def token_strings(tokenizer: Any, encoded: Encoded) -> list[list[str]] | None:
    """Each row's tokens as decoded text (pads included, so indices match ``input_ids``)."""
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        return None
    return [[token_text(tokenizer, i) for i in row] for row in encoded.input_ids.tolist()]
