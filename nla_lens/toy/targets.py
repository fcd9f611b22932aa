"""Training texts of the toy AV and AR, from residual labels (with token-id caches).

The AV learns one canonical phrasing per position (``describe.canonical_phrasing``)
with the subject's uncertain continuations drawn afresh each time; the AR learns
every phrasing, prefixes (line 1, lines 1-2) and continuation-only descriptions.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from .describe import continuation_words, describe, describe_next, lines
from .labels import piece_text
from .recipe import ar_prompt_ids
from .residuals import Residuals
from .tokenizer import token_id, token_ids
from .vocab import END_OF_TURN

__all__ = ["EXPLANATION_CLOSE", "EXPLANATION_OPEN", "Targets", "next_name"]

EXPLANATION_OPEN = "<explanation>"
EXPLANATION_CLOSE = "</explanation>"
#: Chance that the AR sees only line 1, or only lines 1-2, of an explanation.
PREFIX_CHANCE = (0.2, 0.15)


def next_name(tokenizer: PreTrainedTokenizerFast, token: int) -> str:
    """How line 3 names a continuation: the word without its space, or a special's name."""
    text, _ = piece_text(tokenizer, token)
    return text.strip() or "space"


class Targets:
    """Texts and token ids for the AV's and the AR's training rows (cached by text)."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self._eot = token_id(tokenizer, END_OF_TURN)
        self._av: dict[str, list[int]] = {}
        self._ar: dict[str, list[int]] = {}
        self._names: dict[int, str] = {}

    def _name(self, token: int) -> str:
        if token not in self._names:
            self._names[token] = next_name(self.tokenizer, token)
        return self._names[token]

    def continuations(
        self, data: Residuals, i: int, gen: torch.Generator | None
    ) -> tuple[str, ...]:
        words = [self._name(int(t)) for t in data.top_ids[i].tolist()]
        return continuation_words(words, data.top_probs[i].tolist(), gen)

    def canonical(self, data: Residuals, i: int, gen: torch.Generator | None = None) -> str:
        """The AV's explanation of row ``i`` (runners-up in order without ``gen``)."""
        return describe(
            data.labels[i], int(data.tokens[i]), self.continuations(data, i, gen),
            float(data.top_probs[i, 0]),
        )  # fmt: skip

    def av_ids(self, data: Residuals, i: int, gen: torch.Generator) -> list[int]:
        text = self.canonical(data, i, gen)
        if text not in self._av:
            full = EXPLANATION_OPEN + text + EXPLANATION_CLOSE
            ids = token_ids(self.tokenizer(full, add_special_tokens=False)["input_ids"])
            self._av[text] = [*ids, self._eot]
        return self._av[text]

    def ar_text(self, data: Residuals, i: int, gen: torch.Generator) -> str:
        """Row ``i`` in a random phrasing per line, whole or cut after line 1 or 2."""
        phrasing = tuple(int(x) for x in torch.randint(3, (3,), generator=gen))
        parts = lines(
            data.labels[i], self.continuations(data, i, gen), float(data.top_probs[i, 0]),
            (phrasing[0], phrasing[1], phrasing[2]),
        )  # fmt: skip
        u = float(torch.rand(1, generator=gen))
        keep = 1 if u < PREFIX_CHANCE[0] else 2 if u < sum(PREFIX_CHANCE) else 3
        return "\n".join(parts[:keep])

    def next_only_text(self, data: Residuals, i: int, gen: torch.Generator) -> str:
        phrasing = int(torch.randint(3, (1,), generator=gen))
        return describe_next(self._name(int(data.top_ids[i, 0])), phrasing)

    def ar_prompt(self, text: str) -> list[int]:
        if text not in self._ar:
            self._ar[text] = ar_prompt_ids(self.tokenizer, text)
        return self._ar[text]
