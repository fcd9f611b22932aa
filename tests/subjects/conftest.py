"""Fixtures for the residual-capture tests (helpers and the tiny subjects: capture_support.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    LAYOUTS,
    TEXT,
    TOY_DIRS,
    boot_from_dir,
    build_tiny,
    load_hf,
    load_tokenizer,
    wrap_nnsight,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; several oversubscribe a shared 2-core box (~50x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def subject_dirs(tmp_path_factory) -> dict[str, Path]:
    if all((d / "config.json").exists() for d in TOY_DIRS.values()):
        return dict(TOY_DIRS)
    return build_tiny(tmp_path_factory.mktemp("capture-subjects"))


@pytest.fixture(params=LAYOUTS)
def layout(request) -> str:
    return request.param


@pytest.fixture
def hf_model(subject_dirs, layout):
    """A fresh Hugging Face subject (each framework test wraps or mutates its own copy)."""
    return load_hf(subject_dirs[layout])


@pytest.fixture
def tokenizer(subject_dirs, layout):
    return load_tokenizer(subject_dirs[layout])


@pytest.fixture
def bridge(subject_dirs, layout):
    return boot_from_dir(subject_dirs[layout])


@pytest.fixture
def nns_model(subject_dirs, layout):
    path = subject_dirs[layout]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return wrap_nnsight(load_hf(path), load_tokenizer(path))


@pytest.fixture
def reference(subject_dirs, layout):
    """HF ``hidden_states`` of TEXT (one row, one BOS) from an untouched copy of the subject."""
    path = subject_dirs[layout]
    hf, tok = load_hf(path), load_tokenizer(path)
    enc = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        out = hf(**enc, output_hidden_states=True)
    return enc["input_ids"], out.hidden_states, out.logits
