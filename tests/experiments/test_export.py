"""Neuronpedia export: the rows validate against the documented schema (docs/neuronpedia.md)."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from nla_lens import to_neuronpedia
from nla_lens.errors import ExportError
from nla_lens.experiments.export import NEURONPEDIA_EXPORT_SCHEMA, validate_neuronpedia

pytestmark = pytest.mark.integration
TOKENS = 16


class SAE:
    def __init__(self, w, neuronpedia_id=None):
        self.W_dec = w
        self.cfg = type(
            "Cfg", (), {"metadata": type("Meta", (), {"neuronpedia_id": neuronpedia_id})()}
        )()


@pytest.fixture(scope="module")
def features(nla, toy_residuals):
    w = torch.cat(
        [toy_residuals[0][:3], torch.randn(2, 64, generator=torch.Generator().manual_seed(1))]
    )
    return nla.explain_features(
        SAE(w, "toy-gemma3/2-toy-res-5"), [0, 1, 2, 4], max_new_tokens=TOKENS
    )


def _validate(doc):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(NEURONPEDIA_EXPORT_SCHEMA)
    jsonschema.validate(doc, NEURONPEDIA_EXPORT_SCHEMA, cls=jsonschema.Draft202012Validator)
    validate_neuronpedia(doc)


def test_per_latent_export_validates_and_keeps_ids_and_scores(features, tmp_path):
    export = to_neuronpedia(features, model_id="toy-gemma3")
    doc = json.loads(export.to_json())
    _validate(doc)
    assert doc["layer"] == "2-toy-res-5"  # taken from the SAE's neuronpedia_id
    rows = doc["explanations"]
    assert [r["index"] for r in rows] == ["0", "1", "2", "4"]
    assert [r["description"] for r in rows] == features.texts
    for r, e in zip(rows, features.explanations, strict=True):
        assert r["modelId"] == "toy-gemma3" and r["typeName"] == "nla-av"
        assert r["explanationModelName"] == "av"  # the AV checkpoint (hub id for released pairs)
        assert r["scoreV1"] == pytest.approx(e.fve_nrm) and r["scoreV2"] == pytest.approx(e.cos)
        mine = {
            s["explanationScoreTypeName"]: s for s in doc["scores"] if s["explanationId"] == r["id"]
        }
        assert set(mine) == {"nla-ar-fve-nrm", "nla-ar-cos", "nla-ar-mse-nrm"}
        assert mine["nla-ar-fve-nrm"]["value"] == pytest.approx(e.fve_nrm)
        assert mine["nla-ar-cos"]["explanationScoreModelName"] == "ar"
    root = export.write(tmp_path)
    lines = (
        gzip.decompress((root / "explanations" / "batch-0.jsonl.gz").read_bytes())
        .decode()
        .split("\n")
    )
    assert [json.loads(x) for x in lines if x] == rows
    assert root == tmp_path / "toy-gemma3" / "2-toy-res-5"
    assert len((root / "explanation_scores.jsonl").read_text().splitlines()) == len(doc["scores"])


def test_per_position_export_of_a_transcript(nla, subject):
    model, tok = subject
    transcript = nla.transcript(
        model, "my friend has a cat in the garden", tokenizer=tok, max_new_tokens=TOKENS
    )
    export = to_neuronpedia(
        transcript, model_id="toy-gemma3", layer="2-nla-transcript", author_id="user123"
    )
    doc = export.to_dict()
    _validate(doc)
    assert [r["index"] for r in doc["explanations"]] == [str(p) for p in transcript.positions]
    notes = json.loads(doc["explanations"][2]["notes"])
    assert notes["token"] == transcript[2].token
    assert all(r["authorId"] == "user123" for r in doc["explanations"])
    assert "<table" in export._repr_html_()


def test_bad_exports_are_refused(features):
    with pytest.raises(ExportError, match="model"):
        to_neuronpedia(features, model_id="gemma-2-2b")  # the SAE belongs to another model
    with pytest.raises(ExportError, match="layer="):
        to_neuronpedia([(0, features.explanations[0])], model_id="toy-gemma3")
    with pytest.raises(ExportError, match="model id|pattern|match"):
        to_neuronpedia(features, model_id="bad id!", layer="x")
    with pytest.raises(ExportError, match="FeatureExplanations"):
        to_neuronpedia("text", model_id="toy-gemma3", layer="x")
    doc = to_neuronpedia(features, model_id="toy-gemma3").to_dict()
    doc["explanations"][0]["surprise"] = 1
    with pytest.raises(ExportError, match="unknown fields"):
        validate_neuronpedia(doc)
    del doc["explanations"][0]["surprise"], doc["explanations"][0]["index"]
    with pytest.raises(ExportError, match="missing"):
        validate_neuronpedia(doc)
