"""A job's progress database: committed chunks of results, in the shared SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import JobMismatchError, StoreError
from ..store import SQLiteStore

__all__ = ["PARTIAL_SUFFIX", "RAY_WORK_SUFFIX", "Progress", "params_diff"]

PARTIAL_SUFFIX = ".partial.sqlite"
#: The Ray engine's work directory of committed blocks sits next to its output.
RAY_WORK_SUFFIX = ".ray-work"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (start INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    row INTEGER NOT NULL, sample INTEGER NOT NULL, explanation TEXT NOT NULL, raw TEXT NOT NULL,
    truncated INTEGER NOT NULL, mse_nrm REAL, cos REAL, fve_nrm REAL, PRIMARY KEY (row, sample)
);
"""


def params_diff(stored: dict[str, Any], params: dict[str, Any]) -> str:
    """What differs between a saved job's parameters and this run's, for the refusal message."""
    keys = sorted(set(stored) | set(params))
    return "; ".join(
        f"{k}: was {stored.get(k)!r}, now {params.get(k)!r}"
        for k in keys
        if stored.get(k) != params.get(k)
    )


class Progress:
    """Chunks of results, each committed in one transaction with its done-mark."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = SQLiteStore(path, _SCHEMA, what="job progress database")

    def check_params(self, params: dict[str, Any]) -> None:
        """Record the job's parameters, or refuse to resume with different ones."""
        row = self.store.query("SELECT value FROM meta WHERE key = 'params'")
        if not row:
            with self.store.transaction() as db:
                db.execute(
                    "INSERT INTO meta VALUES ('params', ?)", (json.dumps(params, sort_keys=True),)
                )
            return
        try:
            stored = json.loads(row[0][0])
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"{self.path}: the saved job parameters are unreadable ({exc}); the progress "
                f"database is damaged. Delete {self.path} to start the job over."
            ) from exc
        if not isinstance(stored, dict):
            stored = {"params": stored}
        if stored != params:
            shown = params_diff(stored, params)
            raise JobMismatchError(
                f"{self.path.name} holds a partial run with different parameters ({shown}). Resume "
                f"with the original input, checkpoints and settings, or delete {self.path} to start over."
            )

    def done_chunks(self) -> dict[int, int]:
        return dict(self.store.query("SELECT start, n FROM chunks"))

    def commit_chunk(self, start: int, n: int, records: list[tuple[Any, ...]]) -> None:
        """One transaction: the chunk's results and its done-mark land together or not at all."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM results WHERE row >= ? AND row < ?", (start, start + n))
            db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records)
            db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?)", (start, n))

    def rows(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        return self.store.query(
            "SELECT row, sample, explanation, raw, truncated, mse_nrm, cos, fve_nrm FROM results "
            "WHERE row >= ? AND row < ? ORDER BY row, sample",
            (lo, hi),
        )

    def close(self) -> None:
        self.store.close()

    def remove(self) -> None:
        self.store.remove()
