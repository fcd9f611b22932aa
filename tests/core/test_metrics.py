"""Unit tests of the round-trip metrics and vector validation (no model loaded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nla_lens.core.metrics import (
    PUBLISHED_BASELINES,
    baseline_for,
    estimate_baseline,
    normalize,
    score_vectors,
)
from nla_lens.core.vectors import as_vector_batch
from nla_lens.errors import VectorError


def test_mse_nrm_is_two_one_minus_cos():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 64, generator=g), torch.randn(32, 64, generator=g) * 1000
    s = score_vectors(a, b, mse_scale=8.0, baseline=0.5)
    assert torch.allclose(s.mse_nrm, 2 * (1 - s.cos), atol=1e-5)
    assert torch.allclose(s.cos, torch.nn.functional.cosine_similarity(a, b), atol=1e-5)
    assert s.fve_nrm is not None and torch.allclose(s.fve_nrm, 1 - s.mse_nrm / 0.5)
    same = score_vectors(a, 3 * a, mse_scale=8.0)
    assert same.fve_nrm is None and torch.allclose(same.mse_nrm, torch.zeros(32), atol=1e-6)
    orth = score_vectors(torch.eye(4), torch.eye(4).roll(1, 0), mse_scale=2.0)
    assert torch.allclose(orth.mse_nrm, torch.full((4,), 2.0))


def test_normalize_scale_in_fp32():
    v = torch.full((2, 3840), 3.0, dtype=torch.bfloat16)
    n = normalize(v, 80000.0)
    assert n.dtype == torch.float32 and torch.allclose(n.norm(dim=-1), torch.full((2,), 80000.0))


def test_estimate_baseline_matches_definition():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(500, 16, generator=g) + 5
    b = estimate_baseline(v)
    vn = v / v.norm(dim=1, keepdim=True) * 4.0
    assert b.variance == pytest.approx(float(((vn - vn.mean(0)) ** 2).mean()), rel=1e-5)
    assert b.n == 500
    with pytest.raises(VectorError):
        estimate_baseline(v[:1])


def test_published_baselines():
    assert baseline_for("kitft/nla-gemma3-12b-L32-av").variance == 0.0302
    assert baseline_for("kitft/nla-gemma3-12b-L32-ar").variance == 0.0302
    assert PUBLISHED_BASELINES["kitft/nla-qwen2.5-7b-L20-av"].variance == 0.7335
    assert baseline_for("someone/else") is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_vectors_any_float_dtype(dtype):
    v = as_vector_batch(torch.ones(8, dtype=dtype), 8)
    assert v.shape == (1, 8) and v.dtype == torch.float32
    assert as_vector_batch(np.ones((3, 8), dtype=np.float64), 8).shape == (3, 8)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (torch.ones(7), "width 7"),
        (torch.ones(2, 3, 8), "shape"),
        (torch.tensor([[1.0] * 7 + [math.nan]]), "NaN or infinite"),
        (torch.tensor([[1.0] * 7 + [math.inf], [1.0] * 8]), r"rows \[0\]"),
        (torch.zeros(2, 8), "all zero"),
        (torch.ones(8, dtype=torch.int64), "floating-point"),
        (np.ones(8, dtype=np.int32), "float array"),
        ("not a vector", "must be a torch.Tensor"),
        (torch.ones(0, 8), "empty"),
    ],
)
def test_bad_vectors(value, match):
    with pytest.raises(VectorError, match=match):
        as_vector_batch(value, 8)


def test_jaxtyping_checks_are_active():
    """Under pytest, jaxtyping + beartype check public tensor signatures (pyproject addopts)."""
    from jaxtyping import TypeCheckError

    with pytest.raises(TypeCheckError):
        score_vectors(torch.ones(2, 4), torch.ones(3, 4), mse_scale=2.0)
