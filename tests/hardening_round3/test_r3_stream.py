"""Issue 20, streaming (branch `stream`): a server that drops or garbles a stream midway,
and stop= values a user may write. The stream fails with a BackendError (or SamplingError)
naming what happened, and no partial explanation is ever passed off as whole: no
RowFinished for a row whose decode did not end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nla_lens import RowFinished
from nla_lens.core.backend import DecodeUpdate, GenerationOutput
from nla_lens.errors import BackendError, SamplingError

SCRIPT = "<explanation>the first line\nthe second line</explanation>"


class FlakyStream:
    """Streams SCRIPT's first characters for every row, then does what ``mode`` says."""

    def __init__(self, n: int, mode: str, log: dict) -> None:
        self.n, self.mode, self.log = n, mode, log
        log.setdefault("closed", 0)

    def __iter__(self):
        yield [DecodeUpdate(r, SCRIPT[:16]) for r in range(self.n)]
        if self.mode == "reset":  # the server's connection breaks mid-stream
            raise ConnectionResetError("Connection reset by peer")
        if self.mode == "stranger":  # the server names a row it was not given
            yield [DecodeUpdate(self.n + 4, SCRIPT, GenerationOutput(SCRIPT))]
        if self.mode == "ok":
            yield [DecodeUpdate(r, SCRIPT, GenerationOutput(SCRIPT)) for r in range(self.n)]
        # "drop": the stream just ends

    def cancel(self, rows) -> None:
        pass

    def close(self) -> None:
        self.log["closed"] += 1


class FlakyBackend:
    name = "flaky"

    def __init__(self, modes: list[str]) -> None:
        self.modes, self.log = list(modes), {}

    def generate(self, embeds, params):
        return [GenerationOutput(SCRIPT) for _ in range(len(embeds))]

    def stream(self, embeds, params):
        return FlakyStream(len(embeds), self.modes.pop(0), self.log)


@pytest.fixture
def vectors(toy_residuals):
    return toy_residuals[0][:3]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("mode", "match"),
    [("reset", "flaky.*(reset|connection)"), ("stranger", "flaky.*row"), ("drop", "flaky")],
)
def test_a_stream_broken_midway_fails_clearly(nla, vectors, monkeypatch, mode, match):
    backend = FlakyBackend([mode])
    monkeypatch.setattr(nla.av, "backend", backend)
    events: list = []
    with pytest.raises(BackendError, match=match):
        events.extend(nla.explain_stream(vectors))
    assert not any(isinstance(e, RowFinished) for e in events)
    assert backend.log["closed"] == 1  # the broken decode was closed, not left running


def test_a_stream_dropped_in_a_later_batch_passes_nothing_off(nla, vectors, monkeypatch):
    backend = FlakyBackend(["ok", "drop", "ok"])
    monkeypatch.setattr(nla.av, "backend", backend)
    events: list = []
    with pytest.raises(BackendError, match="without finishing rows"):
        events.extend(nla.explain_stream(vectors, batch_size=1))
    finished = [e for e in events if isinstance(e, RowFinished)]
    assert all(e.row == 0 for e in finished)  # row 1 never finished, so never returned
    assert backend.log["closed"] == 2


@pytest.mark.parametrize(
    "stop",
    [float("nan"), 0.0, -1, "none", np.float64(1.5), {"segments": 1}, (1,)],
    ids=["nan", "zero-float", "negative", "a-string", "numpy-float", "a-dict", "a-tuple"],
)
def test_stop_values_a_user_may_write_are_refused_before_decoding(nla, vectors, monkeypatch, stop):
    monkeypatch.setattr(nla.av, "backend", FlakyBackend([]))  # any decode would fail loudly
    with pytest.raises(SamplingError, match="stop"):
        list(nla.explain_stream(vectors, stop=stop))


def test_a_stop_function_of_the_wrong_shape_is_refused(nla, vectors, monkeypatch):
    monkeypatch.setattr(nla.av, "backend", FlakyBackend(["ok"]))
    with pytest.raises(SamplingError, match="stop"):
        list(nla.explain_stream(vectors, stop=lambda: True))  # takes no segments
