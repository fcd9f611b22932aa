"""EmbeddingTable: reads only the embedding tensor and equals the model's own lookup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nla_lens.core import embedding as embedding_module
from nla_lens.core.embedding import EmbeddingTable, find_embedding_key
from nla_lens.errors import CheckpointNotFoundError, UnsupportedArchitectureError


def _ids() -> torch.Tensor:
    return torch.tensor([[2, 10, 11, 12, 0], [2, 5, 6, 7, 300]])


def test_equals_model_embedding_gemma3(tiny_av_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_av_dir), dtype=torch.float32).eval()
    table = EmbeddingTable.from_checkpoint(tiny_av_dir)
    assert table.scale == pytest.approx(math.sqrt(64))
    with torch.no_grad():
        want = model.get_input_embeddings()(_ids())
    got = table(_ids())
    assert got.shape == (2, 5, 64)
    assert torch.equal(got, want)  # bit-exact, scale applied as the model applies it
    assert torch.equal(table(_ids()[0]), want[0])  # also unbatched [seq]


def test_equals_model_embedding_bf16(tiny_av_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_av_dir), dtype=torch.bfloat16).eval()
    table = EmbeddingTable.from_checkpoint(tiny_av_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        want = model.get_input_embeddings()(_ids())
    assert table(_ids()).dtype == torch.bfloat16
    assert torch.equal(table(_ids()), want)


def test_reads_only_the_embedding_tensor(
    tiny_av_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []
    real = embedding_module.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self._f = real(*a, **k)

        def __enter__(self):
            self._inner = self._f.__enter__()
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

        def keys(self):
            return self._inner.keys()

        def get_tensor(self, key):
            fetched.append(key)
            return self._inner.get_tensor(key)

    monkeypatch.setattr(embedding_module, "safe_open", Spy)
    EmbeddingTable.from_checkpoint(tiny_av_dir)
    assert fetched == ["model.embed_tokens.weight"]


def test_multimodal_sharded_layout(tmp_path: Path) -> None:
    """A sharded multimodal Gemma-3 checkpoint (index.json; language_model.* keys)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    text = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "sliding_window": 32}  # fmt: skip
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)  # fmt: skip
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(
        Gemma3Config(text_config=text, vision_config=vision.to_dict(), mm_tokens_per_image=4)
    ).eval()
    model.save_pretrained(str(tmp_path), max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    key = find_embedding_key(list(index["weight_map"]), "index")
    assert "language_model" in key and len(set(index["weight_map"].values())) > 1
    table = EmbeddingTable.from_checkpoint(tmp_path)
    with torch.no_grad():
        want = model.get_input_embeddings()(_ids()[:, :4])
    assert torch.equal(table(_ids()[:, :4]), want)


def test_unscaled_architecture(tmp_path: Path) -> None:
    """Qwen2/Llama embeddings are not scaled."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    model = Qwen2ForCausalLM(cfg).eval()
    model.save_pretrained(str(tmp_path))
    table = EmbeddingTable.from_checkpoint(tmp_path)
    assert table.scale == 1.0
    with torch.no_grad():
        assert torch.equal(table(_ids()), model.get_input_embeddings()(_ids()))


def test_errors(tmp_path: Path, tiny_av_dir: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="neither model.safetensors"):
        EmbeddingTable.from_checkpoint(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="exactly one"):
        find_embedding_key(["a.weight", "b.weight"], "x")
    (tmp_path / "config.json").write_text((tiny_av_dir / "config.json").read_text())
    save_file(
        {"model.embed_tokens.weight": torch.zeros(10, 32)}, str(tmp_path / "model.safetensors")
    )
    with pytest.raises(UnsupportedArchitectureError, match="hidden_size=64"):
        EmbeddingTable.from_checkpoint(tmp_path)
    table = EmbeddingTable.from_checkpoint(tiny_av_dir)
    with pytest.raises(IndexError):
        table(torch.tensor([[table.vocab_size]]))
