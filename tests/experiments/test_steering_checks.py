"""Steering refuses descriptions without words, and reports its effect in words next to
the subject's answer (saying so where the two disagree)."""

from __future__ import annotations

import pytest
import torch

from nla_lens import toy
from nla_lens.errors import DescriptionError, NLAError
from nla_lens.experiments.steering import SteeringResult, edit_steering_delta, steering_vector

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("bad", ["", "   ", "next : zzzz", "qqq"])
def test_bad_descriptions_raise(nla, bad):
    with pytest.raises(DescriptionError) as err:
        steering_vector(nla, bad)
    assert isinstance(err.value, NLAError)
    if bad.strip():
        assert repr(bad.split()[-1]) in str(err.value)  # names the unknown word
    else:
        assert "empty" in str(err.value)
    print(f"steering_vector({bad!r}) -> {type(err.value).__name__}: {err.value}")


def test_bad_descriptions_raise_everywhere_a_description_is_read(nla):
    ok = toy.describe_next("river")
    h = torch.randn(nla.d_model)
    for call in (
        lambda: steering_vector(nla, ok, subtract=""),
        lambda: edit_steering_delta(nla, h, ok, ""),
        lambda: edit_steering_delta(nla, h, ok, "next : zzzz"),
        lambda: nla.search("", torch.randn(4, nla.d_model)),
        lambda: nla.steering_vector(" "),
    ):
        with pytest.raises(DescriptionError):
            call()
    assert steering_vector(nla, ok).shape == (nla.d_model,)  # a description it knows still works


def test_steering_results_show_words_and_answer(nla, subjects):
    model, tok = subjects["hf"], subjects["tokenizer"]
    t = toy.tasks(1)[0]
    run = nla.explain_run(model, t.clean, positions=-1, tokenizer=tok, max_new_tokens=96)
    h, text = run.vectors[0], run.texts[0]
    live = nla.steer_by_edit(
        h, text, toy.describe_next(t.corrupted_answer), alphas=(0.0, 0.5, 1.0), model=model,
        inputs=t.clean, position=-1, tokenizer=tok, reader=toy.read_explanation, max_new_tokens=96,
    )  # fmt: skip
    for r in live:
        print(r.note)
    zero, *_, one = live
    # answers decode as text: the spaced piece of the word (" park")
    assert zero.answer == zero.answer_before == " " + t.clean_answer and zero.agrees
    assert zero.before is not None and zero.before.text == text
    assert one.answer == " " + t.corrupted_answer and one.agrees
    assert all(("disagree" in r.note) == (r.agrees is False) for r in live)
    assert "<table>" in one._repr_html_()


def test_a_disagreement_is_said():
    e = toy.read_explanation  # only to build a reading; no model needed
    from nla_lens.core.explanation import Explanation

    r = SteeringResult(
        0.5, torch.zeros(4), Explanation(toy.describe_next("kitchen"), "", False),
        answer="river", answer_before="park", reads=e(toy.describe_next("kitchen")).continuations,
    )  # fmt: skip
    assert r.agrees is False and "disagree" in r.note and "river" in r.note
    assert "#fde2e2" in r._repr_html_()
    print(r.note)
