"""The one SQLite store under the explanation cache and the dataset jobs' progress.

WAL journal, one writer transaction at a time, safe to share between threads
(and, through SQLite's own locking, processes). Every failure to open or write
it becomes a :class:`~nla_lens.errors.StoreError` that names the file and the
fix, instead of a raw ``sqlite3`` exception.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError

__all__ = ["SQLiteStore"]


def _explain(path: Path, exc: BaseException, what: str) -> StoreError:
    text = str(exc).lower()
    if ("disk" in text and "full" in text) or (isinstance(exc, OSError) and exc.errno == 28):
        fix = "free disk space and run again (finished work is kept)"
    elif "not a database" in text or "malformed" in text or "file is encrypted" in text:
        fix = f"it is not an intact SQLite database: move it away or delete {path} and run again"
    elif "locked" in text or "busy" in text:
        fix = "another process holds it: wait for it to finish, or use another path"
    elif "readonly" in text or "read-only" in text or "permission" in text:
        fix = "make the file and its folder writable, or use another path"
    else:
        fix = f"check the path, or delete {path} to start over"
    return StoreError(f"{what} {path}: {exc}. Fix: {fix}.")


class SQLiteStore:
    """A SQLite database at ``path`` with ``schema`` (``CREATE TABLE IF NOT EXISTS ...``)."""

    def __init__(self, path: str | os.PathLike[str], schema: str, *, what: str) -> None:
        self.path = Path(path).expanduser()
        self.what = what
        if self.path.is_dir():
            raise StoreError(
                f"{what} path {self.path} is a directory; pass a file path (e.g. "
                f"{self.path / 'nla_lens.sqlite'})."
            )
        if not self.path.parent.is_dir():
            raise StoreError(
                f"{what} path {self.path}: the folder {self.path.parent} does not exist; "
                "create it first or choose another path."
            )
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(schema)
            self._db.execute("PRAGMA quick_check").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise _explain(self.path, exc, f"cannot open the {what}") from exc

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise _explain(self.path, exc, f"cannot read the {self.what}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer transaction: everything inside lands together or not at all."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise _explain(self.path, exc, f"cannot write the {self.what}") from exc

    def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.transaction() as db:
            db.executemany(sql, list(rows))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def remove(self) -> None:
        """Close and delete the database with its WAL files."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
