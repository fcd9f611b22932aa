"""A tiny random Gemma-3 causal LM with the toy word-level tokenizer, built on the fly.

A stand-in AV for wire tests that need only "a model that decodes from
embeddings" (not a trained NLA): hidden 64, 2 layers.
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_gemma3(
    out: str | Path,
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    max_shard_size: str | None = None,
) -> Path:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from nla_lens.toy.tokenizer import build_tokenizer

    out = Path(out)
    tok = build_tokenizer()
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=32,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.2,  # well-separated logits: no greedy near-ties
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg).eval()
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(str(out), **kwargs)
    tok.save_pretrained(str(out))
    return out


def build_standin_av(out: str | Path, toy_av: str | Path, *, seed: int = 0) -> Path:
    """The tiny random Gemma-3 (head_dim 32) dressed as the toy AV: the toy AV's
    sidecar, tokenizer and generation config. An untrained NLA AV that engines
    which reject the toy's head_dim 16 (vLLM's CPU attention) can serve."""
    import shutil

    out = build_tiny_gemma3(out, seed=seed)
    for name in (
        "nla_meta.yaml",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ):
        src = Path(toy_av) / name
        if src.is_file():
            shutil.copy(src, out / name)
    return out
