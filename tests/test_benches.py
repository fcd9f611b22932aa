"""Every benchmark in bench/ still runs end to end (tiny sizes; no timing is checked here:
the ratios a benchmark prints are only meaningful at its default sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration

TINY_ARGS = {
    "bench_av.py": ["--n", "4", "--max-new-tokens", "8", "--repeats", "1"],
    "bench_ar.py": ["--n", "4", "--repeats", "1"],
    "bench_best_of_k.py": ["--n", "4", "--k", "2", "--max-new-tokens", "8", "--repeats", "1"],
    "bench_capture.py": ["--repeats", "1", "--batch", "1", "--seq", "16"],
    "bench_server.py": ["--n", "4", "--max-new-tokens", "4", "--repeats", "1"],
    "bench_pair_load.py": ["--repeats", "1"],
    "bench_stream.py": ["--n", "4", "--max-new-tokens", "16", "--repeats", "1"],
}
#: bench_ray.py starts a Ray cluster twice (a minute even at tiny sizes); tests/serving/test_ray.py
#: runs the same engine.
NOT_HERE = {"bench_ray.py"}


def test_every_benchmark_is_listed():
    assert {p.name for p in (REPO / "bench").glob("bench_*.py")} == set(TINY_ARGS) | NOT_HERE


@pytest.mark.parametrize("script", sorted(TINY_ARGS))
def test_benchmark_runs(script):
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *TINY_ARGS[script]],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: a goal missed at tiny sizes
    assert "ratio" in run.stdout, run.stdout
