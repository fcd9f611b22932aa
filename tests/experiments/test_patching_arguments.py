"""Issue 20: patching's layers and positions in the forms TransformerLens users write them.
Integer forms (range, numpy, torch, one int) give the same table as lists; a bool, float,
string, empty or out-of-range value is a CaptureError naming the argument, raised before
the subject runs. (answer_tokens as words are the patching issue's.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nla_lens import activation_patching
from nla_lens.errors import CaptureError

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def patch(nla, subjects, prompts, **cells):
    clean, corrupt = prompts
    return activation_patching(nla, subjects["hf"], clean, corrupt, tokenizer=subjects["tokenizer"],
                               max_new_tokens=8, progress=False, **cells)  # fmt: skip


def test_integer_forms_of_layers_and_positions_are_read(nla, subjects, prompts):
    want = patch(nla, subjects, prompts, layers=[0, 1], positions=[-1])
    for layers, positions in [
        (range(2), -1),
        (torch.arange(2), np.array([-1])),
        (np.array([0, 1]), [np.int64(-1)]),
        ([torch.tensor(0), np.int32(1)], torch.tensor([-1])),
    ]:
        got = patch(nla, subjects, prompts, layers=layers, positions=positions)
        pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize(
    ("cells", "match"),
    [
        ({"layers": [1.0], "positions": [-1]}, r"layers must be ints .*got 1\.0"),
        ({"layers": [True], "positions": [-1]}, "layers must be ints .*got True"),
        (
            {"layers": ["blocks.1.hook_resid_post"], "positions": [-1]},
            "string 'blocks.1.hook_resid_post'. For .* pass 1",
        ),
        ({"layers": [], "positions": [-1]}, "layers is empty"),
        ({"layers": None, "positions": [-1]}, "layers is required"),
        ({"layers": [-1], "positions": [-1]}, r"layers \[-1\] are not blocks .*valid 0\.\."),
        ({"layers": [99], "positions": [-1]}, r"layers \[99\] are not blocks"),
        ({"layers": torch.zeros(2, 2, dtype=torch.long), "positions": [-1]}, "1-D list"),
        ({"layers": [0], "positions": ["-1"]}, "positions must be ints .*string '-1'"),
        ({"layers": [0], "positions": 2.5}, r"positions must be ints .*got 2\.5"),
        ({"layers": [0], "positions": torch.tensor([1.0])}, "positions must be ints"),
        ({"layers": [0], "positions": []}, "positions is empty"),
    ],
    ids=[
        "float",
        "bool",
        "hook-name",
        "empty",
        "none",
        "negative",
        "beyond",
        "2-D",
        "str-pos",
        "float-pos",
        "float-tensor-pos",
        "empty-pos",
    ],
)
def test_layers_and_positions_of_the_wrong_type_are_refused_before_running(
    nla, subjects, prompts, monkeypatch, cells, match
):
    def forbidden(*args, **kwargs):
        raise AssertionError("the subject ran before the arguments were checked")

    monkeypatch.setattr(subjects["hf"], "forward", forbidden)
    with pytest.raises(CaptureError, match=match):
        patch(nla, subjects, prompts, **cells)


def test_transcript_positions_of_the_wrong_type_are_refused(nla, subjects, prompts):
    clean, _ = prompts
    with pytest.raises(CaptureError, match="positions must be ints"):
        nla.transcript(subjects["hf"], clean, tokenizer=subjects["tokenizer"], positions=["1"])
    t = nla.transcript(subjects["hf"], clean, tokenizer=subjects["tokenizer"],
                       positions=np.array([1, -1]), max_new_tokens=8)  # fmt: skip
    assert [e.position for e in t.entries] == [1, clean.shape[1] - 1]
