"""Writing a job's output: input columns + results, streamed to a temporary parquet file
and renamed into place."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import NLAError, StoreError
from .progress import Progress
from .sources import Source, input_tables

__all__ = ["append_results", "record", "write_output"]


def record(start: int, e: Any) -> tuple[Any, ...]:
    """One result row for the progress database."""
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


def append_results(table: Any, records: list[tuple[Any, ...]], samples: int, pa: Any) -> Any:
    """Input rows ``table`` (one row per vector) with the result columns appended; with
    ``samples > 1`` each input row is repeated once per sample."""
    n = table.num_rows
    if samples > 1:
        table = table.take(pa.array(np.repeat(np.arange(n), samples)))
    for name, arr in _result_arrays(records, samples, pa).items():
        table = table.append_column(name, arr)
    return table


def write_output(
    src: Source, partial: Progress, out: Path, samples: int, meta: dict[str, Any], pa: Any, pq: Any
) -> None:
    """Stream input columns + results into ``out.tmp``, then rename it over ``out``."""
    tmp = Path(str(out) + ".tmp")
    try:
        _write(src, partial, out, tmp, samples, meta, pa, pq)
    except OSError as exc:  # a full disk, a quota, a vanished folder
        raise StoreError(
            f"cannot write the job output {out} ({exc}). Fix the cause (free disk space?) and run "
            f"the job again: every finished row is kept in {partial.path} and is not recomputed."
        ) from exc
    except pa.ArrowException as exc:
        raise StoreError(
            f"cannot write the job output {out} ({exc}). Fix the cause and run the job again: "
            f"every finished row is kept in {partial.path}."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _write(
    src: Source,
    partial: Progress,
    out: Path,
    tmp: Path,
    samples: int,
    meta: dict[str, Any],
    pa: Any,
    pq: Any,
) -> None:
    writer = None
    try:
        for start, table in input_tables(src, pa):
            n = table.num_rows
            records = partial.rows(start, start + n)
            if len(records) != n * samples:
                raise NLAError(
                    f"internal: rows {start}..{start + n} have {len(records)} results, expected {n * samples}."
                )
            table = append_results(table, records, samples, pa)
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
