"""What the workflows hand out, as vectors ``NLA.explain`` can read.

``nla.explain`` takes a ``[d]`` vector or ``[n, d]`` batch (the core), and here
also: a ``[batch, pos, d]`` tensor (each vector labelled with its batch and
position), a TransformerLens ``ActivationCache`` (read at the pair's hook,
``blocks.K.hook_resid_post``), a :class:`~nla_lens.subjects.Captured`, and a pandas
``Series`` of vectors or a ``DataFrame`` with an ``activation_vector`` column
(labelled with its index).

Padding: a batch of prompts of different lengths is padded, and its pad slots hold
vectors like any other. What says which slots are real is, in order: ``mask=`` (an
attention mask, or the tokenizer's encoding holding one), or the mask a capture
carries (``nla.capture`` returns a :class:`~nla_lens.subjects.CapturedResidual`).
Pad slots are dropped and ``position`` counts over each row's real tokens (0 = its
first), as everywhere in nla_lens. Without a mask, a batch whose rows start or end
with a run of identical vectors (what pad slots are) is refused; any other batch of
several rows is explained with a note that no mask was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool
from torch import Tensor

from ..core.pair import NLAPair
from ..core.vectors import readable
from ..errors import PaddingError, VectorError
from ..subjects import Captured, CapturedResidual, real_positions

__all__ = ["VECTOR_COLUMN", "Rows", "as_rows", "read_rows"]

#: The NLA datasets' name for the vector column (also the dataset jobs').
VECTOR_COLUMN = "activation_vector"

#: Consecutive slots closer than this (relative to their norm) are "identical": pad slots
#: of a padded batch are bit-equal in float32 and within rounding in bf16; distinct tokens
#: differ by tens of percent.
_SAME = 5e-3


@dataclass(frozen=True)
class Rows:
    """The vectors for the core, one label per row (or None), and what the input left
    unknown (notes every result shows)."""

    vectors: Any
    labels: list[dict[str, Any]] | None = None
    notes: tuple[str, ...] = ()


def _is_activation_cache(obj: Any) -> bool:
    return type(obj).__name__ == "ActivationCache" and hasattr(obj, "keys")


def _from_frame(obj: Any) -> Rows:
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        if VECTOR_COLUMN not in obj.columns:
            raise VectorError(
                f"the DataFrame has no {VECTOR_COLUMN!r} column (columns: {list(obj.columns)}); "
                f"pass the vector column itself (df['my_column']) or rename it to {VECTOR_COLUMN!r}."
            )
        obj = obj[VECTOR_COLUMN]
    if len(obj) == 0:
        raise VectorError("the vector column is empty.")
    try:
        rows = np.stack([np.asarray(v, dtype=np.float64) for v in obj.to_numpy()])
    except (TypeError, ValueError) as exc:
        raise VectorError(
            f"the column {obj.name!r} does not hold equal-length numeric vectors ({exc})."
        ) from exc
    return Rows(rows, [{"row": idx} for idx in obj.index])


_HOW = (
    "Pass the attention mask of the run they came from: nla.explain(x, mask=attention_mask) "
    "(or mask= the tokenizer's encoding, e.g. tok(texts, padding=True, return_tensors='pt')), "
    "or capture with nla.capture(model, texts), whose result carries it"
)


def _as_mask(mask: Any, shape: tuple[int, int]) -> Bool[Tensor, "batch pos"]:
    """``mask`` (a 0/1 or bool mask, an encoding with ``attention_mask``, a capture) as
    a ``[batch, pos]`` bool CPU tensor fitting ``shape``, or :class:`PaddingError`."""
    if isinstance(mask, CapturedResidual):
        mask = mask.mask
    elif isinstance(mask, Captured):
        mask = mask.attention_mask
    elif isinstance(mask, Mapping) or hasattr(mask, "attention_mask"):
        got = mask.get("attention_mask") if isinstance(mask, Mapping) else mask.attention_mask
        if got is None:
            raise PaddingError(
                "mask= was given an encoding without an 'attention_mask'; tokenize with "
                "return_attention_mask=True (and padding=True), or pass the mask itself."
            )
        mask = got
    if isinstance(mask, Tensor):
        if mask.device.type == "meta":
            raise PaddingError("mask= is a meta tensor (no values); pass the real attention mask.")
        m = mask.detach().cpu()
    else:
        try:
            m = torch.as_tensor(np.asarray(mask))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PaddingError(
                f"mask= must be a [batch, pos] mask of 0/1 (or bool), got {type(mask).__name__} ({exc})."
            ) from exc
    if m.dtype != torch.bool:
        if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            looks = (
                " They look like token ids: pass the attention mask, not the tokens."
                if (not m.is_floating_point() and bool((m > 1).any()))
                else ""
            )
            raise PaddingError(
                f"mask= must hold only 0 and 1 (1 = a real token, 0 = padding), got values "
                f"{sorted(set(m.flatten().tolist()))[:6]}.{looks}"
            )
        m = m != 0
    if m.ndim == 1 and shape[0] == 1:
        m = m.unsqueeze(0)
    if tuple(m.shape) != shape:
        hint = (
            " The vectors were read at chosen positions, so every one is a real token: no mask "
            "is needed (or pass one entry per vector)."
            if m.ndim == 2 and m.shape[0] == shape[0] and m.shape[1] > shape[1]
            else ""
        )
        raise PaddingError(
            f"mask= has shape {tuple(m.shape)} but the vectors are [batch, pos] = {shape}: the mask "
            f"needs one entry per vector slot.{hint}"
        )
    if not bool(m.any()):
        raise PaddingError("mask= marks no slot as real: there is nothing to explain.")
    return m


def _pad_runs(t: Tensor) -> list[str]:
    """Rows that start or end with a run of identical vectors, as pad slots do."""
    if t.shape[1] < 2:
        return []
    v = t.to(torch.float32)
    step = (v[:, 1:] - v[:, :-1]).norm(dim=-1)
    scale = torch.maximum(v[:, 1:].norm(dim=-1), v[:, :-1].norm(dim=-1)).clamp_min(1e-30)
    same = step <= _SAME * scale  # [batch, pos - 1]
    lead = same.long().cumprod(dim=1).sum(dim=1)
    trail = same.flip(1).long().cumprod(dim=1).sum(dim=1)
    p, found = t.shape[1], []
    for b in range(t.shape[0]):
        if lead[b] > 0:
            found.append(f"batch row {b} starts with {int(lead[b]) + 1} identical vectors "
                         f"(columns 0-{int(lead[b])})")  # fmt: skip
        elif trail[b] > 0:
            found.append(f"batch row {b} ends with {int(trail[b]) + 1} identical vectors "
                         f"(columns {p - 1 - int(trail[b])}-{p - 1})")  # fmt: skip
    return found


def read_rows(nla: NLAPair, vectors: Any, mask: Any = None) -> Rows:
    """What ``nla.explain`` reads from ``vectors`` (and ``mask``); see the module docstring."""
    if isinstance(vectors, Captured):
        vectors = CapturedResidual.of(vectors)
    if _is_activation_cache(vectors):
        if nla.hook_name not in vectors:
            raise VectorError(
                f"the ActivationCache has no {nla.hook_name!r} (the pair reads layer {nla.layer}); "
                f"run with names_filter={nla.hook_name!r} or include it."
            )
        vectors = vectors[nla.hook_name]
    if type(vectors).__module__.startswith("pandas"):
        if mask is not None:
            raise PaddingError("mask= goes with a [batch, pos, d] tensor, not a DataFrame column.")
        return _from_frame(vectors)
    if not isinstance(vectors, Tensor | np.ndarray):
        if mask is not None:
            raise PaddingError(
                f"mask= goes with a [batch, pos, d] tensor; got {type(vectors).__name__}."
            )
        return Rows(vectors)
    if isinstance(vectors, np.ndarray) and not np.issubdtype(vectors.dtype, np.floating):
        return Rows(vectors)  # the core names the dtype it wants
    t = readable(vectors, "vectors") if isinstance(vectors, Tensor) else torch.as_tensor(vectors)
    if not t.is_floating_point():
        return Rows(t)
    carried = vectors if isinstance(vectors, CapturedResidual) else None
    captured = carried is not None
    one_row = t.ndim == 2 and (captured or mask is not None)
    if t.ndim != 3 and not one_row:
        if mask is not None:
            raise PaddingError(
                f"mask= goes with a [batch, pos, d] (or one row's [pos, d]) input; the vectors "
                f"have shape {tuple(t.shape)}."
            )
        return Rows(t if isinstance(vectors, Tensor) else vectors)
    grid = t.unsqueeze(0) if one_row else t
    b, p, _ = grid.shape
    notes: tuple[str, ...] = ()
    if mask is not None:
        real = _as_mask(mask, (b, p))
        positions = real_positions(real)
    elif carried is not None:
        real, positions = carried.mask.reshape(b, p), carried.positions.reshape(b, p)
    else:
        found = _pad_runs(grid)
        if found:
            raise PaddingError(
                f"the {list(t.shape)} input looks padded: {'; '.join(found[:4])}, as the pad "
                f"slots of a padded batch do, and explaining them would read padding as text. "
                f"{_HOW}; if every slot is a real token, pass mask=torch.ones({b}, {p})."
            )
        real = torch.ones(b, p, dtype=torch.bool)
        positions = real_positions(real)
        if b > 1:
            notes = (
                f"no mask was given for this [{b}, {p}, d] batch: if its prompts were padded, the "
                f"pad slots were explained as if they were text. {_HOW}.",
            )
    flat = grid.reshape(b * p, -1)[real.flatten().to(grid.device)]
    keep = real.nonzero().tolist()
    labels = [
        {"position": int(positions[i, j])} if one_row else
        {"batch": i, "position": int(positions[i, j])}
        for i, j in keep
    ]  # fmt: skip
    return Rows(flat, labels, notes)


def as_rows(nla: NLAPair, vectors: Any) -> tuple[Any, list[dict[str, Any]] | None]:
    """``(vectors for the core, one label per row or None)`` (see :func:`read_rows`)."""
    rows = read_rows(nla, vectors)
    return rows.vectors, rows.labels
