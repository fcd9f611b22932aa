"""Quantized loading (issue 19 item 6): names, backends and devices refused plainly; on the
toy pair, quantized explanations against full precision, with the measured memory; the
quantization in provenance, cache keys and job fingerprints."""

from __future__ import annotations

import sys

import pytest
import torch

from nla_lens import NLA, ExplanationCache, Sampling, Verbalizer, load_subject
from nla_lens.backends import SGLangBackend
from nla_lens.core import quantization as quant
from nla_lens.core.quantization import resolve_quantization, weight_bytes
from nla_lens.errors import (
    DeviceError,
    MissingExtraError,
    MissingQuantizationBackendError,
    NLAError,
    QuantizationDeviceError,
    QuantizationError,
    UnknownQuantizationError,
)
from nla_lens.serving.cache import checkpoint_identity
from nla_lens.subjects import as_subject

#: held-out vectors explained per setting for the checks of every scheme (provenance, memory,
#: score tolerances); the issue's agreement goals are measured on N_GOAL fresh ones below
N = 32
N_GOAL = 256
#: issue 19's goals: greedy explanations equal to full precision on >= 90% (8-bit) and >= 70%
#: (4-bit) of held-out vectors. "nf4" (every Linear NF4) has no goal: 0.57 of 1,024 fresh
#: residuals, so its floor is a regression guard. On the 32 the floors are the same.
AGREEMENT = {"int8": 0.9, "4bit": 0.7, "nf4": 0.5, "torchao-int8": 0.9}
#: max |d fve_nrm| on equal texts: the AR's rounding, over the generic baseline's small
#: variance (0.06): int8 moves mse_nrm by ~0.002, i.e. fve_nrm by up to 0.034 on the 32
FVE_TOLERANCE = {"int8": 0.04, "4bit": 0.15, "nf4": 0.2, "torchao-int8": 0.04}


# ---- names, backends, devices (no model loaded) -------------------------------------------
def test_names() -> None:
    assert resolve_quantization(None) is None and resolve_quantization("none") is None
    assert resolve_quantization("INT8").name == "int8"  # type: ignore[union-attr]
    assert resolve_quantization("NF4").name == "nf4"  # type: ignore[union-attr]
    assert resolve_quantization("4bit").kept_int8 == ("v_proj", "down_proj")  # type: ignore[union-attr]
    assert resolve_quantization("4bit").backends == ("bitsandbytes", "torchao")  # type: ignore[union-attr]
    for bad in ("int3", "gptq", 8):
        with pytest.raises(
            UnknownQuantizationError, match="'int8'.*'4bit'.*'nf4'.*'torchao-int8'"
        ) as e:
            resolve_quantization(bad)  # type: ignore[arg-type]
        assert isinstance(e.value, (NLAError, QuantizationError, ValueError))


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("4bit", "bitsandbytes"),
        ("4bit", "torchao"),
        ("nf4", "bitsandbytes"),
        ("torchao-int8", "torchao"),
    ],
)
def test_missing_backend_names_the_extra(toy, monkeypatch, name, package) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(
        MissingQuantizationBackendError, match=rf"{package}.*nla-lens\[quant\]"
    ) as e:
        Verbalizer.from_pretrained(toy.av, device="cpu", quantization=name)
    assert isinstance(e.value, (MissingExtraError, QuantizationError)) and e.value.extra == "quant"


def test_device_it_cannot_run_on(toy, monkeypatch) -> None:
    with pytest.raises(QuantizationDeviceError, match="meta device holds no weights"):
        NLA.from_pretrained(toy.av, device="meta", quantization="int8")

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no 4-bit kernel for this device")

    import bitsandbytes

    monkeypatch.setattr(bitsandbytes.nn.Linear4bit, "forward", no_kernel)
    quant._probe.cache_clear()
    try:
        with pytest.raises(
            QuantizationDeviceError, match="cannot run on device='cpu'.*no 4-bit kernel"
        ) as e:
            load_subject(toy.subject, device="cpu", quantization="4bit")
        assert isinstance(e.value, DeviceError)
    finally:
        quant._probe.cache_clear()


def test_server_decoding_cannot_be_quantized_here(toy) -> None:
    with pytest.raises(QuantizationError, match="quantize it there"):
        Verbalizer.from_pretrained(
            toy.av, backend=SGLangBackend("http://127.0.0.1:9"), quantization="int8"
        )


# ---- the toy pair, quantized ------------------------------------------------------------
@pytest.fixture(scope="module")
def vectors(toy_residuals):
    return toy_residuals[0][:N]


@pytest.fixture(scope="module")
def reference(nla, vectors):
    return nla.explain(vectors, progress=False)


_PAIRS: dict[str, NLA] = {}


@pytest.fixture(scope="module")
def quantized(toy):
    def get(name: str) -> NLA:
        if name not in _PAIRS:
            _PAIRS[name] = NLA.from_pretrained(toy.av, toy.ar, device="cpu", quantization=name)
        return _PAIRS[name]

    yield get
    _PAIRS.clear()


@pytest.mark.integration
@pytest.mark.parametrize("name", ["int8", "4bit", "nf4", "torchao-int8"])
def test_quantized_explanations_against_full_precision(nla, quantized, vectors, reference, name):
    q = quantized(name)
    got = q.explain(vectors, progress=False)
    same = [a.text == b.text for a, b in zip(reference, got, strict=True)]
    agreement = sum(same) / N
    dfve = max(
        abs(a.fve_nrm - b.fve_nrm) for a, b, s in zip(reference, got, same, strict=True) if s
    )
    dcos = max(abs(a.cos - b.cos) for a, b, s in zip(reference, got, same, strict=True) if s)
    full_mem = weight_bytes(nla.av.model), weight_bytes(nla.ar.backbone)
    mem = weight_bytes(q.av.model), weight_bytes(q.ar.backbone)
    print(
        f"\n{name}: greedy explanations equal to full precision on {sum(same)} of {N} held-out "
        f"vectors ({agreement:.0%}; floor {AGREEMENT[name]:.0%}); on those, max |d fve_nrm| {dfve:.4f}, max |d cos| "
        f"{dcos:.4f} (tolerance {FVE_TOLERANCE[name]}); weights AV {mem[0]:,} B (float32 "
        f"{full_mem[0]:,}), AR backbone {mem[1]:,} B (float32 {full_mem[1]:,})"
    )
    assert agreement >= AGREEMENT[name]
    assert dfve <= FVE_TOLERANCE[name] and dcos <= FVE_TOLERANCE[name]
    assert mem[0] < full_mem[0] and mem[1] < full_mem[1]
    # provenance records it, for both halves, and it is part of the identity
    prov = got[0].provenance
    assert prov is not None and prov.av.quantization == name and prov.ar.quantization == name
    assert prov.identity()["av"]["quantization"] == name
    assert "quantization" not in nla.provenance().identity()["av"]  # full-precision keys unchanged
    assert prov.identity_hash() != nla.provenance().identity_hash()
    assert f"av_quantization='{name}'" in repr(q)


def fresh_residuals(subject, layer: int, n: int, seed: int) -> torch.Tensor:
    """Layer-K residuals of the toy subject on random content tokens, drawn as the
    toy_residuals fixture draws them but from other seeds: vectors no test has seen."""
    from tests.conftest import content_vocab

    model, tok = subject
    vocab = torch.tensor(content_vocab(tok))
    g = torch.Generator().manual_seed(seed)
    ids = vocab[torch.randint(len(vocab), (n, 12), generator=g)]
    ids = torch.cat([torch.full((n, 1), tok.bos_token_id), ids], dim=1)
    with torch.inference_mode():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
    pos = torch.randint(2, 13, (n,), generator=g)
    return hs[torch.arange(n), pos].clone()


@pytest.mark.integration
def test_the_agreement_goals_on_fresh_held_out_residuals(nla, quantized, subject) -> None:
    """Issue 19's figure: greedy explanations equal to full precision, 8-bit >= 90% and
    4-bit >= 70% of held-out vectors, on 256 fresh residuals (32 say little: +-8%). Pure
    NF4 is reported beside "4bit" to show what keeping v_proj / down_proj at int8 buys."""
    v = fresh_residuals(subject, nla.layer, N_GOAL, seed=2027)
    ref = [o.token_ids for o in nla.av.generate(v, Sampling())]
    rates = {}
    for name in ("int8", "4bit", "nf4"):
        got = [o.token_ids for o in quantized(name).av.generate(v, Sampling())]
        rates[name] = sum(a == b for a, b in zip(ref, got, strict=True)) / N_GOAL
    print(
        f"\ngreedy explanations equal to float32 on {N_GOAL} fresh held-out residuals: "
        + ", ".join(f"{k} {v:.1%} (goal/floor {AGREEMENT[k]:.0%})" for k, v in rates.items())
    )
    for name, rate in rates.items():
        assert rate >= AGREEMENT[name], (name, rate)
    assert rates["4bit"] > rates["nf4"]


@pytest.mark.integration
def test_4bit_computes_at_the_load_dtype(quantized, vectors) -> None:
    """NF4 weights, float32 matmuls: after a forward (when bitsandbytes would switch a CPU
    with AVX512-BF16 to its bfloat16 kernel) each 4-bit layer gives exactly x @ W^T with
    its dequantized weight W, computed in float32. In "4bit" the v_proj and down_proj
    layers, and only they, are torchao int8 weight-only; in "nf4" every decoder Linear is NF4."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    for name in ("4bit", "nf4"):
        model = quantized(name).av.model
        for fqn, m in model.model.layers.named_modules():
            if isinstance(m, torch.nn.Linear):
                kept = name == "4bit" and fqn.rsplit(".", 1)[-1] in ("v_proj", "down_proj")
                int8 = type(m.weight).__name__ == "Int8Tensor"
                assert int8 == kept and isinstance(m, bnb.nn.Linear4bit) == (not kept), fqn
        assert quant.quantization_of(model) == name
    q = quantized("4bit")
    q.explain(vectors[:2], progress=False)
    layers = [m for m in q.av.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.compute_dtype == torch.float32 for m in layers)
    lin = layers[0]
    assert not getattr(lin.weight.quant_state, "packing_format_for_cpu", False)
    w = dequantize_4bit(lin.weight.data, lin.weight.quant_state)
    x = torch.randn(3, lin.in_features)
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), x @ w.float().T, rtol=1e-6, atol=1e-6)


@pytest.mark.integration
def test_8bit_same_argmax_on_every_position(nla, quantized, vectors) -> None:
    """Teacher-forced with the full-precision greedy explanation after the injected AV
    prompt: at every decoding position (the prompt's last one on) int8 picks the token full
    precision picks. 4-bit's agreement there, and both over the prompt's positions too
    (next-token guesses inside the fixed prompt, which decide nothing), are reported."""
    outs = nla.av.generate(vectors, Sampling())

    def argmax(av: Verbalizer) -> tuple[torch.Tensor, torch.Tensor]:
        decode, prompt = [], []
        start = len(av.prompt_ids) - 1
        with torch.inference_mode():
            for i, out in enumerate(outs):
                ids = torch.tensor([out.token_ids])
                emb = torch.cat([av.prompt_embeds(vectors[i : i + 1]), av.embedder(ids)], dim=1)
                picks = av.model(inputs_embeds=emb).logits[0, :-1].argmax(-1)
                decode.append(picks[start:])
                prompt.append(picks[:start])
        return torch.cat(decode), torch.cat(prompt)

    ref, ref_prompt = argmax(nla.av)
    assert ref.tolist() == [t for out in outs for t in out.token_ids]  # greedy, teacher-forced
    rates = {}
    for name in ("int8", "4bit"):
        got, got_prompt = argmax(quantized(name).av)
        rates[name] = (got == ref).float().mean().item()
        rates[name + " incl. prompt"] = (
            (torch.cat([got, got_prompt]) == torch.cat([ref, ref_prompt])).float().mean().item()
        )
    print(f"\nargmax equal to full precision at {ref.numel()} decoding positions ("
          f"{ref.numel() + ref_prompt.numel()} with the prompt's): "
          + ", ".join(f"{k} {v:.1%}" for k, v in rates.items()))  # fmt: skip
    # measured: 99.86% on the earlier three-line toy, 99.7% on the 2026-12-07 pair (726 positions)
    assert rates["int8"] >= 0.99
    assert rates["4bit"] >= AGREEMENT["4bit"]


@pytest.mark.integration
def test_cache_never_mixes_quantized_and_full(nla, quantized, vectors, reference, tmp_path):
    cache = ExplanationCache(tmp_path / "c.sqlite")
    nla.explain(vectors[:4], cache=cache, progress=False)
    q = quantized("int8")
    s = Sampling()
    assert cache.split(checkpoint_identity(nla), vectors[:4], s, score=True).misses == []
    assert cache.split(checkpoint_identity(q), vectors[:4], s, score=True).misses == [0, 1, 2, 3]
    got = q.explain(vectors[:4], cache=cache, progress=False)
    assert all(e.provenance.av.quantization == "int8" for e in got)
    assert len(cache) == 8  # both kept, apart


@pytest.mark.integration
def test_quantized_subject(toy, nla, subject) -> None:
    model = load_subject(toy.subject, device="cpu", quantization="int8")
    assert as_subject(model).info.quantization == "int8"
    assert as_subject(subject[0]).info.quantization is None
    text = "the duck is in his mountain ."
    full = nla.capture(subject[0], text, tokenizer=subject[1])
    got = nla.capture(model, text, tokenizer=subject[1])
    cos = torch.nn.functional.cosine_similarity(full[0], got[0], dim=-1)
    assert cos.min() > 0.99, cos
    t = nla.transcript(model, text, tokenizer=subject[1], max_new_tokens=40)
    assert "(int8-quantized)" in t.model_name and t.meta["subject_quantization"] == "int8"


@pytest.mark.integration
def test_cli_transcript_quantized(capsys) -> None:
    from nla_lens.cli import main

    args = ["transcript", "the cat", "--plain", "--max-new-tokens", "12"]
    assert main([*args, "--quantization", "4bit", "--subject-quantization", "int8"]) == 0
    assert "(int8-quantized)" in capsys.readouterr().out
    assert main([*args, "--quantization", "int3"]) == 2
    assert "quantization='int3' is not a quantization" in capsys.readouterr().err
