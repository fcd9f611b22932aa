"""Which sequence positions to read, counted over each row's real tokens.

Padding makes "position 3" ambiguous in a batch, so user positions are always
relative to a row's real (unmasked) tokens and converted here to absolute
column indices into the padded batch:

- ``p >= 0`` is the p-th real token of the row (0 = its first real token,
  the BOS where there is one), whatever padding precedes it;
- ``p < 0`` counts back from the row's last real token (-1 = last real token);
- ``None`` means every column of the padded batch, pads included (use the
  attention mask to drop them).

With left padding, row ``b``'s real tokens start at column
``seq - attention_mask[b].sum()``; with right padding at column 0. Either way
``positions=-1`` picks each row's last real token. Rows must be one contiguous
run of real tokens (left and/or right padding, no holes).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import CaptureError

__all__ = ["Positions", "gather_positions", "relative_positions", "resolve_positions"]

#: What a user may pass as ``positions``.
Positions = int | Sequence[int] | Tensor | None


def _as_list(positions: int | Sequence[int] | Tensor) -> list[int]:
    if isinstance(positions, bool):
        raise CaptureError("positions must be an int or a sequence of ints, not a bool")
    if isinstance(positions, int) or type(positions).__module__ == "numpy":
        ndim = getattr(positions, "ndim", 0)
        if ndim == 1:
            return _as_list(positions.tolist())  # type: ignore[union-attr]
        try:
            if ndim:
                raise TypeError
            return [operator.index(positions)]  # type: ignore[arg-type]
        except TypeError:
            raise CaptureError(
                f"positions must be an int or a 1-D sequence of ints, got {positions!r}"
            ) from None
    if isinstance(positions, Tensor):
        if positions.is_floating_point() or positions.dtype == torch.bool or positions.ndim > 1:
            raise CaptureError(
                f"a positions tensor must be a 1-D integer tensor, got dtype {positions.dtype} "
                f"and shape {tuple(positions.shape)}"
            )
        return [int(p) for p in positions.reshape(-1).tolist()]
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence):
        raise CaptureError(
            f"positions must be None, an int or a sequence of ints, got {type(positions).__name__}"
        )
    out: list[int] = []
    for p in positions:
        try:
            if isinstance(p, bool) or (isinstance(p, Tensor) and p.is_floating_point()):
                raise TypeError
            out.append(operator.index(p))  # ints, numpy and 0-d torch integers
        except TypeError:
            raise CaptureError(f"positions must be ints, got {p!r} ({type(p).__name__})") from None
    if not out:
        raise CaptureError("positions is empty: pass None for all positions, or at least one index")
    return out


def resolve_positions(
    attention_mask: Int[Tensor, "batch seq"], positions: Positions
) -> Int[Tensor, "batch pos"]:
    """Absolute column indices ``[batch, pos]`` for ``positions`` (see the module docstring).

    Raises:
        CaptureError: a position outside a row's real tokens, a row whose real
            tokens are not contiguous, or a malformed ``positions``.
    """
    mask = attention_mask.bool()
    batch, seq = mask.shape
    cols = torch.arange(seq, device=mask.device)
    n_real = mask.sum(dim=1)
    if bool((n_real == 0).any()):
        raise CaptureError("a batch row has no real tokens (its attention_mask is all zero)")
    first = torch.where(mask, cols, seq).min(dim=1).values
    last = torch.where(mask, cols, -1).max(dim=1).values
    holes = (last - first + 1) != n_real
    if bool(holes.any()):
        row = int(holes.nonzero()[0, 0])
        raise CaptureError(
            f"batch row {row} has padding in the middle of its real tokens; nla_lens supports "
            "left or right padding only (one contiguous run of 1s in the attention mask)."
        )
    if positions is None:
        return cols.unsqueeze(0).expand(batch, seq).clone()
    wanted = torch.tensor(_as_list(positions), dtype=torch.long, device=mask.device)
    start, count = first.unsqueeze(1), n_real.unsqueeze(1)
    bad = (wanted.unsqueeze(0) >= count) | (wanted.unsqueeze(0) < -count)
    if bool(bad.any()):
        row, k = (int(x) for x in bad.nonzero()[0])
        n = int(n_real[row])
        raise CaptureError(
            f"position {int(wanted[k])} is out of range for batch row {row}, which has {n} real "
            f"tokens: valid positions are {-n}..{n - 1} (counted over real tokens, padding excluded)."
        )
    return torch.where(wanted >= 0, start + wanted, start + count + wanted)


def gather_positions(
    values: Float[Tensor, "batch seq d_model"], positions: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos d_model"]:
    """``values[b, positions[b, i]]`` for every row ``b`` and index ``i``."""
    rows = torch.arange(values.shape[0], device=values.device).unsqueeze(1)
    return values[rows, positions.to(values.device)]


def relative_positions(
    attention_mask: Int[Tensor, "batch seq"], absolute: Int[Tensor, "batch pos"]
) -> Int[Tensor, "batch pos"]:
    """Absolute columns back to indices over each row's real tokens (0 = its first real token)."""
    mask = attention_mask.bool()
    cols = torch.arange(mask.shape[1], device=mask.device)
    first = torch.where(mask, cols, mask.shape[1]).min(dim=1).values
    return absolute - first.unsqueeze(1)
