"""Validation of user vectors: width, dtype, finiteness, non-zero norm."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import VectorError

__all__ = ["as_vector_batch"]


def _rows(mask: Tensor, limit: int = 8) -> str:
    idx = mask.nonzero().flatten().tolist()
    shown = ", ".join(map(str, idx[:limit]))
    return shown + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def as_vector_batch(
    vectors: Any, d_model: int, *, what: str = "vectors"
) -> Float[Tensor, "n d_model"]:
    """Turn one ``[d]`` vector or a ``[n, d]`` batch (tensor, array or nested list,
    any float dtype) into a float32 CPU batch, or raise :class:`VectorError`."""
    if isinstance(vectors, np.ndarray):
        if not np.issubdtype(vectors.dtype, np.floating):
            raise VectorError(
                f"{what} have dtype {vectors.dtype}; expected a float array (e.g. float32)."
            )
        t = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    elif isinstance(vectors, Tensor):
        if not vectors.is_floating_point():
            raise VectorError(
                f"{what} have dtype {vectors.dtype}; expected a floating-point tensor."
            )
        t = vectors.detach().to("cpu", torch.float32)
    elif isinstance(vectors, (list, tuple)):
        try:
            t = torch.as_tensor(vectors, dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise VectorError(
                f"{what}: could not convert the list to a float tensor ({exc})."
            ) from exc
    else:
        raise VectorError(
            f"{what} must be a torch.Tensor, numpy array or list of floats, got {type(vectors).__name__}."
        )
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise VectorError(f"{what} must be [d_model] or [n, d_model], got shape {tuple(t.shape)}.")
    if t.shape[0] == 0:
        raise VectorError(f"{what}: the batch is empty.")
    if t.shape[1] != d_model:
        raise VectorError(
            f"{what} have width {t.shape[1]} but this NLA reads d_model={d_model}. "
            "Capture the residual of the subject model the pair was trained on, at its layer "
            "(NLA.layer), or check you did not pass a [pos, d] slice transposed."
        )
    bad = ~torch.isfinite(t).all(dim=1)
    if bad.any():
        raise VectorError(
            f"{what} rows [{_rows(bad)}] contain NaN or infinite values. Check the capture "
            "(fp16 overflow? use bfloat16/float32) and drop or fix those rows."
        )
    zero = t.norm(dim=1) == 0
    if zero.any():
        raise VectorError(
            f"{what} rows [{_rows(zero)}] are all zero: a zero vector has no direction to explain. "
            "Drop those rows (padding positions?)."
        )
    return t
