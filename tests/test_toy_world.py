"""The shipped toy as a world to study: the subject solves an in-context recall task
by a mechanism activation patching finds, the AV names what the residual says
comes next, and steering with the AR changes the subject's answer.

Every figure is computed here from the shipped checkpoints (nothing read from
quality.json) with Hugging Face forward hooks and the public NLA API, printed
(``pytest -s``) and checked against the goals.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nla_lens.experiments.steering import edit_steering_delta, steering_vector
from nla_lens.toy import TaskPair, describe_next, read_explanation, tasks
from nla_lens.toy.targets import next_name
from nla_lens.toy.world import block_edit, edit_next

pytestmark = pytest.mark.integration

N_PAIRS = 48
PATCH_LAYER = 0  # output of decoder block 0 (<= K): where the place word is still itself
CONFIDENT = 0.5
ALPHA = 1.0  # alpha * ||v|| = the typical layer-K residual norm (the AV's injection_scale)
GOALS = {
    "task accuracy": 0.90,
    "patching recovery at the place word": 0.80,
    "patching recovery at an unrelated position (max)": 0.20,
    "AV names the subject's confident next token": 0.70,
    "steering by description 'next comes X'": 0.80,
    "steering by editing the explanation's next": 0.80,
}


@pytest.fixture(scope="module")
def world(toy, nla):
    subject = AutoModelForCausalLM.from_pretrained(str(toy.subject), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(toy.subject))
    return subject, tok, tasks(N_PAIRS)


def _ids(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text)["input_ids"]])


def test_tasks_api(world):
    _, tok, pairs = world
    assert len(pairs) == N_PAIRS and pairs == tasks(N_PAIRS)  # deterministic
    for p in pairs:
        assert isinstance(p, TaskPair)
        clean, corrupt = _ids(tok, p.clean)[0], _ids(tok, p.corrupted)[0]
        assert clean.shape == corrupt.shape and tok.unk_token_id not in clean.tolist()
        differs = (clean != corrupt).nonzero().flatten().tolist()
        assert differs == [p.position]
        # Answers are words; their ids are the pieces after a space (what the subject says).
        assert tok.decode([int(clean[p.position])]) == " " + p.clean_answer
        assert tok.decode([int(corrupt[p.position])]) == " " + p.corrupted_answer
        assert int(clean[p.position]) == p.clean_answer_id
        assert int(corrupt[p.position]) == p.corrupted_answer_id
        assert p.position < p.control_position < len(clean) - 1


@torch.no_grad()
def test_toy_world_figures(world, nla):
    subject, tok, pairs = world
    K = nla.layer
    right = 0
    rec, ctl = [], []
    residuals = []
    for p in pairs:
        clean, corrupt = _ids(tok, p.clean), _ids(tok, p.corrupted)
        c_out = subject(input_ids=clean, output_hidden_states=True)
        k_out = subject(input_ids=corrupt, output_hidden_states=True)
        right += int(c_out.logits[0, -1].argmax()) == p.clean_answer_id

        def diff(logits, p=p):
            return float(logits[p.clean_answer_id] - logits[p.corrupted_answer_id])

        d_clean, d_corrupt = diff(c_out.logits[0, -1]), diff(k_out.logits[0, -1])
        for pos, out in ((p.position, rec), (p.control_position, ctl)):
            source = k_out.hidden_states[PATCH_LAYER + 1][0, pos]

            def patch(h, pos=pos, source=source):
                h = h.clone()
                h[0, pos] = source
                return h

            with block_edit(subject, PATCH_LAYER, patch):
                d = diff(subject(input_ids=clean).logits[0, -1])
            out.append((d_clean - d) / (d_clean - d_corrupt))
        residuals.append(c_out.hidden_states[K + 1][0, -1])

    # The AV on every position of the clean prompts: does it name the subject's next token
    # where the subject is confident?
    vecs, wanted = [], []
    for p in pairs[:16]:
        out = subject(input_ids=_ids(tok, p.clean), output_hidden_states=True)
        probs = out.logits[0].softmax(-1)
        for pos in range(probs.shape[0]):
            if float(probs[pos].max()) >= CONFIDENT:
                vecs.append(out.hidden_states[K + 1][0, pos])
                wanted.append(next_name(tok, int(probs[pos].argmax())))
    explained = nla.explain(torch.stack(vecs), score=False, progress=False)
    named = [read_explanation(e.text).next == w for e, w in zip(explained, wanted, strict=True)]

    # Steering at layer K, last position, toward the corrupted answer (never in the clean prompt).
    answers = nla.explain(torch.stack(residuals), score=False, progress=False)
    by_description, by_edit = [], []
    for p, h, e in zip(pairs, residuals, answers, strict=True):
        clean = _ids(tok, p.clean)
        edited = edit_next(e.text, p.corrupted_answer)
        assert read_explanation(edited).next == p.corrupted_answer
        deltas = (
            steering_vector(nla, describe_next(p.corrupted_answer)),
            edit_steering_delta(nla, h, e.text, edited),
        )
        for vec, out in zip(deltas, (by_description, by_edit), strict=True):
            assert ALPHA * float(vec.norm()) <= nla.av.meta.injection_scale * 1.0001

            def add(x, vec=vec):
                x = x.clone()
                x[0, -1] += ALPHA * vec.to(x.dtype)
                return x

            with block_edit(subject, K, add):
                got = int(subject(input_ids=clean).logits[0, -1].argmax())
            out.append(got == p.corrupted_answer_id)

    n = len(pairs)
    figures = {
        "task accuracy": right / n,
        "patching recovery at the place word": sum(rec) / n,
        "patching recovery at an unrelated position (max)": max(ctl),
        "AV names the subject's confident next token": sum(named) / len(named),
        "steering by description 'next comes X'": sum(by_description) / n,
        "steering by editing the explanation's next": sum(by_edit) / n,
    }
    print(f"\ntoy world over {n} task pairs (patching at block {PATCH_LAYER}, steering at K={K}):")
    for name, value in figures.items():
        sign = "<=" if "unrelated" in name else ">="
        print(f"  {name:52s} {value:6.3f}   goal {sign} {GOALS[name]:.2f}")
    print(f"  (AV next-token naming over {len(named)} confident positions; alpha = {ALPHA})")
    for name, value in figures.items():
        if "unrelated" in name:
            assert value <= GOALS[name], (name, value)
        else:
            assert value >= GOALS[name], (name, value)
