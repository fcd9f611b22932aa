"""The layers and positions of an experiment's grid, checked before the subject runs.

TransformerLens users write them in several forms: ``layers=range(n)``,
``positions=-1``, ``torch.arange(4)``, numpy ints. All of those are read as lists of
ints; a bool, a float, a string (a hook name such as ``blocks.3.hook_resid_post``)
or an empty list is refused with a :class:`~nla_lens.errors.CaptureError` naming
the argument and the form it takes.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import CaptureError

__all__ = ["as_layers", "as_positions"]

_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(post|pre|mid)")


def _one(x: Any, what: str, example: str) -> int:
    if isinstance(x, bool | np.bool_) or (isinstance(x, Tensor) and x.dtype.is_floating_point):
        raise CaptureError(f"{what} must be ints ({example}), got {x!r}.")
    if isinstance(x, str):
        m = _HOOK.fullmatch(x)
        hint = ""
        block = (
            None if m is None or m.group(2) == "mid" else int(m.group(1)) - (m.group(2) == "pre")
        )
        if block is not None and block >= 0:
            hint = f" For {x!r} pass {block} (the block whose output it is)."
        raise CaptureError(f"{what} must be ints ({example}), got the string {x!r}.{hint}")
    try:
        return operator.index(x)  # int, numpy and 0-d torch integers; not floats
    except TypeError:
        raise CaptureError(
            f"{what} must be ints ({example}), got {x!r} ({type(x).__name__})."
        ) from None


def _as_list(value: Any, what: str, example: str) -> list[int]:
    if value is None:
        raise CaptureError(f"{what} is required ({example}).")
    if isinstance(value, Tensor | np.ndarray):
        if value.ndim > 1:
            raise CaptureError(
                f"{what} must be one int or a 1-D list of ints ({example}), got shape "
                f"{tuple(value.shape)}."
            )
        value = value.reshape(-1).tolist() if value.ndim == 1 else value.item()
    if isinstance(value, str) or not isinstance(value, Iterable):
        return [_one(value, what, example)]
    out = [_one(x, what, example) for x in value]
    if not out:
        raise CaptureError(f"{what} is empty: give at least one ({example}).")
    return out


def as_layers(layers: Any, n_layers: int) -> list[int]:
    """``layers`` as a list of block indices of a subject with ``n_layers`` blocks."""
    out = _as_list(layers, "layers", "block indices, e.g. layers=[0, 1, 2] or range(n)")
    bad = [layer for layer in out if not 0 <= layer < n_layers]
    if bad:
        raise CaptureError(
            f"layers {bad} are not blocks of the subject, which has {n_layers} "
            f"(valid 0..{n_layers - 1}; count from 0, no negative indices)."
        )
    return out


def as_positions(positions: Any) -> list[int]:
    """``positions`` as a list of ints (counted over real tokens; negative from the last)."""
    return _as_list(positions, "positions", "token positions, e.g. positions=[-2, -1]")
