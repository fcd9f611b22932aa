"""The memory plan: parameter counts of released pairs from their published dims, computed by
hand here, equal what nla_lens.plan counts on the meta device (no weights are loaded)."""

from __future__ import annotations

import pytest

from nla_lens.core.plan import parse_bytes, plan
from nla_lens.errors import NLAError


def gemma3_12b_config(layers: int = 48):
    """google/gemma-3-12b-it's published dims (multimodal wrapper, SigLIP vision tower)."""
    from transformers import Gemma3Config

    text = dict(
        vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=layers,
        num_attention_heads=16, num_key_value_heads=8, head_dim=256, sliding_window=1024,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * (layers // 6)
        + ["sliding_attention"] * (layers % 6),
    )  # fmt: skip
    vision = dict(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
        image_size=896, patch_size=14, num_channels=3, vision_use_head=False,
    )  # fmt: skip
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256)


def qwen25_7b_config(layers: int = 28):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers,
        num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False,
    )  # fmt: skip


def gemma_text_by_hand(layers: int) -> int:
    d, ff, h, kv, hd, vocab = 3840, 15360, 16, 8, 256, 262208
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d + 2 * hd  # q, k, v, o, q_norm, k_norm
    block = attn + 3 * d * ff + 4 * d  # gate, up, down; four norms
    return vocab * d + layers * block + d  # tied embedding/LM head, final norm


def siglip_by_hand() -> int:
    d, ff, layers, patches = 1152, 4304, 27, (896 // 14) ** 2
    embed = 3 * 14 * 14 * d + d + patches * d
    block = 2 * d + 4 * (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
    projector = d * 3840 + d  # mm_input_projection_weight, mm_soft_emb_norm
    return embed + layers * block + 2 * d + projector


def qwen_by_hand(layers: int, lm_head: bool = True) -> int:
    d, ff, h, kv, vocab = 3584, 18944, 28, 4, 152064
    hd = d // h
    attn = (d * d + d) + 2 * (d * kv * hd + kv * hd) + d * d  # q, k, v with biases; o
    block = attn + 3 * d * ff + 2 * d
    return vocab * d * (2 if lm_head else 1) + layers * block + d


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    out = {}
    for name, cfg in (
        ("gemma-subject", gemma3_12b_config()),
        ("gemma-av", gemma3_12b_config()),
        ("gemma-ar", gemma3_12b_config(layers=33)),
        ("qwen-subject", qwen25_7b_config()),
        ("qwen-av", qwen25_7b_config()),
        ("qwen-ar", qwen25_7b_config(layers=21)),
    ):
        cfg.save_pretrained(root / name)
        out[name] = root / name
    return out


def test_gemma3_12b_counts_by_hand(dirs) -> None:
    p = plan(dirs["gemma-av"], dirs["gemma-ar"], subject=dirs["gemma-subject"], gpu_memory="80GB")
    subject, av, ar = p.models
    assert subject.params == gemma_text_by_hand(48) + siglip_by_hand()
    assert av.params == gemma_text_by_hand(48)  # the vision tower stays off the GPU
    assert ar.params == gemma_text_by_hand(33) - 3840 + 3840 * 3840  # no final norm; value head
    assert subject.params == 12_187_325_040  # gemma-3-12b-it's safetensors index: 12.19B
    assert av.bytes("bf16") == 2 * av.params
    assert av.bytes("nf4") < av.bytes("4bit") < av.bytes("int8") < av.bytes("bf16")
    # "4bit" keeps v_proj (3840 -> 8 x 256) and down_proj (15360 -> 3840) at int8, by hand
    assert (av.kept, av.kept_rows) == (48 * (3840 * 2048 + 15360 * 3840), 48 * (2048 + 3840))
    nf4_kept = av.kept // 2 + 4 * (av.kept // 64)  # what NF4 would have stored for them
    assert av.bytes("4bit") - av.bytes("nf4") == av.kept + 4 * av.kept_rows - nf4_kept
    # KV: 48 layers x 8 heads x 256 x (K and V) x 2 bytes per token
    assert av.kv_bytes_per_token == 48 * 8 * 256 * 2 * 2
    assert p.kv_cache == av.kv_bytes_per_token * 64 * 310
    # weights at bf16 are 64.7 GB (the README's "about 65 GB"): one 80 GB GPU holds them and
    # 16 explanations' KV cache, but 64 explanations of 310 tokens (7.8 GB) need int8 somewhere
    assert not p.fits(("bf16", "bf16", "bf16")) and p.fits(("bf16", "bf16", "int8"))
    p = plan(dirs["gemma-av"], dirs["gemma-ar"], subject=dirs["gemma-subject"], batch=16)
    assert sum(m.bytes("bf16") for m in p.models) == pytest.approx(64.7e9, rel=1e-3)
    assert p.fits(("bf16", "bf16", "bf16"))
    small = plan(
        dirs["gemma-av"], dirs["gemma-ar"], subject=dirs["gemma-subject"], gpu_memory="24GB"
    )
    assert small.best() is None  # not even 4-bit everywhere (25 GB + KV) fits 24 GB
    text = p.to_text()
    assert "fits" in text and "most precise that fits: bf16 / bf16 / bf16" in text
    assert "NLA.from_pretrained(av, ar, quantization=None)" in text  # the calls that load it
    assert p.load_code(("4bit", "4bit", "int8")) == (
        "load_subject(subject, quantization='4bit'); "
        "NLA.from_pretrained(av, ar, quantization='4bit', ar_quantization='int8')"
    )
    assert p.load_code(("int8", "4bit", "bf16")).endswith("ar_quantization='none')")


def test_qwen25_7b_counts_by_hand(dirs) -> None:
    p = plan(dirs["qwen-av"], dirs["qwen-ar"], subject=dirs["qwen-subject"], gpu_memory="24GB")
    subject, av, ar = p.models
    assert subject.params == av.params == qwen_by_hand(28)
    assert 7.6e9 < subject.params < 7.65e9  # published: 7.61B
    assert ar.params == qwen_by_hand(21, lm_head=False) - 3584 + 3584 * 3584
    best = p.best()
    assert best is not None and "bf16" not in best[:2]  # 3 x 15 GB at bf16 does not fit 24 GB


def test_bad_plan_inputs(dirs, tmp_path) -> None:
    with pytest.raises(NLAError, match="not an amount of memory"):
        plan(dirs["qwen-av"], gpu_memory="lots")
    with pytest.raises(NLAError, match="cannot read its config.json"):
        plan(tmp_path)
    assert parse_bytes("80GB") == 80 * 10**9 and parse_bytes("24GiB") == 24 * 2**30


def test_cli_plan(dirs, capsys) -> None:
    from nla_lens.cli import main

    code = main(["plan", "--av", str(dirs["qwen-av"]), "--ar", str(dirs["qwen-ar"]),
                 "--subject", str(dirs["qwen-subject"]), "--gpu-memory", "80GB"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "most precise that fits: bf16 / bf16 / bf16" in out
    assert f"{7_615_616_512:,}" in out  # Qwen2.5-7B: 7.62B parameters
    assert main(["plan", "--av", str(dirs["qwen-av"]), "--gpu-memory", "12GB"]) == 0
    assert main(["plan", "--av", str(dirs["qwen-av"]), "--gpu-memory", "2GB"]) == 1
    assert main(["plan", "--av", str(dirs["qwen-av"]), "--gpu-memory", "lots"]) == 2
