"""Issue 10, subjects: capture inputs outside the vocabulary, steering layers out of
range, and sampling settings checked before the subject model runs."""

from __future__ import annotations

import math

import pytest
import torch

from nla_lens.errors import CaptureError, SamplingError, SubjectMismatchError
from nla_lens.experiments.steering import steered_generate

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "ids",
    [[[2, 5, 10**6]], [[2, -1, 5]], [[2, 5, -100]]],
    ids=["beyond-vocab", "negative", "label-mask"],
)
def test_token_ids_outside_the_vocabulary(nla, subject, ids) -> None:
    model, tok = subject
    with pytest.raises(CaptureError, match="outside the model's vocabulary.*valid 0\\.\\."):
        nla.capture(model, torch.tensor(ids), tokenizer=tok)


def test_token_ids_at_the_vocabulary_edge_are_read(nla, subject) -> None:
    model, tok = subject
    last = model.get_input_embeddings().num_embeddings - 1
    got = nla.capture(model, torch.tensor([[tok.bos_token_id, 5, last]]), tokenizer=tok)
    assert got.shape[-1] == nla.d_model


@pytest.mark.parametrize("layer", [-1, 5, 99])  # the toy subject has blocks 0..4
def test_steering_layer_out_of_range(subject, layer) -> None:
    model, tok = subject
    direction = torch.ones(model.config.hidden_size)
    with pytest.raises(SubjectMismatchError, match=f"layer {layer} is out of range.*valid 0\\.\\."):
        steered_generate(model, "the cat", direction, 1.0, layer, tokenizer=tok, max_new_tokens=2)


def test_sampling_is_checked_before_the_subject_runs(nla, subject, monkeypatch) -> None:
    model, tok = subject

    def forbidden(*args, **kwargs):
        raise AssertionError("the subject ran before the settings were checked")

    monkeypatch.setattr(model, "forward", forbidden)
    for bad in ({"temperature": -1.0}, {"max_new_tokens": 0}, {"top_p": math.nan}):
        with pytest.raises(SamplingError):
            nla.explain_run(model, "the cat", tokenizer=tok, **bad)
        with pytest.raises(SamplingError):
            nla.transcript(model, "the cat", tokenizer=tok, **bad)
    with pytest.raises(SamplingError, match="samples"):
        nla.transcript(model, "the cat", tokenizer=tok, samples=0)
