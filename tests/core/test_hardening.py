"""Issue 10, core: every bad input answered with an NLAError, no silent wrong result.

One test per class of input: extreme but finite norms, sampling settings at every
entry point, a pair from two base models, an AR sidecar without a usable
mse_scale, sidecar fields of the wrong type, and broken checkpoint files,
devices and dtypes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from nla_lens import NLA, Reconstructor, Sampling, Verbalizer
from nla_lens.core.metrics import normalize, score_vectors
from nla_lens.core.sidecar import parse_sidecar
from nla_lens.core.vectors import as_vector_batch
from nla_lens.errors import (
    CheckpointError,
    DeviceError,
    PairMismatchError,
    SamplingError,
    SidecarError,
    VectorError,
)

D = 64


def _direction(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v / np.abs(v).max()) / np.abs(v).max()


# ---- extreme but finite norms -------------------------------------------------------------
@pytest.mark.parametrize(
    "vector",
    [
        np.linspace(-1, 1, D) * 1e300,  # float64 beyond float32's range
        np.linspace(-1, 1, D) * 1e30,  # float32-representable, but its norm overflows float32
        np.linspace(-1, 1, D).astype(np.float32) * np.float32(1e-30),  # norm underflows
        np.linspace(-1, 1, D) * 1e-300,  # float64 below float32's smallest subnormal
        torch.linspace(-1, 1, D, dtype=torch.float64) * 1e-200,
    ],
    ids=["f64-1e300", "1e30", "f32-1e-30", "f64-1e-300", "torch-f64-1e-200"],
)
def test_extreme_norms_keep_their_direction(vector) -> None:
    v = as_vector_batch(vector, D)
    assert v.dtype == torch.float32 and torch.isfinite(v).all() and v.norm() > 0
    want = _direction(np.asarray(vector, np.float64))
    got = v[0].double().numpy() / np.linalg.norm(v[0].double().numpy())
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_ordinary_vectors_are_not_rescaled() -> None:
    v = torch.randn(3, D) * 7e4  # Gemma-3-12B residual norms
    assert torch.equal(as_vector_batch(v, D), v)


def test_tiny_vector_is_not_called_all_zero_but_zero_is() -> None:
    as_vector_batch(np.full(D, 1e-40, np.float32), D)  # a subnormal vector has a direction
    with pytest.raises(VectorError, match=r"rows \[1\] are all zero"):
        as_vector_batch(np.stack([np.ones(D), np.zeros(D)]), D)


def test_steering_uses_of_a_norm_that_float32_cannot_hold_are_refused() -> None:
    with pytest.raises(VectorError, match="norm does not fit float32"):
        as_vector_batch(np.ones(D) * 1e300, D, keep_norm=True)


def test_scoring_extreme_norms_gives_the_true_cosine() -> None:
    g = torch.randn(4, D, dtype=torch.float64)
    p = g + 0.3 * torch.randn(4, D, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(p, g, dim=-1)
    for scale in (1e-30, 1.0, 1e30):
        s = score_vectors(p * scale, g * scale, mse_scale=math.sqrt(D))
        torch.testing.assert_close(s.cos.double(), cos, atol=1e-5, rtol=0)
        torch.testing.assert_close(s.mse_nrm.double(), 2 * (1 - cos), atol=1e-5, rtol=0)
    n = normalize(torch.full((2, D), 1e-30), 8.0)
    torch.testing.assert_close(n.norm(dim=-1), torch.full((2,), 8.0))


def test_scoring_a_row_without_direction_is_refused() -> None:
    g = torch.randn(2, D)
    with pytest.raises(VectorError, match="no\\s+direction"):
        score_vectors(torch.zeros(2, D), g, mse_scale=8.0)
    with pytest.raises(VectorError, match="NaN/inf"):
        score_vectors(torch.full((2, D), math.nan), g, mse_scale=8.0)


@pytest.mark.integration
def test_explaining_extreme_norms_equals_explaining_the_direction(nla, toy_residuals) -> None:
    v = toy_residuals[0][:2].double()
    unit = v / v.norm(dim=1, keepdim=True)
    want = [e.text for e in nla.explain(unit, max_new_tokens=12, score=False)]
    for scale in (1e300, 1e-300):
        got = nla.explain((unit * scale).numpy(), max_new_tokens=12)
        assert [e.text for e in got] == want
        assert all(e.cos is not None and math.isfinite(e.cos) for e in got)


# ---- sampling settings, at every entry point --------------------------------------------
#: Out of range, of the right type (the test-time type checker lets them through).
BAD_SAMPLING = [
    {"temperature": -0.5},
    {"temperature": math.nan},
    {"temperature": math.inf},
    {"temperature": 1e-300},  # overflows the logits
    {"temperature": 1e300},
    {"top_p": 0.0},
    {"top_p": 1.5},
    {"top_p": math.nan},
    {"max_new_tokens": 0},
    {"max_new_tokens": -3},
    {"max_new_tokens": 10**12},
    {"samples": 0},
    {"samples": 10**9, "temperature": 1.0},
    {"seed": -1},
    {"seed": 2**70},
    {"batch_size": 0},
    {"samples": 3},  # several greedy samples would repeat one decode
]
#: Of the wrong type: in a notebook these reach Sampling's own checks, but under pytest the
#: jaxtyping/beartype hook stops them at the signature, so they are run in a plain subprocess.
WRONG_TYPE = [
    {"temperature": "1.0"},
    {"temperature": True},
    {"max_new_tokens": 2.5},
    {"max_new_tokens": True},
    {"samples": "3"},
    {"seed": 1.5},
    {"seed": "7"},
]


def _ids(b: dict) -> str:
    return ",".join(f"{k}={v!r}" for k, v in b.items())


@pytest.mark.parametrize("bad", BAD_SAMPLING, ids=_ids)
def test_bad_sampling_settings_are_refused(bad) -> None:
    with pytest.raises(SamplingError):
        Sampling(**bad)


def test_sampling_settings_of_the_wrong_type_are_refused() -> None:
    script = (
        "from nla_lens import Sampling\n"
        "from nla_lens.errors import SamplingError\n"
        f"for bad in {WRONG_TYPE!r}:\n"
        "    for make in (lambda: Sampling(**bad), lambda: Sampling.of(None, **bad)):\n"
        "        try:\n"
        "            make()\n"
        "        except SamplingError:\n"
        "            continue\n"
        "        except Exception as exc:\n"
        "            raise SystemExit(f'{bad}: {type(exc).__name__}: {exc}')\n"
        "        raise SystemExit(f'{bad}: accepted')\n"
        # a mapping or a word where a Sampling belongs, at the AV and at a backend
        "from nla_lens import toy, NLA\n"
        "import torch\n"
        "nla = NLA.from_pretrained(toy.checkpoints().av, device='cpu')\n"
        "v = torch.randn(1, nla.d_model)\n"
        "for call in (lambda: nla.av.generate(v, {'max_new_tokens': 0}),\n"
        "             lambda: nla.av.backend.generate(nla.av.prompt_embeds(v), {'temprature': 1}),\n"
        "             lambda: nla.explain(v, sampling='greedy')):\n"
        "    try:\n"
        "        call()\n"
        "    except SamplingError:\n"
        "        continue\n"
        "    raise SystemExit('accepted')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.integration
@pytest.mark.parametrize("bad", BAD_SAMPLING[::2], ids=_ids)
def test_every_entry_point_checks_sampling(nla, bad) -> None:
    v = torch.randn(2, nla.d_model)
    embeds = nla.av.prompt_embeds(v)
    # A Sampling whose fields were changed behind its back (it is frozen, but Python lets
    # object.__setattr__ through): the backend re-checks what it is handed.
    forged = Sampling()
    for key, value in bad.items():
        object.__setattr__(forged, key, value)
    calls = [
        lambda: nla.explain(v, **bad),
        lambda: nla.av.explain(v, **bad),
        lambda: nla.av.generate(v, forged),
        lambda: nla.av.backend.generate(embeds, forged),  # a backend called directly
    ]
    for call in calls:
        with pytest.raises(SamplingError):
            call()


# ---- a pair from two different models -----------------------------------------------------
@pytest.mark.integration
def test_pair_of_two_base_models_is_refused(nla) -> None:
    other = copy.copy(nla.ar)
    other.meta = dataclasses.replace(nla.ar.meta, base_model="Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(PairMismatchError, match="base model .*Qwen"):
        NLA(nla.av, other)
    same = copy.copy(nla.ar)  # the same name in another case is the same model
    same.meta = dataclasses.replace(nla.ar.meta, base_model=nla.ar.meta.base_model.upper())
    NLA(nla.av, same)


@pytest.mark.integration
def test_pair_of_two_base_models_is_refused_at_load(toy, tmp_path) -> None:
    ar = _edited(
        toy.ar, tmp_path / "ar", lambda m: m.update(base_checkpoint="google/gemma-3-27b-it")
    )
    with pytest.raises(PairMismatchError, match="gemma-3-27b-it"):
        NLA.from_pretrained(toy.av, ar, device="cpu")


# ---- an mse_scale the AR cannot honour ----------------------------------------------------
def _sidecar(role: str = "ar", **extraction) -> dict:
    return {
        "role": role,
        "d_model": D,
        "extraction_layer_index": 2,
        "extraction": {"injection_scale": 150.0, **extraction},
        "tokens": {
            "injection_char": "㈜",
            "injection_token_id": 9,
            "injection_left_neighbor_id": 1,
            "injection_right_neighbor_id": 2,
        },
        "prompt_templates": {"av": "<concept>{injection_char}</concept>", "ar": "{explanation}"},
    }


@pytest.mark.parametrize("raw", [None, "raw", "none", "null"])
def test_ar_without_a_usable_mse_scale_is_refused(raw) -> None:
    with pytest.raises(SidecarError, match="mse_scale.*sqrt_d_model"):
        parse_sidecar(_sidecar("ar", mse_scale=raw))


def test_mse_scale_defaults_follow_the_recipe() -> None:
    assert parse_sidecar(_sidecar("ar")).mse_scale == pytest.approx(math.sqrt(D))
    assert parse_sidecar(_sidecar("ar", mse_scale="sqrt_d_model")).mse_scale == math.sqrt(D)
    assert parse_sidecar(_sidecar("av", mse_scale=None)).mse_scale is None  # the AV never scores


# ---- sidecar fields of the wrong type -----------------------------------------------------
def _set(path: str, value):
    def edit(meta):
        *head, last = path.split(".")
        node = meta
        for key in head:
            node = node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("d_model", "sixty-four", "`d_model` = 'sixty-four'"),
        ("d_model", [64], "`d_model`"),
        ("d_model", True, "`d_model`"),
        ("d_model", 0, "`d_model`"),
        ("extraction_layer_index", "two", "extraction_layer_index"),
        ("extraction_layer_index", -1, "extraction_layer_index"),
        ("extraction", ["injection_scale", 150], "`extraction` must be a mapping"),
        ("tokens", ["㈜", 9], "`tokens` must be a mapping"),
        ("prompt_templates", "{explanation}", "`prompt_templates` must be a mapping"),
        ("ar", [3], "`ar` must be a mapping"),
        ("tokens.injection_token_id", "nine", "tokens.injection_token_id"),
        ("tokens.injection_token_id", {"id": 9}, "tokens.injection_token_id"),
        ("tokens.injection_left_neighbor_id", 1.5, "tokens.injection_left_neighbor_id"),
        ("tokens.injection_char", 7, "tokens.injection_char"),
        ("tokens.critic_suffix_ids", "1 2 3", "critic_suffix_ids"),
        ("tokens.critic_suffix_ids", [1, "x"], "critic_suffix_ids"),
        ("prompt_templates.ar", ["{explanation}"], "prompt_templates.ar"),
        ("extraction.mse_scale", "eight", "mse_scale"),
        ("extraction.mse_scale", [8.0], "mse_scale"),
        ("extraction.injection_scale", {"value": 150}, "injection_scale"),
        ("base_model", ["google/gemma-3-12b-it"], "base_model"),
        ("role", ["ar"], "role"),
    ],
)
def test_sidecar_fields_of_the_wrong_type(path, value, match) -> None:
    meta = _sidecar("ar")
    _set(path, value)(meta)
    with pytest.raises(SidecarError, match=match):
        parse_sidecar(meta, source="nla_meta.yaml")


# ---- broken checkpoint files, devices, dtypes --------------------------------------------
def _edited(src, dst, edit):
    shutil.copytree(src, dst)
    meta = yaml.safe_load((dst / "nla_meta.yaml").read_text())
    edit(meta)
    (dst / "nla_meta.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    return dst


def _broken(src, dst, name, data: bytes | None):
    shutil.copytree(src, dst)
    if data is None:
        (dst / name).unlink()
    else:
        (dst / name).write_bytes(data)
    return dst


@pytest.mark.integration
@pytest.mark.parametrize(
    ("role", "name", "data", "match"),
    [
        ("av", "config.json", b"{not json", "config.json: not readable JSON"),
        ("av", "config.json", b"[1, 2]", "expected a JSON object"),
        ("av", "config.json", b'{"hidden_size": "wide"}', "hidden_size = 'wide'"),
        ("av", "tokenizer.json", b"garbage", "cannot load the tokenizer"),
        ("av", "model.safetensors", b"\x00" * 64, "cannot load the weights"),
        ("av", "model.safetensors", "half", "cannot load the weights"),
        ("ar", "value_head.safetensors", b"not a safetensors file", "cannot read the value head"),
        ("ar", "value_head.safetensors", "half", "cannot read the value head"),
    ],
)
def test_corrupt_checkpoint_files(toy, tmp_path, role, name, data, match) -> None:
    src = toy.av if role == "av" else toy.ar
    if data == "half":
        whole = (src / name).read_bytes()
        data = whole[: len(whole) // 2]
    path = _broken(src, tmp_path / role, name, data)
    cls = Verbalizer if role == "av" else Reconstructor
    with pytest.raises(CheckpointError, match=match):
        cls.from_pretrained(path, device="cpu")


@pytest.mark.integration
def test_missing_tokenizer_files(toy, tmp_path) -> None:
    path = tmp_path / "av"
    shutil.copytree(toy.av, path)
    for f in path.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        Verbalizer.from_pretrained(path, device="cpu")


@pytest.mark.integration
def test_corrupt_embedding_shard_with_a_server_backend(toy, tmp_path) -> None:
    from nla_lens.core.embedding import EmbeddingTable

    path = _broken(toy.av, tmp_path / "av", "model.safetensors", b"\x01" * 32)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors"):
        EmbeddingTable.from_checkpoint(path)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device": "cuda:7"} if torch.cuda.is_available() else {"device": "cuda"}, "CUDA"),
        ({"device": "gpu0"}, "not a device name"),
        ({"device": "cpu", "dtype": torch.int64}, "not a floating-point torch dtype"),
        ({"device": "cpu", "dtype": "int8"}, "not a floating-point torch dtype"),
        ({"device": "cpu", "dtype": "float33"}, "not a floating-point torch dtype"),
    ],
)
def test_unavailable_device_and_non_float_dtype(toy, kwargs, match) -> None:
    with pytest.raises(DeviceError, match=match):
        NLA.from_pretrained(toy.av, toy.ar, **kwargs)


@pytest.mark.integration
def test_dtype_by_name_is_accepted(toy) -> None:
    av = Verbalizer.from_pretrained(toy.av, device="cpu", dtype="float32")
    assert av.dtype == torch.float32
