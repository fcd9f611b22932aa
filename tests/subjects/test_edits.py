"""User edits during a capture: TransformerLens hooks, torch hooks and nnsight interventions.

One edit (add a fixed vector to block 0's output) applied through each
framework's own mechanism must give the same layer-2 residual.
"""

from __future__ import annotations

import pytest
import torch

from nla_lens.core.arch import decoder_layers
from nla_lens.errors import CaptureError
from nla_lens.subjects import ResidualRecorder, capture_residual, hook_name
from tests.helpers import TEXT, rel

TOL = 1e-4
LAYER = 2


@pytest.fixture
def delta(hf_model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 3.0 * torch.randn(hf_model.config.get_text_config().hidden_size, generator=g)


@pytest.fixture
def edited_reference(hf_model, tokenizer, delta):
    """Layer-2 residual with block 0's output shifted by ``delta``, via a plain torch hook."""

    def shift(module, args, output):
        return output + delta

    clean = capture_residual(hf_model, TEXT, LAYER, tokenizer=tokenizer)
    edited = capture_residual(
        hf_model, TEXT, LAYER, tokenizer=tokenizer, hf_hooks=[(decoder_layers(hf_model)[0], shift)]
    )
    assert rel(edited.residual, clean.residual) > 1e-2  # the edit matters
    return clean.residual, edited.residual


def test_hf_hooks_by_dotted_name(hf_model, tokenizer, delta, edited_reference, layout):
    name = "model.language_model.layers.0" if layout == "multimodal" else "model.layers.0"
    cap = capture_residual(
        hf_model, TEXT, LAYER, tokenizer=tokenizer, hf_hooks=[(name, lambda m, a, o: o + delta)]
    )
    assert rel(cap.residual, edited_reference[1]) < TOL
    # hooks are removed afterwards
    again = capture_residual(hf_model, TEXT, LAYER, tokenizer=tokenizer)
    assert rel(again.residual, edited_reference[0]) < TOL


def test_hf_hooks_unknown_module_name(hf_model, tokenizer):
    with pytest.raises(CaptureError, match="no submodule"):
        capture_residual(hf_model, TEXT, 1, tokenizer=tokenizer, hf_hooks=[("nope.0", print)])


def test_recorder_alongside_user_hook(bridge, tokenizer, delta, edited_reference):
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]

    def shift(resid, hook):
        return resid + delta

    with ResidualRecorder(bridge, LAYER) as rec:
        with torch.no_grad():
            bridge.run_with_hooks(ids, fwd_hooks=[(hook_name(0), shift)])
    assert len(rec.residuals) == 1
    assert rel(rec.residual, edited_reference[1]) < TOL
    # detached on exit: a later run records nothing
    with torch.no_grad():
        bridge(ids)
    assert len(rec.residuals) == 1


def test_recorder_with_plain_forward_and_as_hook(bridge, tokenizer, edited_reference):
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with ResidualRecorder(bridge, LAYER) as rec, torch.no_grad():
        bridge(ids)
        bridge(ids)
    assert len(rec.residuals) == 2
    assert rel(rec.residual, edited_reference[0]) < TOL
    rec2 = ResidualRecorder(bridge, LAYER)
    with pytest.raises(CaptureError, match="recorded nothing"):
        _ = rec2.residual
    with torch.no_grad():
        bridge.run_with_hooks(ids, fwd_hooks=[rec2.fwd_hook])
    assert rel(rec2.residual, edited_reference[0]) < TOL


def test_capture_residual_with_bridge_fwd_hooks(bridge, delta, edited_reference):
    cap = capture_residual(
        bridge, TEXT, LAYER, fwd_hooks=[(hook_name(0), lambda resid, hook: resid + delta)]
    )
    assert rel(cap.residual, edited_reference[1]) < TOL


def test_capture_residual_bridge_hook_at_the_read_layer_is_seen(bridge):
    cap = capture_residual(
        bridge, TEXT, LAYER, fwd_hooks=[(hook_name(LAYER), lambda r, hook: r * 0)]
    )
    assert float(cap.residual.abs().max()) == 0.0


def test_nnsight_intervene_before_reading(nns_model, delta, edited_reference):
    from nla_lens.subjects.nnsight import layers_envoy

    def intervene(model):
        block0 = layers_envoy(model)[0]
        block0.output = block0.output + delta

    cap = capture_residual(nns_model, TEXT, LAYER, intervene=intervene)
    assert rel(cap.residual, edited_reference[1]) < TOL


def test_options_must_match_the_framework(hf_model, tokenizer, bridge, nns_model):
    with pytest.raises(CaptureError, match="fwd_hooks"):
        capture_residual(hf_model, TEXT, 1, tokenizer=tokenizer, fwd_hooks=[(hook_name(0), print)])
    with pytest.raises(CaptureError, match="hf_hooks"):
        capture_residual(bridge, TEXT, 1, hf_hooks=[("model.layers.0", print)])
    with pytest.raises(CaptureError, match="intervene"):
        capture_residual(bridge, TEXT, 1, intervene=print)
    with pytest.raises(CaptureError, match="fwd_hooks"):
        capture_residual(nns_model, TEXT, 1, fwd_hooks=[(hook_name(0), print)])


def test_nnsight_intervene_after_the_read_layer_is_refused(nns_model):
    from nla_lens.subjects.nnsight import layers_envoy

    def too_late(model):
        _ = layers_envoy(model)[LAYER + 1].output

    with pytest.raises(CaptureError, match="may only touch layers before"):
        capture_residual(nns_model, TEXT, LAYER, intervene=too_late)
