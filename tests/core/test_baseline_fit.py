"""The baseline fit check (no model loaded): it flags vectors whose own spread is far from
the baseline's, either way, and is silent when both come from one distribution."""

from __future__ import annotations

import html
import math

import pytest
import torch

from nla_lens.core.metrics import (
    FIT_MIN_VECTORS,
    Baseline,
    check_fit,
    estimate_baseline,
)

D = 64
SCALE = math.sqrt(D)


def _cluster(n: int, spread: float, seed: int) -> torch.Tensor:
    """Vectors around one mean direction: small ``spread`` = concentrated (a deep layer)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(D, generator=g)
    return mean + spread * torch.randn(n, D, generator=g)


def test_fits_its_own_distribution():
    ref = estimate_baseline(_cluster(500, 0.5, 0), mse_scale=SCALE)
    assert ref.kind == "estimated" and ref.n == 500
    fit = check_fit(_cluster(64, 0.5, 0), ref, mse_scale=SCALE)
    assert fit is not None and fit.fits, fit.message
    assert 0.5 <= fit.ratio <= 2.0 and "fits them" in fit.message


@pytest.mark.parametrize(("spread", "direction"), [(2.0, "wider"), (0.1, "narrower")])
def test_flags_another_distribution_either_way(spread: float, direction: str):
    ref = estimate_baseline(_cluster(500, 0.5, 0), mse_scale=SCALE)
    fit = check_fit(_cluster(64, spread, 0), ref, mse_scale=SCALE)
    assert fit is not None and not fit.fits
    assert (fit.ratio > 2.0) if direction == "wider" else (fit.ratio < 0.5)
    text = str(fit)
    assert text.startswith("BASELINE DOES NOT FIT")
    assert "nla.set_baseline(" in text and f"{fit.ratio:.2g}x" in text
    print(f"{direction}: {text}")


def test_not_run_below_min_vectors_or_without_baseline():
    ref = Baseline(0.1, "test", 10, "user")
    assert check_fit(_cluster(FIT_MIN_VECTORS - 1, 3.0, 0), ref, mse_scale=SCALE) is None
    assert check_fit(_cluster(FIT_MIN_VECTORS, 3.0, 0), None, mse_scale=SCALE) is None
    assert check_fit(_cluster(FIT_MIN_VECTORS, 3.0, 0), ref, mse_scale=SCALE) is not None


def test_label_names_kind_source_and_n():
    b = Baseline(0.0302, "Gemma-3-12B L32 training distribution", None, "published")
    assert b.label == "Var(v_n) 0.0302, published: Gemma-3-12B L32 training distribution"
    assert Baseline(0.067, "toy generic", 1000, "build").label.endswith("n=1000")


@pytest.mark.integration
def test_pair_results_name_their_baseline_and_fit(nla, toy_residuals):
    v, _ = toy_residuals  # 48 random-sequence residuals: the toy's generic baseline fits them
    exps = nla.explain(v)
    assert exps.baseline is not None and exps.baseline.startswith("Var(v_n)")
    assert exps.baseline_fit is not None and exps.baseline_fit.n == len(v)
    frame = exps.to_frame()
    assert frame["baseline"].notna().all() and frame.attrs["baseline"] == exps.baseline
    # the label is escaped in HTML (the toy build's reads "one random position (>= 2) ...")
    assert "baseline_fit" in frame.attrs and html.escape(exps.baseline) in exps._repr_html_()
    assert nla.explain(v[:8]).baseline_fit is None  # too few vectors to check


@pytest.mark.integration
def test_set_baseline_by_name_number_and_refusals(nla, toy_residuals):
    from nla_lens.errors import VectorError

    saved = nla.baseline
    try:
        assert set(nla.baselines) >= {"generic"}
        for name, b in nla.baselines.items():
            assert nla.set_baseline(name) is b and b.kind == "build"
        assert nla.set_baseline(0.5).kind == "user"
        est = nla.set_baseline(toy_residuals[0])
        assert est.kind == "estimated" and est.n == len(toy_residuals[0])
        with pytest.raises(VectorError, match="no baseline named 'tasks'"):
            nla.set_baseline("tasks")
        for bad in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(VectorError, match="positive finite"):
                nla.set_baseline(bad)
    finally:
        nla.baseline = saved
