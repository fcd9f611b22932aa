"""The stop-string criterion decodes only rows still running, and remembers finished ones."""

from __future__ import annotations

import torch

from nla_lens.core.local_backend import StopOnText


class CountingTokenizer:
    """Token i decodes to chr(ord('a') + i); records how many rows each call decodes."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def batch_decode(self, rows, skip_special_tokens=True):
        self.rows.append(len(rows))
        return ["".join(chr(ord("a") + t) for t in r) for r in rows]


def test_finished_rows_are_not_decoded_again():
    tok = CountingTokenizer()
    stop = StopOnText(tok, ["cd"], prompt_length=0, eos_ids=[25])
    ids = torch.tensor([[2], [0], [25]])  # row 2 produced EOS
    assert stop(ids).tolist() == [False, False, True]
    ids = torch.cat([ids, torch.tensor([[3], [1], [0]])], dim=1)  # row 0 now reads "cd"
    assert stop(ids).tolist() == [True, False, True]
    ids = torch.cat([ids, torch.tensor([[0], [2], [0]])], dim=1)
    assert stop(ids).tolist() == [True, False, True]
    assert tok.rows == [2, 2, 1]  # EOS row never decoded; row 0 not again once stopped
