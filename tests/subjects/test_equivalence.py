"""The same layer-K residual through Hugging Face hooks, TransformerBridge and nnsight.

Every path must equal Hugging Face ``hidden_states[K + 1]`` (the NLA contract's
definition of layer K) to 1e-4 relative, in both Gemma-3 layouts.
"""

from __future__ import annotations

import pytest
import torch

from nla_lens.core.arch import decoder_layers, text_model
from nla_lens.subjects import boot_bridge, capture_residual, hook_name, residual
from tests.helpers import TEXT, rel

TOL = 1e-4


def inner_layers(hidden_states) -> range:
    # hidden_states[-1] has the final norm applied: compare every block but the last
    return range(len(hidden_states) - 2)


def test_hf_hooks_match_hidden_states(hf_model, tokenizer, reference):
    ids, hs, logits = reference
    for k in inner_layers(hs):
        cap = capture_residual(hf_model, TEXT, k, tokenizer=tokenizer)
        assert cap.framework == "hf"
        assert torch.equal(cap.input_ids, ids)
        assert rel(cap.residual, hs[k + 1]) < TOL, k
    assert rel(cap.logits, logits) < TOL


def test_last_block_is_raw_block_output_not_final_normed_hidden_state(
    hf_model, tokenizer, reference
):
    # HF's hidden_states[-1] = final_norm(block output); the capture is the block output
    _, hs, _ = reference
    last = len(hs) - 2
    cap = capture_residual(hf_model, TEXT, last, tokenizer=tokenizer)
    assert rel(cap.residual, hs[-1]) > 1e-2
    with torch.no_grad():
        normed = text_model(hf_model).norm(cap.residual)
    assert rel(normed, hs[-1]) < TOL


def test_bridge_run_with_cache_matches_hidden_states(bridge, reference):
    ids, hs, _ = reference
    for k in inner_layers(hs):
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids, names_filter=hook_name(k))
        assert rel(cache[hook_name(k)], hs[k + 1]) < TOL, k


def test_bridge_capture_residual_matches_hidden_states(bridge, reference):
    ids, hs, logits = reference
    for k in inner_layers(hs):
        cap = capture_residual(bridge, TEXT, k)  # the bridge's own tokenizer: one BOS
        assert cap.framework == "transformer_lens"
        assert torch.equal(cap.input_ids, ids)
        assert rel(cap.residual, hs[k + 1]) < TOL, k
    assert rel(cap.logits, logits) < TOL


def test_boot_bridge_from_loaded_hf_model(hf_model, tokenizer, reference):
    ids, hs, _ = reference
    bridge = boot_bridge(hf_model, tokenizer)
    assert bridge.original_model is hf_model
    assert not bridge._weights_processed
    cap = capture_residual(bridge, ids, 1)
    assert rel(cap.residual, hs[2]) < TOL


def test_nnsight_residual_inside_trace_matches_hidden_states(nns_model, reference):
    ids, hs, _ = reference
    saved = []
    with torch.no_grad(), nns_model.trace(ids):
        for k in inner_layers(hs):
            saved.append(residual(nns_model, k).save())
    for k, r in zip(inner_layers(hs), saved, strict=True):
        assert isinstance(r, torch.Tensor)
        assert rel(r, hs[k + 1]) < TOL, k


def test_nnsight_capture_residual_matches_hidden_states(nns_model, reference):
    ids, hs, logits = reference
    for k in inner_layers(hs):
        cap = capture_residual(nns_model, TEXT, k)  # nnsight's model.tokenizer
        assert cap.framework == "nnsight"
        assert torch.equal(cap.input_ids, ids)
        assert rel(cap.residual, hs[k + 1]) < TOL, k
    assert rel(cap.logits, logits) < TOL


def test_nnsight_path_follows_the_layout(nns_model, layout):
    from nla_lens.subjects.nnsight import layers_envoy

    expected = "model.language_model.layers" if layout == "multimodal" else "model.layers"
    assert layers_envoy(nns_model)._module is decoder_layers(nns_model._module)
    assert layers_envoy(nns_model) is nns_model.get(expected)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_matches_single_rows(hf_model, tokenizer, padding_side):
    texts = [TEXT, "the red world", "the sky is blue"]
    batch = capture_residual(
        hf_model, texts, 2, tokenizer=tokenizer, positions=[0, 1, -1], padding_side=padding_side
    )
    for row, text in enumerate(texts):
        single = capture_residual(hf_model, text, 2, tokenizer=tokenizer, positions=[0, 1, -1])
        assert rel(batch.residual[row], single.residual[0]) < TOL
        assert batch.real_tokens()[row] == single.real_tokens()[0]


def test_padded_batch_agrees_across_frameworks(hf_model, tokenizer, bridge, nns_model):
    texts = [TEXT, "the red world"]
    caps = [
        capture_residual(m, texts, 1, tokenizer=tokenizer, positions=-1, padding_side="left")
        for m in (hf_model, bridge, nns_model)
    ]
    for cap in caps[1:]:
        assert torch.equal(cap.positions, caps[0].positions)
        assert rel(cap.residual, caps[0].residual) < TOL


def test_nnsight_language_model_alias(subject_dirs, layout, reference):
    from nnsight import LanguageModel

    from tests.helpers import load_hf, load_tokenizer

    _, hs, _ = reference
    tok = load_tokenizer(subject_dirs[layout])
    with pytest.warns(FutureWarning, match="LanguageModel is deprecated"):
        lm = LanguageModel(load_hf(subject_dirs[layout]), tokenizer=tok)
    assert tok.padding_side == "left"  # nnsight sets it on the tokenizer it is given
    cap = capture_residual(lm, TEXT, 1)
    assert cap.framework == "nnsight"
    assert rel(cap.residual, hs[2]) < TOL


def test_boot_bridge_offline_without_pip(hf_model, reference, monkeypatch):
    # TransformerLens would `pip install torchvision` when a multimodal model's image
    # processor does not load; boot_bridge switches that off.
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: calls.append(a))
    bridge = boot_bridge(hf_model)  # tokenizer loaded from the model's directory
    assert calls == []
    _, hs, _ = reference
    assert rel(capture_residual(bridge, TEXT, 1).residual, hs[2]) < TOL


def test_boot_bridge_refuses_an_unsaved_tokenizer(hf_model):
    from nla_lens.errors import CaptureError
    from tests.helpers import make_tokenizer

    with pytest.raises(CaptureError, match="save_pretrained"):
        boot_bridge(hf_model, make_tokenizer())
