"""What produced a set of results, so any table can be reproduced."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

__all__ = ["CheckpointRecord", "Provenance", "package_version"]


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint: hub id + revision + commit, or local path; content and sidecar hashes."""

    name: str
    path: str
    hub_id: str | None
    revision: str | None
    commit: str | None
    content_sha256: str
    sidecar_sha256: str


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
    versions: dict[str, str | None] = field(
        default_factory=lambda: {
            "nla_lens": package_version("nla-lens"),
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
        }
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
