"""Wire contract of the SGLang and vLLM server clients, against the loopback server.

Outputs through each client must equal local in-process decoding of the same
embeddings, and survive injected faults with exactly one result per prompt.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from dataclasses import replace

import pytest
import torch

from nla_lens.backends.sglang import SGLangBackend
from nla_lens.backends.vllm import VLLMServerBackend, encode_prompt_embeds
from nla_lens.core.backend import GenerationOutput, Sampling
from nla_lens.core.local_backend import LocalBackend
from nla_lens.errors import BackendError

from .loopback import Faults

CLIENTS = ["sglang", "vllm"]
PARAMS = Sampling(temperature=0.0, max_new_tokens=12)


def make_client(kind: str, url: str, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 20.0)
    if kind == "sglang":
        return SGLangBackend(url, **kw)
    return VLLMServerBackend(url, "toy-av", **kw)


def prompts(loopback, n: int, length: int | None = None, seed: int = 0) -> list[torch.Tensor]:
    """Distinct prompt embeddings: embedded random ids, with one row overwritten by a
    random vector (as the AV injects), so every prompt decodes differently."""
    emb = loopback.decoder.model.get_input_embeddings()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = length or (5 + (7 * i) % 30)
        with torch.no_grad():
            e = emb(torch.randint(9, emb.weight.shape[0], (t,), generator=g)).clone()
        e[t // 2] = torch.randn(e.shape[1], generator=g) * 8.0
        out.append(e)
    return out


class Local:
    """Local in-process greedy decoding (nla_lens's LocalBackend) with stop strings applied
    to the decoded text: under greedy decoding, stopping at a stop string only cuts
    the continuation, so this equals decoding with stop strings."""

    def __init__(self, model, tokenizer) -> None:
        self.backend = LocalBackend(model, tokenizer)

    def generate(self, embeds, params: Sampling) -> list[GenerationOutput]:
        assert params.greedy
        outs = self.backend.generate(embeds, replace(params, stop=()))
        result = []
        for o in outs:
            cuts = [o.text.index(s) + len(s) for s in params.stop if s in o.text]
            text = o.text[: min(cuts)] if cuts else o.text
            result.append(GenerationOutput(text, o.token_ids, "stop" if cuts else o.finish_reason))
        return result


@pytest.fixture(scope="module")
def local(loopback):
    return Local(loopback.decoder.model, loopback.decoder.tokenizer)


@pytest.fixture(scope="module")
def batch(loopback):
    return torch.stack(prompts(loopback, 10, length=20))


@pytest.fixture(scope="module")
def expected(local, batch) -> list[GenerationOutput]:
    return local.generate(batch, PARAMS)


def same(a: list[GenerationOutput], b: list[GenerationOutput]) -> bool:
    return [(o.text, o.finish_reason) for o in a] == [(o.text, o.finish_reason) for o in b]


@pytest.mark.parametrize("kind", CLIENTS)
def test_equals_local_decoding(kind, loopback, batch, expected) -> None:
    loopback.reset()
    out = make_client(kind, loopback.url).generate(batch, PARAMS)  # a [n, seq, d] tensor
    assert same(out, expected)
    assert all(o.token_ids for o in out)
    assert loopback.stats.requests == len(batch)  # one request per prompt, no retries
    assert set(loopback.stats.replies.values()) == {1}


@pytest.mark.parametrize("kind", CLIENTS)
def test_order_kept_for_mixed_lengths(kind, loopback, local) -> None:
    """Prompts of different lengths are decoded in separate server batches and
    finish in any order; results still come back in prompt order."""
    loopback.reset()
    items = prompts(loopback, 7)
    want = [local.generate([e], PARAMS)[0] for e in items]  # batch 1: no padding
    out = make_client(kind, loopback.url).generate(items, PARAMS)
    assert same(out, want)


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    "faults",
    [
        Faults(drop_on={2, 5}),
        Faults(error_first=2),
        Faults(slow_first=1, slow_seconds=1.5),
        Faults(drop_on={1}, error_first=1, slow_first=1, slow_seconds=1.5),
    ],
    ids=["dropped-connections", "500-twice", "slow-beyond-timeout", "all-at-once"],
)
def test_faults_recovered_exactly_once(kind, faults, loopback, batch, expected) -> None:
    loopback.reset(faults)
    client = make_client(kind, loopback.url, timeout=0.6 if faults.slow_first else 20.0, retries=4)
    out = client.generate(batch, PARAMS)
    assert len(out) == len(batch)  # no loss, no duplicates
    assert same(out, expected)  # and each in its place
    assert loopback.stats.requests > len(batch)  # the faults did happen


@pytest.mark.parametrize("kind", CLIENTS)
def test_4xx_is_backend_error_with_server_message(kind, loopback, batch) -> None:
    loopback.reset(Faults(bad_request_on={3}))
    with pytest.raises(BackendError, match=r"HTTP 400.*injected bad request: prompt too long"):
        make_client(kind, loopback.url).generate(batch, PARAMS)


@pytest.mark.parametrize("kind", CLIENTS)
def test_wrong_width_is_400(kind, loopback) -> None:
    loopback.reset()
    with pytest.raises(BackendError, match=r"HTTP 400.*prompt embeddings must be"):
        make_client(kind, loopback.url).generate([torch.zeros(4, 7)], PARAMS)


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("fault", ["malformed_on", "garbage_on"])
def test_malformed_reply_is_backend_error(kind, fault, loopback, batch) -> None:
    loopback.reset(Faults(**{fault: {2}}))
    with pytest.raises(BackendError, match="malformed reply|not JSON"):
        make_client(kind, loopback.url).generate(batch, PARAMS)


@pytest.mark.parametrize("kind", CLIENTS)
def test_retries_exhausted(kind, loopback, batch) -> None:
    loopback.reset(Faults(error_first=100))
    with pytest.raises(BackendError, match=r"failed after 3 attempts; last error: HTTP 500"):
        make_client(kind, loopback.url, retries=2).generate(batch[:2], PARAMS)


def test_connection_refused() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = SGLangBackend(f"http://127.0.0.1:{port}", retries=1, backoff=0.01, timeout=2.0)
    with pytest.raises(BackendError, match="failed after 2 attempts.*ClientConnectorError"):
        client.generate([torch.zeros(3, 64)], PARAMS)


@pytest.mark.parametrize("kind", CLIENTS)
def test_bounded_in_flight(kind, loopback, batch, expected) -> None:
    loopback.reset()
    out = make_client(kind, loopback.url, max_in_flight=3).generate(batch, PARAMS)
    assert same(out, expected)
    assert 1 <= loopback.stats.max_inflight <= 3


@pytest.mark.parametrize("kind", CLIENTS)
def test_sync_generate_inside_running_loop(kind, loopback, batch, expected) -> None:
    """As in Jupyter: the sync API called from code running on an event loop."""
    loopback.reset()
    client = make_client(kind, loopback.url)

    async def main():
        sync = client.generate(batch[:3], PARAMS)
        native = await client.agenerate(batch[:3], PARAMS)
        return sync, native

    sync, native = asyncio.run(main())
    assert same(sync, expected[:3]) and same(native, expected[:3])


@pytest.mark.parametrize("kind", CLIENTS)
def test_seeded_sampling_reproducible_and_distinct(kind, loopback, batch) -> None:
    loopback.reset()
    # Very hot: the toy AV (and the stand-in) are so peaked that milder sampling repeats itself.
    params = Sampling(temperature=25.0, max_new_tokens=12, seed=7)
    same_prompt = [batch[0]] * 4
    a = make_client(kind, loopback.url).generate(same_prompt, params)
    b = make_client(kind, loopback.url).generate(same_prompt, params)
    assert [o.text for o in a] == [o.text for o in b]  # reproducible
    assert len({o.text for o in a}) > 1  # prompt i sampled with seed + i: not 4 copies


def test_empty_input(loopback) -> None:
    assert SGLangBackend(loopback.url).generate([], PARAMS) == []
    assert VLLMServerBackend(loopback.url).generate([], PARAMS) == []


# ---- request bodies (no server) -------------------------------------------------------------


def test_sglang_body_is_embeddings_only() -> None:
    e = torch.randn(5, 8)
    body = SGLangBackend("http://127.0.0.1:1")._body(e, Sampling(seed=3, max_new_tokens=9), 2)
    assert set(body) == {"input_embeds", "sampling_params"}  # never input_ids / text
    assert torch.equal(torch.tensor(body["input_embeds"]), e)  # fp32 values survive JSON exactly
    sp = body["sampling_params"]
    assert sp["max_new_tokens"] == 9 and sp["sampling_seed"] == 5 and sp["no_stop_trim"] is True
    assert sp["stop"] == ["</explanation>"]
    json.dumps(body)


def test_vllm_body_prompt_embeds() -> None:
    big = torch.randn(64, 50, 16)
    e = big[3]  # a view into a larger storage
    body = VLLMServerBackend("http://127.0.0.1:1", "m")._body(
        e, Sampling(temperature=0.5, seed=10), 4
    )
    assert "prompt" not in body and body["model"] == "m" and body["seed"] == 14
    assert body["include_stop_str_in_output"] is True and body["max_tokens"] == 200
    raw = base64.b64decode(body["prompt_embeds"])
    assert torch.equal(torch.load(io.BytesIO(raw), weights_only=True), e)
    assert len(raw) < 2 * e.numel() * 4 + 2048  # the view alone, not the whole batch's storage
    assert "model" not in VLLMServerBackend("http://127.0.0.1:1")._body(e, Sampling(), 0)
    assert encode_prompt_embeds(e) == body["prompt_embeds"]


def test_bad_settings() -> None:
    with pytest.raises(BackendError, match="http://"):
        SGLangBackend("127.0.0.1:30000")
    with pytest.raises(BackendError, match="max_in_flight"):
        VLLMServerBackend("http://x", max_in_flight=0)


@pytest.mark.integration
@pytest.mark.parametrize("kind", CLIENTS)
def test_nla_explain_through_server_equals_local(kind, loopback, nla_or_none) -> None:
    """The whole pair with the AV decoding on the server equals the in-process pair."""
    if nla_or_none is None:
        pytest.skip("toy pair not built")
    from nla_lens import NLA

    nla, toy, vectors = nla_or_none
    loopback.reset()
    remote = NLA.from_pretrained(
        toy.av, toy.ar, device="cpu", backend=make_client(kind, loopback.url)
    )
    assert remote.av.model is None  # only the embedding table was loaded here
    got = remote.explain(vectors, max_new_tokens=40)
    want = nla.explain(vectors, max_new_tokens=40)
    assert [e.raw for e in got] == [e.raw for e in want]
    assert [(e.text, e.truncated) for e in got] == [(e.text, e.truncated) for e in want]
    assert [e.cos for e in got] == pytest.approx([e.cos for e in want], rel=1e-6)
    assert got[0].provenance is not None and got[0].provenance.backend == kind


def test_missing_extras(monkeypatch) -> None:
    import sys

    from nla_lens.backends.vllm import VLLMEngineBackend
    from nla_lens.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if the 'serve' extra were not installed
    with pytest.raises(MissingExtraError, match=r"nla-lens\[serve\]"):
        SGLangBackend("http://127.0.0.1:1").generate([torch.zeros(2, 4)], PARAMS)
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingExtraError, match=r"nla-lens\[vllm\]"):
        VLLMEngineBackend("/nonexistent")
