"""What a dataset job returns, shared by the local and the Ray engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...core.metrics import BaselineFit

__all__ = ["JobResult"]

#: The version of the job-parameters fingerprint (a rerun of another version is refused).
_SCHEMA_VERSION = 2


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
    #: The baseline fit check on the input's first rows (see ``nla_lens.core.metrics.BaselineFit``).
    baseline_fit: BaselineFit | None = None
