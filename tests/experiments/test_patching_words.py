"""Patching where the words add what the metric cannot, on held-out toy task pairs:
the readout explanation (layer K at the answer's position) follows the answer, an
entity corruption whose new answer only the words name, noising and denoising agree,
answer tokens as words. Each test prints its figure."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from nla_lens import activation_patching, toy
from nla_lens.errors import AnswerTokenError, NLAError

pytestmark = pytest.mark.integration
READ = toy.read_explanation


def answered(model, tok, pairs):
    """The pairs the subject answers right on both prompts (the others have no effect to find)."""
    keep = []
    with torch.inference_mode():
        for t in pairs:
            got = [
                int(model(**tok(text, return_tensors="pt")).logits[0, -1].argmax())
                for text in (t.clean, t.corrupted)
            ]
            if got == [t.clean_answer_id, t.corrupted_answer_id]:
                keep.append(t)
    return keep


@pytest.fixture(scope="module")
def place_frames(nla, subjects):
    """Noising and denoising frames of held-out place-corruption pairs, layers 0..K."""
    model, tok = subjects["hf"], subjects["tokenizer"]
    pairs = answered(model, tok, toy.tasks(8))
    assert len(pairs) >= 6, "the toy subject should answer most held-out pairs"
    out: dict[str, list[pd.DataFrame]] = {"noising": [], "denoising": []}
    for t in pairs:
        for direction in out:
            df = activation_patching(
                nla, model, t.clean, t.corrupted, layers=range(nla.layer + 1),
                positions=[t.position, -1], answer_tokens=(t.clean_answer_id, t.corrupted_answer_id),
                direction=direction, reader=READ, tokenizer=tok, max_new_tokens=96, progress=False,
            )  # fmt: skip
            out[direction].append(df.assign(pair=len(out[direction])))
    frames = {}
    for k, v in out.items():
        frames[k] = pd.concat(v, ignore_index=True)
        frames[k].attrs = dict(v[0].attrs)  # the same metric and direction for every pair
    return pairs, frames


def test_readout_explanation_names_the_answer_the_metric_reports(place_frames):
    """Counted over the pairs whose unpatched runs the AV reads right (clean readout names
    the clean answer, corrupted readout the corrupted one): a pair the AV misreads even
    unpatched (the toy AV confuses a few places) says nothing about patching. The figure
    over all pairs is printed too."""
    pairs, frames = place_frames
    df = frames["noising"]
    clean = {i: t.clean_answer for i, t in enumerate(pairs)}
    corrupt = {i: t.corrupted_answer for i, t in enumerate(pairs)}
    first = df.groupby("pair").first()
    readable = {
        i for i, r in first.iterrows()
        if READ(r.clean_readout_explanation).names_next(clean[i])
        and READ(r.corrupt_readout_explanation).names_next(corrupt[i])
    }  # fmt: skip

    def names(row, word):
        return READ(row.readout_explanation).names_next(word)

    def figure(frame):
        moved, kept = frame[frame.metric <= 0.2], frame[frame.metric >= 0.8]
        hit_moved = sum(names(r, corrupt[r.pair]) for r in moved.itertuples())
        hit_kept = sum(names(r, clean[r.pair]) for r in kept.itertuples())
        return moved, kept, hit_moved, hit_kept

    a_moved, a_kept, a_hit_moved, a_hit_kept = figure(df)
    moved, kept, hit_moved, hit_kept = figure(df[df.pair.isin(readable)])
    print(
        f"{len(readable)}/{len(pairs)} pairs read right unpatched. Readout explanation names the "
        f"corrupted answer in {hit_moved}/{len(moved)} cells with metric <= 0.2 (all pairs: "
        f"{a_hit_moved}/{len(a_moved)}), the clean answer in {hit_kept}/{len(kept)} cells with metric >= 0.8 "
        f"(all pairs: {a_hit_kept}/{len(a_kept)})"
    )
    assert len(readable) >= len(pairs) // 2
    assert len(moved) >= len(readable) and len(kept) >= len(readable)
    assert hit_moved >= 0.8 * len(moved)
    assert hit_kept >= 0.9 * len(kept)
    # the columns that say so without reading the text: changed exactly where it moved
    assert moved.readout_changed.mean() >= 0.8 and (~kept.readout_changed).mean() >= 0.9
    assert df.attrs["metric"] == "normalized_logit_diff" and df.attrs["direction"] == "noising"
    assert set(df.metric_name) == {"normalized_logit_diff"}
    # effect: one convention, 0 = no effect, 1 = like the corrupted run
    assert ((df.effect - (1 - df.metric)).abs() < 1e-6).all()


def test_denoising_and_noising_agree_at_the_mechanism(place_frames):
    _, frames = place_frames
    keys = ["pair", "layer", "position"]
    both = frames["noising"].merge(frames["denoising"], on=keys, suffixes=("_n", "_d"))
    mech = both[both.effect_n >= 0.5]
    agree = ((mech.effect_n > 0) == (mech.effect_d > 0)).mean()
    print(
        f"{len(mech)} mechanism cells (noising effect >= 0.5): denoising agrees in sign in "
        f"{agree:.0%}; mean effect noising {mech.effect_n.mean():.2f}, denoising {mech.effect_d.mean():.2f}"
    )
    assert len(mech) >= 2 * len(
        frames["noising"].pair.unique()
    )  # the place word early, and the readout at K
    assert agree >= 0.9
    d = frames["denoising"]
    assert d.attrs["direction"] == "denoising" and d.attrs["donor_run"] == "clean"
    assert set(frames["noising"].columns) == set(d.columns)


def test_only_the_words_tell_which_place_the_answer_moved_to(nla, subjects):
    """An entity corruption: the corrupted prompt asks about another animal of the same facts.
    KL (the metric without answer_tokens) says the answer changed, not to which place; the
    readout explanation names the patched run's new answer.

    40 pairs (about 100 changed cells), so the figure does not hang on a handful of cells.
    Expect a high share where the new answer is a place the prompt lists (the AV reads a
    fact the residual carries), and a low one where a half-moved cell at layers 0-1 makes
    the subject answer a place the prompt never mentions: the AV then tends to name a listed
    place, not the stray one.
    """
    model, tok = subjects["hf"], subjects["tokenizer"]
    pairs = answered(model, tok, toy.tasks(40, corruption="entity"))
    assert len({t.corrupted_answer for t in pairs}) >= 4  # the new answers differ pair to pair
    df = activation_patching(
        nla, model, [t.clean for t in pairs], [t.corrupted for t in pairs],
        layers=range(nla.layer + 1), positions=[-4, -1], reader=READ, tokenizer=tok,
        max_new_tokens=96, progress=False,
    )  # fmt: skip
    assert df.attrs["metric"] == "kl_to_clean" and df.attrs["answers"] is None
    # tokens decode as text, with their leading space (" lion")
    assert all(
        df.token[(df.position == df.readout_position - 3)].str.strip().isin(toy.recall.ENTITIES)
    )
    changed = df[df.answer.str.strip() != df.batch.map(lambda b: pairs[b].clean_answer)]
    named = [READ(r.readout_explanation).names_next(r.answer) for r in changed.itertuples()]
    listed = [
        r.answer.strip() in pairs[r.batch].clean.replace(".", " ").split()
        for r in changed.itertuples()
    ]
    hit = sum(named)
    in_prompt = [n for n, ok in zip(named, listed, strict=True) if ok]
    stray = [n for n, ok in zip(named, listed, strict=True) if not ok]
    new = changed.answer.nunique()
    print(
        f"{len(changed)} cells change the answer (to {new} different places; KL alone cannot say "
        f"which): the readout explanation names the new answer in {hit}/{len(changed)} = "
        f"{hit / len(changed):.2f} (goal >= 0.70); {sum(in_prompt)}/{len(in_prompt)} where the "
        f"new answer is a place the prompt lists, {sum(stray)}/{len(stray)} where it is not"
    )
    assert len(changed) >= len(pairs) and new >= 3
    assert hit >= 0.7 * len(changed)
    assert (changed.readout_names_answer == named).all()


def test_answer_tokens_as_words_give_the_same_frame(nla, subjects):
    model, tok = subjects["hf"], subjects["tokenizer"]
    t = toy.tasks(1)[0]
    kw = dict(layers=[0, nla.layer], positions=[t.position, -1], tokenizer=tok,
              max_new_tokens=96, progress=False)  # fmt: skip
    ids = activation_patching(nla, model, t.clean, t.corrupted,
                              answer_tokens=(t.clean_answer_id, t.corrupted_answer_id), **kw)  # fmt: skip
    words = activation_patching(nla, model, t.clean, t.corrupted,
                                answer_tokens=(t.clean_answer, t.corrupted_answer), **kw)  # fmt: skip
    pd.testing.assert_frame_equal(ids, words)
    assert ids.attrs == words.attrs and ids.attrs["answers"] == (
        " " + t.clean_answer,
        " " + t.corrupted_answer,
    )
    print("answer_tokens as words:", words.attrs["answers"], "-> ids", words.attrs["answer_ids"])
    for bad in ("zzzz", "river park"):
        with pytest.raises(AnswerTokenError, match=repr(bad)) as err:
            activation_patching(
                nla, model, t.clean, t.corrupted, answer_tokens=(bad, "river"), **kw
            )
        assert isinstance(err.value, NLAError)
