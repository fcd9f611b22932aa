"""The toy subject model and its multimodal twin, plus residual sampling.

The subject is a tiny untrained ``Gemma3ForCausalLM``. Its embeddings are
initialised with std 1.0 so that, after Gemma's sqrt(d) embedding scale, the
token's own embedding dominates the residual stream at the extraction layer
(as token identity does in real LMs), instead of being buried under the
RMS-normed sublayer outputs. head_dim is 32 (4 heads over d_model 64) because
vLLM's CPU attention rejects head_dim 16. Its config declares the hub id it
stands for (``nla_lens_model_id``, the sidecars' ``base_checkpoint``), so
nla_lens's base-model check accepts the local directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import (
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GenerationConfig,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

from . import EXTRACTION_LAYER
from .tokenizer import MODEL_MAX_LENGTH, token_id, token_ids
from .vocab import BOI_TOKEN, CONFIDENT, END_OF_TURN, EOI_TOKEN, IMAGE_TOKEN

__all__ = [
    "D_MODEL",
    "EXTRACTION_LAYER",
    "MODEL_ID",
    "MODEL_ID_KEY",
    "NUM_LAYERS",
    "Residuals",
    "build_multimodal",
    "build_subject",
    "chat_sequence",
    "generation_config",
    "pad_batch",
    "sample_chat_residuals",
    "sample_residuals",
    "sequence_residuals",
    "subject_config",
    "subject_corpus",
    "task_sequence_ids",
]

D_MODEL = 64
NUM_LAYERS = 5
HEAD_DIM = 32  # vLLM's CPU attention rejects 16
EMBED_INIT_STD = 1.0
#: The hub id the toy subject declares in its config.json (the sidecars' base_checkpoint),
#: under the key nla_lens's base-model check reads (nla_lens.subjects.guards.MODEL_ID_KEY).
MODEL_ID = "nla-lens/toy-gemma3-subject"
MODEL_ID_KEY = "nla_lens_model_id"


def subject_config(tokenizer: PreTrainedTokenizerFast) -> Gemma3TextConfig:
    """The text config shared by the subject, the AV and (truncated) the AR."""
    return Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        query_pre_attn_scalar=HEAD_DIM,
        sliding_window=128,
        layer_types=["sliding_attention"] * (NUM_LAYERS - 1) + ["full_attention"],
        max_position_embeddings=MODEL_MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )


def generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Stop on ``<eos>`` or ``<end_of_turn>``, as Gemma-3 instruct checkpoints do."""
    eot = token_id(tokenizer, END_OF_TURN)
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, eot],
        pad_token_id=tokenizer.pad_token_id,
    )


def build_subject(tokenizer: PreTrainedTokenizerFast, seed: int) -> Gemma3ForCausalLM:
    """A randomly initialised subject whose layer-K residual carries token identity."""
    torch.manual_seed(seed)
    config = subject_config(tokenizer)
    setattr(config, MODEL_ID_KEY, MODEL_ID)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, EMBED_INIT_STD)
    model.generation_config = generation_config(tokenizer)
    return model.eval()


def build_multimodal(
    subject: Gemma3ForCausalLM, tokenizer: PreTrainedTokenizerFast, seed: int
) -> Gemma3ForConditionalGeneration:
    """The same text weights in Gemma-3's multimodal layout (as google/gemma-3-12b-it loads)."""
    torch.manual_seed(seed)
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_channels=3,
        image_size=16,
        patch_size=8,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=subject.config.to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        boi_token_index=token_id(tokenizer, BOI_TOKEN),
        eoi_token_index=token_id(tokenizer, EOI_TOKEN),
        image_token_index=token_id(tokenizer, IMAGE_TOKEN),
        tie_word_embeddings=True,
    )
    setattr(config, MODEL_ID_KEY, MODEL_ID)  # the top-level config is the one a check reads
    model = Gemma3ForConditionalGeneration(config)
    model.model.language_model.load_state_dict(subject.model.state_dict(), strict=True)
    model.tie_weights()
    model.generation_config = generation_config(tokenizer)
    return model.eval()


@dataclass(frozen=True)
class Residuals:
    """Layer-K residuals of the subject with the token read at each position and the
    subject's own next-token prediction from that run."""

    vectors: Tensor  # [N, d] float32
    tokens: Tensor  # [N] token id at the position
    positions: Tensor  # [N] index in the sequence (BOS = 0)
    next_tokens: Tensor  # [N] the subject's argmax next token where confident, else -1
    next_probs: Tensor  # [N] the subject's top next-token probability


def _read(subject: Gemma3ForCausalLM, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(layer-K residuals, argmax next token, its probability), each [B, T, ...]."""
    out = subject(input_ids=ids, output_hidden_states=True)
    probs = out.logits.float().softmax(-1).max(-1)
    return out.hidden_states[EXTRACTION_LAYER + 1], probs.indices, probs.values


def _confident(argmax: Tensor, prob: Tensor) -> Tensor:
    return torch.where(prob >= CONFIDENT, argmax, torch.full_like(argmax, -1))


@torch.no_grad()
def sample_residuals(
    subject: Gemma3ForCausalLM,
    content_ids: list[int],
    bos_id: int,
    *,
    n_sequences: int,
    seq_len: int,
    generator: torch.Generator,
    positions_per_sequence: int | None = None,
    first_position: int = 2,
    batch_size: int = 256,
) -> Residuals:
    """Run random content sequences (after BOS) through the subject; read ``hidden_states[K+1]``.

    Positions are taken from index ``first_position`` on. ``positions_per_sequence=None``
    keeps every such position; otherwise that many are drawn per sequence at random.
    """
    vocab = torch.tensor(content_ids)
    vecs: list[Tensor] = []
    toks: list[Tensor] = []
    poss: list[Tensor] = []
    nxts: list[Tensor] = []
    probs: list[Tensor] = []
    for start in range(0, n_sequences, batch_size):
        b = min(batch_size, n_sequences - start)
        body = vocab[torch.randint(len(content_ids), (b, seq_len), generator=generator)]
        ids = torch.cat([torch.full((b, 1), bos_id), body], dim=1)
        hidden, argmax, prob = _read(subject, ids)
        if positions_per_sequence is None:
            pos = torch.arange(first_position, seq_len + 1).expand(b, -1)
        else:
            pos = torch.randint(
                first_position, seq_len + 1, (b, positions_per_sequence), generator=generator
            )
        rows = torch.arange(b)[:, None].expand_as(pos)
        vecs.append(hidden[rows, pos].reshape(-1, hidden.shape[-1]).float())
        toks.append(ids[rows, pos].reshape(-1))
        poss.append(pos.reshape(-1))
        nxts.append(_confident(argmax[rows, pos], prob[rows, pos]).reshape(-1))
        probs.append(prob[rows, pos].reshape(-1))
    return Residuals(
        torch.cat(vecs), torch.cat(toks), torch.cat(poss), torch.cat(nxts), torch.cat(probs)
    )


def _draw(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _chance(p: float, generator: torch.Generator) -> bool:
    return bool(torch.rand(1, generator=generator) < p)


def chat_sequence(
    tokenizer: PreTrainedTokenizerFast,
    content_ids: Sequence[int],
    other_ids: Sequence[int],
    generator: torch.Generator,
    *,
    max_messages: int = 3,
    max_words: int = 12,
    p_system: float = 0.25,
    p_other: float = 0.15,
    p_eos: float = 0.1,
) -> list[int]:
    """One random conversation, tokenized as ``apply_chat_template`` does (one BOS).

    1 to ``max_messages`` alternating user/assistant turns (and a system message
    with chance ``p_system``) of 1 to ``max_words`` random content tokens, each
    replaced with chance ``p_other`` by one of ``other_ids`` (special tokens and
    tags, as a random reply or an unknown word would put there); a generation
    prompt after a last user turn half the time, and a final ``<eos>`` with
    chance ``p_eos``.
    """

    def words() -> str:
        picked = []
        for _ in range(1 + _draw(max_words, generator)):
            pool = other_ids if _chance(p_other, generator) else content_ids
            picked.append(pool[_draw(len(pool), generator)])
        return " ".join(str(tokenizer.convert_ids_to_tokens(i)) for i in picked)

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


@torch.no_grad()
def sample_chat_residuals(
    subject: Gemma3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    content_ids: Sequence[int],
    other_ids: Sequence[int],
    *,
    n_sequences: int,
    generator: torch.Generator,
    batch_size: int = 256,
) -> Residuals:
    """Layer-K residuals at EVERY position (BOS, chat-template and special tokens
    included) of random conversations from :func:`chat_sequence`.

    Rows are right-padded (causal attention: padding never reaches a real position).
    """
    seqs = [chat_sequence(tokenizer, content_ids, other_ids, generator) for _ in range(n_sequences)]
    return sequence_residuals(subject, seqs, int(tokenizer.pad_token_id), batch_size=batch_size)


@torch.no_grad()
def sequence_residuals(
    subject: Gemma3ForCausalLM,
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    *,
    batch_size: int = 256,
) -> Residuals:
    """Layer-K residuals at every position of ``seqs`` (right-padded batches)."""
    vecs: list[Tensor] = []
    toks: list[Tensor] = []
    poss: list[Tensor] = []
    nxts: list[Tensor] = []
    probs: list[Tensor] = []
    for start in range(0, len(seqs), batch_size):
        ids, real = pad_batch(seqs[start : start + batch_size], pad_id)
        hidden, argmax, prob = _read(subject, ids)
        vecs.append(hidden[real].float())
        toks.append(ids[real])
        poss.append(torch.arange(ids.shape[1]).expand_as(ids)[real])
        nxts.append(_confident(argmax[real], prob[real]))
        probs.append(prob[real])
    return Residuals(
        torch.cat(vecs), torch.cat(toks), torch.cat(poss), torch.cat(nxts), torch.cat(probs)
    )


def task_sequence_ids(tokenizer: PreTrainedTokenizerFast, generator: torch.Generator) -> list[int]:
    """One training sequence of the toy task: ``<bos>``, a prompt, its answer and ``.``."""
    from .recall import task_prompt

    prompt = task_prompt(generator)
    words = [*prompt.words, prompt.answer, "."]
    ids: Any = tokenizer.convert_tokens_to_ids(words)
    return [int(tokenizer.bos_token_id), *ids]


def subject_corpus(
    tokenizer: PreTrainedTokenizerFast,
    content_ids: Sequence[int],
    other_ids: Sequence[int],
    *,
    n_task: int,
    n_random: int,
    n_chat: int,
    seq_len: int,
    generator: torch.Generator,
) -> tuple[list[list[int]], list[int]]:
    """The subject's training text, in a fixed order: task sequences, uniformly random
    content sequences after ``<bos>`` and random chat-formatted conversations, shuffled.

    Also returns, per sequence, the position of the task query's last token (the one
    the answer is predicted at), or -1 for generic text.
    """
    vocab = torch.tensor(list(content_ids))
    seqs = [task_sequence_ids(tokenizer, generator) for _ in range(n_task)]
    queries = [len(s) - 3 for s in seqs]
    body = vocab[torch.randint(len(vocab), (n_random, seq_len), generator=generator)]
    seqs += [[int(tokenizer.bos_token_id), *row] for row in body.tolist()]
    seqs += [
        chat_sequence(tokenizer, content_ids, other_ids, generator)[: seq_len + 1]
        for _ in range(n_chat)
    ]
    queries += [-1] * (n_random + n_chat)
    order = torch.randperm(len(seqs), generator=generator).tolist()
    return [seqs[i] for i in order], [queries[i] for i in order]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids [B, T] and a mask of the real tokens (causal: padding never
    reaches a real position, so no attention mask is needed)."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq))
    return ids, torch.arange(ids.shape[1])[None, :] < lengths[:, None]
