"""Dataset jobs: inputs, outputs, provenance, resuming after interruption (even kill -9)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nla_lens.errors import NLAError, VectorError
from nla_lens.serving.jobs import PARTIAL_SUFFIX, explain_dataset, read_vectors
from nla_lens.toy import EXTRACTION_LAYER

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.integration

B = 8  # rows per chunk
FAST = {"max_new_tokens": 24, "batch_size": B, "progress": False}


@pytest.fixture(scope="module")
def vectors(toy_residuals) -> np.ndarray:
    return toy_residuals[0][:20].numpy()


def write_parquet(path: Path, vectors: np.ndarray) -> Path:
    n = len(vectors)
    table = pa.table({
        "doc_id": pa.array([f"doc{i}" for i in range(n)]),
        "activation_vector": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32())),
        "explanation": pa.array([f"reference {i}" for i in range(n)]),  # clashes with a result column
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=7)  # row groups that do not line up with chunks
    return path


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_parquet_in_out_with_provenance(tmp_path, nla, vectors) -> None:
    src = write_parquet(tmp_path / "in.parquet", vectors)
    out = tmp_path / "out.parquet"
    res = explain_dataset(src, out, av=nla, **FAST)
    assert res.rows == res.results == res.computed_rows == 20 and res.resumed_rows == 0
    table = pq.read_table(out)
    assert table.column_names == [
        "doc_id", "activation_vector", "input_explanation", "explanation", "raw", "truncated", "mse_nrm", "cos", "fve_nrm",
    ]  # fmt: skip
    got = table.to_pylist()
    assert [r["doc_id"] for r in got] == [f"doc{i}" for i in range(20)]
    assert got[3]["input_explanation"] == "reference 3"
    np.testing.assert_array_equal(
        np.array([r["activation_vector"] for r in got], np.float32), vectors
    )
    # Equal to explaining the same vectors directly, with the same batches.
    direct = nla.explain(vectors, max_new_tokens=24, batch_size=B, seed=0)
    assert [r["explanation"] for r in got] == [e.text for e in direct]
    assert [r["raw"] for r in got] == [e.raw for e in direct]
    np.testing.assert_allclose([r["cos"] for r in got], [e.cos for e in direct], rtol=1e-6)
    meta = json.loads(table.schema.metadata[b"nla_lens"])
    assert meta["av"]["content_sha256"] and meta["ar"]["content_sha256"]
    assert meta["backend"] == "local" and meta["sampling"]["max_new_tokens"] == 24
    assert meta["job"]["rows"] == 20 and meta["versions"]["torch"]
    assert not Path(str(out) + PARTIAL_SUFFIX).exists()


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_array_inputs(tmp_path, nla, vectors, suffix) -> None:
    src = tmp_path / f"in{suffix}"
    if suffix == ".npy":
        np.save(src, vectors)
    else:
        torch.save(torch.from_numpy(vectors), src)
    np.testing.assert_array_equal(read_vectors(src), vectors)
    out = tmp_path / "out.parquet"
    explain_dataset(src, out, av=nla, **FAST)
    got = rows(out)
    assert [r["row"] for r in got] == list(range(20))
    np.testing.assert_array_equal(
        np.array([r["activation_vector"] for r in got], np.float32), vectors
    )
    assert {"explanation", "raw", "truncated", "mse_nrm", "cos", "fve_nrm"} <= set(got[0])


def test_samples_are_deterministic(tmp_path, nla, vectors) -> None:
    src = tmp_path / "in.npy"
    np.save(src, vectors[:10])
    kw = {**FAST, "temperature": 1.0, "samples": 3, "seed": 5}
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    explain_dataset(src, a, av=nla, **kw)
    explain_dataset(src, b, av=nla, **kw)
    ra, rb = rows(a), rows(b)
    assert len(ra) == 30
    assert [(r["row"], r["sample"]) for r in ra] == [(i, s) for i in range(10) for s in range(3)]
    assert [r["raw"] for r in ra] == [r["raw"] for r in rb]


class Interrupt(Exception):
    pass


def interrupt_after(nla, monkeypatch, chunks: int) -> None:
    real, calls = nla.explain, []

    def flaky(*a, **k):
        if len(calls) == chunks:
            raise Interrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(nla, "explain", flaky)


def test_resume_after_interruption_equals_uninterrupted(
    tmp_path, nla, vectors, monkeypatch
) -> None:
    src = write_parquet(tmp_path / "in.parquet", vectors)
    kw = {**FAST, "temperature": 1.0, "samples": 2, "seed": 11}
    full = tmp_path / "full.parquet"
    explain_dataset(src, full, av=nla, **kw)

    out = tmp_path / "out.parquet"
    with monkeypatch.context() as m:
        interrupt_after(nla, m, chunks=2)
        with pytest.raises(Interrupt):
            explain_dataset(src, out, av=nla, **kw)
    partial = Path(str(out) + PARTIAL_SUFFIX)
    assert partial.exists() and not out.exists()
    with pytest.raises(NLAError, match=r"different parameters \(temperature: was 1.0, now 0.7\)"):
        explain_dataset(src, out, av=nla, **{**kw, "temperature": 0.7})
    res = explain_dataset(src, out, av=nla, **kw)
    assert (res.resumed_rows, res.computed_rows) == (2 * B, 20 - 2 * B)
    assert rows(out) == rows(full)  # every row exactly once, equal to the uninterrupted run
    assert not partial.exists()


def test_refuses_to_overwrite_finished_output(tmp_path, nla, vectors) -> None:
    src = tmp_path / "in.npy"
    np.save(src, vectors[:4])
    out = tmp_path / "out.parquet"
    explain_dataset(src, out, av=nla, **FAST)
    with pytest.raises(NLAError, match="already exists"):
        explain_dataset(src, out, av=nla, **FAST)
    explain_dataset(src, out, av=nla, overwrite=True, **FAST)


def test_bad_inputs(tmp_path, nla) -> None:
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"vec": [[1.0, 2.0]]}), p)
    with pytest.raises(VectorError, match="no 'activation_vector' column"):
        explain_dataset(p, tmp_path / "o.parquet", av=nla, **FAST)
    pq.write_table(pa.table({"activation_vector": [[1.0] * 64, [1.0] * 63]}), p)
    with pytest.raises(VectorError, match="different lengths"):
        read_vectors(p)
    (tmp_path / "x.csv").write_text("1")
    with pytest.raises(VectorError, match="unsupported input"):
        explain_dataset(tmp_path / "x.csv", tmp_path / "o.parquet", av=nla, **FAST)
    np.save(tmp_path / "w.npy", np.ones((3, 65), np.float32))
    with pytest.raises(VectorError, match="width 65"):
        explain_dataset(tmp_path / "w.npy", tmp_path / "o.parquet", av=nla, **FAST)
    with pytest.raises(NLAError, match="samples > 1 with temperature=0"):
        explain_dataset(tmp_path / "w.npy", tmp_path / "o.parquet", av=nla, samples=2)


def test_bad_row_is_named_by_its_row_in_the_file(tmp_path, nla, vectors) -> None:
    """A NaN in the third chunk: the error names the file's row, and the chunks before
    it stay committed (a rerun after fixing the row resumes from there)."""
    bad = vectors.copy()
    bad[19, 5] = np.nan  # chunks of B=8 rows: 0..7, 8..15, 16..19
    src = tmp_path / "in.npy"
    np.save(src, bad)
    out = tmp_path / "out.parquet"
    with pytest.raises(VectorError, match=r"in\.npy: vectors rows \[19\] contain NaN"):
        explain_dataset(src, out, av=nla, **FAST)
    done = sqlite3.connect(str(out) + PARTIAL_SUFFIX).execute("SELECT start, n FROM chunks")
    assert sorted(done.fetchall()) == [(0, B), (B, B)]


def test_cli_explain(tmp_path, toy, vectors, capsys) -> None:
    from nla_lens.cli import main

    src = tmp_path / "in.npy"
    np.save(src, vectors[:5])
    out = tmp_path / "out.parquet"
    code = main(["explain", str(src), "--av", str(toy.av), "--ar", str(toy.ar), "--output", str(out),
                 "--batch-size", "4", "--max-new-tokens", "16", "--no-progress", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert "5 rows -> 5 explanations" in capsys.readouterr().out
    assert len(rows(out)) == 5
    assert (
        main(
            ["explain", str(src), "--av", str(toy.av), "--output", str(out), "--backend", "sglang"]
        )
        == 2
    )
    assert "needs --url" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path, toy, toy_residuals) -> None:
    """SIGKILL the CLI in the middle of a 300-row job, run the same command again: it finishes
    with 300 distinct rows, identical to an uninterrupted run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(toy.subject))
    subject = AutoModelForCausalLM.from_pretrained(str(toy.subject), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(300)
    ids = torch.randint(20, len(tok), (25, 13), generator=g)
    ids[:, 0] = tok.bos_token_id
    with torch.inference_mode():
        hs = subject(input_ids=ids, output_hidden_states=True).hidden_states[EXTRACTION_LAYER + 1]
    vectors = hs[:, 1:].reshape(300, -1).numpy()  # 300 real layer-K residuals
    src = tmp_path / "in.npy"
    np.save(src, vectors)
    args = ["--av", str(toy.av), "--ar", str(toy.ar), "--batch-size", "20", "--max-new-tokens", "24",
            "--temperature", "1.0", "--seed", "3", "--no-progress", "--device", "cpu"]  # fmt: skip
    cmd = [sys.executable, "-m", "nla_lens.cli", "explain", str(src)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed.parquet"
    partial = Path(str(out) + PARTIAL_SUFFIX)
    proc = subprocess.Popen([*cmd, "--output", str(out), *args], env=env)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists():
                with sqlite3.connect(partial) as db:
                    try:
                        done = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
                    except sqlite3.OperationalError:
                        done = 0
                if done >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done >= 2 and not out.exists()
    subprocess.run([*cmd, "--output", str(out), *args], env=env, check=True, timeout=300)
    full = tmp_path / "full.parquet"
    subprocess.run([*cmd, "--output", str(full), *args], env=env, check=True, timeout=300)
    a, b = rows(out), rows(full)
    assert len(a) == 300 and [r["row"] for r in a] == list(range(300))
    assert len({r["row"] for r in a}) == 300
    assert a == b


def test_server_backend_job_equals_local(tmp_path, toy, nla, vectors, loopback) -> None:
    """The same job with the AV decoding on a (loopback) SGLang server gives the same rows."""
    from nla_lens.backends import SGLangBackend

    src = tmp_path / "in.npy"
    np.save(src, vectors[:10])
    local_out, remote_out = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    explain_dataset(src, local_out, av=nla, **FAST)
    backend = SGLangBackend(loopback.url, backoff=0.01)
    res = explain_dataset(
        src, remote_out, av=toy.av, ar=toy.ar, backend=backend, device="cpu", **FAST
    )
    assert res.provenance["backend"] == "sglang"
    a, b = rows(local_out), rows(remote_out)
    assert [r["raw"] for r in a] == [r["raw"] for r in b]
    assert [r["cos"] for r in a] == pytest.approx([r["cos"] for r in b], rel=1e-6)


def test_lock_taken_on_a_replaced_file_is_retaken(tmp_path) -> None:
    """Job B opened the lock file just before job A released (and unlinked) it: B's
    flock on the old file succeeds but guards nothing, so B takes the lock again on the
    file now at the path, and job C is refused."""
    from nla_lens.serving.jobs.job import LOCK_SUFFIX, _JobLock

    out = tmp_path / "out.parquet"
    a = _JobLock(out).__enter__()
    stale = open(str(out) + LOCK_SUFFIX, "a+")  # noqa: SIM115 (B's early open; the lock closes it)
    a.__exit__(None, None, None)
    b = _JobLock(out)
    opens = iter([stale])
    real_open = b._open
    b._open = lambda: next(opens, None) or real_open()
    b.__enter__()
    assert b._fh is not stale and b._still_at_path(b._fh)
    with pytest.raises(NLAError, match="another explain_dataset job"):
        _JobLock(out).__enter__()
    b.__exit__(None, None, None)
    assert stale.closed
