"""Explaining a whole dataset of vectors: batched, resumable, with provenance.

:func:`explain_dataset` reads vectors from a parquet file (an
``activation_vector`` list column, the NLA datasets' convention), a ``.npy``
``[n, d]`` array or a ``.pt`` ``[n, d]`` tensor, explains them in fixed chunks
of ``batch_size`` rows, and writes a parquet file with every input column plus
``explanation``, ``raw``, ``truncated``, ``mse_nrm``, ``cos``, ``fve_nrm``
(and ``sample`` when ``samples > 1``). Provenance goes in the parquet schema
metadata under the key ``nla_lens``.

Resuming: each chunk's results are committed in one SQLite transaction (WAL)
to ``OUTPUT.partial.sqlite`` with the job's parameters. Kill the job at any
moment (even ``kill -9``), run it again with the same arguments, and it skips
the committed chunks and finishes with every row exactly once. The final
parquet is written to a temporary file and renamed into place, then the
partial database is removed. Resuming with different parameters is refused.

Seeds: the chunk starting at row ``r0`` is explained with seed
``seed + r0 * samples``, and every backend offsets that seed by the decode's
index in the chunk, so sample ``s`` of row ``r`` is drawn with seed
``seed + r * samples + s`` on the vLLM/SGLang servers (one seed per request);
the in-process backend seeds once per chunk. Either way a row's result depends
only on (seed, its chunk), and chunks are fixed by ``batch_size``, so a resumed
run equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .backends.base import GenerationBackend
from .errors import MissingExtraError, NLAError, VectorError

if TYPE_CHECKING:
    import pyarrow as pa

    from .pair import NLA

__all__ = ["VECTOR_COLUMN", "JobResult", "explain_dataset", "read_vectors"]

log = logging.getLogger("nla_lens.jobs")

VECTOR_COLUMN = "activation_vector"
RESULT_COLUMNS = ("explanation", "raw", "truncated", "mse_nrm", "cos", "fve_nrm")
PARTIAL_SUFFIX = ".partial.sqlite"
_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class JobResult:
    """What :func:`explain_dataset` did."""

    output_path: Path
    rows: int
    results: int
    computed_rows: int
    resumed_rows: int
    seconds: float
    provenance: dict[str, Any]


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "data", "explain_dataset (parquet in/out)") from exc
    return pa, pq


# ---- input -------------------------------------------------------------------------------


class _Source:
    """Vectors of an input file, read in fixed chunks by row index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = path.suffix.lower()
        self._array: Any = None
        if self.kind == ".npy":
            self._array = np.load(path, mmap_mode="r")
        elif self.kind == ".pt":
            t = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(t, torch.Tensor):
                raise VectorError(
                    f"{path}: expected a saved tensor [n, d_model], got {type(t).__name__}."
                )
            self._array = t.detach().float().numpy()
        elif self.kind == ".parquet":
            _, pq = _pyarrow()
            self._pf = pq.ParquetFile(path)
            names = self._pf.schema_arrow.names
            if VECTOR_COLUMN not in names:
                raise VectorError(
                    f"{path}: no {VECTOR_COLUMN!r} column (columns: {names}). NLA datasets keep each "
                    f"vector as a list<float> column named {VECTOR_COLUMN!r}; rename yours to it."
                )
        else:
            raise VectorError(
                f"{path}: unsupported input {path.suffix!r}; use .parquet, .npy or .pt."
            )
        if self._array is not None and (
            self._array.ndim != 2 or not np.issubdtype(self._array.dtype, np.floating)
        ):
            raise VectorError(
                f"{path}: expected a float array [n, d_model], got {self._array.dtype} {self._array.shape}."
            )

    @property
    def n_rows(self) -> int:
        return (
            int(self._array.shape[0])
            if self._array is not None
            else int(self._pf.metadata.num_rows)
        )

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the input: size, rows and a SHA-256 of sampled 1 MiB blocks (fast on big files)."""
        size = self.path.stat().st_size
        h = hashlib.sha256(str(size).encode())
        with self.path.open("rb") as fh:
            for off in sorted({0, size // 2, max(size - 2**20, 0)}):
                fh.seek(off)
                h.update(fh.read(2**20))
        return {
            "name": self.path.name,
            "size": size,
            "rows": self.n_rows,
            "sha256_sampled": h.hexdigest(),
        }

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, vectors [m, d] float32)`` for rows ``[0, size), [size, 2 size), ...``."""
        if self._array is not None:
            for start in range(0, self.n_rows, size):
                yield (
                    start,
                    np.array(self._array[start : start + size], dtype=np.float32),
                )  # a writable copy
            return
        buf: list[np.ndarray] = []
        held, start = 0, 0
        for batch in self._pf.iter_batches(batch_size=size, columns=[VECTOR_COLUMN]):
            buf.append(_list_column_to_array(batch.column(0), self.path, start + held))
            held += batch.num_rows
            while held >= size:
                whole = np.concatenate(buf)
                yield start, whole[:size]
                buf, held, start = [whole[size:]], held - size, start + size
        if held:
            yield start, np.concatenate(buf)


def _list_column_to_array(col: Any, path: Path, first_row: int) -> np.ndarray:
    import pyarrow as pa

    if col.null_count:
        raise VectorError(
            f"{path}: {VECTOR_COLUMN} has null rows near row {first_row}; drop or fill them."
        )
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = np.asarray(col.value_lengths())
        if len(lengths) and (lengths != lengths[0]).any():
            bad = int(np.nonzero(lengths != lengths[0])[0][0])
            raise VectorError(
                f"{path}: {VECTOR_COLUMN} rows have different lengths ({lengths[0]} vs {lengths[bad]} at "
                f"row {first_row + bad}); every vector must have d_model entries."
            )
        d = int(lengths[0]) if len(lengths) else 0
    else:
        raise VectorError(f"{path}: {VECTOR_COLUMN} has type {col.type}; expected list<float>.")
    values = col.flatten().to_numpy(zero_copy_only=False)
    if not np.issubdtype(values.dtype, np.floating):
        raise VectorError(f"{path}: {VECTOR_COLUMN} holds {values.dtype}; expected floats.")
    return np.asarray(values, dtype=np.float32).reshape(len(col), d)


def read_vectors(path: str | os.PathLike[str]) -> np.ndarray:
    """All vectors of a job input (parquet / npy / pt) as a float32 ``[n, d]`` array."""
    src = _Source(Path(path))
    parts = [v for _, v in src.chunks(65536)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


# ---- the partial-results database -------------------------------------------------------


class _Partial:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS chunks (start INTEGER PRIMARY KEY, n INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS results (
                row INTEGER NOT NULL, sample INTEGER NOT NULL, explanation TEXT NOT NULL, raw TEXT NOT NULL,
                truncated INTEGER NOT NULL, mse_nrm REAL, cos REAL, fve_nrm REAL, PRIMARY KEY (row, sample)
            );
            """
        )

    def check_params(self, params: dict[str, Any], partial_name: str) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'params'").fetchone()
        if row is None:
            self.db.execute(
                "INSERT INTO meta VALUES ('params', ?)", (json.dumps(params, sort_keys=True),)
            )
            return
        stored = json.loads(row[0])
        if stored != params:
            diff = {
                k: (stored.get(k), params.get(k))
                for k in sorted(set(stored) | set(params))
                if stored.get(k) != params.get(k)
            }
            shown = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise NLAError(
                f"{partial_name} holds a partial run with different parameters ({shown}). Resume with the "
                f"original parameters, or delete {partial_name} to start over."
            )

    def done_chunks(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT start, n FROM chunks").fetchall())

    def commit_chunk(self, start: int, n: int, records: list[tuple[Any, ...]]) -> None:
        """One transaction: the chunk's results and its done-mark land together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM results WHERE row >= ? AND row < ?", (start, start + n))
            self.db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records)
            self.db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?)", (start, n))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def rows(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        return self.db.execute(
            "SELECT row, sample, explanation, raw, truncated, mse_nrm, cos, fve_nrm FROM results "
            "WHERE row >= ? AND row < ? ORDER BY row, sample",
            (lo, hi),
        ).fetchall()

    def close(self) -> None:
        self.db.close()

    def remove(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)


# ---- the job ---------------------------------------------------------------------------


def _load_nla(av: Any, ar: Any, backend: GenerationBackend | None, device: Any, dtype: Any) -> NLA:
    from .pair import NLA

    if isinstance(av, NLA):
        if ar is not None or backend is not None:
            raise NLAError(
                "pass either a loaded NLA as av=, or checkpoint ids/paths with ar=/backend=, not both."
            )
        return av
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return NLA.from_pretrained(av, ar, device=device, dtype=dtype, backend=backend)


def explain_dataset(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    av: str | os.PathLike[str] | NLA,
    ar: str | os.PathLike[str] | None = None,
    backend: GenerationBackend | None = None,
    batch_size: int = 64,
    temperature: float = 0.0,
    samples: int = 1,
    max_new_tokens: int = 200,
    top_p: float = 1.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> JobResult:
    """Explain every vector of ``input_path`` into the parquet file ``output_path``.

    ``av``/``ar`` are checkpoint directories or hub ids (or ``av`` is an already
    loaded :class:`~nla_lens.NLA`); ``backend`` decodes on a server instead of
    in-process. Resumable (see the module docs); an existing ``output_path``
    without a partial run is refused unless ``overwrite=True``.
    """
    t0 = time.perf_counter()
    pa, pq = _pyarrow()
    src_path, out = Path(input_path), Path(output_path)
    if batch_size < 1 or samples < 1 or max_new_tokens < 1:
        raise NLAError(
            f"batch_size, samples and max_new_tokens must be >= 1 (got {batch_size}, {samples}, {max_new_tokens})."
        )
    if samples > 1 and temperature == 0.0:
        raise NLAError(
            "samples > 1 with temperature=0 repeats one greedy decode; set --temperature > 0."
        )
    if not src_path.is_file():
        raise NLAError(f"input {src_path} does not exist.")
    partial_path = Path(str(out) + PARTIAL_SUFFIX)
    if out.exists() and not partial_path.exists() and not overwrite:
        raise NLAError(
            f"{out} already exists (a finished job?). Pass overwrite=True (--overwrite) to redo it."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".tmp").unlink(missing_ok=True)  # a final write that was killed half-way

    src = _Source(src_path)
    nla = _load_nla(av, ar, backend, device, dtype)
    sampling = {
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "top_p": top_p,
        "samples": samples,
    }
    prov = nla.provenance(seed=seed, **sampling).to_dict()
    params = {
        "schema": _SCHEMA_VERSION, "input": src.fingerprint(), "av": _identity(prov["av"]),
        "ar": _identity(prov["ar"]), "dtype": prov["dtype"], "backend": prov["backend"], "batch_size": batch_size,
        "seed": seed, **sampling,
    }  # fmt: skip
    partial = _Partial(partial_path)
    try:
        partial.check_params(params, partial_path.name)
        done = partial.done_chunks()
        n = src.n_rows
        resumed = sum(done.values())
        computed = 0
        from tqdm.auto import tqdm

        with tqdm(
            total=n, initial=resumed, desc="explaining", unit="row", disable=not progress
        ) as bar:
            for start, vectors in src.chunks(batch_size):
                if done.get(start) == len(vectors):
                    continue
                try:
                    exps = nla.explain(
                        vectors, temperature=temperature, max_new_tokens=max_new_tokens, top_p=top_p,
                        samples=samples, seed=seed + start * samples, batch_size=batch_size, progress=False,
                    )  # fmt: skip
                except VectorError as exc:
                    raise VectorError(
                        f"{src_path}, rows {start}..{start + len(vectors) - 1} (row numbers in the message are within this chunk): {exc}"
                    ) from exc
                partial.commit_chunk(start, len(vectors), [_record(start, e) for e in exps])
                computed += len(vectors)
                bar.update(len(vectors))
        job = {
            "input": str(src_path), "rows": n, "batch_size": batch_size, "samples": samples,
            "row_seed": "seed + row * samples + sample (per request on servers; per chunk in-process)",
        }  # fmt: skip
        meta = {**prov, "job": job}
        _write_output(src, partial, out, samples, meta, pa, pq)
    except BaseException:
        partial.close()
        raise
    partial.remove()
    return JobResult(out, n, n * samples, computed, resumed, time.perf_counter() - t0, meta)


def _identity(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        k: record.get(k)
        for k in ("hub_id", "revision", "commit", "content_sha256", "sidecar_sha256")
    }


def _record(start: int, e: Any) -> tuple[Any, ...]:
    return (start + e.index, e.sample, e.text, e.raw, int(e.truncated), e.mse_nrm, e.cos, e.fve_nrm)


def _result_arrays(records: list[tuple[Any, ...]], samples: int, pa: Any) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    if samples > 1:
        cols["sample"] = pa.array([r[1] for r in records], pa.int32())
    cols["explanation"] = pa.array([r[2] for r in records], pa.string())
    cols["raw"] = pa.array([r[3] for r in records], pa.string())
    cols["truncated"] = pa.array([bool(r[4]) for r in records], pa.bool_())
    for i, name in ((5, "mse_nrm"), (6, "cos"), (7, "fve_nrm")):
        cols[name] = pa.array([r[i] for r in records], pa.float32())
    return cols


def _write_output(
    src: _Source, partial: _Partial, out: Path, samples: int, meta: dict[str, Any], pa: Any, pq: Any
) -> None:
    """Stream input columns + results into ``out.tmp``, then rename it over ``out``."""
    tmp = Path(str(out) + ".tmp")
    writer = None
    try:
        for start, table in _input_tables(src, pa):
            n = table.num_rows
            records = partial.rows(start, start + n)
            if len(records) != n * samples:
                raise NLAError(
                    f"internal: rows {start}..{start + n} have {len(records)} results, expected {n * samples}."
                )
            if samples > 1:
                table = table.take(pa.array(np.repeat(np.arange(n), samples)))
            results = _result_arrays(records, samples, pa)
            for name, arr in results.items():
                table = table.append_column(name, arr)
            if writer is None:
                schema = table.schema.with_metadata(
                    {**(table.schema.metadata or {}), b"nla_lens": json.dumps(meta).encode()}
                )
                writer = pq.ParquetWriter(str(tmp), schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:  # an empty input
            raise NLAError(f"{src.path}: the input has no rows.")
        writer.close()
        writer = None
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)


def _input_tables(src: _Source, pa: Any) -> Iterator[tuple[int, pa.Table]]:
    """Input rows as tables, with result-named input columns renamed ``input_<name>``."""
    if src.kind == ".parquet":
        start = 0
        for batch in src._pf.iter_batches(batch_size=8192):
            table = pa.Table.from_batches([batch])
            clash = [c for c in table.column_names if c in (*RESULT_COLUMNS, "sample")]
            if clash:
                table = table.rename_columns(
                    [f"input_{c}" if c in clash else c for c in table.column_names]
                )
            yield start, table
            start += batch.num_rows
        return
    for start, vectors in src.chunks(8192):
        n, d = vectors.shape
        values = pa.array(vectors.reshape(-1), pa.float32())
        vec = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), values)
        yield (
            start,
            pa.table(
                {"row": pa.array(np.arange(start, start + n), pa.int64()), VECTOR_COLUMN: vec}
            ),
        )
