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
def own_and_other(nla, toy_residuals):
    """Greedy toy explanations of 6 residuals, and for each an explanation of another token."""
    v, _ = toy_residuals
    texts = [e.text for e in nla.explain(v[:12], max_new_tokens=TOKENS)]
    pairs = [(texts[i], next(t for t in texts[6:] if t != texts[i])) for i in range(6)]
    return v[:6], pairs


@pytest.mark.integration
def test_prefix_scores_rise_where_the_informative_line_is_added(nla, own_and_other):
    v, pairs = own_and_other
    report = nla.faithfulness([f"{other}\n{own}" for own, other in pairs], v)
    for row in report.rows:
        assert len(row.segments) == 2
        assert row.monotone and row.carrier == 1, row
        assert row.prefix_scores[1] > row.prefix_scores[0] + 0.1
        assert row.prefix_scores[-1] == pytest.approx(row.score, abs=1e-5)
    long = report.prefix_frame()
    assert len(long) == 2 * len(v) and long.groupby("index")["carrier"].sum().eq(1).all()


@pytest.mark.integration
def test_informative_last_line_carries_and_shuffle_lowers(nla, own_and_other):
    """The toy AR reads the last line of an explanation most: with the vector's own line
    last, the prefix scores rise at that line, and shuffling it to the front costs."""
    v, pairs = own_and_other
    report = nla.faithfulness([f"{other}\n{own}" for own, other in pairs], v, seed=1)
    for row in report.rows:
        assert row.carrier == 1  # the vector's own line carries the information
        assert row.shuffled == "\n".join(reversed(row.segments))
        assert row.shuffled_score is not None and row.shuffled_score < row.score - 0.2


@pytest.mark.integration
def test_single_line_explanations_prefix_equals_score_and_swap_lowers(nla, own_and_other):
    v, pairs = own_and_other
    own = [o for o, _ in pairs]
    # the toy AR knows one phrasing, so the paraphrase only re-spaces it (same words)
    report = nla.faithfulness(own, v, paraphrase=lambda t: t.replace(" : ", " :  "))
    frame = report.to_frame()
    assert report.metric == "fve_nrm"
    for row in report.rows:
        assert row.monotone and row.prefix_scores == pytest.approx((row.score,))
        assert (
            row.shuffled is None and row.shuffled_score is None
        )  # one segment: nothing to shuffle
        assert row.swapped is not None and row.swapped != row.text
        assert row.swapped_score < row.score - 0.2
        assert row.paraphrased == row.text.replace(" : ", " :  ")
    # the words swapped in from an unrelated explanation cost far more than the paraphrase
    assert (frame["swap_drop"] > frame["paraphrase_drop"]).all()
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
    report = nla.faithfulness(exps, v[:3], donors=["token : zebra crossing"])
    assert [r.index for r in report.rows] == [0, 1, 2]
    assert all(r.swapped == "token : zebra crossing" for r in report.rows)
    with pytest.raises(VectorError, match="vector rows"):
        nla.faithfulness(exps, v[:1])
