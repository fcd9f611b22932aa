"""Unit tests of sidecar parsing (no model loaded)."""

from __future__ import annotations

import math
import warnings

import pytest

from nla_lens.core.sidecar import load_sidecar, parse_sidecar
from nla_lens.errors import NLAError, SidecarError


def released_av(**over):
    meta = {
        "kind": "nla_model",
        "role": "av",
        "d_model": 3840,
        "extraction_layer_index": 32,
        "extraction": {"injection_scale": 80000.0, "mse_scale": "sqrt_d_model"},
        "tokens": {
            "injection_char": "㈜",
            "injection_token_id": 246566,
            "injection_left_neighbor_id": 236813,  # ">" before the marker (real Gemma-3 tokenizer)
            "injection_right_neighbor_id": 954,  # "</" after it
        },
        "prompt_templates": {
            "av": "Here is the vector: <concept>{injection_char}</concept>",
            "ar": "S <text>{explanation}</text> <summary>",
        },
        "base_checkpoint": "google/gemma-3-12b-it",
    }
    meta.update(over)
    return meta


def test_released_spelling():
    m = parse_sidecar(released_av())
    assert m.role == "av" and m.d_model == 3840 and m.layer == 32
    assert m.injection_scale == 80000.0
    assert m.mse_scale == pytest.approx(math.sqrt(3840))
    assert m.av_template and "{injection_char}" in m.av_template
    assert m.base_model == "google/gemma-3-12b-it"
    assert m.unknown_keys == ()


def test_old_actor_critic_spelling():
    meta = released_av(
        role="critic", prompt_templates={"critic": "x {explanation}", "actor": "{injection_char}"}
    )
    meta["critic"] = {"num_hidden_layers": 20}
    meta["extraction"] = {"injection_scale": None, "mse_scale": 59.87}
    del meta["extraction_layer_index"]
    m = parse_sidecar(meta)
    assert (
        m.role == "ar"
        and m.ar_template == "x {explanation}"
        and m.av_template == "{injection_char}"
    )
    assert (
        m.layer == 20
        and m.ar_num_hidden_layers == 20
        and m.injection_scale is None
        and m.mse_scale == 59.87
    )


def test_sqrt_d_sentinel_for_injection_scale():
    m = parse_sidecar(released_av(d_model=64, extraction={"injection_scale": "sqrt_d_model"}))
    assert m.injection_scale == 8.0


def test_unknown_keys_reported():
    meta = released_av(surprise=1)
    meta["tokens"]["mystery_id"] = 3
    with pytest.warns(UserWarning, match="surprise"):
        m = parse_sidecar(meta)
    assert m.unknown_keys == ("surprise", "tokens.mystery_id")
    with pytest.raises(SidecarError, match="unknown sidecar keys"):
        parse_sidecar(meta, strict=True)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"role": "teacher"}, "role"),
        ({"kind": "something"}, "kind"),
        ({"extraction": {"injection_scale": None}}, "injection_scale"),
        ({"extraction": {"injection_scale": "lots"}}, "not a number"),
        ({"extraction": {"injection_scale": -1}}, "positive"),
        ({"tokens": {"injection_char": "x"}}, "injection_token_id"),
    ],
)
def test_bad_sidecars(over, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SidecarError, match=match) as info:
            parse_sidecar(released_av(**over))
    assert isinstance(info.value, NLAError)


def test_missing_sidecar_file(tmp_path):
    with pytest.raises(SidecarError, match="not an NLA checkpoint"):
        load_sidecar(tmp_path)


def test_invalid_yaml(tmp_path):
    (tmp_path / "nla_meta.yaml").write_text("role: [av\n")
    with pytest.raises(SidecarError, match="not valid YAML"):
        load_sidecar(tmp_path)
