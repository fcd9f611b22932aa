"""Which TransformerBridge weight processing changes the residual at ``hook_resid_post``.

Findings (TransformerLens 4.3), established here:

- a bridge booted with ``boot_transformers`` holds raw Hugging Face weights: the
  residual equals HF's block output exactly;
- ``process_weights()`` / ``enable_compatibility_mode()`` (fold_ln,
  center_writing_weights, center_unembed, fold_value_biases) leave the residual
  of RMSNorm models (Gemma-3; also Qwen2 and Llama) unchanged up to ~1e-6
  float noise, because TransformerLens only centres writing weights for
  LayerNorm models; only the logits move, by a per-position constant
  (center_unembed), which leaves log-probabilities unchanged;
- on a LayerNorm model (GPT-2 here) processing subtracts each residual's mean:
  the vectors are no longer the model's. That case is detected on the bridge
  (``_weights_processed`` + ``cfg.normalization_type``) and refused with
  SubjectMismatchError.
"""

from __future__ import annotations

import pytest
import torch

from nla_lens.errors import SubjectMismatchError
from nla_lens.subjects import (
    ResidualRecorder,
    bridge_changes_residuals,
    capture_residual,
    check_bridge,
    check_subject,
    hook_name,
)
from tests.helpers import TEXT, boot_from_dir, make_tokenizer, rel

TOL = 1e-4


def _resid(bridge, ids, layer):
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids, names_filter=hook_name(layer))
    return cache[hook_name(layer)], logits


def _process_weights(bridge) -> None:
    bridge.process_weights()


def _compat(bridge) -> None:
    bridge.enable_compatibility_mode(disable_warnings=True)


@pytest.mark.parametrize("process", [_process_weights, _compat])
def test_processing_keeps_rms_residuals(bridge, reference, process):
    ids, hs, logits = reference
    process(bridge)
    assert bridge._weights_processed
    assert bridge.cfg.normalization_type == "RMS"
    for k in range(len(hs) - 2):
        assert rel(_resid(bridge, ids, k)[0], hs[k + 1]) < TOL
    # the logits move (center_unembed) by a per-position constant only
    _, processed_logits = _resid(bridge, ids, 0)
    assert rel(processed_logits, logits) > 1e-3
    shift = processed_logits - logits
    assert float((shift - shift.mean(-1, keepdim=True)).abs().max()) < 1e-4
    assert rel(processed_logits.log_softmax(-1), logits.log_softmax(-1)) < TOL
    # so nla_lens accepts it
    assert bridge_changes_residuals(bridge) is None
    check_bridge(bridge)
    assert rel(capture_residual(bridge, ids, 1).residual, hs[2]) < TOL


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=300,
        n_embd=64,
        n_layer=3,
        n_head=4,
        n_positions=128,
        bos_token_id=2,
        eos_token_id=1,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm gains and biases
        for name, param in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                param.normal_(1.0, 0.3)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("tiny-gpt2") / "tiny-gpt2"
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def gpt2_reference(gpt2_dir):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    model = GPT2LMHeadModel.from_pretrained(gpt2_dir, attn_implementation="eager").eval()
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return ids, model(ids, output_hidden_states=True).hidden_states


def test_layernorm_raw_bridge_matches(gpt2_dir, gpt2_reference):
    ids, hs = gpt2_reference
    bridge = boot_from_dir(gpt2_dir)
    assert bridge.cfg.normalization_type == "LN"
    check_bridge(bridge)
    assert rel(_resid(bridge, ids, 0)[0], hs[1]) < TOL
    assert rel(capture_residual(bridge, ids, 1).residual, hs[2]) < TOL
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    check_bridge(bridge)
    assert rel(_resid(bridge, ids, 1)[0], hs[2]) < TOL


@pytest.mark.parametrize(
    "process",
    [
        pytest.param(lambda b: b.process_weights(), id="process_weights"),
        pytest.param(lambda b: b.enable_compatibility_mode(disable_warnings=True), id="compat"),
        pytest.param(
            lambda b: b.process_weights(
                fold_ln=False, center_unembed=False, fold_value_biases=False
            ),
            id="center_writing_weights_only",
        ),
    ],
)
def test_layernorm_processing_changes_residuals_and_is_refused(gpt2_dir, gpt2_reference, process):
    ids, hs = gpt2_reference
    bridge = boot_from_dir(gpt2_dir)
    process(bridge)
    resid = _resid(bridge, ids, 1)[0]
    assert rel(resid, hs[2]) > 0.05  # wrong vectors...
    centred = hs[2] - hs[2].mean(-1, keepdim=True)
    assert rel(resid, centred) < TOL  # ...because each residual lost its mean
    assert "LayerNorm" in bridge_changes_residuals(bridge)
    with pytest.raises(SubjectMismatchError, match="boot a fresh bridge"):
        check_bridge(bridge)
    with pytest.raises(SubjectMismatchError, match="weights were processed"):
        capture_residual(bridge, ids, 1)
    with pytest.raises(SubjectMismatchError):
        ResidualRecorder(bridge, 1)
    with pytest.raises(SubjectMismatchError):
        check_subject(bridge, d_model=64, layer=1, base_model=None)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_processing_keeps_other_rms_families(tmp_path, family):
    # the other released NLA bases (Qwen2.5, Llama-3.3) are RMSNorm models too
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(0)
    cls = Qwen2Config if family == "qwen2" else LlamaConfig
    config = cls(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=1,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(1.0, 0.3)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path)
    tok = make_tokenizer()
    tok.save_pretrained(tmp_path)
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    bridge = boot_from_dir(tmp_path)
    bridge.enable_compatibility_mode(disable_warnings=True)
    assert bridge._weights_processed and bridge.cfg.normalization_type == "RMS"
    check_bridge(bridge)
    for k in range(len(hs) - 2):
        assert rel(capture_residual(bridge, ids, k).residual, hs[k + 1]) < TOL
