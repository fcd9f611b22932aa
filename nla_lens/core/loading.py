"""Finding checkpoints: a local directory or a Hugging Face hub id.

Hub downloads go through ``huggingface_hub.snapshot_download`` (revision,
``HF_TOKEN`` or an explicit token, the local cache, offline mode via
``HF_HUB_OFFLINE=1`` / ``local_files_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointNotFoundError

__all__ = ["CheckpointSource", "default_device", "default_dtype", "resolve_checkpoint"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PATTERNS = ["*.json", "*.yaml", "*.safetensors", "*.model", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint came from: its local path, and hub id + revision + commit if downloaded."""

    path: Path
    hub_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    @property
    def name(self) -> str:
        return self.hub_id or str(self.path)

    def content_hash(self) -> str:
        """SHA-256 over the checkpoint's files (small files whole; large ones by size,
        safetensors header and sampled blocks, so multi-GB shards hash in milliseconds)."""
        h = hashlib.sha256()
        for f in sorted(p for p in self.path.iterdir() if p.is_file()):
            h.update(f.name.encode())
            size = f.stat().st_size
            h.update(str(size).encode())
            with f.open("rb") as fh:
                if size <= 64 * 2**20:
                    h.update(fh.read())
                    continue
                for off in (0, size // 2, max(size - 2**20, 0)):
                    fh.seek(off)
                    h.update(fh.read(2**20))
        return h.hexdigest()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> CheckpointSource:
    """A local checkpoint directory, or a hub id downloaded (or found in the cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return CheckpointSource(path=path.resolve())
    name = str(name_or_path)
    if path.exists():
        raise CheckpointNotFoundError(
            f"{name!r} is a file; pass the checkpoint directory that holds it."
        )
    if not _HUB_ID.match(name):
        raise CheckpointNotFoundError(
            f"checkpoint {name!r} not found: no such directory, and it is not a Hugging Face id "
            "(owner/name, e.g. kitft/nla-gemma3-12b-L32-av). For the offline toy pair use "
            "nla_lens.toy.checkpoints()."
        )
    return _download(
        name, revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only
    )


def _download(
    repo_id: str,
    *,
    revision: str | None,
    token: str | bool | None,
    cache_dir: Any,
    local_files_only: bool | None,
) -> CheckpointSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if token is None:
        token = os.environ.get("HF_TOKEN") or None
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    try:
        local = snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=_PATTERNS,
        )
    except GatedRepoError as exc:
        raise CheckpointNotFoundError(
            f"{repo_id} is gated: accept its licence on huggingface.co (Gemma checkpoints are under "
            "the Gemma Terms of Use), then set HF_TOKEN or pass token=... ."
        ) from exc
    except RevisionNotFoundError as exc:
        raise CheckpointNotFoundError(f"{repo_id}: revision {revision!r} not found.") from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"{repo_id}: no such repository on the Hugging Face hub (or it is private and no token "
            "was given). Check the id; released NLA pairs are listed in nla_lens.RELEASED_PAIRS."
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"{repo_id}{'@' + revision if revision else ''} is not in the local cache and downloading "
            "is off (offline mode or no network). Download it once with network access, or pass a "
            "local directory."
        ) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointNotFoundError(f"{repo_id}: download failed ({exc}).") from exc
    commit = Path(local).name if Path(local).parent.name == "snapshots" else None
    return CheckpointSource(path=Path(local), hub_id=repo_id, revision=revision, commit=commit)


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict (for cheap checks before loading weights)."""
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointNotFoundError(
            f"{path}: no config.json; not a Hugging Face checkpoint directory."
        )
    data: dict[str, Any] = json.loads(cfg.read_text())
    return data


def check_hidden_size(path: Path, config: dict[str, Any], d_model: int) -> None:
    """The sidecar's d_model must be the checkpoint's hidden size."""
    from ..errors import SidecarError

    hidden = config.get("hidden_size", config.get("text_config", {}).get("hidden_size"))
    if hidden is not None and int(hidden) != d_model:
        raise SidecarError(
            f"{path}: nla_meta.yaml says d_model={d_model} but config.json has hidden_size={hidden}. "
            "The sidecar does not belong to these weights."
        )
