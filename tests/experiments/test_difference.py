"""Difference explanations, and what runs and patching carry from them and from samples."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from nla_lens.errors import VectorError
from nla_lens.experiments.patching import activation_patching
from nla_lens.experiments.steering import add_direction, steering_vector
from nla_lens.toy import describe_next, read_explanation
from tests.conftest import content_vocab

pytestmark = pytest.mark.integration
TOKENS = 96  # a whole three-line toy explanation
# A word whose description round-trips on toy v3: AV(AR(describe_next(w))) names w for
# dog, house, park, river, is, in, the; not for "cat" (measured: it reads "either frog or owl").
TARGET = "house"


@pytest.fixture(scope="module")
def prompt(subject):
    _, tok = subject
    vocab = torch.tensor(content_vocab(tok))
    g = torch.Generator().manual_seed(5)
    ids = vocab[torch.randint(len(vocab), (1, 8), generator=g)]
    return torch.cat([torch.tensor([[tok.bos_token_id]]), ids], 1)


def test_difference_of_steered_and_plain_residual_names_the_target(nla, toy_residuals):
    v, _ = toy_residuals
    direction = steering_vector(nla, describe_next(TARGET), reference=v)
    steered = v[:6] + direction
    d = nla.explain_difference(
        steered, v[:6], label_a="steered", label_b="plain", max_new_tokens=TOKENS
    )
    assert len(d) == 6
    assert all(
        e is not None and read_explanation(e.text).names_next(TARGET) for e in d.explanations
    ), d.texts
    assert all(e.cos is not None and e.cos > 0.5 for e in d.explanations if e is not None)
    frame = d.to_frame()
    assert {"difference", "difference_norm", "explanation_steered", "explanation_plain"} <= set(
        frame.columns
    )
    assert frame["difference_norm"].tolist() == pytest.approx(
        [float(direction.norm())] * 6, rel=1e-4
    )
    assert "<table" in d._repr_html_()


def test_equal_rows_are_unchanged_and_single_vectors_broadcast(nla, toy_residuals):
    v, _ = toy_residuals
    d = nla.explain_difference(v[:3], v[0], sides=False, max_new_tokens=TOKENS)
    assert d.explanations[0] is None and d.texts[0] is None
    assert all(e is not None for e in d.explanations[1:])
    assert d.a is None and d.to_frame()["unchanged"].tolist() == [True, False, False]
    with pytest.raises(VectorError, match="as many rows"):
        nla.explain_difference(v[:3], v[:2])


def test_run_diff_carries_the_difference_explanation_and_intervals(nla, subject, prompt):
    model, tok = subject
    v = nla.capture(model, prompt, tokenizer=tok)[0]
    direction = steering_vector(nla, describe_next(TARGET), reference=v[1:])
    positions = [3, 5]
    kw = dict(positions=positions, tokenizer=tok, samples=4, temperature=1.0, seed=0,
              max_new_tokens=TOKENS)  # fmt: skip
    plain = nla.explain_run(model, prompt, label="plain", **kw)
    steered = nla.explain_run(
        model,
        prompt,
        label="steered",
        edits=add_direction(direction, 1.0, nla.layer, positions=3),
        **kw,
    )
    diff = plain.diff(steered, explain_difference=True)
    frame = diff.to_frame()
    assert read_explanation(frame.loc[0, "explanation_b_minus_a"]).names_next(TARGET)
    assert pd.isna(frame.loc[1, "explanation_b_minus_a"])  # position 5 at layer K: untouched
    for side in ("on_a", "on_b"):
        cols = [f"delta_fve_nrm_{side}", f"delta_fve_nrm_{side}_lo", f"delta_fve_nrm_{side}_hi"]
        assert set(cols) <= set(frame.columns)
        assert (frame[cols[1]] <= frame[cols[0]]).all() and (frame[cols[0]] <= frame[cols[2]]).all()
    # the steered position reads differently beyond sampling noise; the untouched one does not
    # toy v3, measured: on A's vector the interval is clear of 0 (lo 0.34), on the steered
    # vector (off the toy's distribution, it reads poorly) it is not (lo -0.39, hi 0.11)
    assert frame.loc[0, "changed"] and frame.loc[0, "delta_fve_nrm_on_a_lo"] > 0
    assert not frame.loc[1, "changed"]
    html = diff._repr_html_()
    assert "delta_fve_nrm_on_a_lo" in html and "explanation_b_minus_a" in html


def test_patching_rows_get_intervals_and_difference_explanations(nla, subject, prompt):
    model, tok = subject
    vocab = torch.tensor(content_vocab(tok))
    corrupt = prompt.clone()
    corrupt[0, 3] = vocab[(vocab == prompt[0, 3]).nonzero()[0, 0] - 1]
    # temperature 0.7: at 1 the toy AV's samples derail now and then (one of the corrupted
    # run's read 'chat, asks are: rabbitcontentcontent ...', fve_nrm -5.8), and a mean
    # over 3 samples cannot absorb one such sample
    df = activation_patching(
        nla, model, prompt, corrupt, layers=[nla.layer], positions=[2, 3], tokenizer=tok,
        samples=3, temperature=0.7, seed=0, max_new_tokens=TOKENS, explain_differences=True,
    )  # fmt: skip
    assert {
        "crossfit_delta",
        "crossfit_delta_lo",
        "crossfit_delta_hi",
        "difference_explanation",
    } <= set(df.columns)
    row3 = df[df.position == 3].iloc[0]
    row2 = df[df.position == 2].iloc[0]
    # patching the whole residual at layer K, position 3: it now reads as the corrupted run
    assert row3.crossfit_delta_hi < 0
    assert isinstance(row3.difference_explanation, str) and row3.difference_norm > 0
    # position 2 comes before the corrupted token: clean and corrupted residuals are equal
    assert pd.isna(row2.difference_explanation) and row2.difference_norm == 0
    # there the two runs' samples differ by sampling alone: an interval near 0, against
    # position 3's delta of about -1 (3 samples a side may just miss 0 itself)
    assert abs(row2.crossfit_delta_lo) <= 0.05 and abs(row2.crossfit_delta_hi) <= 0.05
