"""Validation of user vectors: width, dtype, finiteness, a direction that survives float32."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import VectorError

__all__ = ["as_vector_batch", "readable"]


def _rows(mask: Tensor, first: int = 0, limit: int = 8) -> str:
    idx = [first + i for i in mask.nonzero().flatten().tolist()]
    shown = ", ".join(map(str, idx[:limit]))
    return shown + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def readable(t: Tensor, what: str = "vectors") -> Tensor:
    """``t`` as a plain, dense CPU tensor of its dtype, or :class:`VectorError` when its
    values cannot be read here (the meta device holds shapes only; a device that fails)."""
    if t.device.type == "meta":
        raise VectorError(
            f"{what} are on the meta device: a meta tensor has a shape but no values to "
            "explain. Capture them from a model whose weights are loaded (not under "
            "init_empty_weights / device='meta'), or materialise them first."
        )
    if getattr(t, "is_nested", False):
        raise VectorError(
            f"{what} are a nested tensor; pass torch.cat(list(t.unbind())) (one row per vector)."
        )
    try:
        out = t.detach().to("cpu")
        return out.to_dense() if out.layout != torch.strided else out
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
        raise VectorError(
            f"{what} on device {t.device} (type {type(t).__name__}) cannot be read ({exc}). "
            "Move them to the CPU yourself (t.cpu()) or capture them again."
        ) from exc


#: Rows whose largest entry lies outside this range cannot be cast to float32 and
#: normed there without overflow or underflow: they are rescaled (in float64) first.
_SAFE_LOW, _SAFE_HIGH = 1e-15, 1e15


def as_vector_batch(
    vectors: Any,
    d_model: int,
    *,
    what: str = "vectors",
    keep_norm: bool = False,
    first_row: int = 0,
) -> Float[Tensor, "n d_model"]:
    """Turn one ``[d]`` vector or a ``[n, d]`` batch (tensor, array or nested list,
    any float dtype) into a float32 CPU batch, or raise :class:`VectorError`.

    The AV and the scores read only a vector's direction, so a row whose norm
    float32 cannot hold or compute (e.g. a float64 ``1e300`` vector, or a
    ``1e-30`` one) is divided by its largest entry in float64 first: its
    direction is kept exactly, its norm is not. With ``keep_norm=True`` (callers
    that use the magnitude, e.g. steering) such rows are refused instead.
    Errors name rows counting from ``first_row`` (a chunk's place in its file).
    """
    if isinstance(vectors, np.ndarray):
        if not np.issubdtype(vectors.dtype, np.floating):
            raise VectorError(
                f"{what} have dtype {vectors.dtype}; expected a float array (e.g. float32)."
            )
        t = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float64))
    elif isinstance(vectors, Tensor):
        if not vectors.is_floating_point():
            raise VectorError(
                f"{what} have dtype {vectors.dtype}; expected a floating-point tensor."
            )
        t = readable(vectors, what).to(torch.float64)
    elif isinstance(vectors, (list, tuple)):
        try:
            t = torch.as_tensor(vectors, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise VectorError(
                f"{what}: could not convert the list to a float tensor ({exc}). Pass a [d_model] "
                "list of numbers or an [n, d_model] list of equal-length lists."
            ) from exc
    else:
        name = type(vectors).__name__
        hint = (
            " It looks like an nnsight value read inside a trace: call .save() on it there and "
            "pass the saved tensor after the `with` block."
            if "Proxy" in name or "Envoy" in name
            else ""
        )
        raise VectorError(
            f"{what} must be a torch.Tensor, numpy array or list of floats, got {name}.{hint}"
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
            f"{what} rows [{_rows(bad, first_row)}] contain NaN or infinite values. Check the capture "
            "(fp16 overflow? use bfloat16/float32) and drop or fix those rows."
        )
    peak = t.abs().amax(dim=1)
    zero = peak == 0
    if zero.any():
        raise VectorError(
            f"{what} rows [{_rows(zero, first_row)}] are all zero: a zero vector has no direction to explain. "
            "Drop those rows (padding positions?)."
        )
    extreme = (peak < _SAFE_LOW) | (peak > _SAFE_HIGH)
    if extreme.any():
        if keep_norm:
            raise VectorError(
                f"{what} rows [{_rows(extreme, first_row)}] have entries as large as "
                f"{float(peak[extreme].max()):.3g} or as small as {float(peak[extreme].min()):.3g}: "
                "their norm does not fit float32, and this use needs it. Rescale them to the "
                "residual stream's usual norm (a few to ~1e5)."
            )
        t = torch.where(extreme[:, None], t / peak[:, None], t)
    return t.to(torch.float32)
