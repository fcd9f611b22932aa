"""Bad input gets an NLAError subclass naming the problem and the fix."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import yaml

from nla_lens import NLA, Reconstructor, Verbalizer
from nla_lens.errors import (
    CheckpointNotFoundError,
    MissingValueHeadError,
    NLAError,
    PairMismatchError,
    RoleMismatchError,
    TokenizerDriftError,
    VectorError,
)

pytestmark = pytest.mark.integration


def edited_copy(src, dst, edit):
    shutil.copytree(src, dst)
    meta = yaml.safe_load((dst / "nla_meta.yaml").read_text())
    edit(meta)
    (dst / "nla_meta.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    return dst


@pytest.mark.parametrize(
    ("vector", "match"),
    [
        (torch.ones(63), "width 63.*d_model=64"),
        (torch.full((64,), math.nan), "NaN or infinite"),
        (torch.full((64,), math.inf), "NaN or infinite"),
        (torch.zeros(64), "all zero"),
    ],
)
def test_bad_vectors_through_explain(nla, vector, match):
    with pytest.raises(VectorError, match=match) as info:
        nla.explain(vector)
    assert isinstance(info.value, NLAError)


def test_marker_id_drift(toy, tmp_path):
    bad = edited_copy(toy.av, tmp_path / "av", lambda m: m["tokens"].update(injection_token_id=5))
    with pytest.raises(TokenizerDriftError, match="tokenizer drift.*encodes to"):
        Verbalizer.from_pretrained(bad, device="cpu")


@pytest.mark.parametrize("side", ["injection_left_neighbor_id", "injection_right_neighbor_id"])
def test_neighbour_drift(toy, tmp_path, side):
    bad = edited_copy(toy.av, tmp_path / "av", lambda m: m["tokens"].update({side: 7}))
    with pytest.raises(TokenizerDriftError, match="neighbour drift"):
        Verbalizer.from_pretrained(bad, device="cpu")


def test_template_drift_duplicate_marker(toy, tmp_path):
    def edit(m):
        # a second concept block: the marker is the bare piece only between '>' and '</'
        # (" {injection_char}" would be the spaced piece, another token, not the marker)
        m["prompt_templates"]["av"] += "\n<concept>{injection_char}</concept>"

    bad = edited_copy(toy.av, tmp_path / "av", edit)
    with pytest.raises(TokenizerDriftError, match="occurs 2 times"):
        Verbalizer.from_pretrained(bad, device="cpu")


def test_av_passed_as_ar(toy):
    with pytest.raises(RoleMismatchError, match="swap the AV and AR"):
        Reconstructor.from_pretrained(toy.av, device="cpu")
    with pytest.raises(RoleMismatchError):
        NLA.from_pretrained(toy.av, toy.av, device="cpu")


def test_ar_passed_as_av(toy):
    with pytest.raises(RoleMismatchError, match="swap the AV and AR"):
        Verbalizer.from_pretrained(toy.ar, device="cpu")
    with pytest.raises(RoleMismatchError):
        NLA.from_pretrained(toy.ar, toy.av, device="cpu")


def test_ar_without_value_head(toy, tmp_path):
    bad = tmp_path / "ar"
    shutil.copytree(toy.ar, bad)
    (bad / "value_head.safetensors").unlink()
    with pytest.raises(MissingValueHeadError, match="value_head.safetensors"):
        Reconstructor.from_pretrained(bad, device="cpu")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        NLA.from_pretrained(tmp_path / "nope", device="cpu")
    with pytest.raises(CheckpointNotFoundError, match="not in the local cache"):
        Verbalizer.from_pretrained("kitft/definitely-not-cached-av", device="cpu")


def test_av_and_ar_with_different_d_model(toy, tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    small = tmp_path / "ar32"
    shutil.copytree(toy.ar, small)
    config = AutoConfig.from_pretrained(str(toy.ar))
    config.hidden_size, config.intermediate_size = 32, 64
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 16
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(small))
    save_file({"weight": torch.randn(32, 32)}, str(small / "value_head.safetensors"))
    meta = yaml.safe_load((small / "nla_meta.yaml").read_text())
    meta["d_model"] = 32
    (small / "nla_meta.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True))
    with pytest.raises(PairMismatchError, match="d_model=64.*d_model=32"):
        NLA.from_pretrained(toy.av, small, device="cpu")


def test_sidecar_for_other_weights(toy, tmp_path):
    from nla_lens.errors import SidecarError

    bad = edited_copy(toy.av, tmp_path / "av", lambda m: m.update(d_model=128))
    with pytest.raises(SidecarError, match="hidden_size=64"):
        Verbalizer.from_pretrained(bad, device="cpu")
