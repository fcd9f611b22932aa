"""The toy subject model and its multimodal twin, plus residual sampling.

The subject is a tiny untrained ``Gemma3ForCausalLM``. Its embeddings are
initialised with std 1.0 so that, after Gemma's sqrt(d) embedding scale, the
token's own embedding dominates the residual stream at the extraction layer
(as token identity does in real LMs), instead of being buried under the
RMS-normed sublayer outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from .tokenizer import MODEL_MAX_LENGTH, token_id
from .vocab import BOI_TOKEN, END_OF_TURN, EOI_TOKEN, IMAGE_TOKEN

__all__ = [
    "D_MODEL",
    "EXTRACTION_LAYER",
    "NUM_LAYERS",
    "Residuals",
    "build_multimodal",
    "build_subject",
    "generation_config",
    "sample_residuals",
    "subject_config",
]

D_MODEL = 64
NUM_LAYERS = 4
EMBED_INIT_STD = 1.0


def subject_config(tokenizer: PreTrainedTokenizerFast) -> Gemma3TextConfig:
    """The text config shared by the subject, the AV and (truncated) the AR."""
    return Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
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
    model = Gemma3ForCausalLM(subject_config(tokenizer))
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
    model = Gemma3ForConditionalGeneration(config)
    model.model.language_model.load_state_dict(subject.model.state_dict(), strict=True)
    model.tie_weights()
    model.generation_config = generation_config(tokenizer)
    return model.eval()


@dataclass(frozen=True)
class Residuals:
    """Layer-K residuals of the subject with the token read at each position."""

    vectors: Tensor  # [N, d] float32
    tokens: Tensor  # [N] token id at the position
    positions: Tensor  # [N] index in the sequence (BOS = 0)


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
    batch_size: int = 256,
) -> Residuals:
    """Run random content sequences (after BOS) through the subject; read ``hidden_states[K+1]``.

    Positions are taken from index 2 on. ``positions_per_sequence=None`` keeps
    every position >= 2; otherwise that many are drawn per sequence at random.
    """
    vocab = torch.tensor(content_ids)
    vecs: list[Tensor] = []
    toks: list[Tensor] = []
    poss: list[Tensor] = []
    for start in range(0, n_sequences, batch_size):
        b = min(batch_size, n_sequences - start)
        body = vocab[torch.randint(len(content_ids), (b, seq_len), generator=generator)]
        ids = torch.cat([torch.full((b, 1), bos_id), body], dim=1)
        hidden = subject(input_ids=ids, output_hidden_states=True).hidden_states[
            EXTRACTION_LAYER + 1
        ]
        if positions_per_sequence is None:
            pos = torch.arange(2, seq_len + 1).expand(b, -1)
        else:
            pos = torch.randint(2, seq_len + 1, (b, positions_per_sequence), generator=generator)
        rows = torch.arange(b)[:, None].expand_as(pos)
        vecs.append(hidden[rows, pos].reshape(-1, hidden.shape[-1]).float())
        toks.append(ids[rows, pos].reshape(-1))
        poss.append(pos.reshape(-1))
    return Residuals(torch.cat(vecs), torch.cat(toks), torch.cat(poss))
