"""Checks that a subject model is the one an NLA pair was trained on, run before any generation.

- ``d_model`` must equal the pair's: a mismatch is a hard error.
- ``layer`` must be a block of the subject: a hard error otherwise.
- the subject's name (``config._name_or_path``) should be the pair's base model.
  Names are compared case-insensitively on the repo basename (so a mirror such
  as ``someone/gemma-3-12b-it`` passes for ``google/gemma-3-12b-it``), but
  otherwise exactly: ``gemma-3-12b`` and ``gemma-3-12b-it`` are different
  models. A hub id (also one read from a hub-cache snapshot path) with another
  basename raises; a name that cannot be checked (empty, or a local directory
  with another name) only warns.
- a TransformerBridge must hold the raw model's residuals (see
  :func:`nla_lens.capture.tlens.check_bridge`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.arch import decoder_layers, text_config
from ..core.quantization import quantization_of
from ..errors import SubjectMismatchError
from .bridge import check_bridge
from .frameworks import Framework, detect_framework, hf_model_of

__all__ = ["SubjectInfo", "check_subject", "subject_info"]

_HUB_CACHE_DIR = re.compile(r"models--([^/\\]+?)--([^/\\]+)")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class SubjectInfo:
    """What nla_lens knows about a subject model."""

    framework: Framework
    d_model: int
    n_layers: int
    name_or_path: str
    #: What the subject's weights are quantized with (``"int8"``, ``"4bit"``, ...), or None.
    quantization: str | None = None


#: A config.json key by which a local checkpoint declares which hub model it is a copy of
#: (nla_lens's toy subject sets it; so can a user's local copy of a base model).
MODEL_ID_KEY = "nla_lens_model_id"


def _declared_name(config: Any) -> str:
    return str(getattr(config, MODEL_ID_KEY, "") or getattr(config, "_name_or_path", "") or "")


def subject_info(model: Any) -> SubjectInfo:
    """d_model, number of decoder blocks and name of a HF model, TransformerBridge or nnsight model."""
    framework = detect_framework(model)
    if framework == "transformer_lens":
        cfg = model.cfg
        hf = getattr(model, "original_model", None)
        name = _declared_name(getattr(hf, "config", None)) or str(
            getattr(cfg, "model_name", "") or ""
        )
        quant = quantization_of(hf)
        return SubjectInfo(framework, int(cfg.d_model), int(cfg.n_layers), str(name), quant)
    hf = hf_model_of(model)
    config = text_config(hf.config)
    name = _declared_name(hf.config) or getattr(hf, "name_or_path", "") or ""
    n_layers = len(decoder_layers(hf))
    return SubjectInfo(framework, int(config.hidden_size), n_layers, str(name), quantization_of(hf))


def _hub_id(name: str) -> str | None:
    """The hub id a model name stands for, or None when it is a local path / unknown."""
    name = name.strip()
    cached = _HUB_CACHE_DIR.search(name)  # .../hub/models--org--name/snapshots/<sha>
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    if not name or name.startswith((".", "/", "~")) or "\\" in name or Path(name).exists():
        return None
    return name if _HUB_ID.match(name) else None


def _basename(name: str) -> str:
    return name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].lower()


_WARNED: set[tuple[str, str]] = set()


def _check_name(subject: str, base_model: str) -> None:
    subject_hub = _hub_id(subject)
    if subject.strip() and _basename(subject_hub or subject) == _basename(base_model):
        return
    if subject_hub is not None:
        raise SubjectMismatchError(
            f"the subject model is {subject_hub!r} but this NLA was trained on {base_model!r}; "
            "its explanations would describe another model's activations. Load "
            f"{base_model!r}, or pass base_model=None to skip this check if the subject is a "
            f"fine-tune of {base_model!r} you knowingly want to read."
        )
    if (subject, base_model) in _WARNED:  # say it once per subject and pair, not per call
        return
    _WARNED.add((subject, base_model))
    if not subject.strip():
        warnings.warn(
            f"cannot verify that the subject model is {base_model!r}: it has no name_or_path "
            "(built from a config?). Make sure it is the NLA's base model.",
            stacklevel=3,
        )
    else:
        warnings.warn(
            f"the subject model was loaded from {subject!r}, whose name does not match the NLA's "
            f"base model {base_model!r}. If it is a local copy of {base_model!r} this is fine; "
            "otherwise the explanations describe another model's activations.",
            stacklevel=3,
        )


def check_subject(model: Any, *, d_model: int, layer: int, base_model: str | None) -> SubjectInfo:
    """Check that ``model`` can be read at ``layer`` by an NLA pair of width ``d_model``.

    Args:
        model: a Hugging Face model, a TransformerBridge, or an nnsight model.
        d_model: the pair's ``d_model`` (from its sidecar).
        layer: the pair's extraction layer K.
        base_model: the pair's base model hub id (e.g. ``google/gemma-3-12b-it``);
            None skips the name check.

    Returns:
        The subject's :class:`SubjectInfo`.

    Raises:
        SubjectMismatchError: d_model differs; ``layer`` is not a block of the
            subject; the subject is a known different hub id; a TransformerBridge
            whose weight processing changed the residuals.

    Warns:
        UserWarning: when the subject's name cannot confirm ``base_model``
            (no name, or a local directory with a different name).
    """
    info = subject_info(model)
    if info.framework == "transformer_lens":
        check_bridge(model)
    if info.d_model != d_model:
        raise SubjectMismatchError(
            f"the subject's d_model is {info.d_model} but the NLA pair expects {d_model}: this is "
            f"not the NLA's base model{f' ({base_model})' if base_model else ''}. Load the base "
            "model the pair was trained on."
        )
    if not 0 <= layer < info.n_layers:
        raise SubjectMismatchError(
            f"the NLA reads layer {layer}, but the subject has {info.n_layers} decoder blocks "
            f"(valid 0..{info.n_layers - 1}). Is it a truncated or different model? Load the "
            "full base model."
        )
    if base_model:
        _check_name(info.name_or_path, base_model)
    return info
