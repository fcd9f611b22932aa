"""Guard rails: subject checks, layer range, base-model names, import isolation."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from nla_lens.errors import CaptureError, NLAError, SubjectMismatchError
from nla_lens.subjects import capture_residual, check_subject, detect_framework, subject_info
from nla_lens.subjects.guards import _hub_id
from nla_lens.subjects.nnsight import residual
from tests.helpers import TEXT

BASE = "google/gemma-3-12b-it"


def _models(hf_model, bridge, nns_model):
    return {"hf": hf_model, "transformer_lens": bridge, "nnsight": nns_model}


def test_subject_info_all_frameworks(hf_model, bridge, nns_model, subject_dirs, layout):
    infos = {}
    for framework, model in _models(hf_model, bridge, nns_model).items():
        assert detect_framework(model) == framework
        infos[framework] = subject_info(model)
        assert infos[framework].framework == framework
    d_model = hf_model.config.get_text_config().hidden_size
    n_layers = hf_model.config.get_text_config().num_hidden_layers
    for info in infos.values():
        assert (info.d_model, info.n_layers) == (d_model, n_layers)
        declared = getattr(
            hf_model.config, "nla_lens_model_id", None
        )  # the toy subject declares its hub id
        assert info.name_or_path == declared or info.name_or_path.rstrip("/").endswith(
            subject_dirs[layout].name
        )


def test_check_subject_passes_and_catches_mismatch(hf_model, bridge, nns_model):
    d_model = hf_model.config.get_text_config().hidden_size
    n_layers = hf_model.config.get_text_config().num_hidden_layers
    for model in _models(hf_model, bridge, nns_model).values():
        info = check_subject(model, d_model=d_model, layer=n_layers - 1, base_model=None)
        assert info.d_model == d_model
        with pytest.raises(SubjectMismatchError, match="d_model"):
            check_subject(model, d_model=d_model * 2, layer=1, base_model=None)
        with pytest.raises(SubjectMismatchError, match="decoder blocks"):
            check_subject(model, d_model=d_model, layer=n_layers, base_model=None)
        with pytest.raises(SubjectMismatchError):
            check_subject(model, d_model=d_model, layer=-1, base_model=None)


def test_capture_layer_out_of_range(hf_model, tokenizer, bridge, nns_model):
    n_layers = hf_model.config.get_text_config().num_hidden_layers
    for model in _models(hf_model, bridge, nns_model).values():
        with pytest.raises(SubjectMismatchError, match="out of range"):
            capture_residual(model, TEXT, n_layers, tokenizer=tokenizer)
    with pytest.raises(SubjectMismatchError):
        residual(nns_model, n_layers)
    # CaptureError; under the jaxtyping/beartype test hook the annotation may catch it first
    with pytest.raises((CaptureError, TypeError)):
        capture_residual(hf_model, TEXT, 1.0, tokenizer=tokenizer)  # type: ignore[arg-type]


def test_positions_out_of_range(hf_model, tokenizer, bridge):
    n = len(tokenizer(TEXT)["input_ids"])
    for model in (hf_model, bridge):
        assert (
            capture_residual(
                model, TEXT, 1, tokenizer=tokenizer, positions=[n - 1, -n]
            ).residual.shape[1]
            == 2
        )
        for bad in (n, -n - 1, [0, n + 5]):
            with pytest.raises(CaptureError, match="out of range"):
                capture_residual(model, TEXT, 1, tokenizer=tokenizer, positions=bad)
    # the shorter row of a batch sets the limit
    short = len(tokenizer("the red world")["input_ids"])
    with pytest.raises(CaptureError, match=f"batch row 1, which has {short} real tokens"):
        capture_residual(hf_model, [TEXT, "the red world"], 1, tokenizer=tokenizer, positions=short)


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("google/gemma-3-12b-it", "ok"),
        ("Google/Gemma-3-12B-IT", "ok"),
        ("unsloth/gemma-3-12b-it", "ok"),  # same basename: a mirror
        ("/data/models/gemma-3-12b-it", "ok"),  # a local copy named like the base model
        ("/root/.cache/huggingface/hub/models--google--gemma-3-12b-it/snapshots/0123abcd", "ok"),
        ("google/gemma-3-12b", "raise"),  # NOT the -it model
        ("google/gemma-3-12b-pt", "raise"),
        ("Qwen/Qwen2.5-7B-Instruct", "raise"),
        ("/root/.cache/huggingface/hub/models--google--gemma-3-4b-it/snapshots/0123abcd", "raise"),
        ("/data/models/my-checkpoint", "warn"),
        ("", "warn"),
    ],
)
def test_base_model_name_check(hf_model, name, outcome):
    d_model = hf_model.config.get_text_config().hidden_size
    hf_model.config.__dict__.pop("nla_lens_model_id", None)  # the toy subject declares its id
    hf_model.config._name_or_path = name
    kwargs = dict(d_model=d_model, layer=1, base_model=BASE)
    if outcome == "raise":
        with pytest.raises(SubjectMismatchError, match="base_model=None"):
            check_subject(hf_model, **kwargs)
    elif outcome == "warn":
        from nla_lens.subjects import guards

        guards._WARNED.clear()
        with pytest.warns(UserWarning, match="gemma-3-12b-it"):
            check_subject(hf_model, **kwargs)
        with warnings.catch_warnings():  # once per subject and pair, not on every call
            warnings.simplefilter("error")
            check_subject(hf_model, **kwargs)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_subject(hf_model, **kwargs)
    with warnings.catch_warnings():  # base_model=None skips the name check
        warnings.simplefilter("error")
        check_subject(hf_model, d_model=d_model, layer=1, base_model=None)


def test_hub_id_parsing():
    assert _hub_id("google/gemma-3-12b-it") == "google/gemma-3-12b-it"
    assert _hub_id("/abs/dir") is None
    assert _hub_id("./rel/dir") is None
    assert _hub_id("gemma") is None
    assert _hub_id("a/b/c") is None


def test_detect_framework_refuses_other_objects():
    with pytest.raises(CaptureError, match="TransformerBridge"):
        detect_framework(object())
    with pytest.raises(NLAError):
        capture_residual("not a model", TEXT, 0)


def test_import_does_not_pull_optional_frameworks():
    code = (
        "import sys, nla_lens.subjects, nla_lens.subjects.bridge, nla_lens.subjects.nnsight; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nnsight', 'transformer_lens')); "
        "assert not bad, bad; "
        "assert sys.excepthook is sys.__excepthook__"
    )
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=repo)


def test_double_bos_in_token_ids_without_tokenizer(hf_model, tokenizer):
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    doubled = torch.cat([ids[:, :1], ids], dim=1)
    with pytest.raises(CaptureError, match="two BOS"):
        capture_residual(hf_model, doubled, 1)  # BOS id from the model config
    assert capture_residual(hf_model, ids, 1).tokens is None  # no tokenizer: no token strings


def test_local_copy_can_declare_its_hub_id(hf_model):
    """A local checkpoint whose config declares `nla_lens_model_id` passes the name check."""
    d_model = hf_model.config.get_text_config().hidden_size
    hf_model.config._name_or_path = "/data/local/copy"
    hf_model.config.nla_lens_model_id = "google/gemma-3-12b-it"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_subject(hf_model, d_model=d_model, layer=1, base_model="google/gemma-3-12b-it")
    hf_model.config.nla_lens_model_id = "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(SubjectMismatchError):
        check_subject(hf_model, d_model=d_model, layer=1, base_model="google/gemma-3-12b-it")
    del hf_model.config.nla_lens_model_id
