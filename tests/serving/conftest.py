"""Fixtures of the serving tests: an AV to decode with (the toy AV when it is
built, else a tiny random Gemma-3 stand-in) and the loopback server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import build_tiny_gemma3


def toy_checkpoints():
    """The shipped toy pair, or None while it is not built."""
    try:
        from nla_lens import toy

        ck = toy.checkpoints()
    except Exception:  # not built yet in this tree
        return None
    return ck if Path(ck.av, "config.json").is_file() else None


@pytest.fixture(scope="session")
def tiny_av_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3") / "av")


@pytest.fixture(scope="session")
def av_dir(tiny_av_dir: Path) -> Path:
    ck = toy_checkpoints()
    return Path(ck.av) if ck is not None else tiny_av_dir


@pytest.fixture(scope="module")
def loopback(av_dir: Path):
    from .loopback import LoopbackServer

    with LoopbackServer(av_dir) as server:
        yield server


@pytest.fixture(scope="session")
def nla_or_none(request: pytest.FixtureRequest):
    """(toy NLA with the local backend, toy checkpoints, 6 toy residuals), or None before the toy is built."""
    ck = toy_checkpoints()
    if ck is None:
        return None
    nla = request.getfixturevalue("nla")
    vectors = request.getfixturevalue("toy_residuals")[0][:6]
    return nla, ck, vectors
