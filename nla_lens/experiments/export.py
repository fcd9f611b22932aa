"""Export explanations and their AR scores in Neuronpedia's explanation layout.

Neuronpedia keys an explanation on ``(modelId, layer, index)``: ``layer`` is the
*source* id (for an SAE, e.g. ``"20-gemmascope-res-16k"``) and ``index`` the
latent (or, for a transcript, the token position), both strings. Its bulk import
reads ``explanations/*.jsonl.gz`` under ``<modelId>/<sourceId>/``, one
``Explanation`` row per line; scores are separate ``ExplanationScore`` rows that
point at an explanation id. :func:`to_neuronpedia` builds both; ``write`` lays
them out as the import expects. Field by field: docs/neuronpedia.md;
:data:`NEURONPEDIA_EXPORT_SCHEMA` is the JSON Schema of :meth:`NeuronpediaExport.to_dict`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.explanation import Explanation
from ..errors import ExportError
from .features import FeatureExplanations
from .transcript import Transcript

__all__ = [
    "NEURONPEDIA_EXPORT_SCHEMA",
    "NeuronpediaExport",
    "to_neuronpedia",
    "validate_neuronpedia",
]

#: ExplanationType name the rows carry unless told otherwise.
DEFAULT_TYPE_NAME = "nla-av"
SCORE_TYPES = {"fve_nrm": "nla-ar-fve-nrm", "cos": "nla-ar-cos", "mse_nrm": "nla-ar-mse-nrm"}

_STR = {"type": "string", "minLength": 1}
_EXPLANATION_ROW = {
    "type": "object",
    "required": [
        "id",
        "modelId",
        "layer",
        "index",
        "description",
        "typeName",
        "explanationModelName",
        "scoreV1",
    ],
    "additionalProperties": False,
    "properties": {
        "id": _STR,
        "modelId": {"type": "string", "pattern": "^[a-zA-Z0-9_-]+$", "maxLength": 128},
        "layer": _STR,
        "index": {"type": "string", "pattern": "^[0-9]+$"},
        "description": {"type": "string"},
        "typeName": _STR,
        "explanationModelName": _STR,
        "authorId": _STR,
        "scoreV1": {"type": "number"},
        "scoreV2": {"type": ["number", "null"]},
        "notes": {"type": ["string", "null"]},
    },
}
_SCORE_ROW = {
    "type": "object",
    "required": [
        "explanationId",
        "value",
        "explanationScoreTypeName",
        "explanationScoreModelName",
        "jsonDetails",
    ],
    "additionalProperties": False,
    "properties": {
        "explanationId": _STR,
        "value": {"type": "number"},
        "explanationScoreTypeName": _STR,
        "explanationScoreModelName": _STR,
        "jsonDetails": {"type": "string"},
        "initiatedByUserId": _STR,
    },
}
#: JSON Schema (draft 2020-12) of :meth:`NeuronpediaExport.to_dict`.
NEURONPEDIA_EXPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "nla_lens Neuronpedia explanation export",
    "type": "object",
    "required": ["modelId", "layer", "explanations", "scores"],
    "additionalProperties": False,
    "properties": {
        "modelId": _EXPLANATION_ROW["properties"]["modelId"],  # type: ignore[index]
        "layer": _STR,
        "explanations": {"type": "array", "items": _EXPLANATION_ROW},
        "scores": {"type": "array", "items": _SCORE_ROW},
    },
}


def _id(model_id: str, layer: str, index: str, description: str, type_name: str) -> str:
    digest = hashlib.sha256("\x1f".join([model_id, layer, index, description, type_name]).encode())
    return "nla" + digest.hexdigest()[:22]


@dataclass(frozen=True)
class NeuronpediaExport:
    """Explanation rows and score rows in Neuronpedia's column names."""

    model_id: str
    layer: str
    explanations: tuple[dict[str, Any], ...]
    scores: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "modelId": self.model_id,
            "layer": self.layer,
            "explanations": [dict(r) for r in self.explanations],
            "scores": [dict(r) for r in self.scores],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``<dir>/<modelId>/<layer>/explanations/batch-0.jsonl.gz`` (the bulk-import
        layout, one Explanation row per line), ``explanation_scores.jsonl`` beside it, and
        the whole export as ``export.json``. Returns the source directory."""
        root = Path(directory) / self.model_id / self.layer
        (root / "explanations").mkdir(parents=True, exist_ok=True)
        lines = "\n".join(json.dumps(r) for r in self.explanations) + "\n"
        (root / "explanations" / "batch-0.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
        scores = "".join(json.dumps(r) + "\n" for r in self.scores)
        (root / "explanation_scores.jsonl").write_text(scores, encoding="utf-8")
        (root / "export.json").write_text(self.to_json(indent=1), encoding="utf-8")
        return root

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(list(self.explanations))

    def _repr_html_(self) -> str:
        return (
            f"<div><b>NeuronpediaExport</b> {self.model_id}/{self.layer}: "
            f"{len(self.explanations)} explanations, {len(self.scores)} scores</div>"
            + self.to_frame().to_html(index=False)
        )


def _checkpoint_name(record: Any) -> str | None:
    """A checkpoint's hub id, else its directory name."""
    if record is None:
        return None
    return record.hub_id or Path(record.name).name or None


def _items(result: Any) -> list[tuple[int, Explanation, dict[str, Any]]]:
    """``(index, explanation, extra notes)`` per exported row."""
    if isinstance(result, FeatureExplanations):
        return [(lid, e, {}) for lid, e in zip(result.latent_ids, result.explanations, strict=True)]
    if isinstance(result, Transcript):
        return [
            (
                en.position,
                en.explanation,
                {"token": en.token, "section": en.section, "flags": list(en.flags)},
            )
            for en in result.entries
        ]
    if isinstance(result, Sequence) and all(
        isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], Explanation) for x in result
    ):
        return [(int(i), e, {}) for i, e in result]
    raise ExportError(
        "to_neuronpedia exports a FeatureExplanations (per latent), a Transcript (per position) "
        f"or a list of (index, Explanation) pairs; got {type(result).__name__}."
    )


def to_neuronpedia(
    result: Any,
    *,
    model_id: str,
    layer: str | None = None,
    type_name: str = DEFAULT_TYPE_NAME,
    explanation_model_name: str | None = None,
    author_id: str | None = None,
) -> NeuronpediaExport:
    """Explanations with their AR scores as Neuronpedia ``Explanation`` / ``ExplanationScore`` rows.

    ``model_id`` is the Neuronpedia model id (e.g. ``"gemma-3-12b-it"``); ``layer`` the
    source id (for an SAE from SAELens, taken from its ``neuronpedia_id`` when not given;
    for a transcript, choose one such as ``"32-nla-transcript"``). ``explanationModelName``
    defaults to the AV checkpoint the explanations came from; scores name the AR.
    """
    if layer is None and isinstance(result, FeatureExplanations) and result.neuronpedia_id:
        np_model, _, np_layer = result.neuronpedia_id.partition("/")
        layer = np_layer or None
        if np_model and np_model != model_id:
            raise ExportError(
                f"the SAE belongs to Neuronpedia model {np_model!r} but model_id={model_id!r}; "
                "pass the SAE's model id (or layer= to override)."
            )
    if not layer:
        raise ExportError(
            "pass layer= (the Neuronpedia source id, e.g. '32-nla-transcript' or "
            "'20-gemmascope-res-16k')."
        )
    explanations: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, e, extra in _items(result):
        if index < 0:
            raise ExportError(f"Neuronpedia indices are non-negative, got {index}.")
        prov = e.provenance
        av = prov.av if prov is not None else None
        ar = prov.ar if prov is not None else None
        model_name = explanation_model_name or _checkpoint_name(av)
        if not model_name:
            raise ExportError(
                "these explanations carry no provenance; pass explanation_model_name=."
            )
        headline = e.fve_nrm if e.fve_nrm is not None else e.cos
        notes = {"truncated": e.truncated, "sample": e.sample, **extra}
        if prov is not None:
            notes.update(sampling=prov.sampling, seed=prov.seed, baseline=prov.baseline)
        row: dict[str, Any] = {
            "id": _id(model_id, layer, str(index), e.text, type_name),
            "modelId": model_id,
            "layer": layer,
            "index": str(index),
            "description": e.text,
            "typeName": type_name,
            "explanationModelName": model_name,
            "scoreV1": 0.0 if headline is None else float(headline),
            "scoreV2": None if e.cos is None else float(e.cos),
            "notes": json.dumps(notes, sort_keys=True, default=str),
        }
        if author_id is not None:
            row["authorId"] = author_id
        if row["id"] in seen:
            continue  # the same text for the same index: one row
        seen.add(row["id"])
        explanations.append(row)
        scorer = _checkpoint_name(ar)
        for metric, type_ in SCORE_TYPES.items():
            value = getattr(e, metric)
            if value is None or scorer is None:
                continue
            s: dict[str, Any] = {
                "explanationId": row["id"],
                "value": float(value),
                "explanationScoreTypeName": type_,
                "explanationScoreModelName": scorer,
                "jsonDetails": json.dumps({"metric": metric, "baseline": notes.get("baseline")}),
            }
            if author_id is not None:
                s["initiatedByUserId"] = author_id
            scores.append(s)
    export = NeuronpediaExport(model_id, layer, tuple(explanations), tuple(scores))
    validate_neuronpedia(export.to_dict())
    return export


def validate_neuronpedia(doc: dict[str, Any]) -> None:
    """Check an export document against :data:`NEURONPEDIA_EXPORT_SCHEMA` (required keys,
    types, patterns; no extra keys), without needing the ``jsonschema`` package."""
    _check(doc, NEURONPEDIA_EXPORT_SCHEMA, "$")


_TYPES: dict[str, Any] = {
    "string": str,
    "number": (int, float),
    "object": dict,
    "array": list,
    "null": type(None),
}


def _as_tuple(t: Any) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    import re

    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        allowed = tuple(t for name in names for t in _as_tuple(_TYPES[name]))
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise ExportError(f"{where}: expected {types}, got {type(value).__name__}.")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            raise ExportError(f"{where}: string length {len(value)} out of range.")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise ExportError(f"{where}: {value!r} does not match {schema['pattern']}.")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ExportError(f"{where}: missing {missing}.")
        props = schema.get("properties", {})
        extra = [k for k in value if k not in props]
        if extra and schema.get("additionalProperties") is False:
            raise ExportError(f"{where}: unknown fields {extra}.")
        for k, v in value.items():
            if k in props:
                _check(v, props[k], f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            _check(v, schema["items"], f"{where}[{i}]")
