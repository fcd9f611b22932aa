"""Opening an NLA checkpoint: resolve it, read and check its sidecar and config.

Shared by the AV and AR loaders; nothing here loads weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import RoleMismatchError
from .loading import (
    CheckpointSource,
    check_hidden_size,
    read_config,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
)
from .quantization import QuantScheme, check_device, resolve_quantization
from .sidecar import NLAMeta, Role, load_sidecar

__all__ = ["OpenedCheckpoint", "open_checkpoint", "role_mismatch"]

_NAMES = {"av": "AV (verbalizer)", "ar": "AR (reconstructor)"}


def role_mismatch(meta: NLAMeta, wanted: Role, who: str) -> RoleMismatchError:
    """The error for an AV given where an AR is needed, or the reverse."""
    return RoleMismatchError(
        f"{meta.source} is an {_NAMES[meta.role]} checkpoint (role={meta.role!r}), but {who} needs an "
        f"{_NAMES[wanted]}. Did you swap the AV and AR? e.g. NLA.from_pretrained(av='...-av', ar='...-ar')."
    )


@dataclass(frozen=True)
class OpenedCheckpoint:
    source: CheckpointSource
    meta: NLAMeta
    config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    quantization: QuantScheme | None = None


def open_checkpoint(
    name_or_path: str | os.PathLike[str],
    role: Role,
    who: str,
    *,
    device: str | torch.device | None,
    dtype: torch.dtype | str | None,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    strict_sidecar: bool,
    quantization: str | None = None,
) -> OpenedCheckpoint:
    """Resolve ``name_or_path``, check its sidecar's role and width, and pick device, dtype
    and quantization (a missing backend or a device it cannot run on is refused first)."""
    dev = resolve_device(device)  # before any download or load
    dt = resolve_dtype(dtype, dev)
    scheme = resolve_quantization(quantization)
    if scheme is not None:
        check_device(scheme, dev)
    source = resolve_checkpoint(name_or_path, revision=revision, token=token, cache_dir=cache_dir)
    meta = load_sidecar(source.path, strict=strict_sidecar)
    if meta.role != role:
        raise role_mismatch(meta, role, who)
    config = read_config(source.path)
    check_hidden_size(source.path, config, meta.d_model)
    return OpenedCheckpoint(source, meta, config, dev, dt, scheme)
