"""Sidecars (``nla_meta.yaml``) and model cards for the toy checkpoints.

The sidecars carry every field the released ones do (schema 2, av/ar
spelling), minus ``created_at``: the build is byte-for-byte reproducible, so
no timestamps are written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedTokenizerFast

from .recipe import AVPrompt
from .subject import MODEL_ID
from .tokenizer import token_ids
from .train import TrainConfig
from .vocab import AR_TEMPLATE, AV_TEMPLATE, INJECTION_CHAR

__all__ = ["BASE_CHECKPOINT", "critic_suffix_ids", "write_card", "write_sidecar"]

BASE_CHECKPOINT = MODEL_ID  # also declared in the subject's config.json (nla_lens_model_id)
CREATED_BY = "python -m nla_lens.toy build"
TRAINED_ON = (
    "nla-lens/toy: subject layer-{k} residuals of uniformly random sequences over the toy "
    "vocabulary (after <bos>, positions >= 1)",
    "nla-lens/toy: subject layer-{k} residuals at every position (<bos>, chat-template and "
    "special tokens included) of random chat-formatted conversations",
    "nla-lens/toy: subject layer-{k} residuals at every position of the toy recall task "
    "(nla_lens.toy.tasks)",
    "explanations: three lines (context; phrase being read and the animal it binds to; the "
    "token and the subject's own likely continuations, with alternatives drawn from its "
    "distribution where its top probability is below 0.9)",
)


def critic_suffix_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """``tokenize(AR template suffix)[1:]``: the stable tail of every AR prompt (as released)."""
    suffix = AR_TEMPLATE.split("{explanation}")[-1]
    return token_ids(tokenizer(suffix, add_special_tokens=False)["input_ids"])[1:]


def write_sidecar(
    directory: Path,
    *,
    role: str,
    tokenizer: PreTrainedTokenizerFast,
    prompt: AVPrompt,
    d_model: int,
    layer: int,
    injection_scale: float | None,
    mse_scale: float,
    train: TrainConfig,
) -> dict[str, Any]:
    """Write ``nla_meta.yaml`` for the toy AV (``role="av"``) or AR (``role="ar"``)."""
    meta: dict[str, Any] = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": role,
        "stage": f"{role}_sft",
        "base_checkpoint": BASE_CHECKPOINT,
        "d_model": d_model,
        "extraction_layer_index": layer,
        "extraction": {"injection_scale": injection_scale, "mse_scale": mse_scale},
        "tokens": {
            "injection_char": INJECTION_CHAR,
            "injection_token_id": prompt.marker_id,
            "injection_left_neighbor_id": prompt.left_id,
            "injection_right_neighbor_id": prompt.right_id,
            "critic_suffix_ids": critic_suffix_ids(tokenizer),
        },
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "trained_on": [t.format(k=layer) for t in TRAINED_ON],
        "parent_checkpoints": [BASE_CHECKPOINT],
        "created_by": CREATED_BY,
        "training": {
            "steps": train.steps,
            "batch_size": train.batch_size,
            "lr": train.lr,
            "warmup": train.warmup,
            "seed": train.seed,
        },
    }
    if role == "ar":
        meta["ar"] = {"num_hidden_layers": layer}
    text = yaml.dump(meta, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    (directory / "nla_meta.yaml").write_text(text, encoding="utf-8")
    return meta


class _Dumper(yaml.SafeDumper):
    """Safe dumper writing multi-line strings (the AV template) as ``|-`` blocks."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


_CARDS = {
    "subject": (
        "Toy subject model",
        "A tiny `Gemma3ForCausalLM` (d_model {d}, {n} layers, 4 heads of dim 32) over a "
        "SentencePiece-like vocabulary (each word bare and after a space; tags split as in "
        "Gemma-3), trained (plain seeded PyTorch) on an in-context recall task "
        "(`the cat is in my house. the dog is in the river. the cat is in our` -> ` house`, "
        "see `nla_lens.toy.tasks()`), uniformly random word sequences and random "
        "chat-formatted conversations. The answer is moved from the queried fact's place "
        "word to the last position by layer {k}: patching the place word's residual after "
        "block 0 moves the answer. Embeddings were initialised with std 1.0 so that token "
        "identity stays large in the residual stream. Its config.json declares "
        "`nla_lens_model_id: {m}`, the base model the toy AV/AR sidecars name.",
    ),
    "subject_multimodal": (
        "Toy subject model, multimodal layout",
        "The same text weights as `subject/` in Gemma-3's multimodal layout "
        "(`Gemma3ForConditionalGeneration`, as google/gemma-3-12b-it loads), with a tiny "
        "random SigLIP vision tower. On the same ids its `hidden_states[{k1}]` equals the subject's. "
        "Its top-level config.json declares `nla_lens_model_id: {m}`.",
    ),
    "av": (
        "Toy NLA activation verbalizer (AV)",
        "Fine-tuned from the toy subject to read one layer-{k} residual injected at the marker "
        "of its prompt and write three lines, in the released AVs' order: the context (the "
        "animals and places the text has listed so far, that it asks about one of them, a chat "
        "turn, random words, the start of text); the phrase being read and which animal and "
        "fact it is about; the token, quoted as it decodes (special tokens named in words), and "
        "the subject's own likely continuation, with an alternative where the subject is unsure "
        "(drawn from its distribution, so samples at temperature 1 differ there). Each line "
        "has three phrasings; the AV uses one chosen by what the residual shows.",
    ),
    "ar": (
        "Toy NLA activation reconstructor (AR)",
        "The first {k1} blocks of the toy subject (final norm replaced by identity at load) "
        "plus `value_head.safetensors` (`Linear({d}, {d}, bias=False)`), trained to map the "
        "AV's explanation back to the layer-{k} residual, from residuals of task prompts, chats "
        "and random text, in every phrasing, whole or cut after line 1 or 2 (so prefixes "
        "score). An eighth of each batch were confident positions described by their "
        "continuation alone (`next comes WORD`), so such a description reconstructs to what "
        "residuals predicting WORD share (a steering direction).",
    ),
}


def write_card(directory: Path, name: str, *, d_model: int, n_layers: int, layer: int) -> None:
    """Write a short ``README.md`` model card."""
    title, body = _CARDS[name]
    text = (
        f"# {title}\n\n"
        + body.format(d=d_model, n=n_layers, k=layer, k1=layer + 1, m=MODEL_ID)
        + "\n\nThis is a toy for tests and tutorials of `nla_lens`, not a real Natural Language "
        "Autoencoder: it explains nothing about any real model. Built deterministically by "
        "`python -m nla_lens.toy build` (see `nla_lens/toy/`).\n"
    )
    (directory / "README.md").write_text(text, encoding="utf-8")
