"""Hub ids, revisions, tokens and the offline cache, exercised without a network:
a Hugging Face cache laid out on disk stands in for the hub."""

from __future__ import annotations

import shutil
from typing import ClassVar

import pytest

from nla_lens import NLA
from nla_lens.core import loading
from nla_lens.errors import CheckpointNotFoundError

pytestmark = pytest.mark.integration
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(tmp_path, toy, repo="kitft/nla-toy-L2-av", part="av"):
    owner, name = repo.split("/")
    root = tmp_path / "hub" / f"models--{owner}--{name}"
    snap = root / "snapshots" / COMMIT
    shutil.copytree(getattr(toy, part), snap)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    return tmp_path / "hub"


def test_hub_id_from_offline_cache(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = fake_hub_cache(tmp_path, toy)
    fake_hub_cache(tmp_path, toy, "kitft/nla-toy-L2-ar", "ar")
    nla = NLA.from_pretrained(
        "kitft/nla-toy-L2-av", "kitft/nla-toy-L2-ar", cache_dir=cache, device="cpu"
    )
    prov = nla.provenance()
    assert prov.av.hub_id == "kitft/nla-toy-L2-av" and prov.av.commit == COMMIT
    assert prov.ar is not None and prov.ar.hub_id == "kitft/nla-toy-L2-ar"
    assert len(prov.av.content_sha256) == 64 and prov.av.sidecar_sha256


def test_unknown_revision_is_a_clear_error(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = fake_hub_cache(tmp_path, toy)
    with pytest.raises(CheckpointNotFoundError, match="not in the local cache"):
        loading.resolve_checkpoint("kitft/nla-toy-L2-av", revision="v9", cache_dir=cache)


def test_token_and_revision_reach_the_hub_client(monkeypatch, tmp_path):
    seen = {}

    def fake_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        path = tmp_path / "snapshots" / COMMIT
        path.mkdir(parents=True)
        return str(path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    src = loading.resolve_checkpoint("kitft/nla-gemma3-12b-L32-av", revision="main")
    assert seen["repo_id"] == "kitft/nla-gemma3-12b-L32-av" and seen["revision"] == "main"
    assert seen["token"] == "hf_secret" and seen["local_files_only"] is False
    assert (
        "*.safetensors" in seen["allow_patterns"] and "nla_meta.yaml" not in seen["allow_patterns"]
    )
    assert src.commit == COMMIT and src.hub_id == "kitft/nla-gemma3-12b-L32-av"


def test_gated_repo_message(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    class Response:
        headers: ClassVar[dict] = {}
        status_code = 403
        request = None

    def gated(repo_id, **kwargs):
        raise GatedRepoError("gated", response=Response())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(CheckpointNotFoundError, match="HF_TOKEN"):
        loading.resolve_checkpoint("kitft/nla-gemma3-12b-L32-av", local_files_only=False)


def test_not_a_checkpoint_name(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointNotFoundError, match="is a file"):
        loading.resolve_checkpoint(tmp_path / "file.txt")
    with pytest.raises(CheckpointNotFoundError, match="not a Hugging Face id"):
        loading.resolve_checkpoint("no such thing")


def test_one_tokenizer_object_per_files_and_class(toy, tmp_path):
    """The same tokenizer files load as one object for every checkpoint whose model type
    maps to the same tokenizer class (gemma3 and gemma3_text: GemmaTokenizer), and as
    another for a model type transformers builds another class for (qwen2), so a cached
    object of the wrong class is never handed out."""
    import json

    dirs = {}
    for model_type in ("gemma3", "gemma3_text", "qwen2"):
        d = tmp_path / model_type
        d.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(toy.av / name, d / name)
        config = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        config["tokenizer_class"] = "GemmaTokenizer"  # not the generic class: AutoTokenizer picks
        (d / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        (d / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
        dirs[model_type] = d
    assert len({loading.tokenizer_hash(d) for d in dirs.values()}) == 1  # same files
    kinds = {t: loading.tokenizer_kind(d) for t, d in dirs.items()}
    assert kinds == {
        "gemma3": "GemmaTokenizer", "gemma3_text": "GemmaTokenizer", "qwen2": "Qwen2Tokenizer",
    }  # fmt: skip
    gemma, text, qwen = (loading.load_tokenizer(d) for d in dirs.values())
    assert gemma is text
    assert qwen is not gemma and type(qwen).__name__ != type(gemma).__name__
    # the shipped toy names the generic fast class: one object whatever the model type
    assert loading.tokenizer_kind(toy.av) == "PreTrainedTokenizerFast"
    assert loading.load_tokenizer(toy.av) is loading.load_tokenizer(toy.ar)
