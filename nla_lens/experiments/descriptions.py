"""Checking a description before the AR turns it into a direction (steering, search).

An empty description, or one whose words the AR's tokenizer can only read as its
unknown token, still reconstructs to *some* vector: a direction without a word
(on the toy pair ``""`` steers toward ``horse``). Both are refused.
"""

from __future__ import annotations

from typing import Any

from ..core.pair import NLAPair
from ..errors import DescriptionError

__all__ = ["check_description"]


def unknown_words(tokenizer: Any, text: str) -> list[str]:
    """The whitespace-separated words of ``text`` the tokenizer reads as its unknown token."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if tokenizer is None or not isinstance(unk, int):
        return []
    if unk not in tokenizer(text, add_special_tokens=False)["input_ids"]:
        return []
    out: list[str] = []
    for word in text.split():
        if unk in tokenizer(word, add_special_tokens=False)["input_ids"] and word not in out:
            out.append(word)
    return out


def check_description(nla: NLAPair, text: Any, what: str = "description") -> str:
    """``text`` if the AR can read it as words; else a :class:`DescriptionError` naming why."""
    if not isinstance(text, str):
        raise DescriptionError(f"the {what} must be a string, got {type(text).__name__}.")
    if not text.strip():
        raise DescriptionError(
            f"the {what} is empty: the AR would reconstruct a direction that names nothing. "
            "Write what the direction should mean (on the toy pair: nla_lens.toy.describe_next(word))."
        )
    ar = getattr(nla, "ar", None)
    words = unknown_words(getattr(ar, "tokenizer", None), text)
    if words:
        shown = ", ".join(repr(w) for w in words[:10])
        raise DescriptionError(
            f"the AR's tokenizer does not know {shown} in the {what} {text!r}: it would read "
            f"{'them' if len(words) != 1 else 'it'} as its unknown token and the direction would "
            "not mean the word. Use words from its vocabulary (nla.ar.tokenizer.get_vocab())."
        )
    return text
