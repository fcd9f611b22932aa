"""Inputs to token ids: one BOS, chat templates in one step, padding, positions. No model needed."""

from __future__ import annotations

import pytest
import torch

from nla_lens.errors import CaptureError
from nla_lens.subjects import encode, resolve_positions
from nla_lens.subjects.inputs import pad_rows
from tests.helpers import make_tokenizer

CHAT = [{"role": "user", "content": "what is the capital of france ?"}]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def test_text_gets_exactly_one_bos(tok):
    enc = encode("the cat sat", tok)
    assert enc.input_ids.tolist() == [tok("the cat sat")["input_ids"]]
    assert enc.input_ids[0, 0] == tok.bos_token_id
    assert (enc.input_ids[0, 1:] != tok.bos_token_id).all()
    assert enc.attention_mask.tolist() == [[1, 1, 1, 1]]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_padding(tok, side):
    enc = encode(["the cat sat on the mat", "hello"], tok, padding_side=side)
    assert enc.input_ids.shape == (2, 7)
    assert enc.attention_mask.sum(1).tolist() == [7, 2]
    short = enc.input_ids[1][enc.attention_mask[1].bool()].tolist()
    assert short == tok("hello")["input_ids"]
    pad_cols = [0, 1, 2, 3, 4] if side == "left" else [2, 3, 4, 5, 6]
    assert enc.attention_mask[1, pad_cols].sum() == 0
    assert (enc.input_ids[1, pad_cols] == tok.pad_token_id).all()


def test_chat_is_tokenized_in_one_step(tok):
    enc = encode(CHAT, tok)
    expected = tok.apply_chat_template(
        CHAT, tokenize=True, add_generation_prompt=True, return_dict=True
    )
    assert enc.input_ids.tolist() == [list(expected["input_ids"])]
    assert int((enc.input_ids == tok.bos_token_id).sum()) == 1
    assert tok.convert_ids_to_tokens(enc.input_ids[0, -2:].tolist()) == ["<start_of_turn>", "model"]


def test_chat_generation_prompt_defaults(tok):
    with_reply = [*CHAT, {"role": "assistant", "content": "paris"}]
    enc = encode(with_reply, tok)
    assert tok.convert_ids_to_tokens(enc.input_ids[0, -2:].tolist()) == ["paris", "<end_of_turn>"]
    enc = encode(CHAT, tok, add_generation_prompt=False)
    assert tok.convert_ids_to_tokens(int(enc.input_ids[0, -1])) == "<end_of_turn>"


def test_chat_batch(tok):
    other = [{"role": "user", "content": "hello"}]
    enc = encode([CHAT, other], tok, padding_side="left")
    assert enc.input_ids.shape[0] == 2
    assert enc.input_ids[1, -1] == enc.input_ids[0, -1]  # both end on the generation prompt
    assert (enc.input_ids[enc.attention_mask.bool()] == tok.bos_token_id).sum() == 2


def test_double_bos_is_refused(tok):
    rendered = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<bos>")
    with pytest.raises(CaptureError, match="two BOS"):
        encode(rendered, tok)  # render-then-encode: the classic double BOS
    with pytest.raises(CaptureError, match="two BOS"):
        encode("<bos> the cat", tok)
    ids = torch.tensor([[0, 0, 2, 2, 6]])
    with pytest.raises(CaptureError, match="batch row 0"):
        encode({"input_ids": ids, "attention_mask": torch.tensor([[0, 0, 1, 1, 1]])}, tok)


def test_token_ids_pass_through(tok):
    ids = torch.tensor([2, 6, 39, 41])
    enc = encode(ids, tok)
    assert enc.input_ids.tolist() == [[2, 6, 39, 41]]
    assert enc.attention_mask.tolist() == [[1, 1, 1, 1]]
    batch = tok(["the cat", "hello"], padding=True, return_tensors="pt")
    enc = encode(batch, tok)
    assert torch.equal(enc.input_ids, batch["input_ids"])
    assert torch.equal(enc.attention_mask, batch["attention_mask"])
    assert encode(ids, None).input_ids.shape == (1, 4)  # no tokenizer needed for ids


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("", "empty text"),
        ("   ", "empty text"),
        (["the cat", ""], "batch item 1"),
        ([], "empty batch"),
        (42, "int"),
        (["the cat", CHAT], "all strings or all chats"),
        ([{"role": "user"}], "all strings or all chats"),
        (torch.zeros(1, 3), "integer tensor"),
        (torch.zeros(1, 0, dtype=torch.long), "both > 0"),
        ({"input_ids": [[2, 6, 7], [2, 6]]}, "rectangular"),
        (
            {"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 2)},
            "does not match",
        ),
        (
            {"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.zeros(1, 3)},
            "no real tokens",
        ),
    ],
)
def test_bad_inputs(tok, bad, match):
    with pytest.raises(CaptureError, match=match):
        encode(bad, tok)


def test_text_without_tokenizer():
    with pytest.raises(CaptureError, match="needs a tokenizer"):
        encode("the cat", None)


def test_chat_without_template(tok):
    plain = make_tokenizer()
    plain.chat_template = None
    with pytest.raises(CaptureError, match="no chat template"):
        encode(CHAT, plain)


def test_positions_relative_to_real_tokens():
    left = pad_rows([[5, 6, 7, 8], [5, 6]], pad_id=0, padding_side="left").attention_mask
    right = pad_rows([[5, 6, 7, 8], [5, 6]], pad_id=0, padding_side="right").attention_mask
    assert resolve_positions(left, -1).tolist() == [[3], [3]]
    assert resolve_positions(left, 0).tolist() == [[0], [2]]
    assert resolve_positions(right, -1).tolist() == [[3], [1]]
    assert resolve_positions(right, [0, -2]).tolist() == [[0, 2], [0, 0]]
    assert resolve_positions(left, torch.tensor([1])).tolist() == [[1], [3]]
    assert resolve_positions(left, None).tolist() == [[0, 1, 2, 3]] * 2
    # both-side padding (a left-padded prompt + a reply that ended early) is one run
    both = torch.tensor([[0, 1, 1, 0]])
    assert resolve_positions(both, [0, -1]).tolist() == [[1, 2]]


@pytest.mark.parametrize(
    ("positions", "match"),
    [
        (2, "out of range for batch row 1"),
        (-3, "out of range"),
        ([], "empty"),
        (True, "bool"),
        (torch.tensor([0.0]), "integer"),
    ],
)
def test_bad_positions(positions, match):
    mask = pad_rows([[5, 6, 7], [5, 6]], pad_id=0, padding_side="left").attention_mask
    with pytest.raises(CaptureError, match=match):
        resolve_positions(mask, positions)


@pytest.mark.parametrize("positions", [[0, 1.5], "0", 1.0])
def test_wrongly_typed_positions(positions):
    # CaptureError from nla_lens; under the jaxtyping/beartype test hook the
    # annotation may catch it first (a TypeError)
    mask = pad_rows([[5, 6, 7]], pad_id=0, padding_side="left").attention_mask
    with pytest.raises((CaptureError, TypeError)):
        resolve_positions(mask, positions)


def test_mask_with_a_hole_is_refused():
    with pytest.raises(CaptureError, match="middle"):
        resolve_positions(torch.tensor([[1, 0, 1]]), -1)
