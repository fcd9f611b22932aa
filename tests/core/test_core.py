"""Integration tests of the AV/AR adapters and the pair on the shipped toy checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nla_lens import NLA, Explanation, Reconstructor, Verbalizer, toy
from nla_lens.subjects.inputs import token_text
from tests._reference.nla_reference import ReferenceAR, ReferenceAV

pytestmark = pytest.mark.integration


def test_batched_greedy_equals_independent_reference(toy, nla, toy_residuals):
    """16 real toy residuals: one batched call == an independent one-at-a-time
    implementation of the recipe (text), and AR scores agree to 1e-4."""
    vectors = toy_residuals[0][:16]
    batched = nla.explain(vectors, max_new_tokens=40)
    ref_av, ref_ar = ReferenceAV(toy.av), ReferenceAR(toy.ar)
    for i, e in enumerate(batched):
        raw = ref_av.generate(vectors[i], max_new_tokens=40)
        assert e.raw == raw, f"row {i}: batched {e.raw!r} != reference {raw!r}"
        assert e.text == ref_av.extract(raw)
        mse, cos = ref_ar.score(e.text, vectors[i])
        assert e.mse_nrm == pytest.approx(mse, abs=1e-4)
        assert e.cos == pytest.approx(cos, abs=1e-4)


def test_batched_equals_one_at_a_time(nla, toy_residuals):
    vectors = toy_residuals[0][:8]
    batched = [e.text for e in nla.explain(vectors, max_new_tokens=40)]
    single = [nla.explain(v, max_new_tokens=40)[0].text for v in vectors]
    assert batched == single
    small_batches = [e.text for e in nla.explain(vectors, max_new_tokens=40, batch_size=3)]
    assert small_batches == batched


def test_explanation_fields_and_inputs(nla, toy_residuals):
    v = toy_residuals[0][:3]
    for form in (v, v.numpy(), v.to(torch.bfloat16), v.double()):
        out = nla.explain(form, max_new_tokens=40)
        assert len(out) == 3 and all(isinstance(e, Explanation) for e in out)
    e = nla.explain(v[0], max_new_tokens=40)[0]
    assert e.text and "<explanation>" in e.raw and not e.truncated
    assert e.mse_nrm == pytest.approx(2 * (1 - e.cos), abs=1e-5)
    assert e.fve_nrm is not None and e.provenance is not None
    assert e.provenance.av.content_sha256 and e.provenance.sampling["max_new_tokens"] == 40


def test_truncation_flag(nla, toy_residuals):
    e = nla.explain(toy_residuals[0][0], max_new_tokens=2)[0]
    assert e.truncated and e.raw


def test_sampling_reproducible_with_seed(nla, toy_residuals):
    v = toy_residuals[0][:4]
    a = nla.explain(v, temperature=1.0, samples=3, seed=7, max_new_tokens=30)
    b = nla.explain(v, temperature=1.0, samples=3, seed=7, max_new_tokens=30)
    assert [e.raw for e in a] == [e.raw for e in b]
    assert [(e.index, e.sample) for e in a] == [(i, s) for i in range(4) for s in range(3)]


def test_av_and_ar_usable_alone(toy, toy_residuals):
    av = Verbalizer.from_pretrained(toy.av, device="cpu")
    ar = Reconstructor.from_pretrained(toy.ar, device="cpu")
    exps = av.explain(toy_residuals[0][:4], max_new_tokens=40)
    assert all(e.cos is None for e in exps)
    pred = ar.reconstruct([e.text for e in exps])
    assert pred.shape == (4, av.d_model)
    nla = NLA(av, ar)
    assert (
        nla.layer == av.layer
        and nla.d_model == 64
        and nla.hook_name == f"blocks.{nla.layer}.hook_resid_post"
    )
    nla_no_ar = NLA(av)
    assert nla_no_ar.explain(toy_residuals[0][0], max_new_tokens=40)[0].fve_nrm is None


def test_ar_batched_equals_single(nla):
    texts = ["token : cat", "token : house and more words here", "token : red"]
    batched = nla.reconstruct(texts)
    single = torch.cat([nla.reconstruct(t) for t in texts])
    assert torch.allclose(batched, single, atol=1e-5)


def test_ar_runs_each_distinct_text_once(nla):
    """Repeated explanations (the same first line of many rows, equal samples) reach the
    backbone once each; every row still gets its text's vector, in the caller's order."""
    ar = nla.ar
    texts = ["random words", "token : cat", "random words", "token : red", "random words"] * 3
    seen: list[int] = []
    real = ar.backbone.forward

    def counting(*args, **kwargs):
        seen.append(int(kwargs["input_ids"].shape[0]))
        return real(*args, **kwargs)

    ar.backbone.forward = counting
    try:
        pred = ar.reconstruct(texts, batch_size=2)
    finally:
        del ar.backbone.forward
    assert sum(seen) == 3 and max(seen) <= 2  # three distinct texts, batches of at most 2
    distinct = ar.reconstruct(["random words", "token : cat", "token : red"], batch_size=2)
    for i, t in enumerate(texts):
        j = ["random words", "token : cat", "token : red"].index(t)
        assert torch.equal(pred[i], distinct[j]), (i, t)
    assert pred.data_ptr() != distinct.data_ptr() and pred.shape == (15, nla.d_model)


def test_user_baseline(nla, toy_residuals):
    saved = nla.baseline
    try:
        b = nla.set_baseline(toy_residuals[0])
        assert b.n == len(toy_residuals[0]) and 0 < b.variance < 4
        assert nla.set_baseline(0.5).variance == 0.5
    finally:
        nla.baseline = saved


def test_toy_quality(nla, toy_residuals):
    """The toy pair's quality figures, measured through the public API on held-out residuals."""
    vectors, token_ids = toy_residuals
    exps = nla.explain(vectors, max_new_tokens=96)  # the whole three-line explanation
    tok = nla.av.tokenizer
    # line 3 names the last token exactly as it decodes (" cat" for the spaced piece)
    named = [
        toy.read_explanation(e.text).token == token_text(tok, int(t))
        for e, t in zip(exps, token_ids, strict=True)
    ]
    accuracy = float(np.mean(named))
    fve = float(np.mean([e.fve_nrm for e in exps]))
    print(
        f"toy quality: accuracy={accuracy:.3f} fve_nrm={fve:.3f} n={len(exps)} baseline={nla.baseline}"
    )
    assert accuracy >= 0.8
    assert fve >= 0.5


def test_partial_results_survive_a_failing_backend(nla, toy_residuals):
    """A backend that dies part-way: the finished decodes come back on the error."""
    from nla_lens import Verbalizer
    from nla_lens.errors import IncompleteResultsError

    real = nla.av.backend
    calls = []

    class Flaky:
        name = "flaky"

        def generate(self, embeds, params):
            calls.append(len(embeds))
            if len(calls) == 3:
                raise ConnectionError("server went away")
            return real.generate(embeds, params)

    av = Verbalizer(nla.av.meta, nla.av.tokenizer, nla.av.embedder, Flaky(), model=nla.av.model)
    with pytest.raises(IncompleteResultsError, match="after 8 of 12") as info:
        av.explain(toy_residuals[0][:12], batch_size=4, max_new_tokens=20)
    assert len(info.value.partial) == 8
    expected = [e.raw for e in nla.explain(toy_residuals[0][:8], max_new_tokens=20)]
    assert [o.text for o in info.value.partial] == expected


def test_shared_prefix_cache_changes_nothing(nla, toy_residuals):
    """The local backend prefills the shared prompt prefix once; decodes are unchanged."""
    from nla_lens.backends import LocalBackend, Sampling

    embeds = nla.av.prompt_embeds(toy_residuals[0][:16])
    params = Sampling(max_new_tokens=20)
    shared = LocalBackend(nla.av.model, nla.av.tokenizer, share_prefix=True)
    plain = LocalBackend(nla.av.model, nla.av.tokenizer, share_prefix=False)
    assert (
        shared._shared_prefix_cache(embeds, torch.ones(embeds.shape[:2], dtype=torch.long))
        is not None
    )
    assert [o.text for o in shared.generate(embeds, params)] == [
        o.text for o in plain.generate(embeds, params)
    ]
    sampled = Sampling(temperature=1.0, max_new_tokens=20, seed=3)
    assert [o.text for o in shared.generate(embeds, sampled)] == [
        o.text for o in plain.generate(embeds, sampled)
    ]


def test_explain_through_the_cache(nla, toy_residuals, tmp_path):
    from nla_lens import ExplanationCache

    cache = ExplanationCache(tmp_path / "cache.sqlite")
    v = toy_residuals[0][:6]
    first = nla.explain(v[:4], max_new_tokens=20, cache=cache)
    calls = []
    real = nla.av.explain_rows

    def counting(rows, *args, **kw):
        calls.append(len(rows))
        return real(rows, *args, **kw)

    nla.av.explain_rows = counting
    try:
        again = nla.explain(v, max_new_tokens=20, cache=cache)
    finally:
        del nla.av.explain_rows
    assert calls == [2]  # only the two new rows were computed
    assert [e.text for e in again[:4]] == [e.text for e in first]
    assert [e.cos for e in again[:4]] == pytest.approx([e.cos for e in first])
    assert [e.text for e in again] == [e.text for e in nla.explain(v, max_new_tokens=20)]
