"""The one module that builds the tiny models the tests use (never the network).

- tiny Gemma-3 subjects in both layouts with a small word-level tokenizer
  (:func:`build_tiny`), and how to load them in each framework;
- a tiny random Gemma-3 causal LM with the toy tokenizer (:func:`build_tiny_gemma3`),
  and that model dressed as the toy AV (:func:`build_standin_av`);
- tiny configs of every architecture family (:func:`tiny_configs`).

The capture tests' subject is the shipped toy checkpoint pair ``nla_lens/toy/checkpoints/
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
    or Path(__file__).resolve().parents[1] / "nla_lens" / "toy" / "checkpoints"
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


def tiny_configs(vocab_size: int = 401, layers: int = 3):
    """Small configs of every family the architecture table knows (and one it does not)."""
    from transformers import Gemma3Config, Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen2Config

    small = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
    )
    return {
        "gemma3_text": Gemma3TextConfig(head_dim=16, **small),
        "gemma3": Gemma3Config(text_config=Gemma3TextConfig(head_dim=16, **small).to_dict()),
        "qwen2": Qwen2Config(**small),
        "llama": LlamaConfig(**small),
        "gpt2": GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=401),
    }
