"""The Ray engine's plan, without Ray: the input split into fixed row blocks, the job's
fingerprint, the work directory of committed blocks, and the final assembly.

Everything here is deterministic given (input, block_rows): block ``i`` is rows
``[i * block_rows, min((i + 1) * block_rows, n))`` of the input (parquet files of
a directory concatenated in name order), whichever worker reads it and however
often. A block's results are committed as one parquet file in the work
directory, written to a temporary name and renamed into place, so a block file
is either whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.sampling import Sampling
from ...errors import JobMismatchError, NLAError, VectorError
from ..jobs.progress import RAY_WORK_SUFFIX, params_diff
from ..jobs.sources import (
    VECTOR_COLUMN,
    Source,
    array_table,
    list_column_to_array,
    pyarrow,
    rename_clashes,
)

__all__ = ["WORK_SUFFIX", "InputSet", "WorkDir"]

#: The work directory of a Ray job sits next to its output: ``OUTPUT.ray-work/``.
WORK_SUFFIX = RAY_WORK_SUFFIX
_PARAMS = "job.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class InputSet:
    """A job's input: one .parquet/.npy/.pt file, or a directory of .parquet files read as
    one table (files in name order). Picklable: workers reopen the files lazily."""

    path: Path
    files: list[Path]
    rows: list[int]
    kind: str
    _open: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> InputSet:
        p = Path(path).expanduser().resolve()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix == ".parquet")
            if not files:
                raise NLAError(f"input directory {p} holds no .parquet files.")
            _, pq = pyarrow()
            first = None
            rows = []
            for f in files:
                src = Source(f)  # checks the activation_vector column
                schema = pq.read_schema(f).remove_metadata()
                if first is None:
                    first = schema
                elif not schema.equals(first):
                    raise VectorError(
                        f"{f}: its columns differ from {files[0].name}'s ({schema} vs {first}); "
                        "every parquet file of an input directory must have the same schema."
                    )
                rows.append(src.n_rows)
            return cls(p, files, rows, ".parquet")
        if not p.is_file():
            raise NLAError(f"input {p} does not exist.")
        src = Source(p)
        return cls(p, [p], [src.n_rows], src.kind)

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    def fingerprint(self) -> dict[str, Any]:
        """Name, size, rows and SHA-256 of every file (a file gives the local engine's)."""
        fps = [
            {"name": f.name, "size": f.stat().st_size, "rows": r, "sha256": _sha256(f)}
            for f, r in zip(self.files, self.rows, strict=True)
        ]
        if self.path.is_file():
            return fps[0]
        return {"name": self.path.name, "rows": self.n_rows, "files": fps}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    # ---- reading one block -------------------------------------------------------
    def read(self, lo: int, hi: int) -> tuple[Any, np.ndarray]:
        """Rows ``[lo, hi)``: the input columns as an Arrow table (result-named columns
        renamed ``input_<name>``) and the vectors, float32 ``[hi - lo, d]``."""
        pa, _ = pyarrow()
        if self.kind != ".parquet":
            arr = self._array()
            vectors = np.array(arr[lo:hi], dtype=np.float32)
            return array_table(lo, vectors, pa), vectors
        tables, offset = [], 0
        for i, n in enumerate(self.rows):
            a, b = max(lo, offset), min(hi, offset + n)
            if a < b:
                tables.append(self._parquet_rows(i, a - offset, b - offset))
            offset += n
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        vectors = list_column_to_array(table.column(VECTOR_COLUMN).combine_chunks(), self.path, lo)
        return rename_clashes(table), vectors

    def _array(self) -> Any:
        if 0 not in self._open:
            if self.kind == ".npy":
                self._open[0] = np.load(self.files[0], mmap_mode="r")
            else:  # .pt: memory-mapped where the file allows, so workers share pages
                try:
                    t = torch.load(self.files[0], map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:
                    t = torch.load(self.files[0], map_location="cpu", weights_only=True)
                self._open[0] = t.detach().float().numpy()
        return self._open[0]

    def _parquet_rows(self, i: int, a: int, b: int) -> Any:
        """Rows ``[a, b)`` of file ``i``, reading only the row groups that hold them."""
        if i not in self._open:
            _, pq = pyarrow()
            self._open[i] = pq.ParquetFile(self.files[i])
        pf = self._open[i]
        groups, start, first = [], 0, None
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if start < b and start + n > a:
                groups.append(g)
                first = start if first is None else first
            start += n
        table = pf.read_row_groups(groups)
        return table.slice(a - (first or 0), b - a)


def block_name(index: int) -> str:
    return f"block-{index:08d}.parquet"


class WorkDir:
    """``OUTPUT.ray-work/``: ``job.json`` (the job's parameters) and one committed parquet
    file per finished block."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = Path(str(output) + WORK_SUFFIX)

    def exists(self) -> bool:
        return self.path.is_dir()

    def check_params(self, params: dict[str, Any]) -> None:
        """Record the job's parameters, or refuse to resume with different ones."""
        self.path.mkdir(parents=True, exist_ok=True)
        f = self.path / _PARAMS
        if not f.exists():
            atomic_write_bytes(f, json.dumps(params, sort_keys=True, indent=1).encode())
            return
        stored = json.loads(f.read_text())
        if stored != params:
            raise JobMismatchError(
                f"{self.path} holds a partial Ray run with different parameters "
                f"({params_diff(stored, params)}). Resume with the original input, checkpoints and "
                f"settings, or delete {self.path} to start over."
            )

    def block_path(self, index: int) -> Path:
        return self.path / block_name(index)

    def done(self, n_blocks: int) -> set[int]:
        return {i for i in range(n_blocks) if self.block_path(i).is_file()}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_block(path: Path, table: Any) -> None:
    """Commit one block: write to a unique temporary name, fsync, rename into place. A
    retried or duplicated block rewrites the same content, so either copy may win."""
    _, pq = pyarrow()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def assemble(work: WorkDir, n_blocks: int, rows: int, samples: int, meta: dict[str, Any]) -> None:
    """Concatenate the block files in block order into ``OUTPUT.tmp`` (provenance in the
    schema metadata under ``nla_lens``), check the row count, rename over ``OUTPUT``."""
    _, pq = pyarrow()
    out = work.output
    tmp = Path(str(out) + ".tmp")
    writer = None
    written = 0
    try:
        for i in range(n_blocks):
            table = pq.read_table(work.block_path(i))
            if writer is None:
                schema = table.schema.with_metadata(
                    {**(table.schema.metadata or {}), b"nla_lens": json.dumps(meta).encode()}
                )
                writer = pq.ParquetWriter(str(tmp), schema)
            writer.write_table(table.cast(writer.schema))
            written += table.num_rows
        if writer is None:
            raise NLAError("internal: no blocks to assemble.")
        writer.close()
        writer = None
        if written != rows * samples:
            raise NLAError(
                f"internal: the blocks in {work.path} hold {written} results, expected {rows * samples}."
            )
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)


def job_params(
    schema: int,
    inputs: InputSet,
    identity: dict[str, Any],
    s: Sampling,
    block_rows: int,
) -> dict[str, Any]:
    """The fingerprint a rerun must match: input content, checkpoints, numerics, sampling,
    and the block layout (which fixes the seeds and the block files' row ranges)."""
    return {
        "schema": schema, "engine": "ray", "input": inputs.fingerprint(), **identity,
        **s.key(), "seed": s.seed, "samples": s.samples, "batch_size": s.batch_size,
        "block_rows": block_rows,
    }  # fmt: skip
