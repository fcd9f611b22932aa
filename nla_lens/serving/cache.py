"""An opt-in, on-disk cache of explanations (the shared SQLite store).

Keyed by (checkpoint identity, the vector's float32 bytes, the decode-changing
sampling settings, the sample index), so a repeated ``explain`` of the same
vectors with the same pair and settings skips the AV and AR.

>>> cache = ExplanationCache("~/.cache/nla_lens/explanations.sqlite")  # doctest: +SKIP
>>> exps = nla.explain(vectors, cache=cache)  # doctest: +SKIP

Greedy decodes (``temperature == 0``) do not depend on the seed, so the seed
is left out of their keys. A cached *sampled* explanation is a valid sample for
its key, but the in-process backend seeds once per batch, so it need not equal
what an uncached call in a different batch would draw.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..core.vectors import as_vector_batch
from ..errors import StoreError
from .store import SQLiteStore

__all__ = ["CacheSplit", "ExplanationCache", "cache_key", "checkpoint_identity"]

_FIELDS = ("text", "raw", "truncated", "mse_nrm", "cos", "fve_nrm")
_SCHEMA = "CREATE TABLE IF NOT EXISTS explanations (key TEXT PRIMARY KEY, value TEXT NOT NULL);"


def checkpoint_identity(nla: NLAPair) -> str:
    """What fixes an explanation besides the vector and sampling (see
    :meth:`Provenance.identity`), as a short hash."""
    return nla.provenance().identity_hash()


def _as_sampling(sampling: Sampling | Mapping[str, Any]) -> tuple[Sampling, bool]:
    if isinstance(sampling, Sampling):
        return sampling, True
    params = dict(sampling)
    score = bool(params.pop("score", True))
    return Sampling.of(params), score


def cache_key(
    identity: str,
    vector: Float[Tensor, " d_model"] | np.ndarray,
    sampling: Sampling | Mapping[str, Any],
    sample: int = 0,
    *,
    score: bool | None = None,
) -> str:
    """The key of one (vector, sample): SHA-256 over identity, the decode-changing settings
    (:meth:`Sampling.key`), whether it is scored, the sample index and the fp32 bytes."""
    s, scored = _as_sampling(sampling)
    v = (
        vector.detach().to("cpu", torch.float32).numpy()
        if isinstance(vector, Tensor)
        else np.asarray(vector, np.float32)
    )
    h = hashlib.sha256(identity.encode())
    fields = {**s.key(), "score": scored if score is None else score, "sample": int(sample)}
    h.update(json.dumps(fields, sort_keys=True).encode())
    h.update(np.ascontiguousarray(v, dtype="<f4").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheSplit:
    """Rows of a batch whose every sample is cached (``hits``: row -> one record per
    sample) and rows to compute (``misses``, in order); ``keys[row][sample]``."""

    keys: list[list[str]]
    hits: dict[int, list[dict[str, Any]]]
    misses: list[int]


class ExplanationCache:
    """A map from :func:`cache_key` to an explanation record (text, raw, truncated,
    mse_nrm, cos, fve_nrm). Safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path).expanduser()
        if not path.is_dir():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the cache folder {path.parent}: {exc}") from exc
        self._store = SQLiteStore(path, _SCHEMA, what="explanation cache")
        self.path = self._store.path

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The cached records of those keys that are present."""
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            part = list(keys[i : i + 500])
            marks = ",".join("?" * len(part))
            rows = self._store.query(
                f"SELECT key, value FROM explanations WHERE key IN ({marks})", part
            )
            for k, v in rows:
                try:
                    found[k] = json.loads(v)
                except json.JSONDecodeError:
                    continue  # a damaged record is a miss: recomputed and overwritten
        return found

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any] | Explanation]]) -> None:
        """Store records (or :class:`Explanation` objects) in one transaction."""
        rows = [(k, json.dumps(_as_record(v))) for k, v in items]
        self._store.write_many("INSERT OR REPLACE INTO explanations VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return int(self._store.query("SELECT COUNT(*) FROM explanations")[0][0])

    def clear(self) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM explanations")

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"ExplanationCache({str(self.path)!r}, {len(self)} records)"

    # ---- helpers for NLA.explain ----------------------------------------------------------
    def split(
        self,
        identity: str,
        vectors: Float[Tensor, "n d_model"],
        sampling: Sampling | Mapping[str, Any],
        samples: int | None = None,
        *,
        score: bool | None = None,
    ) -> CacheSplit:
        """Which rows of ``vectors`` are fully cached (all samples) and which must be computed."""
        s, _ = _as_sampling(sampling)
        k = samples if samples is not None else s.samples
        keys = [
            [cache_key(identity, v, sampling, i, score=score) for i in range(k)] for v in vectors
        ]
        found = self.get_many([key for row in keys for key in row])
        hits: dict[int, list[dict[str, Any]]] = {}
        misses: list[int] = []
        for i, row in enumerate(keys):
            if all(key in found for key in row):
                hits[i] = [found[key] for key in row]
            else:
                misses.append(i)
        return CacheSplit(keys, hits, misses)

    def explain(
        self,
        nla: NLAPair,
        vectors: Any,
        *,
        explain: Callable[..., list[Explanation]] | None = None,
        score: bool = True,
        progress: bool | None = None,
        **settings: Any,
    ) -> list[Explanation]:
        """``nla.explain(vectors, **settings)`` through the cache; ``explain`` replaces the
        function that computes the missing rows (it gets ``(rows, sampling=..., score=...)``)."""
        v = as_vector_batch(vectors, nla.d_model)
        s = Sampling.of(None, **settings)
        return self.explain_rows(nla, v, s, score=score, progress=progress, compute=explain)

    def explain_rows(
        self,
        nla: NLAPair,
        v: Float[Tensor, "n d_model"],
        sampling: Sampling,
        *,
        score: bool = True,
        progress: bool | None = None,
        compute: Callable[..., list[Explanation]] | None = None,
    ) -> list[Explanation]:
        """Compute the missing rows only (in one call), store them, and return every row's
        explanations in order (vector-major), with the call's provenance."""
        scored = score and nla.ar is not None
        split = self.split(checkpoint_identity(nla), v, sampling, score=scored)
        by_row: dict[int, list[Explanation]] = {}
        if split.misses:
            if compute is None:
                fresh = nla.explain_rows(v[split.misses], sampling, score=score, progress=progress)
            else:
                fresh = compute(v[split.misses], sampling=sampling, score=score)
            for e in fresh:
                by_row.setdefault(split.misses[e.index], []).append(e)
            self.put_many((split.keys[row][e.sample], e) for row, es in by_row.items() for e in es)
        prov = nla.provenance(sampling)
        out: list[Explanation] = []
        for i in range(v.shape[0]):
            if i in split.hits:
                out += [_from_record(r, i, k, prov) for k, r in enumerate(split.hits[i])]
            else:
                out += [replace(e, index=i, provenance=prov) for e in by_row[i]]
        return out


def _as_record(v: Mapping[str, Any] | Explanation) -> dict[str, Any]:
    if isinstance(v, Explanation):
        return {f: getattr(v, f) for f in _FIELDS}
    return {f: v.get(f) for f in _FIELDS}


def _from_record(r: Mapping[str, Any], index: int, sample: int, prov: Any) -> Explanation:
    return Explanation(
        text=r["text"], raw=r["raw"], truncated=bool(r["truncated"]), index=index, sample=sample,
        mse_nrm=r.get("mse_nrm"), cos=r.get("cos"), fve_nrm=r.get("fve_nrm"), provenance=prov,
    )  # fmt: skip
