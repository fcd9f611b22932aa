"""Resumable dataset jobs: sources (inputs), progress (the shared SQLite store), output, job."""

from __future__ import annotations

from .job import JobResult, explain_dataset
from .progress import PARTIAL_SUFFIX
from .sources import RESULT_COLUMNS, VECTOR_COLUMN, read_vectors

__all__ = [
    "PARTIAL_SUFFIX",
    "RESULT_COLUMNS",
    "VECTOR_COLUMN",
    "JobResult",
    "explain_dataset",
    "read_vectors",
]
