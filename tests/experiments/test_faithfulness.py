"""Per-segment FVE and stability checks on the toy pair."""

from __future__ import annotations

import pytest

from nla_lens.errors import VectorError
from nla_lens.experiments.faithfulness import split_segments

TOKENS = 96  # a whole three-line toy explanation


def test_split_segments_units():
    assert split_segments("a b\nc d") == ["a b", "c d"]
    assert split_segments("token : cat ; next : house") == ["token : cat", "next : house"]
    assert split_segments("One thing. Another!  Third?") == ["One thing.", "Another!", "Third?"]
    assert split_segments("token : cat", "word") == ["token", ":", "cat"]
    assert split_segments("x|y", lambda t: t.split("|")) == ["x", "y"]


@pytest.fixture(scope="module")
def own(nla, toy_residuals):
    """Greedy three-line toy explanations of 6 residuals of random text."""
    v, _ = toy_residuals
    texts = [e.text for e in nla.explain(v[:6], max_new_tokens=TOKENS)]
    assert all(len(t.splitlines()) == 3 for t in texts), texts
    return v[:6], texts


def _paraphrase(text: str) -> str:
    """Another of the toy's phrasings of line 3 (the same content)."""
    for a, b in (
        ('the token "', 'token "'),
        ('last piece "', 'token "'),
        ('token "', 'the token "'),
    ):
        if a in text:
            return text.replace(a, b, 1)
    return text


@pytest.mark.integration
def test_prefix_scores_of_three_line_explanations(nla, own):
    """One prefix score per line; the last equals the score; the token line adds to line 1."""
    v, texts = own
    report = nla.faithfulness(texts, v)
    for row in report.rows:
        assert len(row.segments) == 3 and len(row.prefix_scores) == 3
        # the same text scored in another AR batch: equal to ~1e-2 (AR batching numerics)
        assert row.prefix_scores[-1] == pytest.approx(row.score, abs=2e-2)
        assert row.carrier in (0, 1, 2)
        assert row.score > row.prefix_scores[0]  # the token line adds to line 1
    long = report.prefix_frame()
    assert len(long) == 3 * len(v) and long.groupby("index")["carrier"].sum().eq(1).all()


@pytest.mark.integration
def test_swap_costs_more_than_a_paraphrase(nla, own):
    """Swapping a line for one of an unrelated explanation costs far more than rewording it
    in another of the toy's phrasings (the AR reads meaning, not one template)."""
    v, texts = own
    report = nla.faithfulness(texts, v, paraphrase=_paraphrase)
    frame = report.to_frame()
    assert report.metric == "fve_nrm"
    for row in report.rows:
        assert row.shuffled is not None and sorted(row.shuffled.splitlines()) == sorted(
            row.segments
        )
        assert row.swapped is not None and row.swapped != row.text
        assert row.paraphrased == _paraphrase(row.text) != row.text
    assert frame["swap_drop"].mean() > frame["paraphrase_drop"].mean() + 0.1
    assert frame["paraphrase_drop"].abs().max() < 0.2
    assert {
        "prefix_scores",
        "carrier_segment",
        "shuffle_drop",
        "swap_drop",
        "paraphrase_drop",
    } <= set(frame.columns)
    assert "<table" in report._repr_html_()


@pytest.mark.integration
def test_user_donors_and_explanation_objects(nla, toy_residuals):
    v, _ = toy_residuals
    exps = nla.explain(v[:3], max_new_tokens=TOKENS)
    donor = 'random words\nno phrase\ntoken " zebra"; next could be any word'
    report = nla.faithfulness(exps, v[:3], donors=[donor])
    assert [r.index for r in report.rows] == [0, 1, 2]
    assert all(
        r.swapped is not None and set(r.swapped.splitlines()) & set(donor.splitlines())
        for r in report.rows
    )
    with pytest.raises(VectorError, match="vector rows"):
        nla.faithfulness(exps, v[:1])


@pytest.mark.integration
def test_the_swap_always_changes_the_text(nla, toy_residuals):
    """Explanations that share most lines (random-text rows all open "random words / no
    phrase"): the swap takes a donor segment that differs from the one it replaces, so no
    swap is a no-op; a text whose every donor has only its own segments gets no swap."""
    v, _ = toy_residuals
    texts = [f'random words\nno phrase\ntoken "{w}"; next could be any word' for w in "abcdefgh"]
    report = nla.faithfulness(texts, v[:8])
    for row in report.rows:
        assert row.swapped is not None and row.swapped != row.text
        old, new = row.text.splitlines(), row.swapped.splitlines()
        assert sum(a != b for a, b in zip(old, new, strict=True)) == 1  # one segment replaced
    same = nla.faithfulness(["x\nx", "x"], v[:2])
    assert [r.swapped for r in same.rows] == [None, None]
