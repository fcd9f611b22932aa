"""The toy's text and the subject's layer-K residuals on it, with per-position labels.

Three kinds of text (see ``labels.py``): the recall task (``recall.py``), chats
in Gemma-3's template with random words, and uniformly random pieces after
``<bos>``. :func:`subject_corpus` is what the subject trains on;
:func:`read_residuals` runs sequences through the trained subject and keeps, per
position, the layer-K residual, the token, the subject's top next tokens and the
label the AV's explanation is written from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast

from .labels import PositionLabel, TextKind, label_sequence
from .subject import EXTRACTION_LAYER
from .tokenizer import content_token_ids, spaced_token_ids, token_ids
from .vocab import CONFIDENT, SPECIAL_TOKENS

__all__ = [
    "TOP",
    "Residuals",
    "chat_sequence",
    "concat",
    "pad_batch",
    "random_sequences",
    "read_residuals",
    "subject_corpus",
    "task_sequence_ids",
]

TOP = 8  # next tokens kept per position (the AV names up to two of them)


@dataclass(frozen=True)
class Residuals:
    """Layer-K residuals with what each position is about.

    ``next_tokens`` is the subject's argmax next token where its probability is at
    least ``CONFIDENT``, else -1; ``top_ids`` / ``top_probs`` its top :data:`TOP`.
    """

    vectors: Tensor  # [N, d] float32
    tokens: Tensor  # [N] token id at the position
    positions: Tensor  # [N] index in the sequence (BOS = 0)
    next_tokens: Tensor  # [N]
    next_probs: Tensor  # [N] top next-token probability
    top_ids: Tensor  # [N, TOP]
    top_probs: Tensor  # [N, TOP]
    labels: tuple[PositionLabel, ...]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, rows: Tensor | Sequence[int]) -> Residuals:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return Residuals(
            self.vectors[idx], self.tokens[idx], self.positions[idx], self.next_tokens[idx],
            self.next_probs[idx], self.top_ids[idx], self.top_probs[idx],
            tuple(self.labels[int(i)] for i in idx),
        )  # fmt: skip


_TENSORS = ("vectors", "tokens", "positions", "next_tokens", "next_probs", "top_ids", "top_probs")


def concat(*parts: Residuals) -> Residuals:
    """The rows of ``parts``, in order."""
    tensors = {f: torch.cat([getattr(p, f) for p in parts]) for f in _TENSORS}
    return Residuals(**tensors, labels=tuple(label for p in parts for label in p.labels))


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids [B, T] and a mask of the real tokens (causal: padding never
    reaches a real position, so no attention mask is needed)."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq))
    return ids, torch.arange(ids.shape[1])[None, :] < lengths[:, None]


@torch.no_grad()
def read_residuals(
    subject: Gemma3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    seqs: Sequence[Sequence[int]],
    kind: TextKind,
    *,
    pick: Sequence[Sequence[int]] | None = None,
    batch_size: int = 256,
) -> Residuals:
    """Residuals at every position of ``seqs`` (or at ``pick[i]`` of sequence ``i``)."""
    rows: list[Residuals] = []
    pad = int(tokenizer.pad_token_id)
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, real = pad_batch(chunk, pad)
        out = subject(input_ids=ids, output_hidden_states=True)
        hidden = out.hidden_states[EXTRACTION_LAYER + 1].float()
        top = out.logits.float().softmax(-1).topk(TOP, dim=-1)
        if pick is None:
            keep = real
        else:
            keep = torch.zeros_like(real)
            for r, positions in enumerate(pick[start : start + batch_size]):
                keep[r, list(positions)] = True
            keep &= real
        labels = []
        for r, seq in enumerate(chunk):
            seq_labels = label_sequence(tokenizer, seq, kind)
            labels += [seq_labels[int(p)] for p in keep[r].nonzero().flatten()]
        probs, best = top.values[keep], top.indices[keep]
        rows.append(
            Residuals(
                hidden[keep],
                ids[keep],
                torch.arange(ids.shape[1]).expand_as(ids)[keep],
                torch.where(probs[:, 0] >= CONFIDENT, best[:, 0], torch.full_like(best[:, 0], -1)),
                probs[:, 0],
                best,
                probs,
                tuple(labels),
            )
        )
    return concat(*rows)


def random_sequences(
    tokenizer: PreTrainedTokenizerFast, n: int, seq_len: int, generator: torch.Generator
) -> list[list[int]]:
    """``n`` sequences of ``<bos>`` then ``seq_len`` uniformly random content pieces."""
    vocab = torch.tensor(content_token_ids(tokenizer))
    body = vocab[torch.randint(len(vocab), (n, seq_len), generator=generator)]
    return [[int(tokenizer.bos_token_id), *row] for row in body.tolist()]


def _draw(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _chance(p: float, generator: torch.Generator) -> bool:
    return bool(torch.rand(1, generator=generator) < p)


def chat_sequence(
    tokenizer: PreTrainedTokenizerFast,
    generator: torch.Generator,
    *,
    max_messages: int = 3,
    max_words: int = 12,
    p_system: float = 0.25,
    p_other: float = 0.1,
    p_eos: float = 0.1,
) -> list[int]:
    """One random conversation, tokenized as ``apply_chat_template`` does (one BOS).

    1 to ``max_messages`` alternating user/assistant turns (and a system message
    with chance ``p_system``) of 1 to ``max_words`` random words, each replaced with
    chance ``p_other`` by a special token (as a random reply would put there); a
    generation prompt after a last user turn half the time, and a final ``<eos>``
    with chance ``p_eos``.
    """
    spaced = spaced_token_ids(tokenizer)
    specials = list(range(3, len(SPECIAL_TOKENS)))  # <unk> .. image tokens

    def words() -> str:
        picked = []
        for _ in range(1 + _draw(max_words, generator)):
            pool = specials if _chance(p_other, generator) else spaced
            picked.append(pool[_draw(len(pool), generator)])
        return str(tokenizer.decode(picked))

    messages: list[dict[str, Any]] = []
    if _chance(p_system, generator):
        messages.append({"role": "system", "content": words()})
    for turn in range(1 + _draw(max_messages, generator)):
        messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": words()})
    prompt = messages[-1]["role"] == "user" and _chance(0.5, generator)
    ids = token_ids(
        tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt)
    )
    if _chance(p_eos, generator):
        ids.append(int(tokenizer.eos_token_id))
    return ids


def task_sequence_ids(tokenizer: PreTrainedTokenizerFast, generator: torch.Generator) -> list[int]:
    """One training sequence of the toy task: ``<bos>``, a prompt, its answer and ``.``."""
    from .recall import join_words, task_prompt

    prompt = task_prompt(generator)
    text = join_words([*prompt.words, prompt.answer, "."])
    return token_ids(tokenizer(text)["input_ids"])


def subject_corpus(
    tokenizer: PreTrainedTokenizerFast,
    *,
    n_task: int,
    n_random: int,
    n_chat: int,
    seq_len: int,
    generator: torch.Generator,
) -> tuple[list[list[int]], list[int]]:
    """The subject's training text, in a fixed order: task sequences, random content
    sequences after ``<bos>`` and random chat-formatted conversations, shuffled.

    Also returns, per sequence, the position of the task query's last token (the one
    the answer is predicted at), or -1 for generic text.
    """
    seqs = [task_sequence_ids(tokenizer, generator) for _ in range(n_task)]
    queries = [len(s) - 3 for s in seqs]
    seqs += random_sequences(tokenizer, n_random, seq_len, generator)
    seqs += [chat_sequence(tokenizer, generator)[: seq_len + 1] for _ in range(n_chat)]
    queries += [-1] * (n_random + n_chat)
    order = torch.randperm(len(seqs), generator=generator).tolist()
    return [seqs[i] for i in order], [queries[i] for i in order]
