"""k samples per vector: scores, agreement, hedge, best-of-k, and bootstrap intervals."""

from __future__ import annotations

import pytest
import torch

from nla_lens.errors import SamplingError
from nla_lens.experiments.uncertainty import TextScorer, bootstrap_delta
from tests.experiments._vectors import agreeing_and_disagreeing

TOKENS = 96  # a whole three-line toy explanation


def test_bootstrap_interval_narrows_as_k_grows():
    """Per-sample scores drawn from one spread: the mean width over repeated draws
    falls with k (as 1/sqrt(k))."""
    g = torch.Generator().manual_seed(0)
    widths = []
    for k in (4, 16, 64, 256):
        w = []
        for rep in range(20):
            own, other = torch.randn(2, k, generator=g).tolist()
            iv = bootstrap_delta(own, other, level=0.9, n_boot=500, seed=rep)
            assert iv.low <= iv.estimate <= iv.high
            w.append(iv.width)
        widths.append(sum(w) / len(w))
    assert widths == sorted(widths, reverse=True), widths
    assert widths[-1] < widths[0] / 4


def test_bootstrap_is_zero_width_when_samples_agree():
    iv = bootstrap_delta([0.9, 0.9, 0.9], [0.2, 0.2, 0.2])
    assert iv.width == pytest.approx(0.0)
    assert iv.estimate == pytest.approx(0.7) and iv.excludes_zero


def test_bootstrap_refuses_empty_and_bad_level():
    with pytest.raises(SamplingError):
        bootstrap_delta([], [1.0])
    with pytest.raises(SamplingError, match="level"):
        bootstrap_delta([1.0], [1.0], level=1.5)


@pytest.mark.integration
def test_samples_need_k_of_two_or_more(nla, toy_residuals):
    with pytest.raises(SamplingError, match="samples >= 2"):
        nla.explain_samples(toy_residuals[0][:1], samples=1)
    with pytest.raises(SamplingError, match="score=True"):
        nla.explain(toy_residuals[0][:1], select="best", score=False)


@pytest.mark.integration
def test_best_of_k_is_the_top_scoring_of_the_same_seeded_samples(nla, toy_residuals):
    agree, disagree = agreeing_and_disagreeing(toy_residuals)
    x = torch.cat([agree[:2], disagree])
    k, seed = 5, 11
    best = nla.explain(x, samples=k, seed=seed, select="best", max_new_tokens=TOKENS)
    drawn = nla.explain(x, samples=k, seed=seed, temperature=1.0, max_new_tokens=TOKENS)
    assert len(best) == len(x) and len(drawn) == k * len(x)
    n_distinct = 0
    for i in range(len(x)):
        group = [e for e in drawn if e.index == i]
        top = min(group, key=lambda e: (e.mse_nrm, e.sample))
        assert best[i].text == top.text
        assert best[i].sample == top.sample and best[i].index == i
        assert best[i].fve_nrm == pytest.approx(top.fve_nrm, abs=1e-5)
        assert best[i].fve_nrm >= max(e.fve_nrm for e in group) - 1e-5
        n_distinct += len({e.text for e in group}) > 1
    assert n_distinct >= 3  # the check ranked real alternatives


@pytest.mark.integration
def test_hedge_set_where_samples_disagree_and_clear_where_they_agree(nla, toy_residuals):
    agree, disagree = agreeing_and_disagreeing(toy_residuals)
    result = nla.explain_samples(
        torch.cat([agree, disagree]), samples=6, seed=0, max_new_tokens=TOKENS
    )
    n = len(agree)
    # real residuals agree more than blends and noise; hedge is set on the latter more often
    real = [vs.agreement for vs in result.vectors[:n]]
    mixed = [vs.agreement for vs in result.vectors[n:]]
    assert sum(real) / n > sum(mixed) / len(mixed), (real, mixed)
    hedged = [vs for vs in result.vectors[n:] if vs.hedge]
    assert len(hedged) > sum(vs.hedge for vs in result.vectors[:n]), result.to_frame()
    for vs in result.vectors[n:]:
        assert vs.hedge == (vs.agreement < result.hedge_below)
        if vs.hedge:
            assert vs.n_distinct > 1 and vs.mode_share < 1
    frame = result.to_frame()
    assert list(frame["hedge"]) == [vs.hedge for vs in result.vectors]
    assert {"best", "agreement", "mode_share", "samples"} <= set(frame.columns)
    assert len(result.samples_frame()) == 6 * len(result)
    html = result._repr_html_()
    assert "hedge" in html and "<table" in html


@pytest.mark.integration
def test_sample_intervals_shrink_as_k_grows_on_the_toy(nla, toy_residuals):
    _, disagree = agreeing_and_disagreeing(toy_residuals)
    x = disagree[:8]
    scorer = TextScorer(nla)
    # one pool of 32 samples per vector: the interval from its first 8 and from all 32,
    # on cos (bounded, so one rare garbage sample cannot dominate a small k's estimate)
    result = nla.explain_samples(x, samples=32, seed=3, max_new_tokens=TOKENS)
    mean_width = {8: 0.0, 32: 0.0}
    for vs in result:
        own = scorer.scores(vs.texts, x[vs.index : vs.index + 1].expand(32, -1)).cos.tolist()
        mean_width[32] += bootstrap_delta(own, [0.0] * 32).width / len(x)
        g = torch.Generator().manual_seed(vs.index)
        for _ in range(10):  # random subsets of 8 of the same samples
            pick = torch.randperm(32, generator=g)[:8].tolist()
            sub = [own[i] for i in pick]
            mean_width[8] += bootstrap_delta(sub, [0.0] * 8).width / (10 * len(x))
    assert mean_width[8] > 0
    assert mean_width[32] < mean_width[8], mean_width


def _t(token: str, nxt: str) -> str:
    return f'random words\nreading "{token}"\ntoken " {token}"; next comes {nxt}'


def test_agreements_in_one_pass_equal_one_group_at_a_time(nla):
    scorer = TextScorer(nla)
    groups = [
        [_t("cat", "in"), _t("cat", "in"), _t("dog", "ran")],
        [_t("red", "car"), _t("blue", "sky"), _t("the", "end")],
    ]
    together = scorer.agreements(groups)
    assert together == pytest.approx([scorer.agreement(g) for g in groups], abs=1e-6)
    assert together[0] != pytest.approx(together[1])
    with pytest.raises(SamplingError, match="one size"):
        scorer.agreements([groups[0], groups[1][:2]])


def test_pair_share_counts_pairs_that_read_alike():
    from nla_lens.experiments.uncertainty import _pair_share

    assert _pair_share(["in"] * 8) == 1.0
    assert _pair_share(["a", "b", "c", "d"]) == 0.0
    assert _pair_share(["a"] * 4 + ["b"] * 4) == pytest.approx(12 / 28)  # 2 * C(4, 2) of C(8, 2)
    assert _pair_share(["a"]) == 1.0


@pytest.mark.integration
def test_reader_makes_hedge_about_the_continuations(nla, toy_residuals):
    from nla_lens import toy

    v = toy_residuals[0][:4]
    with pytest.raises(SamplingError, match="reader=.*must be a function"):
        nla.explain_samples(v, samples=2, reader="next")
    got = nla.explain_samples(v, samples=4, seed=0, progress=False, reader=toy.read_explanation)
    plain = nla.explain_samples(v, samples=4, seed=0, progress=False)
    assert got.agreement_metric == "reading" and plain.agreement_metric in ("fve_nrm", "cos")
    for a, b in zip(got.vectors, plain.vectors, strict=True):
        assert a.texts == b.texts  # the same samples, read another way
        assert a.reconstruction_agreement == pytest.approx(b.agreement)
        want = [toy.read_explanation(t).continuations[:1] for t in a.texts]
        assert list(a.readings) == [w[0] if w else None for w in want]
        assert a.hedge == (a.agreement < got.hedge_below)
    frame = got.to_frame()
    assert {"readings", "reconstruction_agreement"} <= set(frame.columns)
    assert "reading agreement" in got._repr_html_()
