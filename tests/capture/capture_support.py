"""Helpers for the residual-capture tests: tiny Gemma-3 subjects in both layouts.

The subject is the shipped toy checkpoint pair ``nla_lens/toy/checkpoints/
{subject,subject_multimodal}`` when both exist, else a tiny model built here from
configs (see :func:`build_tiny`): a word-level tokenizer with a Gemma-style chat
template (``{{ bos_token }}`` first) and a post-processor adding one BOS, a
4-block ``Gemma3ForCausalLM`` (d_model 64), and the same weights in the
multimodal layout (``Gemma3ForConditionalGeneration``, text weights under
``model.language_model.*``, a tiny SigLIP vision tower).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

LAYOUTS = ("plain", "multimodal")
# the shipped toy checkpoints; NLA_CAPTURE_TEST_SUBJECTS=<dir> points at another build of them
_TOY = Path(
    os.environ.get("NLA_CAPTURE_TEST_SUBJECTS")
    or Path(__file__).resolve().parents[2] / "nla_lens" / "toy" / "checkpoints"
)
TOY_DIRS = {"plain": _TOY / "subject", "multimodal": _TOY / "subject_multimodal"}

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
WORDS = (
    "the a an of to and in is was it that he she they we you i on for with as at by this from "
    "or be are not but have has had cat dog sat mat red blue green sky sun moon paris france "
    "capital city river tree house car road what who where when why how hello world user model "
    "yes no one two three four five six seven eight nine ten"
).split()
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
TEXT = "the cat sat on the mat . the dog sat on the red mat and the sun was in the sky"


def make_tokenizer(vocab_size: int = 297):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in [*WORDS, *".,?!:;'\"()"]:
        vocab.setdefault(w, len(vocab))
    i = 0
    while len(vocab) < vocab_size:
        vocab[f"w{i}"] = len(vocab)
        i += 1
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny(root: Path, seed: int = 0) -> dict[str, Path]:
    """Save the tiny subject in both layouts under ``root``; return {layout: dir}."""
    from transformers import (
        Gemma3Config,
        Gemma3ForCausalLM,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    tok = make_tokenizer()
    vocab = 300  # the tokenizer's 297 + the multimodal image / begin / end-of-image ids
    cfg = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=8,
        query_pre_attn_scalar=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    plain = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm gains, so weight folding would show
        for name, param in plain.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.3)
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    mm_cfg = Gemma3Config(
        text_config=cfg.to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        image_token_index=vocab - 3,
        boi_token_index=vocab - 2,
        eoi_token_index=vocab - 1,
    )
    mm = Gemma3ForConditionalGeneration(mm_cfg).eval()
    text_sd = {
        k.removeprefix("model."): v for k, v in plain.state_dict().items() if k.startswith("model.")
    }
    mm.model.language_model.load_state_dict(text_sd, strict=True)
    with torch.no_grad():
        mm.lm_head.weight.copy_(plain.lm_head.weight)
    dirs = {"plain": root / "tiny-gemma3", "multimodal": root / "tiny-gemma3-mm"}
    plain.save_pretrained(dirs["plain"])
    mm.save_pretrained(dirs["multimodal"])
    for d in dirs.values():
        tok.save_pretrained(d)
    return dirs


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a64 - b64).norm() / b64.norm())


def load_hf(path: Path):
    from transformers import AutoConfig, Gemma3ForCausalLM, Gemma3ForConditionalGeneration

    config = AutoConfig.from_pretrained(path)
    cls = Gemma3ForConditionalGeneration if hasattr(config, "text_config") else Gemma3ForCausalLM
    # eager, as TransformerBridge forces: sdpa vs eager alone drifts ~1e-6 in fp32
    return cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def boot_from_dir(path: Path):
    """``TransformerBridge.boot_transformers`` from a local directory, offline, no processing."""
    from transformer_lens.model_bridge import TransformerBridge

    from nla_lens.subjects.bridge import _no_torchvision_autoinstall

    with _no_torchvision_autoinstall():
        return TransformerBridge.boot_transformers(str(path), device="cpu", dtype=torch.float32)


def wrap_nnsight(hf, tok):
    from nnsight import TransformersModel

    return TransformersModel(hf, task="text-generation", tokenizer=tok)
