"""What produced a set of results, so any table can be reproduced."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics import Baseline

__all__ = [
    "IDENTITY_FIELDS",
    "CheckpointRecord",
    "Provenance",
    "baseline_fields",
    "package_version",
]

#: What identifies a checkpoint for caches, job fingerprints and provenance alike.
IDENTITY_FIELDS = ("hub_id", "revision", "commit", "content_sha256", "sidecar_sha256")


@functools.cache
def package_version(name: str) -> str | None:
    """The installed version of ``name`` (read once per process: the imported code is fixed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint: hub id + revision + commit, or local path; content and sidecar hashes;
    and what its weights were quantized with at load (None: not quantized)."""

    name: str
    path: str
    hub_id: str | None
    revision: str | None
    commit: str | None
    content_sha256: str
    sidecar_sha256: str
    quantization: str | None = None

    def identity(self) -> dict[str, str | None]:
        """The checkpoint's identity: hub id, revision, commit, content and sidecar hashes,
        and its quantization when it has one (so a quantized load never shares a cache entry
        or a job with a full-precision one, and full-precision keys stay what they were)."""
        ident = {k: getattr(self, k) for k in IDENTITY_FIELDS}
        if self.quantization is not None:
            ident["quantization"] = self.quantization
        return ident


@dataclass(frozen=True)
class Provenance:
    """Checkpoints, numerics, backend, sampling and versions behind a result set."""

    av: CheckpointRecord
    ar: CheckpointRecord | None
    dtype: str
    backend: str
    sampling: dict[str, Any]
    seed: int | None
    baseline: float | None
    baseline_source: str | None
    baseline_kind: str | None = None
    baseline_n: int | None = None
    versions: dict[str, str | None] = field(
        default_factory=lambda: {
            "nla_lens": package_version("nla-lens"),
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
        }
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def baseline_label(self) -> str | None:
        """The baseline behind ``fve_nrm`` in one line (None without one)."""
        if self.baseline is None:
            return None
        from .metrics import Baseline

        kind: Any = self.baseline_kind or "user"
        return Baseline(self.baseline, str(self.baseline_source), self.baseline_n, kind).label

    def identity(self) -> dict[str, Any]:
        """What fixes a result besides the vector and the sampling settings: both
        checkpoints' identities, dtype, backend and the fve baseline."""
        return {
            "av": self.av.identity(),
            "ar": None if self.ar is None else self.ar.identity(),
            "dtype": self.dtype,
            "backend": self.backend,
            "baseline": self.baseline,
        }

    def identity_hash(self) -> str:
        """A short SHA-256 of :meth:`identity` (a cache namespace)."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def baseline_fields(baseline: Baseline | None) -> dict[str, Any]:
    """The provenance fields of a baseline (all None without one)."""
    if baseline is None:
        return dict(baseline=None, baseline_source=None, baseline_kind=None, baseline_n=None)
    return dict(
        baseline=baseline.variance,
        baseline_source=baseline.source,
        baseline_kind=baseline.kind,
        baseline_n=baseline.n,
    )
