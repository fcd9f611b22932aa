"""One positions model: a batch of prompts of different lengths, padded left or right, gives
the same captures, steered residuals, explanations and patching rows as each prompt alone,
in Hugging Face, TransformerBridge and nnsight."""

from __future__ import annotations

import pytest
import torch

from nla_lens import activation_patching, add_direction, capture_residual, explain_run
from nla_lens.subjects.inputs import pad_rows
from tests.conftest import content_vocab

pytestmark = pytest.mark.integration
FRAMEWORKS = ["hf", "transformer_lens", "nnsight"]
SIDES = ["left", "right"]
LENGTHS = (6, 11, 8)  # real tokens per prompt, BOS included
POSITIONS = [0, 2, -2, -1]
TOL = 1e-4


@pytest.fixture(scope="module")
def rows(subjects):
    """Three clean prompts of different lengths and three corrupted ones of the same lengths."""
    tok = subjects["tokenizer"]
    vocab = torch.tensor(content_vocab(tok))
    g = torch.Generator().manual_seed(7)
    make = [
        [tok.bos_token_id, *vocab[torch.randint(len(vocab), (n - 1,), generator=g)].tolist()]
        for n in LENGTHS
    ]
    clean, corrupt = (
        make,
        [
            [tok.bos_token_id, *vocab[torch.randint(len(vocab), (n - 1,), generator=g)].tolist()]
            for n in LENGTHS
        ],
    )
    return clean, corrupt


def batch(rows_, side):
    enc = pad_rows(rows_, pad_id=0, padding_side=side)
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}


def alone(row):
    return torch.tensor([row])


def extra(framework, subjects):
    return {"tokenizer": subjects["tokenizer"]} if framework == "hf" else {}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_captures_and_steered_residuals(nla, subjects, rows, framework, side):
    model, kw = subjects[framework], extra(framework, subjects)
    clean, _ = rows
    direction = torch.randn(nla.d_model, generator=torch.Generator().manual_seed(3))
    steer = add_direction(direction, 2.0, nla.layer - 1, positions=-1)
    for edits in ((), steer):
        got = capture_residual(
            model, batch(clean, side), nla.layer, positions=POSITIONS, edits=edits, **kw
        )
        for b, row in enumerate(clean):
            want = capture_residual(
                model, alone(row), nla.layer, positions=POSITIONS, edits=edits, **kw
            )
            assert torch.allclose(got.residual[b], want.residual[0], atol=TOL), (framework, side, b)
            assert got.relative[b].tolist() == [p % len(row) for p in POSITIONS]
    # the edit moved each row's own last token, never a pad column
    plain = capture_residual(model, batch(clean, side), nla.layer, positions=[-1], **kw).residual
    steered = capture_residual(
        model, batch(clean, side), nla.layer, positions=[-1], edits=steer, **kw
    ).residual
    assert ((steered - plain).norm(dim=-1) > 1e-3).all()


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_explanations_and_patching_rows(nla, subjects, rows, framework, side):
    model, kw = subjects[framework], extra(framework, subjects)
    clean, corrupt = rows
    steer = add_direction(torch.ones(nla.d_model), 3.0, nla.layer - 1, positions=-1)
    run = explain_run(
        nla, model, batch(clean, side), positions=[1, -1], edits=steer, max_new_tokens=16, **kw
    )
    solo = [
        explain_run(nla, model, alone(r), positions=[1, -1], edits=steer, max_new_tokens=16, **kw)
        for r in clean
    ]
    assert run.texts == [t for s in solo for t in s.texts]
    assert run.rows == [(b, p) for b, r in enumerate(clean) for p in (1, len(r) - 1)]

    cells = {"layers": [0, nla.layer], "positions": [1, -1], "max_new_tokens": 16, **kw}
    df = activation_patching(nla, model, batch(clean, side), batch(corrupt, side), **cells)
    for b, (c, x) in enumerate(zip(clean, corrupt, strict=True)):
        one = activation_patching(nla, model, alone(c), alone(x), **cells)
        mine = df[df["batch"] == b].reset_index(drop=True)
        assert mine["position"].tolist() == one["position"].tolist()
        assert mine["explanation"].tolist() == one["explanation"].tolist()
        assert mine["metric"].to_numpy() == pytest.approx(one["metric"].to_numpy(), abs=1e-3)
