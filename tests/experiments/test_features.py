"""SAE latents: decoder rows explained, latent ids kept; SAELens where it imports."""

from __future__ import annotations

import importlib

import pytest
import torch

from nla_lens.errors import FeatureError

TOKENS = 96  # a whole three-line toy explanation


class InMemorySAE:
    """The documented fallback: any object with ``W_dec [d_sae, d_model]`` (SAELens layout)."""

    def __init__(self, w_dec: torch.Tensor) -> None:
        self.W_dec = torch.nn.Parameter(w_dec)


@pytest.fixture(scope="module")
def sae(nla, toy_residuals):
    """A d_sae=32 SAE at the toy's d_model=64 whose first 8 latents write token directions
    (the layer-K residuals of 8 tokens) and the rest random directions."""
    v, _ = toy_residuals
    g = torch.Generator().manual_seed(3)
    rows = torch.cat([v[:8] / v[:8].norm(dim=1, keepdim=True), torch.randn(24, 64, generator=g)])
    return InMemorySAE(rows)


@pytest.mark.integration
def test_decoder_rows_of_an_in_memory_sae_are_explained_with_their_ids(nla, sae, toy_residuals):
    ids = [5, 0, 3, 30]
    result = nla.explain_features(sae, ids, max_new_tokens=TOKENS)
    assert result.latent_ids == (5, 0, 3, 30) and len(result) == 4
    expected = nla.explain(toy_residuals[0][[5, 0, 3]], max_new_tokens=TOKENS)
    assert result.texts[:3] == [e.text for e in expected]  # a token direction reads as the token
    frame = result.to_frame()
    assert frame["latent_id"].tolist() == ids
    assert (frame["fve_nrm"][:3] > 0.5).all()
    assert "<table" in result._repr_html_()
    # the bare matrix works too
    again = nla.explain_features(sae.W_dec.detach(), 0, max_new_tokens=TOKENS)
    assert again.texts == result.texts[1:2]


@pytest.mark.integration
def test_bad_saes_and_ids_are_refused_with_the_fix(nla, sae):
    with pytest.raises(FeatureError, match="transposed"):
        nla.explain_features(sae.W_dec.detach().T, [0])
    with pytest.raises(FeatureError, match="out of range"):
        nla.explain_features(sae, [32])
    with pytest.raises(FeatureError, match="whole numbers"):
        nla.explain_features(sae, [1.5])
    with pytest.raises(FeatureError, match="d_model=64"):
        nla.explain_features(torch.randn(4, 32), [0])
    dead = InMemorySAE(torch.zeros(2, 64))
    with pytest.raises(FeatureError, match="dead"):
        nla.explain_features(dead, [1])
    with pytest.raises(FeatureError, match="W_dec"):
        nla.explain_features(object(), [0])


def _sae_lens():
    try:
        return importlib.import_module("sae_lens")
    except Exception as exc:  # sae-lens 6.51 needs transformer_lens.HookedTransformer (gone in 4.x)
        pytest.skip(f"sae_lens does not import here ({type(exc).__name__}: {exc}); "
                    "the W_dec fallback above covers the same path")  # fmt: skip


@pytest.mark.integration
def test_a_real_saelens_sae(nla, toy_residuals):
    sae_lens = _sae_lens()
    cfg = sae_lens.StandardSAEConfig(d_in=64, d_sae=16, dtype="float32", device="cpu")
    sae = sae_lens.StandardSAE(cfg)
    with torch.no_grad():
        sae.W_dec[:4] = toy_residuals[0][:4]
    result = nla.explain_features(sae, [0, 1, 2, 3], max_new_tokens=TOKENS)
    assert result.latent_ids == (0, 1, 2, 3)
    assert result.texts == [
        e.text for e in nla.explain(toy_residuals[0][:4], max_new_tokens=TOKENS)
    ]
