"""What the workflows hand out, as vectors ``NLA.explain`` can read.

``nla.explain`` takes a ``[d]`` vector or ``[n, d]`` batch (the core), and here
also: a ``[batch, pos, d]`` tensor (each vector labelled with its batch and
position), a TransformerLens ``ActivationCache`` (read at the pair's hook,
``blocks.K.hook_resid_post``), and a pandas ``Series`` of vectors or a
``DataFrame`` with an ``activation_vector`` column (labelled with its index).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.pair import NLAPair
from ..errors import VectorError

__all__ = ["VECTOR_COLUMN", "as_rows"]

#: The NLA datasets' name for the vector column (also the dataset jobs').
VECTOR_COLUMN = "activation_vector"


def _is_activation_cache(obj: Any) -> bool:
    return type(obj).__name__ == "ActivationCache" and hasattr(obj, "keys")


def _from_frame(obj: Any) -> tuple[Any, list[dict[str, Any]]]:
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
    labels = [{"row": idx} for idx in obj.index]
    return rows, labels


def as_rows(nla: NLAPair, vectors: Any) -> tuple[Any, list[dict[str, Any]] | None]:
    """``(vectors for the core, one label per row or None)``."""
    if _is_activation_cache(vectors):
        if nla.hook_name not in vectors:
            raise VectorError(
                f"the ActivationCache has no {nla.hook_name!r} (the pair reads layer {nla.layer}); "
                f"run with names_filter={nla.hook_name!r} or include it."
            )
        vectors = vectors[nla.hook_name]
    if isinstance(vectors, Tensor | np.ndarray) and vectors.ndim == 3:
        b, p, d = vectors.shape
        flat = vectors.reshape(b * p, d)
        labels = [{"batch": i, "position": j} for i in range(b) for j in range(p)]
        return (flat if isinstance(flat, Tensor) else torch.as_tensor(flat)), labels
    if type(vectors).__module__.startswith("pandas"):
        return _from_frame(vectors)
    return vectors, None
