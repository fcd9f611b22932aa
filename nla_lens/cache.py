"""An opt-in, on-disk cache of explanations (SQLite).

Keyed by (checkpoint identity, the vector's float32 bytes, the sampling
parameters including seed and sample index), so a repeated ``explain`` of the
same vectors with the same pair and settings skips the AV and AR.

>>> cache = ExplanationCache("~/.cache/nla_lens/explanations.sqlite")  # doctest: +SKIP
>>> exps = cache.explain(nla, vectors, temperature=0.0)  # doctest: +SKIP

Greedy decodes (``temperature == 0``) do not depend on the seed, so the seed
is left out of their keys. A cached *sampled* explanation is a valid sample for
its key, but the in-process backend seeds once per batch, so it need not equal
what an uncached call in a different batch would draw.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .explanation import Explanation
from .vectors import as_vector_batch

if TYPE_CHECKING:
    from .pair import NLA

__all__ = ["CacheSplit", "ExplanationCache", "cache_key", "checkpoint_identity"]

_FIELDS = ("text", "raw", "truncated", "mse_nrm", "cos", "fve_nrm")
#: Settings that change a result, with NLA.explain's defaults; anything else given is ignored for keys.
_SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 0.0,
    "max_new_tokens": 200,
    "top_p": 1.0,
    "seed": None,
    "score": True,
}


def checkpoint_identity(nla: NLA) -> str:
    """What fixes an explanation besides the vector and sampling: the AV/AR content and
    sidecar hashes, dtype, backend and the fve baseline (as a short hash)."""
    prov = nla.provenance().to_dict()
    ident = {
        "av": _ckpt(prov.get("av")), "ar": _ckpt(prov.get("ar")), "dtype": prov.get("dtype"),
        "backend": prov.get("backend"), "baseline": prov.get("baseline"),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _ckpt(rec: Mapping[str, Any] | None) -> Any:
    if rec is None:
        return None
    return [
        rec.get("content_sha256"),
        rec.get("sidecar_sha256"),
        rec.get("hub_id"),
        rec.get("commit"),
    ]


def _sampling(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: params.get(k, d) for k, d in _SAMPLING_DEFAULTS.items()}
    out["temperature"] = float(out["temperature"])
    if out["temperature"] == 0.0:
        out["seed"] = None  # greedy: the seed changes nothing
    return out


def cache_key(
    identity: str,
    vector: Float[Tensor, " d_model"] | np.ndarray,
    sampling: Mapping[str, Any],
    sample: int = 0,
) -> str:
    """The key of one (vector, sample): SHA-256 over identity, sampling settings, sample index and fp32 bytes."""
    v = (
        vector.detach().to("cpu", torch.float32).numpy()
        if isinstance(vector, Tensor)
        else np.asarray(vector, np.float32)
    )
    h = hashlib.sha256(identity.encode())
    h.update(json.dumps({**_sampling(sampling), "sample": int(sample)}, sort_keys=True).encode())
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
    """A SQLite map from :func:`cache_key` to an explanation record (text, raw,
    truncated, mse_nrm, cos, fve_nrm). Safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS explanations (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The cached records of those keys that are present."""
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, value FROM explanations WHERE key IN ({marks})", part
                )
                found.update((k, json.loads(v)) for k, v in rows.fetchall())
        return found

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any] | Explanation]]) -> None:
        """Store records (or :class:`Explanation` objects) in one transaction."""
        rows = [(k, json.dumps(_as_record(v))) for k, v in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO explanations VALUES (?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM explanations").fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM explanations")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- helpers for NLA.explain ----------------------------------------------------------
    def split(
        self,
        identity: str,
        vectors: Float[Tensor, "n d_model"],
        sampling: Mapping[str, Any],
        samples: int = 1,
    ) -> CacheSplit:
        """Which rows of ``vectors`` are fully cached (all ``samples``) and which must be computed."""
        keys = [[cache_key(identity, v, sampling, s) for s in range(samples)] for v in vectors]
        found = self.get_many([k for row in keys for k in row])
        hits: dict[int, list[dict[str, Any]]] = {}
        misses: list[int] = []
        for i, row in enumerate(keys):
            if all(k in found for k in row):
                hits[i] = [found[k] for k in row]
            else:
                misses.append(i)
        return CacheSplit(keys, hits, misses)

    def explain(
        self,
        nla: NLA,
        vectors: Any,
        *,
        samples: int = 1,
        explain: Callable[..., list[Explanation]] | None = None,
        **kwargs: Any,
    ) -> list[Explanation]:
        """``nla.explain(vectors, samples=..., **kwargs)`` through the cache: computes the
        missing rows only (in one call), stores them, and returns every row's
        explanations in order (vector-major), with the call's provenance."""
        v = as_vector_batch(vectors, nla.d_model)
        ident = checkpoint_identity(nla)
        key_params = {**kwargs, "score": bool(kwargs.get("score", True)) and nla.ar is not None}
        split = self.split(ident, v, key_params, samples)
        run = explain or nla.explain
        by_row: dict[int, list[Explanation]] = {}
        if split.misses:
            fresh = run(v[split.misses], samples=samples, **kwargs)
            for e in fresh:
                by_row.setdefault(split.misses[e.index], []).append(e)
            self.put_many((split.keys[row][e.sample], e) for row, es in by_row.items() for e in es)
        sp = _sampling(kwargs)
        prov = nla.provenance(
            seed=kwargs.get("seed"), temperature=sp["temperature"], max_new_tokens=sp["max_new_tokens"],
            top_p=sp["top_p"], samples=samples,
        )  # fmt: skip
        out: list[Explanation] = []
        for i in range(v.shape[0]):
            if i in split.hits:
                out += [_from_record(r, i, s, prov) for s, r in enumerate(split.hits[i])]
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
