"""Serving: the explanation cache and resumable dataset jobs, over one SQLite store."""

from __future__ import annotations

from .cache import ExplanationCache
from .jobs import JobResult, explain_dataset

__all__ = ["ExplanationCache", "JobResult", "explain_dataset"]
