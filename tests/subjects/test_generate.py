"""Residuals of a reply the subject generates: greedy decode, then one plain forward."""

from __future__ import annotations

import torch

from nla_lens.subjects import capture_residual, generate_and_capture
from tests.helpers import rel

TOL = 1e-4
#: Two toy-task prompts of different lengths: the subject keeps writing (a chat turn it
#: would close at once), so the batch generates every one of its 6 tokens.
PROMPTS = [
    "the cat is in my house . the cat is in the",
    "the dog is in a river . the fox is in our lake . the dog is in his",
]


def test_generate_and_capture_batch(hf_model, tokenizer):
    out = generate_and_capture(hf_model, PROMPTS, 1, 6, tokenizer=tokenizer)
    cap = out.captured
    batch, seq = cap.input_ids.shape
    assert batch == 2 and seq == out.prompt_length + 6
    assert cap.residual.shape[:2] == (2, seq)
    assert torch.equal(out.is_prompt | out.is_reply, cap.attention_mask.bool())
    assert not (out.is_prompt & out.is_reply).any()
    assert out.is_reply[:, out.prompt_length].all()  # every row generated at least one token
    for row, prompt in enumerate(PROMPTS):
        # each row equals generating from that prompt alone (greedy, left padding handled)
        single = generate_and_capture(hf_model, prompt, 1, 6, tokenizer=tokenizer)
        row_ids = cap.input_ids[row][cap.attention_mask[row].bool()]
        one_ids = single.captured.input_ids[0][single.captured.attention_mask[0].bool()]
        assert torch.equal(row_ids, one_ids)
        assert out.reply_text[row] == single.reply_text[0]
        # and its residuals are those of an ordinary forward over prompt + reply
        fresh = capture_residual(hf_model, one_ids, 1)
        got = cap.residual[row][cap.attention_mask[row].bool()]
        assert rel(got, fresh.residual[0]) < TOL


def test_generate_and_capture_positions_and_eos(hf_model, tokenizer):
    eos = tokenizer.eos_token_id
    out = generate_and_capture(hf_model, PROMPTS[0], 2, 5, tokenizer=tokenizer, positions=-1)
    cap = out.captured
    assert cap.residual.shape[1] == 1
    last = int(cap.positions[0, 0])
    assert out.is_reply[0, last]
    reply = cap.input_ids[0, out.prompt_length :][out.is_reply[0, out.prompt_length :]]
    assert (reply[:-1] != eos).all()  # nothing real after an EOS


def test_generate_through_bridge_and_nnsight_match_hf(hf_model, tokenizer, bridge, nns_model):
    ref = generate_and_capture(hf_model, PROMPTS[1], 1, 4, tokenizer=tokenizer)
    for model in (bridge, nns_model):
        out = generate_and_capture(model, PROMPTS[1], 1, 4)
        assert torch.equal(out.captured.input_ids, ref.captured.input_ids)
        assert rel(out.captured.residual, ref.captured.residual) < TOL
