"""The baseline fit check of a dataset job: do the input's vectors spread like the
baseline behind its ``fve_nrm`` column? Read from the first rows of the input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.metrics import Baseline, BaselineFit, check_fit
from ...core.vectors import as_vector_batch
from .sources import Source

__all__ = ["FIT_SAMPLE_ROWS", "dataset_fit", "fit_record"]

#: Rows of the input the check reads (enough for a stable Var(v_n); a few MB of floats).
FIT_SAMPLE_ROWS = 4096


def dataset_fit(
    files: Sequence[Path], d_model: int, baseline: Baseline | None, mse_scale: float | None
) -> BaselineFit | None:
    """The fit check on the first :data:`FIT_SAMPLE_ROWS` rows of ``files`` (None without
    a baseline or an AR, or with fewer than 32 rows)."""
    if baseline is None or mse_scale is None:
        return None
    parts: list[torch.Tensor] = []
    n = 0
    for f in files:
        for start, vectors in Source(f).chunks(1024):
            v = as_vector_batch(vectors, d_model, what=f"{f}: vectors", first_row=start)
            parts.append(v[: FIT_SAMPLE_ROWS - n])
            n += len(parts[-1])
            if n >= FIT_SAMPLE_ROWS:
                break
        if n >= FIT_SAMPLE_ROWS:
            break
    if not parts:
        return None
    return check_fit(torch.cat(parts), baseline, mse_scale=mse_scale)


def fit_record(fit: BaselineFit | None) -> dict[str, Any] | None:
    """The fit check as it goes into the output's metadata."""
    if fit is None:
        return None
    return {
        "fits": fit.fits, "ratio": fit.ratio, "spread": fit.spread, "n": fit.n,
        "message": fit.message,
    }  # fmt: skip
