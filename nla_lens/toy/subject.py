"""The toy subject model and its multimodal twin, plus residual sampling.

The subject is a tiny ``Gemma3ForCausalLM`` (trained by ``build.py`` on the toy
task, random text and chats; see ``residuals.py`` for its data). Its embeddings are
initialised with std 1.0 so that, after Gemma's sqrt(d) embedding scale, the
token's own embedding dominates the residual stream at the extraction layer
(as token identity does in real LMs), instead of being buried under the
RMS-normed sublayer outputs. head_dim is 32 (4 heads over d_model 64) because
vLLM's CPU attention rejects head_dim 16. Its config declares the hub id it
stands for (``nla_lens_model_id``, the sidecars' ``base_checkpoint``), so
nla_lens's base-model check accepts the local directory.
"""

from __future__ import annotations

import torch
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
    "MODEL_ID",
    "MODEL_ID_KEY",
    "NUM_LAYERS",
    "build_multimodal",
    "build_subject",
    "generation_config",
    "subject_config",
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
        sliding_window=256,
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
