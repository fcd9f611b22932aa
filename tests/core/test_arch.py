"""One architecture table serves Gemma-3 (plain and multimodal layouts), Qwen2 and Llama."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import yaml
from torch import nn

from nla_lens import NLA, Reconstructor, Verbalizer
from nla_lens.core.arch import arch_for, decoder_layers, embed_scale
from nla_lens.errors import UnsupportedArchitectureError
from nla_lens.toy import EXTRACTION_LAYER
from tests.helpers import tiny_configs


def test_table_lookups():
    c = tiny_configs()
    assert arch_for(c["gemma3"]).family == arch_for(c["gemma3_text"]).family == "gemma3"
    assert embed_scale(c["gemma3"]) == embed_scale(c["gemma3_text"]) == 8.0
    assert embed_scale(c["qwen2"]) == embed_scale(c["llama"]) == 1.0
    with pytest.raises(UnsupportedArchitectureError, match="gpt2.*supported model types"):
        arch_for(c["gpt2"])


@pytest.mark.parametrize("name", ["qwen2", "llama", "gemma3_text"])
def test_decoder_layers_of_each_family(name):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_configs()[name])
    assert len(decoder_layers(model)) == 3


def _as_family(toy, tmp_path, family: str, role: str, injection_scale: float | None = None):
    """A random checkpoint of another family, with the toy tokenizer and sidecar."""
    from transformers import AutoModelForCausalLM

    src = toy.av if role == "av" else toy.ar
    out = tmp_path / f"{family}-{role}"
    shutil.copytree(src, out)
    for f in out.glob("model*.safetensors"):
        f.unlink()
    from transformers import AutoTokenizer

    layers = EXTRACTION_LAYER + 1 if role == "ar" else 3  # an AR keeps blocks 0..K
    cfg = tiny_configs(len(AutoTokenizer.from_pretrained(str(src))), layers)[family]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.eos_token_id = [1]
    model.save_pretrained(str(out))
    if injection_scale is not None:
        meta = yaml.safe_load((out / "nla_meta.yaml").read_text())
        meta["extraction"]["injection_scale"] = injection_scale
        (out / "nla_meta.yaml").write_text(
            yaml.safe_dump(meta, allow_unicode=True, sort_keys=False)
        )
    return out


@pytest.mark.integration
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_unscaled_families_by_the_same_code_path(toy, tmp_path, family):
    av = Verbalizer.from_pretrained(
        _as_family(toy, tmp_path, family, "av", injection_scale=150.0), device="cpu"
    )
    ar = Reconstructor.from_pretrained(_as_family(toy, tmp_path, family, "ar"), device="cpu")
    assert isinstance(ar.backbone.norm, nn.Identity)
    assert len(ar.backbone.layers) == EXTRACTION_LAYER + 1
    v = torch.randn(2, 64)
    emb = av.prompt_embeds(v)
    table = av.model.get_input_embeddings().weight
    ids = torch.tensor(av.prompt_ids)
    pos = av.injection_position
    assert torch.allclose(emb[0, pos], v[0] * 150.0 / v[0].norm(), atol=1e-4)
    others = [i for i in range(len(ids)) if i != pos]
    assert torch.equal(emb[0, others], table[ids[others]])  # scale 1: the raw table rows
    out = NLA(av, ar).explain(v, max_new_tokens=5)
    assert len(out) == 2 and all(e.cos is not None for e in out)


@pytest.mark.integration
def test_gemma_embedding_scale_applied(nla, toy_residuals):
    av = nla.av
    emb = av.prompt_embeds(toy_residuals[0][:1])
    table = av.model.get_input_embeddings().weight
    ids = torch.tensor(av.prompt_ids)
    assert torch.allclose(emb[0, 0], table[ids[0]] * math.sqrt(64), atol=1e-5)
    assert emb[0, av.injection_position].norm() == pytest.approx(av.meta.injection_scale, rel=1e-5)


@pytest.mark.integration
def test_multimodal_layout_av_and_ar_match_plain(toy, tmp_path, nla, toy_residuals):
    """Gemma-3-12B-it loads as Gemma3ForConditionalGeneration: the same AV/AR weights in
    that layout must give the same explanations and scores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla_lens.toy.subject import build_multimodal

    dirs = {}
    for role, src in (("av", toy.av), ("ar", toy.ar)):
        tok = AutoTokenizer.from_pretrained(str(src))
        plain = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
        mm = build_multimodal(plain, tok, seed=0)
        out = tmp_path / f"mm-{role}"
        shutil.copytree(src, out)
        for f in out.glob("model*.safetensors"):
            f.unlink()
        mm.save_pretrained(str(out))
        dirs[role] = out
    mm_pair = NLA.from_pretrained(dirs["av"], dirs["ar"], device="cpu")
    import json

    assert json.loads((dirs["av"] / "config.json").read_text())["architectures"] == [
        "Gemma3ForConditionalGeneration"
    ]
    # The AV decodes through a text-only view of the wrapper (no vision tower).
    assert type(mm_pair.av.model).__name__ == "Gemma3ForCausalLM"
    assert not any("vision" in n for n, _ in mm_pair.av.model.named_parameters())
    v = toy_residuals[0][:6]
    a, b = nla.explain(v, max_new_tokens=20), mm_pair.explain(v, max_new_tokens=20)
    assert [e.text for e in a] == [e.text for e in b]
    assert [e.cos for e in a] == pytest.approx([e.cos for e in b], abs=1e-5)
