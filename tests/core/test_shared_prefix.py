"""Shared-prefix (cascade) attention in the local backend is exact attention, reordered."""

from __future__ import annotations

import pytest
import torch

from nla_lens.backends import LocalBackend, Sampling
from nla_lens.core import shared_prefix

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
TINY_ATTN = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}


def tiny_model(model_type: str, vocab: int, **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    extra.setdefault("attn_implementation", "sdpa")
    config = AutoConfig.for_model(model_type, vocab_size=vocab, **TINY, **TINY_ATTN, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = 1
    return model


ARCHES = {
    "llama": {},
    "mistral": {"sliding_window": 4096},
    "qwen2": {},
    "qwen3": {},
    "gemma2": {  # soft-capped attention: transformers runs it eagerly
        "attn_logit_softcapping": 30.0,
        "query_pre_attn_scalar": 8,
        "attn_implementation": "eager",
    },
    "gemma3_text": {"sliding_window": 512, "query_pre_attn_scalar": 8},
}


def test_every_supported_architecture_is_tested():
    assert set(ARCHES) == shared_prefix.SUPPORTED_MODEL_TYPES


def shared_batch(d: int, n: int = 6, k: int = 2, prefix: int = 12, tail: int = 4):
    """``n`` prompts sharing ``prefix`` rows, in pairs of ``k`` identical prompts."""
    g = torch.Generator().manual_seed(1)
    head = torch.randn(1, prefix, d, generator=g).expand(n, -1, -1)
    own = torch.randn(n // k, tail, d, generator=g).repeat_interleave(k, dim=0)
    return torch.cat([head, own], dim=1).contiguous()


@pytest.mark.parametrize("model_type", sorted(ARCHES))
def test_logits_match_plain_attention(model_type, toy):
    from nla_lens.core.loading import load_tokenizer

    tok = load_tokenizer(toy.av)
    model = tiny_model(model_type, len(tok), **ARCHES[model_type])
    embeds = shared_batch(model.config.hidden_size)
    n, t, _ = embeds.shape
    backend = LocalBackend(model, tok)
    step = torch.randn(n, 1, embeds.shape[-1], generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        full = model(inputs_embeds=embeds).logits[:, -1]
        then = model(inputs_embeds=torch.cat([embeds, step], dim=1)).logits[:, -1]
        made = backend._shared_prefix_cache(embeds, torch.ones(n, t, dtype=torch.long))
        assert made is not None
        cache, cascade, first = made
        assert cascade, f"{model_type}: shared-prefix attention not used"
        assert cache.get_seq_length() == t  # the whole prompt, prefilled in two forwards
        with shared_prefix.active(model, cache):  # and one decode step on it
            after = model(inputs_embeds=step, past_key_values=cache).logits[:, -1]
    assert model.config._attn_implementation == ARCHES[model_type].get(
        "attn_implementation", "sdpa"
    )
    torch.testing.assert_close(first, full, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(after, then, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_decodes_match_plain_attention(model_type, toy):
    from nla_lens.core.loading import load_tokenizer

    tok = load_tokenizer(toy.av)
    model = tiny_model(model_type, len(tok), **ARCHES[model_type])
    embeds = shared_batch(model.config.hidden_size, n=8, k=4)
    shared = LocalBackend(model, tok, share_prefix=True)
    plain = LocalBackend(model, tok, share_prefix=False)
    for params in (
        Sampling(max_new_tokens=12),
        Sampling(temperature=1.0, max_new_tokens=12, seed=2),
    ):
        a = [o.token_ids for o in shared.generate(embeds, params)]
        b = [o.token_ids for o in plain.generate(embeds, params)]
        assert a == b
        assert all(len(ids) > 0 for ids in a)


def test_toy_av_uses_it_and_decodes_are_unchanged(nla, toy_residuals):
    """On the toy AV: 4 samples of 8 vectors, greedy and sampled, shared vs plain."""
    embeds = nla.av.prompt_embeds(toy_residuals[0][:8].repeat_interleave(4, dim=0))
    shared = LocalBackend(nla.av.model, nla.av.tokenizer, share_prefix=True)
    plain = LocalBackend(nla.av.model, nla.av.tokenizer, share_prefix=False)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    made = shared._shared_prefix_cache(embeds, mask)
    assert made is not None and made[1]
    for params in (
        Sampling(max_new_tokens=20),
        Sampling(temperature=1.0, max_new_tokens=20, seed=3),
    ):
        assert [o.text for o in shared.generate(embeds, params)] == [
            o.text for o in plain.generate(embeds, params)
        ]


def test_falls_back_past_a_sliding_window(toy):
    """A sequence longer than a sliding window keeps the repeated (plain) cache, still exact."""
    from nla_lens.core.loading import load_tokenizer

    tok = load_tokenizer(toy.av)
    model = tiny_model("mistral", len(tok), sliding_window=14)
    embeds = shared_batch(model.config.hidden_size)
    assert not shared_prefix.supports(model, embeds.shape[1] + 8)
    backend = LocalBackend(model, tok)
    made = backend._shared_prefix_cache(embeds, torch.ones(embeds.shape[:2], dtype=torch.long))
    assert made is not None and made[1] is False
    params = Sampling(max_new_tokens=8)
    plain = LocalBackend(model, tok, share_prefix=False)
    assert [o.token_ids for o in backend.generate(embeds, params)] == [
        o.token_ids for o in plain.generate(embeds, params)
    ]


@pytest.mark.parametrize(
    ("model_type", "extra"),
    [("mistral", {}), ("gemma3_text", {"query_pre_attn_scalar": 8})],
)
def test_a_decode_that_grows_past_the_window_goes_on_exactly(model_type, extra, toy, monkeypatch):
    """The prompt fits the window, the decode does not: shared-prefix attention while it is
    exact, then the plain cache (converted once, at the window), the plain decode's tokens."""
    from nla_lens.core.loading import load_tokenizer

    tok = load_tokenizer(toy.av)
    model = tiny_model(model_type, len(tok), sliding_window=20, **extra)
    embeds = shared_batch(model.config.hidden_size)  # 16 prompt tokens
    assert shared_prefix.supports(model, embeds.shape[1])
    calls = []
    to_plain = shared_prefix.to_plain

    def spy(cache, config):
        calls.append(cache.get_seq_length())
        return to_plain(cache, config)

    monkeypatch.setattr(shared_prefix, "to_plain", spy)
    shared = LocalBackend(model, tok, share_prefix=True)
    plain = LocalBackend(model, tok, share_prefix=False)
    for params in (
        Sampling(max_new_tokens=12),
        Sampling(temperature=1.0, max_new_tokens=12, seed=4),
    ):
        calls.clear()
        a = [o.token_ids for o in shared.generate(embeds, params)]
        b = [o.token_ids for o in plain.generate(embeds, params)]
        assert a == b
        assert max(len(ids) for ids in a) >= 6  # a row ran past token 20 of the sequence
        assert calls == [20], calls  # converted once, with the window full


def test_a_model_that_cannot_switch_attention_is_not_routed(toy, monkeypatch):
    from nla_lens.core.loading import load_tokenizer

    model = tiny_model("llama", len(load_tokenizer(toy.av)))
    assert shared_prefix.supports(model, 10)
    monkeypatch.setattr(type(model), "_can_set_attn_implementation", classmethod(lambda cls: False))
    assert not shared_prefix.supports(model, 10)


def test_unsupported_architecture_is_not_routed(toy):
    class Config:
        model_type = "gpt_oss"  # attention sinks: not plain scaled dot product
        _attn_implementation = "sdpa"

    class Model:
        config = Config()

    assert not shared_prefix.supports(Model(), 10)


def test_attention_outside_a_shared_decode_refuses():
    q = torch.zeros(1, 2, 1, 4)
    with pytest.raises(RuntimeError, match="outside a shared-prefix decode"):
        shared_prefix.shared_prefix_attention(object(), q, q, q, None)


def test_text_view_of_a_multimodal_model(toy):
    """Gemma-3 multimodal checkpoints decode through a text-only view sharing their modules."""
    from pathlib import Path

    from transformers import AutoModelForImageTextToText

    from nla_lens.core.arch import text_only_lm
    from nla_lens.core.loading import load_tokenizer

    wrapper = AutoModelForImageTextToText.from_pretrained(
        Path(toy.av).parent / "subject_multimodal", dtype=torch.float32
    )
    model = text_only_lm(wrapper)
    tok = load_tokenizer(toy.av)
    embeds = shared_batch(model.config.hidden_size, n=4, k=2) * 0.1
    made = LocalBackend(model, tok)._shared_prefix_cache(
        embeds, torch.ones(embeds.shape[:2], dtype=torch.long)
    )
    assert made is not None and made[1]
    params = Sampling(max_new_tokens=8)
    a = LocalBackend(model, tok, share_prefix=True).generate(embeds, params)
    b = LocalBackend(model, tok, share_prefix=False).generate(embeds, params)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]


def test_a_layer_with_its_own_config_is_not_routed(toy):
    from nla_lens.core.loading import load_tokenizer

    model = tiny_model("llama", len(load_tokenizer(toy.av)))
    assert shared_prefix.supports(model, 10)
    model.model.layers[0].self_attn.config = type(model.config)(**model.config.to_dict())
    assert not shared_prefix.supports(model, 10)


def test_the_switch_is_validated_once_per_model_and_always_restored(toy, monkeypatch):
    """transformers validates the switch to shared-prefix attention once per model (its
    ``set_attn_implementation`` walks every submodule, twice a decode step otherwise); later
    switches set the shared config: the same decodes, the user's own attention restored after
    each, also one the user changed between decodes."""
    from nla_lens.core.loading import load_tokenizer

    tok = load_tokenizer(toy.av)
    model = tiny_model("llama", len(tok))
    embeds = shared_batch(model.config.hidden_size, n=8, k=4)
    backend = LocalBackend(model, tok, share_prefix=True)
    plain = LocalBackend(model, tok, share_prefix=False)
    calls: list[str] = []
    real = type(model).set_attn_implementation

    def spy(self, name, *args, **kwargs):
        calls.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(type(model), "set_attn_implementation", spy)
    params = Sampling(max_new_tokens=12)
    expected = [o.token_ids for o in plain.generate(embeds, params)]
    assert [o.token_ids for o in backend.generate(embeds, params)] == expected
    first = len(calls)
    assert first == 2 and calls == [shared_prefix.ATTENTION_NAME, "sdpa"]
    assert [o.token_ids for o in backend.generate(embeds, params)] == expected
    assert len(calls) == first  # every later step: the config alone
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")  # the user's change between decodes
    calls.clear()
    assert [o.token_ids for o in backend.generate(embeds, params)] == expected
    assert calls == [] and model.config._attn_implementation == "eager"
    assert all(
        m.config._attn_implementation == "eager" for m in model.modules() if hasattr(m, "config")
    )
