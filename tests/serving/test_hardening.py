"""Issue 10, serving: dataset jobs and the cache answer every bad input with an
NLAError, never resume onto other input, and survive a full disk."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nla_lens import NLA
from nla_lens.errors import JobMismatchError, NLAError, StoreError, VectorError
from nla_lens.serving import ExplanationCache
from nla_lens.serving.jobs import PARTIAL_SUFFIX, explain_dataset
from nla_lens.serving.jobs.progress import Progress

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.integration
N, B, TOKENS = 4, 2, 6  # rows, batch size, max_new_tokens: two small chunks


@pytest.fixture(scope="module")
def vectors(toy_residuals) -> np.ndarray:
    return toy_residuals[0][:N].numpy().astype(np.float32)


def write_parquet(path: Path, vectors: np.ndarray, **columns) -> Path:
    table = {"activation_vector": pa.array(list(vectors), pa.list_(pa.float32())), **columns}
    pq.write_table(pa.table(table), path)
    return path


def run(src, out, nla, **kw):
    kw = {"batch_size": B, "max_new_tokens": TOKENS, "progress": False, **kw}
    return explain_dataset(src, out, av=nla, **kw)


def interrupted(monkeypatch, src, out, nla, **kw) -> None:
    """Run a job that dies after its first chunk, leaving a partial run behind."""
    real = Progress.commit_chunk
    calls = []

    def commit(self, start, n, records):
        if calls:
            raise KeyboardInterrupt
        calls.append(start)
        real(self, start, n, records)

    monkeypatch.setattr(Progress, "commit_chunk", commit)
    with pytest.raises(KeyboardInterrupt):
        run(src, out, nla, **kw)
    monkeypatch.setattr(Progress, "commit_chunk", real)
    assert Path(str(out) + PARTIAL_SUFFIX).exists()


# ---- resuming onto other input, checkpoints or settings -----------------------------------
def test_resume_onto_same_shape_other_npy_is_refused(tmp_path, monkeypatch, nla, vectors) -> None:
    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors)
    interrupted(monkeypatch, src, out, nla)
    np.save(src, vectors[::-1].copy())  # same name, shape and size; other content
    with pytest.raises(JobMismatchError, match="input"):
        run(src, out, nla)
    assert not out.exists()


def test_resume_onto_other_parquet_column_is_refused(tmp_path, monkeypatch, nla, vectors) -> None:
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    write_parquet(src, vectors, doc_id=[f"doc{i}" for i in range(N)])
    interrupted(monkeypatch, src, out, nla)
    write_parquet(src, vectors, doc_id=[f"DOC{i}" for i in range(N)])  # only a non-vector column
    with pytest.raises(JobMismatchError, match="input"):
        run(src, out, nla)
    write_parquet(src, vectors + 1e-3, doc_id=[f"doc{i}" for i in range(N)])  # only the vectors
    with pytest.raises(JobMismatchError, match="input"):
        run(src, out, nla)


def test_resume_with_other_sampling_is_refused(tmp_path, monkeypatch, nla, vectors) -> None:
    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors)
    interrupted(monkeypatch, src, out, nla)
    for changed in ({"max_new_tokens": TOKENS + 1}, {"temperature": 1.0}, {"seed": 3}):
        with pytest.raises(JobMismatchError, match=next(iter(changed))):
            run(src, out, nla, **changed)
    result = run(src, out, nla)  # the original settings still resume
    assert result.resumed_rows == B and result.computed_rows == N - B


def test_resume_with_a_changed_checkpoint_is_refused(
    tmp_path, monkeypatch, toy, nla, vectors
) -> None:
    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors)
    interrupted(monkeypatch, src, out, nla)
    ar = tmp_path / "ar-copy"
    shutil.copytree(toy.ar, ar)
    head = load_file(str(ar / "value_head.safetensors"))
    save_file({k: v * 1.01 for k, v in head.items()}, str(ar / "value_head.safetensors"))
    other = NLA.from_pretrained(toy.av, ar, device="cpu")
    with pytest.raises(JobMismatchError, match="ar"):
        run(src, out, other)


# ---- bad inputs ---------------------------------------------------------------------------
def test_vectors_of_mixed_lengths_across_the_file(tmp_path, nla, vectors) -> None:
    src = tmp_path / "in.parquet"
    rows = [*list(vectors[:2]), *[np.ones(vectors.shape[1] - 1, np.float32)] * 2]
    writer = pq.ParquetWriter(str(src), pa.schema([("activation_vector", pa.list_(pa.float32()))]))
    for part in (rows[:2], rows[2:]):  # two row groups: each is uniform, the file is not
        writer.write_table(pa.table({"activation_vector": pa.array(part, pa.list_(pa.float32()))}))
    writer.close()
    with pytest.raises(VectorError, match="different lengths across the file.*row 2"):
        run(src, tmp_path / "out.parquet", nla)


def test_null_inside_a_vector_is_named_by_file_row(tmp_path, nla, vectors) -> None:
    src = tmp_path / "in.parquet"
    rows = [list(map(float, v)) for v in vectors]
    rows[3][5] = None
    pq.write_table(pa.table({"activation_vector": pa.array(rows, pa.list_(pa.float32()))}), src)
    with pytest.raises(VectorError, match=r"null entries inside the vectors of row\(s\) \[3\]"):
        run(src, tmp_path / "out.parquet", nla)
    rows[3] = None
    pq.write_table(pa.table({"activation_vector": pa.array(rows, pa.list_(pa.float32()))}), src)
    with pytest.raises(VectorError, match=r"null at row\(s\) \[3\]"):
        run(src, tmp_path / "out2.parquet", nla)


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        ("in.parquet", lambda p, v: p.write_bytes(b"PAR1 not really"), "not a readable parquet"),
        ("in.npy", lambda p, v: p.write_bytes(b"\x93NUMPY garbage"), "not a readable .npy"),
        (
            "in.npy",
            lambda p, v: np.save(p, np.array([v[0], v[1][:3]], dtype=object), allow_pickle=True),
            "Object arrays",
        ),
        ("in.npy", lambda p, v: np.save(p, (v * 100).astype(np.int64)), "expected a float array"),
        ("in.pt", lambda p, v: p.write_bytes(b"not a zip"), "not a readable saved tensor"),
        ("in.pt", lambda p, v: torch.save(torch.ones(2, 3, dtype=torch.long), p), "int64"),
    ],
    ids=["parquet", "npy", "npy-object", "npy-int", "pt", "pt-int"],
)
def test_corrupt_inputs(tmp_path, nla, vectors, name, make, match) -> None:
    src = tmp_path / name
    make(src, vectors)
    with pytest.raises(VectorError, match=match):
        run(src, tmp_path / "out.parquet", nla)


def test_truncated_parquet(tmp_path, nla, vectors) -> None:
    whole = write_parquet(tmp_path / "whole.parquet", vectors).read_bytes()
    src = tmp_path / "in.parquet"
    src.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VectorError, match="parquet"):
        run(src, tmp_path / "out.parquet", nla)


def test_float64_extremes_in_a_job(tmp_path, nla, vectors) -> None:
    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors.astype(np.float64) * 1e300)
    got = pq.read_table(run(src, out, nla).output_path).to_pylist()
    want = nla.explain(vectors, max_new_tokens=TOKENS, batch_size=B, seed=0)
    assert [r["explanation"] for r in got] == [e.text for e in want]
    assert all(np.isfinite(r["activation_vector"]).all() for r in got)


# ---- output paths, locking ---------------------------------------------------------------
def test_bad_output_paths_are_refused_before_any_compute(tmp_path, vectors) -> None:
    src = tmp_path / "in.npy"
    np.save(src, vectors)
    (tmp_path / "a-dir").mkdir()
    # av names no checkpoint: were anything loaded first, the error would be about it.
    with pytest.raises(NLAError, match="is a directory"):
        explain_dataset(src, tmp_path / "a-dir", av="/nonexistent/av")
    with pytest.raises(NLAError, match="does not exist. Create it first"):
        explain_dataset(src, tmp_path / "missing" / "out.parquet", av="/nonexistent/av")
    assert not (tmp_path / "missing").exists()


def test_a_second_job_on_the_same_output_is_refused(tmp_path, nla, vectors) -> None:
    fcntl = pytest.importorskip("fcntl")
    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors)
    lock = Path(str(out) + ".lock")
    with open(lock, "a+") as fh:  # the first job's lock
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(NLAError, match=r"another explain_dataset job.*out\.parquet\.lock"):
            run(src, out, nla)
    assert run(src, out, nla).rows == N  # released: it runs, and leaves no lock behind
    assert not lock.exists()


# ---- a corrupt progress database, a full disk -------------------------------------------
def test_corrupt_progress_database(tmp_path, nla, vectors) -> None:
    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors)
    partial = Path(str(out) + PARTIAL_SUFFIX)
    partial.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(StoreError, match=f"not an intact SQLite database.*delete {partial}"):
        run(src, out, nla)
    partial.unlink()
    assert run(src, out, nla).rows == N


@pytest.mark.parametrize(
    "failure",
    [sqlite3.OperationalError("database or disk is full"), OSError(errno.ENOSPC, "No space left")],
    ids=["sqlite-full", "enospc"],
)
def test_full_disk_then_resume(tmp_path, monkeypatch, nla, vectors, failure) -> None:
    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors)
    real = Progress.commit_chunk
    calls = []

    def commit(self, start, n, records):
        calls.append(start)
        if len(calls) == 2:  # the disk fills while the second chunk is written
            with self.store.transaction():
                raise failure
        real(self, start, n, records)

    monkeypatch.setattr(Progress, "commit_chunk", commit)
    with pytest.raises(StoreError, match="free disk space and run again"):
        run(src, out, nla)
    monkeypatch.setattr(Progress, "commit_chunk", real)
    result = run(src, out, nla)
    assert (result.resumed_rows, result.computed_rows) == (B, N - B)
    got = pq.read_table(out).to_pylist()
    assert [r["row"] for r in got] == list(range(N))  # every row once


def test_full_disk_while_writing_the_output(tmp_path, monkeypatch, nla, vectors) -> None:
    from nla_lens.serving.jobs import output

    src, out = tmp_path / "in.npy", tmp_path / "out.parquet"
    np.save(src, vectors)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output, "_write", full)
    with pytest.raises(StoreError, match="free disk space.*kept in"):
        run(src, out, nla)
    monkeypatch.undo()
    result = run(src, out, nla)
    assert result.computed_rows == 0 and result.resumed_rows == N


# ---- cache paths -------------------------------------------------------------------------
def test_cache_path_that_is_not_a_database(tmp_path, nla) -> None:
    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"definitely not sqlite" * 200)
    with pytest.raises(StoreError, match="not an intact SQLite database"):
        ExplanationCache(bad)


def test_cache_path_that_is_a_directory(tmp_path) -> None:
    with pytest.raises(StoreError, match="is a directory; pass a file path"):
        ExplanationCache(tmp_path)
