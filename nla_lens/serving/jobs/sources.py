"""Job inputs: vectors from parquet (an ``activation_vector`` list column), ``.npy`` or ``.pt``,
read in fixed chunks by row index, and the input rows as Arrow tables for the output."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import MissingExtraError, VectorError

__all__ = [
    "RESULT_COLUMNS",
    "VECTOR_COLUMN",
    "Source",
    "array_table",
    "input_tables",
    "list_column_to_array",
    "pyarrow",
    "read_vectors",
    "rename_clashes",
]

VECTOR_COLUMN = "activation_vector"
RESULT_COLUMNS = ("explanation", "raw", "truncated", "mse_nrm", "cos", "fve_nrm")


def pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "data", "explain_dataset (parquet in/out)") from exc
    return pa, pq


class Source:
    """Vectors of an input file, read in fixed chunks by row index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = path.suffix.lower()
        self._array: Any = None
        self._d: int | None = None  # the vector width, once a parquet batch has shown it
        if self.kind == ".npy":
            try:
                self._array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise VectorError(
                    f"{path}: not a readable .npy array ({exc}). Object arrays (lists of "
                    "arrays, dtype=object) are not read, for safety: save one float "
                    "[n, d_model] array with np.save(path, np.stack(vectors).astype(np.float32))."
                ) from exc
        elif self.kind == ".pt":
            try:
                t = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # pickle, zip and torch errors of a corrupt file
                raise VectorError(
                    f"{path}: not a readable saved tensor ({type(exc).__name__}: {exc}). Save "
                    "one float [n, d_model] tensor with torch.save(tensor, path)."
                ) from exc
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                got = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
                raise VectorError(f"{path}: expected a saved float tensor [n, d_model], got {got}.")
            t = t.detach()
            self._array = (t if t.dtype == torch.float64 else t.float()).numpy()
        elif self.kind == ".parquet":
            pa, pq = pyarrow()
            try:
                self._pf = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as exc:
                raise VectorError(
                    f"{path}: not a readable parquet file ({exc}). It is corrupt or was cut "
                    "off while being written: write it again."
                ) from exc
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
        """Identity of the input: name, size, rows and a SHA-256 of the whole file, so a
        changed vector or any other changed column is a different input."""
        size = self.path.stat().st_size
        h = hashlib.sha256()
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(2**22), b""):
                h.update(block)
        return {"name": self.path.name, "size": size, "rows": self.n_rows, "sha256": h.hexdigest()}

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, vectors [m, d] float32)`` for rows ``[0, size), [size, 2 size), ...``."""
        if self._array is not None:
            for start in range(0, self.n_rows, size):
                # A writable copy in the file's precision: float64 extremes keep their direction.
                yield start, np.array(self._array[start : start + size])
            return
        buf: list[np.ndarray] = []
        held, start = 0, 0
        for batch in self._batches(size, [VECTOR_COLUMN]):
            arr = list_column_to_array(batch.column(0), self.path, start + held, self._d)
            self._d = arr.shape[1]
            buf.append(arr)
            held += batch.num_rows
            while held >= size:
                whole = np.concatenate(buf)
                yield start, whole[:size]
                buf, held, start = [whole[size:]], held - size, start + size
        if held:
            yield start, np.concatenate(buf)

    def _batches(self, size: int, columns: list[str] | None = None) -> Iterator[Any]:
        """Parquet record batches; a file that breaks while being read is a VectorError."""
        import pyarrow as pa

        it = self._pf.iter_batches(batch_size=size, columns=columns)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise VectorError(
                    f"{self.path}: the parquet file is corrupt and cannot be read to the end "
                    f"({exc}). Write it again."
                ) from exc
            yield batch


def list_column_to_array(
    col: Any, path: Path, first_row: int, width: int | None = None
) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if col.null_count:
        rows = [first_row + i for i in np.nonzero(np.asarray(col.is_null()))[0][:8].tolist()]
        raise VectorError(
            f"{path}: {VECTOR_COLUMN} is null at row(s) {rows} (0-based rows of the file); "
            "drop or fill them."
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
    if width is not None and len(col) and d != width:
        raise VectorError(
            f"{path}: {VECTOR_COLUMN} rows have different lengths across the file ({width} "
            f"before row {first_row}, {d} from row {first_row}); every vector must have "
            "d_model entries."
        )
    flat = col.flatten()
    if flat.null_count:
        holes = np.nonzero(np.asarray(pc.is_null(flat)))[0]
        rows = sorted({first_row + int(i) // max(d, 1) for i in holes[:64]})[:8]
        raise VectorError(
            f"{path}: {VECTOR_COLUMN} has null entries inside the vectors of row(s) {rows} "
            "(0-based rows of the file); a vector needs a number in every entry: drop or fix them."
        )
    if not pa.types.is_floating(flat.type):
        raise VectorError(f"{path}: {VECTOR_COLUMN} holds {flat.type}; expected floats.")
    values = flat.to_numpy(zero_copy_only=False)
    keep = np.float64 if values.dtype == np.float64 else np.float32
    return np.asarray(values, dtype=keep).reshape(len(col), d)


def read_vectors(path: str | os.PathLike[str]) -> np.ndarray:
    """All vectors of a job input (parquet / npy / pt) as a float ``[n, d]`` array
    (float32, or float64 where the file holds float64)."""
    src = Source(Path(path))
    parts = [v for _, v in src.chunks(65536)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def input_tables(src: Source, pa: Any) -> Iterator[tuple[int, Any]]:
    """Input rows as tables, with result-named input columns renamed ``input_<name>``."""
    if src.kind == ".parquet":
        start = 0
        for batch in src._batches(8192):
            yield start, rename_clashes(pa.Table.from_batches([batch]))
            start += batch.num_rows
        return
    for start, vectors in src.chunks(8192):
        yield start, array_table(start, vectors, pa)


def rename_clashes(table: Any) -> Any:
    """Input columns named like a result column (``explanation``, ..., ``sample``) become
    ``input_<name>``."""
    clash = [c for c in table.column_names if c in (*RESULT_COLUMNS, "sample")]
    if not clash:
        return table
    return table.rename_columns([f"input_{c}" if c in clash else c for c in table.column_names])


def array_table(start: int, vectors: np.ndarray, pa: Any) -> Any:
    """The input rows of an array input (.npy/.pt): ``row`` and ``activation_vector``."""
    n, d = vectors.shape
    kind = pa.float64() if vectors.dtype == np.float64 else pa.float32()
    values = pa.array(vectors.reshape(-1).astype(kind.to_pandas_dtype()), kind)
    vec = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), values)
    return pa.table({"row": pa.array(np.arange(start, start + n), pa.int64()), VECTOR_COLUMN: vec})
