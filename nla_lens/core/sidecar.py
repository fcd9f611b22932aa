"""``nla_meta.yaml``: the NLA checkpoint sidecar, parsed and verified.

The sidecar is the contract between a checkpoint and its inference code (see
docs/recipe.md, section 2). This module parses it into a frozen :class:`NLAMeta`,
accepting both the released (``av``/``ar``) and the older (``actor``/``critic``)
spellings and the ``sqrt_d_model`` scale sentinel, reports unknown keys, and
verifies it against the live tokenizer at load time.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import SidecarError, TokenizerDriftError

__all__ = ["SIDECAR_NAME", "NLAMeta", "load_sidecar", "parse_sidecar", "verify_tokenizer"]

SIDECAR_NAME = "nla_meta.yaml"
SQRT_D = "sqrt_d_model"
Role = Literal["av", "ar"]
_ROLES: dict[str, Role] = {"av": "av", "actor": "av", "ar": "ar", "critic": "ar"}

# Keys nla_lens knows, per section. Anything else is reported in `unknown_keys`.
_TOP_KEYS = {
    "kind",
    "schema_version",
    "role",
    "stage",
    "base_checkpoint",
    "base_model",
    "d_model",
    "extraction_layer_index",
    "extraction",
    "tokens",
    "prompt_templates",
    "ar",
    "critic",
    "trained_on",
    "parent_checkpoints",
    "created_at",
    "created_by",
    "training",
    "git_commit",
    "dataset_id",
    "row_count",
}
_SECTION_KEYS = {
    "extraction": {
        "injection_scale",
        "mse_scale",
        "base_model",
        "d_model",
        "layer_index",
        "norm",
        "corpus",
        "corpus_slice",
        "positions_per_doc",
    },
    "tokens": {
        "injection_char",
        "injection_token_id",
        "injection_left_neighbor_id",
        "injection_right_neighbor_id",
        "critic_suffix_ids",
        "pm_token",
        "pm_token_id",
    },
    "prompt_templates": {"av", "ar", "actor", "critic"},
    "ar": {"num_hidden_layers", "extraction_layer_index"},
    "critic": {"num_hidden_layers", "extraction_layer_index"},
}


@dataclass(frozen=True)
class NLAMeta:
    """The parsed sidecar of one NLA checkpoint (AV or AR)."""

    role: Role
    d_model: int
    layer: int | None
    injection_scale: float | None
    mse_scale: float | None
    injection_char: str
    injection_token_id: int
    left_neighbor_id: int
    right_neighbor_id: int
    av_template: str | None
    ar_template: str | None
    critic_suffix_ids: tuple[int, ...] | None
    ar_num_hidden_layers: int | None
    base_model: str | None
    kind: str = "nla_model"
    source: str = "<memory>"
    sha256: str = ""
    unknown_keys: tuple[str, ...] = ()

    @property
    def sqrt_d(self) -> float:
        return math.sqrt(self.d_model)


def _resolve_scale(raw: Any, d_model: int, field: str, source: str) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.lower() in {"raw", "none", "null"}):
        return None
    if isinstance(raw, str) and raw == SQRT_D:
        return math.sqrt(d_model)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SidecarError(
            f"{source}: extraction.{field} = {raw!r} is not a number or {SQRT_D!r}. "
            "Fix the sidecar (released pairs use e.g. 80000 for Gemma-3-12B)."
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise SidecarError(
            f"{source}: extraction.{field} = {raw!r} must be a positive finite number."
        )
    return value


def _int_field(value: Any, field: str, source: str, *, low: int = 0) -> int:
    """A whole-number sidecar field (YAML ``3`` or ``"3"``), or a SidecarError naming it."""
    if isinstance(value, bool):
        ok = None
    elif isinstance(value, int):
        ok = value
    elif isinstance(value, float) and value.is_integer():
        ok = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        ok = int(value.strip())
    else:
        ok = None
    if ok is None or ok < low:
        raise SidecarError(
            f"{source}: `{field}` = {value!r} ({type(value).__name__}) is not a whole number >= {low}. "
            "Fix the sidecar: compare with the released checkpoints' nla_meta.yaml."
        )
    return ok


def _str_field(value: Any, field: str, source: str) -> str:
    if not isinstance(value, str) or not value:
        raise SidecarError(
            f"{source}: `{field}` = {value!r} ({type(value).__name__}) must be a non-empty string. "
            "Fix the sidecar."
        )
    return value


def _section(meta: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    """A sub-mapping of the sidecar (absent or null = empty), or a SidecarError."""
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SidecarError(
            f"{source}: `{key}` must be a mapping of fields (key: value lines), got "
            f"{type(value).__name__} {value!r}. Fix the sidecar's indentation or structure."
        )
    return value


def _need(section: Mapping[str, Any], key: str, where: str, source: str) -> Any:
    if key not in section or section[key] is None:
        raise SidecarError(
            f"{source}: missing required field `{where}{key}`. Is this a complete NLA sidecar? "
            "Compare with the released checkpoints' nla_meta.yaml."
        )
    return section[key]


def _unknown(meta: Mapping[str, Any]) -> tuple[str, ...]:
    found = [k for k in meta if k not in _TOP_KEYS]
    for section, known in _SECTION_KEYS.items():
        sub = meta.get(section)
        if isinstance(sub, Mapping):
            found += [f"{section}.{k}" for k in sub if k not in known]
    return tuple(sorted(found))


def parse_sidecar(
    meta: Mapping[str, Any], *, source: str = "<memory>", sha256: str = "", strict: bool = False
) -> NLAMeta:
    """Parse a sidecar mapping. Unknown keys are warned about (``strict=True``: raised)."""
    if not isinstance(meta, Mapping):
        raise SidecarError(f"{source}: expected a YAML mapping, got {type(meta).__name__}.")
    kind = meta.get("kind", "nla_model")
    if kind not in ("nla_model", "nla_dataset"):
        raise SidecarError(f"{source}: unknown sidecar kind {kind!r}; expected 'nla_model'.")
    unknown = _unknown(meta)
    if unknown:
        msg = f"{source}: unknown sidecar keys {list(unknown)} (nla_lens ignores them)."
        if strict:
            raise SidecarError(msg + " Remove them or update nla_lens.")
        warnings.warn(msg, stacklevel=3)

    raw_role = meta.get("role")
    if not isinstance(raw_role, str) or raw_role not in _ROLES:
        raise SidecarError(
            f"{source}: role = {raw_role!r}; expected one of {sorted(_ROLES)} (av/ar, or older actor/critic)."
        )
    role = _ROLES[raw_role]
    extraction = _section(meta, "extraction", source)
    d_model = (
        _int_field(meta["d_model"], "d_model", source, low=1)
        if meta.get("d_model") is not None
        else _int_field(
            _need(extraction, "d_model", "extraction.", source), "extraction.d_model", source, low=1
        )
    )
    _need(meta, "tokens", "", source)
    tokens = _section(meta, "tokens", source)
    templates = _section(meta, "prompt_templates", source)
    ar_key = "ar" if meta.get("ar") is not None else "critic"
    ar_section = _section(meta, ar_key, source)
    ar_layers = ar_section.get("num_hidden_layers", ar_section.get("extraction_layer_index"))
    layer = meta.get("extraction_layer_index", extraction.get("layer_index", ar_layers))

    injection_scale = _resolve_scale(
        extraction.get("injection_scale"), d_model, "injection_scale", source
    )
    raw_mse = extraction.get("mse_scale", SQRT_D)
    mse_scale = _resolve_scale(raw_mse, d_model, "mse_scale", source)
    if role == "ar" and mse_scale is None:
        raise SidecarError(
            f"{source}: extraction.mse_scale = {raw_mse!r}, but the recipe scores an AR with both "
            "vectors L2-normalised to mse_scale before the MSE (NLA_CONTRACT.md: mse_nrm = "
            f"2 (1 - cos) at mse_scale = sqrt(d_model)); nla_lens will not guess a scale. Set "
            f"extraction.mse_scale to the norm this AR was trained with (usually {SQRT_D!r}, "
            f"i.e. {math.sqrt(d_model):.4g})."
        )
    for name in ("av", "actor", "ar", "critic"):
        if templates.get(name) is not None:
            _str_field(templates[name], f"prompt_templates.{name}", source)
    base_model = (
        meta.get("base_checkpoint") or meta.get("base_model") or extraction.get("base_model")
    )
    if base_model is not None:
        base_model = _str_field(base_model, "base_model", source)
    if role == "av" and injection_scale is None:
        raise SidecarError(
            f"{source}: AV sidecar has no extraction.injection_scale. The AV was trained with "
            "vectors at a fixed L2 norm; without it injected vectors are out of distribution. "
            "Ask the checkpoint provider for the value (Gemma-3-12B: 80000)."
        )
    suffix = tokens.get("critic_suffix_ids")
    if suffix is not None and (
        isinstance(suffix, (str, Mapping)) or not hasattr(suffix, "__iter__")
    ):
        raise SidecarError(
            f"{source}: `tokens.critic_suffix_ids` = {suffix!r} must be a list of token ids. Fix the sidecar."
        )
    field = "tokens."
    return NLAMeta(
        role=role,
        d_model=d_model,
        layer=None if layer is None else _int_field(layer, "extraction_layer_index", source),
        injection_scale=injection_scale,
        mse_scale=mse_scale,
        injection_char=_str_field(
            _need(tokens, "injection_char", field, source), field + "injection_char", source
        ),
        **{
            name: _int_field(_need(tokens, key, field, source), field + key, source)
            for name, key in (
                ("injection_token_id", "injection_token_id"),
                ("left_neighbor_id", "injection_left_neighbor_id"),
                ("right_neighbor_id", "injection_right_neighbor_id"),
            )
        },
        av_template=templates.get("av") or templates.get("actor"),
        ar_template=templates.get("ar") or templates.get("critic"),
        critic_suffix_ids=None
        if suffix is None
        else tuple(_int_field(i, field + "critic_suffix_ids", source) for i in suffix),
        ar_num_hidden_layers=None
        if ar_layers is None
        else _int_field(ar_layers, f"{ar_key}.num_hidden_layers", source),
        base_model=base_model,
        kind=str(kind),
        source=source,
        sha256=sha256,
        unknown_keys=unknown,
    )


def load_sidecar(checkpoint_dir: str | Path, *, strict: bool = False) -> NLAMeta:
    """Read ``{checkpoint_dir}/nla_meta.yaml``."""
    path = Path(checkpoint_dir) / SIDECAR_NAME
    if not path.is_file():
        raise SidecarError(
            f"no {SIDECAR_NAME} in {str(checkpoint_dir)!r}: not an NLA checkpoint. NLA checkpoints "
            "ship the sidecar beside config.json; pass an AV/AR directory or hub id "
            "(e.g. kitft/nla-gemma3-12b-L32-av)."
        )
    data = path.read_bytes()
    try:
        meta = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise SidecarError(f"{path}: not valid YAML ({exc}).") from exc
    return parse_sidecar(
        meta, source=str(path), sha256=hashlib.sha256(data).hexdigest(), strict=strict
    )


def _ids(encoded: Any) -> list[int]:
    """Token ids from whatever ``apply_chat_template``/``encode`` returned (transformers 4 or 5)."""
    if isinstance(encoded, Mapping) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):
        if len(encoded) != 1:
            raise SidecarError(f"expected one sequence, got {len(encoded)}")
        encoded = encoded[0]
    return [int(i) for i in encoded]


def av_prompt_ids(meta: NLAMeta, tokenizer: Any) -> list[int]:
    """The canonical AV prompt, tokenized in one step through the chat template."""
    if meta.av_template is None:
        raise SidecarError(f"{meta.source}: no prompt_templates.av; cannot build the AV prompt.")
    content = meta.av_template.format(injection_char=meta.injection_char)
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
    )
    return _ids(encoded)


def verify_tokenizer(meta: NLAMeta, tokenizer: Any) -> int | None:
    """Check the sidecar against the live tokenizer; return the AV injection position.

    Raises :class:`TokenizerDriftError` when the marker no longer encodes to
    exactly ``[injection_token_id]``, occurs other than once in the canonical
    AV prompt, or its neighbours differ from the sidecar's. For an AR, checks
    the prompt suffix ids when the sidecar has them.
    """
    where = meta.source
    live = _ids(tokenizer.encode(meta.injection_char, add_special_tokens=False))
    if live != [meta.injection_token_id]:
        raise TokenizerDriftError(
            f"{where}: tokenizer drift: marker {meta.injection_char!r} encodes to {live}, sidecar says "
            f"[{meta.injection_token_id}]. The tokenizer files do not belong to this checkpoint "
            "(or a transformers/tokenizers upgrade changed them); reload the checkpoint's own tokenizer."
        )
    if meta.role == "ar":
        _verify_ar_suffix(meta, tokenizer)
        return None
    ids = av_prompt_ids(meta, tokenizer)
    sites = [i for i, t in enumerate(ids) if t == meta.injection_token_id]
    if len(sites) != 1:
        raise TokenizerDriftError(
            f"{where}: the marker occurs {len(sites)} times in the canonical AV prompt (expected 1). "
            "The prompt template or chat template changed; use the checkpoint's own files."
        )
    pos = sites[0]
    left = ids[pos - 1] if pos > 0 else None
    right = ids[pos + 1] if pos + 1 < len(ids) else None
    if left != meta.left_neighbor_id or right != meta.right_neighbor_id:
        raise TokenizerDriftError(
            f"{where}: neighbour drift at the injection site: tokenizer gives (left={left}, "
            f"right={right}), sidecar says (left={meta.left_neighbor_id}, right={meta.right_neighbor_id}). "
            "Template or tokenizer drift: the AV would see the vector at the wrong place. "
            "Reload the checkpoint's own tokenizer and sidecar."
        )
    return pos


def _verify_ar_suffix(meta: NLAMeta, tokenizer: Any) -> None:
    if meta.ar_template is None:
        raise SidecarError(f"{meta.source}: AR sidecar has no prompt_templates.ar.")
    if not meta.critic_suffix_ids:
        return
    ids = _ids(
        tokenizer(meta.ar_template.format(explanation="probe text"), add_special_tokens=True)
    )
    n = len(meta.critic_suffix_ids)
    if tuple(ids[-n:]) != meta.critic_suffix_ids:
        raise TokenizerDriftError(
            f"{meta.source}: AR prompt suffix drift: tokenizer ends the AR prompt with {ids[-n:]}, "
            f"sidecar says {list(meta.critic_suffix_ids)}. Reload the checkpoint's own tokenizer."
        )
