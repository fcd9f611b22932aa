"""Issue 20: padded batches are explained at their real tokens only, and vectors that cannot be
read (the meta device) are refused. A capture carries its mask; tensors and caches from
elsewhere take ``mask=``; a batch that looks padded and has no mask is refused, any other
multi-row batch without one says so."""

from __future__ import annotations

import copy
import io

import pandas as pd
import pytest
import torch

from nla_lens.errors import PaddingError, VectorError
from nla_lens.subjects import CapturedResidual

pytestmark = pytest.mark.integration
SHORT, LONG = "the cat sat", "the dog ran to the house in the house"
N = 8  # max_new_tokens: the toy's explanations are short


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The toy runs fastest on one thread; several oversubscribe a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def alone(nla, subjects, text):
    cap = nla.capture(subjects["hf"], text, tokenizer=subjects["tokenizer"])
    return nla.explain(cap, max_new_tokens=N).texts


def encoding(subjects, side):
    return subjects["tokenizer"]([SHORT, LONG], padding=True, return_tensors="pt",
                                 padding_side=side)  # fmt: skip


@pytest.fixture(scope="module")
def singles(nla, subjects):
    return alone(nla, subjects, SHORT), alone(nla, subjects, LONG)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_capture_is_explained_at_its_real_tokens(nla, subjects, singles, side):
    cap = nla.capture(subjects["hf"], [SHORT, LONG], tokenizer=subjects["tokenizer"],
                      padding_side=side)  # fmt: skip
    assert isinstance(cap, CapturedResidual) and cap.shape[:2] == cap.mask.shape
    n_short, n_long = (len(s) for s in singles)
    assert int(cap.mask.sum()) == n_short + n_long < cap.mask.numel()  # there are pads
    out = nla.explain(cap, max_new_tokens=N)
    assert out.texts == singles[0] + singles[1]  # as each prompt alone: no pad slot read
    frame = out.to_frame()
    assert list(frame["batch"]) == [0] * n_short + [1] * n_long
    assert list(frame["position"]) == [*range(n_short), *range(n_long)]  # over real tokens
    assert not out.input_notes
    # one row of the capture keeps its mask
    row = nla.explain(cap[0], max_new_tokens=N)
    assert row.texts == singles[0] and list(row.to_frame()["position"]) == list(range(n_short))
    # a derived tensor does not inherit a mask it might not describe
    assert type(cap * 1) is torch.Tensor and type(cap[:, 1:]) is torch.Tensor
    assert torch.equal(copy.deepcopy(cap).mask, cap.mask)
    saved = io.BytesIO()
    torch.save(cap, saved)
    saved.seek(0)
    assert type(torch.load(saved)) is torch.Tensor  # weights_only load reads it back plain


def test_a_capture_at_chosen_positions_is_labelled_with_them(nla, subjects, singles):
    cap = nla.capture(subjects["hf"], [SHORT, LONG], tokenizer=subjects["tokenizer"],
                      positions=[0, -1])  # fmt: skip
    out = nla.explain(cap, max_new_tokens=N)
    n_short, n_long = (len(s) for s in singles)
    assert list(out.to_frame()["position"]) == [0, n_short - 1, 0, n_long - 1]
    assert out.texts == [singles[0][0], singles[0][-1], singles[1][0], singles[1][-1]]


@pytest.mark.parametrize("side", ["left", "right"])
def test_tensors_and_caches_from_elsewhere_take_a_mask(nla, subjects, singles, side):
    enc = encoding(subjects, side)
    bridge = subjects["transformer_lens"]
    _, cache = bridge.run_with_cache(enc["input_ids"], attention_mask=enc["attention_mask"],
                                     names_filter=nla.hook_name)  # fmt: skip
    with subjects["nnsight"].trace(dict(enc)):
        h = nla.residual(subjects["nnsight"]).save()
    want = singles[0] + singles[1]
    inputs = (cache, h, cache[nla.hook_name].numpy())
    masks = (enc, enc["attention_mask"], enc["attention_mask"].bool().tolist())
    for x, mask in zip(inputs, masks, strict=True):
        out = nla.explain(x, mask=mask, max_new_tokens=N)
        assert out.texts == want and not out.input_notes
    # the capture of the same batch works as a mask too
    cap = nla.capture(subjects["hf"], [SHORT, LONG], tokenizer=subjects["tokenizer"],
                      padding_side=side)  # fmt: skip
    assert nla.explain(cache, mask=cap, max_new_tokens=N).texts == want


def test_a_padded_batch_without_its_mask_is_refused(nla, subjects):
    enc = encoding(subjects, "left")  # left pads are identical vectors in every framework
    bridge = subjects["transformer_lens"]
    _, cache = bridge.run_with_cache(enc["input_ids"], attention_mask=enc["attention_mask"],
                                     names_filter=nla.hook_name)  # fmt: skip
    plain = nla.capture(subjects["hf"], [SHORT, LONG], tokenizer=subjects["tokenizer"]) * 1
    for x in (cache, plain):
        with pytest.raises(PaddingError, match=r"looks padded: batch row 0 starts with .*mask="):
            nla.explain(x, max_new_tokens=N)
    # mask=ones says every slot is real: the caller's word is taken
    assert len(nla.explain(plain, mask=torch.ones(plain.shape[:2]), max_new_tokens=N)) == 20


def test_a_batch_without_a_mask_says_so(nla, toy_residuals):
    grid = toy_residuals[0][:6].reshape(2, 3, -1)
    out = nla.explain(grid, max_new_tokens=N)
    assert len(out) == 6 and any("no mask was given" in n for n in out.notes())
    assert "no mask was given" in out._repr_html_()
    assert "no mask was given" in out.to_frame().attrs["input_notes"][0]
    assert not nla.explain(grid, mask=torch.ones(2, 3), max_new_tokens=N).input_notes
    assert not nla.explain(grid[:1], max_new_tokens=N).input_notes  # one prompt has no pads


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (torch.ones(2, 4), r"shape \(2, 4\).*\[batch, pos\] = \(2, 3\)"),
        (torch.tensor([[2, 38, 328], [2, 38, 361]]), "token ids: pass the attention mask"),
        (torch.zeros(2, 3), "no slot as real"),
        ({"input_ids": torch.ones(2, 3)}, "without an 'attention_mask'"),
        (torch.full((2, 3), 0.5), "only 0 and 1"),
        ("all", "must be a \\[batch, pos\\] mask|only 0 and 1"),
    ],
    ids=["shape", "token-ids", "all-pads", "no-attention-mask", "fractional", "string"],
)
def test_a_mask_that_does_not_fit_is_refused(nla, toy_residuals, mask, match):
    grid = toy_residuals[0][:6].reshape(2, 3, -1)
    with pytest.raises(PaddingError, match=match):
        nla.explain(grid, mask=mask)


def test_a_mask_with_an_input_it_cannot_describe_is_refused(nla, toy_residuals):
    v = toy_residuals[0][:3]
    with pytest.raises(PaddingError, match="goes with a \\[batch, pos, d\\]"):
        nla.explain(v[0], mask=torch.ones(1))
    with pytest.raises(PaddingError, match="not a DataFrame"):
        nla.explain(pd.DataFrame({"activation_vector": list(v.numpy())}), mask=torch.ones(3))


@pytest.mark.parametrize("shape", [(64,), (3, 64), (2, 3, 64)])
def test_meta_tensors_are_refused(nla, shape):
    meta = torch.randn(shape, device="meta")
    with pytest.raises(VectorError, match="meta device.*no values"):
        nla.explain(meta)
    with pytest.raises(VectorError, match="meta device"):
        nla.explain_difference(meta, meta)
    with pytest.raises(VectorError, match="meta device"):
        nla.search("the cat", meta)
