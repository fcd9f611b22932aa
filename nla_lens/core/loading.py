"""Finding checkpoints: a local directory or a Hugging Face hub id.

Hub downloads go through ``huggingface_hub.snapshot_download`` (revision,
``HF_TOKEN`` or an explicit token, the local cache, offline mode via
``HF_HUB_OFFLINE=1`` / ``local_files_only=True``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, CheckpointNotFoundError, DeviceError
from .quantization import (
    QuantScheme,
    check_quantized,
    finish_quantization,
    keep_compute_dtype,
    quantization_config,
)

__all__ = [
    "CheckpointSource",
    "default_device",
    "default_dtype",
    "load_tokenizer",
    "resolve_checkpoint",
    "shared_tokenizer",
    "tokenizer_hash",
    "tokenizer_kind",
]

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
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise CheckpointError(
            f"{cfg}: not readable JSON ({exc}). The file is corrupt or was cut off: re-download "
            "the checkpoint (or restore config.json from the hub)."
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{cfg}: expected a JSON object of model settings, got {type(data).__name__}. "
            "Re-download the checkpoint."
        )
    return data


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device that exists here (None = CUDA when available, else CPU)."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DeviceError(
            f"device={device!r} is not a device name ({exc}); use e.g. 'cpu', 'cuda' or 'cuda:0'."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device={device!r}, but CUDA is not available on this machine (no GPU, or a "
                "CPU-only torch build). Use device='cpu', or leave device unset to pick one."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})."
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device={device!r}, but MPS is not available; use device='cpu'.")
    elif dev.type not in ("cpu", "meta"):
        available = getattr(getattr(torch, dev.type, None), "is_available", None)
        if not callable(available) or not available():
            raise DeviceError(f"device={device!r} is not available here; use device='cpu'.")
    return dev


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a floating torch.dtype (None = bfloat16 on CUDA, else float32);
    names such as ``"bfloat16"`` are accepted."""
    if dtype is None:
        return default_dtype(device)
    resolved = (
        getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    )
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise DeviceError(
            f"dtype={dtype!r} is not a floating-point torch dtype; the models run in "
            "torch.float32, torch.bfloat16 or torch.float16."
        )
    return resolved


#: The files a Hugging Face tokenizer is parsed from; two directories whose files hash the
#: same get one tokenizer object (a 33 MB Gemma tokenizer.json takes seconds to parse).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
_TOKENIZERS: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()


def tokenizer_hash(path: Path) -> str:
    """SHA-256 over the tokenizer files of a checkpoint directory (names and contents)."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = path / name
        if f.is_file():
            h.update(name.encode() + b"\0")
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            h.update(b"\0")
    return h.hexdigest()


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer, or a CheckpointError naming the files.

    Parsed once per content: the AV, the AR and a subject of the same base model ship
    identical tokenizer files, and while one of them holds the tokenizer the others get
    the same object (compared by :func:`tokenizer_hash` and :func:`tokenizer_kind`, since
    transformers may build another class from the same files for another model type).
    nla_lens never mutates a tokenizer; one you change yourself is changed for every holder.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    files = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if not any((path / name).is_file() for name in files):
        raise CheckpointError(
            f"{path}: no tokenizer files (none of {', '.join(files)}); without the checkpoint's "
            "own tokenizer the prompt cannot be built. Re-download the full checkpoint."
        )
    key = (tokenizer_hash(path), tokenizer_kind(path))
    shared = _TOKENIZERS.get(key)
    if shared is not None:
        return shared
    try:
        if _declares_generic_fast(path):
            # transformers 5 may swap in the class of config.json's model_type (Qwen2Tokenizer
            # for a qwen2 config), rebuilt without the tokenizer.json the checkpoint declares.
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(str(path))
        else:
            tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises OSError, ValueError, JSON and Rust errors
        raise CheckpointError(
            f"{path}: cannot load the tokenizer ({type(exc).__name__}: {exc}). The tokenizer files "
            "(tokenizer.json, tokenizer_config.json, tokenizer.model) are missing or corrupt: "
            "re-download the checkpoint."
        ) from exc
    with contextlib.suppress(TypeError):  # a tokenizer class that refuses weak references
        _TOKENIZERS[key] = tok
    return tok


def tokenizer_kind(path: Path) -> str:
    """The tokenizer class the checkpoint's files load as, as far as it can be told before
    loading: the generic fast class where tokenizer_config.json names it (see
    :func:`load_tokenizer`), else the class transformers maps config.json's model type to
    (``gemma3`` and ``gemma3_text`` both map to GemmaTokenizer, ``qwen2`` to
    Qwen2Tokenizer), else the class tokenizer_config.json names, else ``"auto"``."""
    if _declares_generic_fast(path):
        return "PreTrainedTokenizerFast"
    mapped = _mapped_class(_read_json(path / "config.json").get("model_type"))
    if mapped:
        return mapped
    declared = _read_json(path / "tokenizer_config.json").get("tokenizer_class")
    return declared if isinstance(declared, str) and declared else "auto"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or broken: the load that follows reports it
    return data if isinstance(data, dict) else {}


def _mapped_class(model_type: Any) -> str | None:
    if not isinstance(model_type, str):
        return None
    try:
        from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES
    except ImportError:  # another transformers layout: the model type stands for its class
        return f"model_type:{model_type}"
    names = TOKENIZER_MAPPING_NAMES.get(model_type)
    if isinstance(names, (tuple, list)):  # transformers 4: (slow, fast)
        names = "/".join(str(n) for n in names if n)
    return str(names) if names else None


def _declares_generic_fast(path: Path) -> bool:
    """Whether the checkpoint's tokenizer_config.json names the generic fast class and
    ships the tokenizer.json it reads."""
    config = path / "tokenizer_config.json"
    if not (path / "tokenizer.json").is_file() or not config.is_file():
        return False
    try:
        declared = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return False  # AutoTokenizer reports the broken file
    return declared == "PreTrainedTokenizerFast"


def shared_tokenizer(name_or_path: str | os.PathLike[str]) -> Any:
    """A subject's tokenizer: from a local directory through :func:`load_tokenizer` (so a
    subject of the pair's base model shares the AV's and AR's), else from the hub."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return load_tokenizer(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


def load_causal_lm(
    path: Path | str,
    dtype: torch.dtype,
    quantization: QuantScheme | None = None,
    device: torch.device | None = None,
    **hub: Any,
) -> Any:
    """``AutoModelForCausalLM.from_pretrained``, or a CheckpointError naming the files.

    Quantized (see :mod:`nla_lens.core.quantization`), the weights are quantized as they
    load, straight onto ``device`` (a quantized model cannot be moved afterwards), and
    what the model holds is checked to be what was asked. ``hub``: ``revision=``,
    ``token=`` for a hub id.
    """
    from transformers import AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if quantization is not None:
        extra = dict(
            quantization_config=quantization_config(quantization, dtype),
            device_map={"": str(device or default_device())},
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **extra, **hub)
    except Exception as exc:  # safetensors, OSError, ValueError, KeyError from transformers
        how = (
            ""
            if quantization is None
            else f" If it loads with quantization=None, {quantization.backend} cannot quantize "
            f"it as {quantization.name!r} here."
        )
        raise CheckpointError(
            f"{path}: cannot load the weights ({type(exc).__name__}: {exc}). A safetensors file "
            "is truncated or corrupt, or config.json does not match them: re-download the "
            f"checkpoint (check free disk space first).{how}"
        ) from exc
    if quantization is not None:
        finish_quantization(model, quantization)
        check_quantized(model, quantization, str(path))
        keep_compute_dtype(model, dtype)
    return model


def check_hidden_size(path: Path, config: dict[str, Any], d_model: int) -> None:
    """The sidecar's d_model must be the checkpoint's hidden size."""
    from ..errors import SidecarError

    text = config.get("text_config")
    hidden = config.get("hidden_size", text.get("hidden_size") if isinstance(text, dict) else None)
    if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int)):
        raise CheckpointError(
            f"{path / 'config.json'}: hidden_size = {hidden!r} is not a whole number; the file "
            "is corrupt or hand-edited. Re-download the checkpoint."
        )
    if hidden is not None and hidden != d_model:
        raise SidecarError(
            f"{path}: nla_meta.yaml says d_model={d_model} but config.json has hidden_size={hidden}. "
            "The sidecar does not belong to these weights."
        )
