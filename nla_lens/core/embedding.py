"""The AV's input-embedding table, read alone from its safetensors shards.

A server backend decodes on the server, so this process only needs the
embedding rows of the AV prompt: reading the one tensor (``safe_open`` is lazy)
takes seconds and ~1 GB for a 12B model, instead of loading every weight.
Lookups apply the architecture's embedding scale (sqrt(d) for Gemma, 1 for
Qwen/Llama), exactly as the model's own embedding module does, so the result
equals ``model.get_input_embeddings()(ids)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from torch import Tensor

from ..errors import CheckpointError, CheckpointNotFoundError, UnsupportedArchitectureError
from .arch import embed_scale, text_config

__all__ = ["EMBED_KEY_SUFFIX", "EmbeddingTable", "find_embedding_key"]

#: Every supported architecture names its input embedding ``...embed_tokens.weight``
#: (``model.embed_tokens.weight``; multimodal Gemma-3: ``model.language_model.embed_tokens.weight``).
EMBED_KEY_SUFFIX = "embed_tokens.weight"
_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def find_embedding_key(keys: list[str], where: str) -> str:
    """The one input-embedding key among ``keys`` (a language-model one wins in a
    multimodal checkpoint), or a clear error."""
    found = sorted(k for k in keys if k == EMBED_KEY_SUFFIX or k.endswith("." + EMBED_KEY_SUFFIX))
    if len(found) > 1:
        text = [k for k in found if "language_model" in k]
        found = text if len(text) == 1 else found
    if len(found) != 1:
        raise UnsupportedArchitectureError(
            f"{where}: expected exactly one input-embedding tensor named '*{EMBED_KEY_SUFFIX}', "
            f"found {found or 'none'}. Is this a Gemma-3 / Qwen2 / Llama checkpoint?"
        )
    return found[0]


def _locate(root: Path) -> tuple[Path, str]:
    """The shard holding the embedding and its key."""
    index = root / _INDEX
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (KeyError, ValueError) as exc:
            raise CheckpointNotFoundError(
                f"{index}: not a safetensors index (no 'weight_map'): {exc}"
            ) from exc
        key = find_embedding_key(list(weight_map), str(index))
        shard = root / weight_map[key]
        if not shard.is_file():
            raise CheckpointNotFoundError(
                f"{index} maps {key!r} to {shard.name}, which is missing."
            )
        return shard, key
    single = root / _SINGLE
    if not single.is_file():
        raise CheckpointNotFoundError(
            f"{root}: neither {_SINGLE} nor {_INDEX}; an NLA checkpoint ships safetensors weights."
        )
    with _open_shard(single) as f:
        return single, find_embedding_key(list(f.keys()), str(single))


def _open_shard(shard: Path) -> Any:
    """``safe_open`` of one shard, or a CheckpointError naming it."""
    try:
        return safe_open(str(shard), framework="pt")
    except Exception as exc:  # safetensors raises SafetensorError, OSError
        raise CheckpointError(
            f"{shard}: not a readable safetensors file ({type(exc).__name__}: {exc}); it is "
            "truncated or corrupt. Re-download the checkpoint."
        ) from exc


class EmbeddingTable:
    """A scaled token-embedding lookup: ``table(ids) == model.get_input_embeddings()(ids)``.

    >>> table = EmbeddingTable.from_checkpoint("path/to/av")  # doctest: +SKIP
    >>> table(torch.tensor([[2, 10, 11]])).shape  # doctest: +SKIP
    torch.Size([1, 3, d_model])
    """

    def __init__(self, weight: Float[Tensor, "vocab d_model"], scale: float = 1.0) -> None:
        self.weight = weight
        self.scale = float(scale)
        # As the model does: the scale is a float32 scalar cast to the weight dtype.
        self._scale_t = torch.tensor(self.scale, dtype=torch.float32).to(weight.dtype)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str | os.PathLike[str],
        dtype: torch.dtype = torch.float32,
        *,
        config: Any = None,
    ) -> EmbeddingTable:
        """Read only the input-embedding tensor of a checkpoint directory.

        Handles one ``model.safetensors`` or sharded weights with
        ``model.safetensors.index.json``, and plain (``model.embed_tokens``) or
        multimodal (``model.language_model.embed_tokens``) layouts. The scale
        comes from the config via :func:`nla_lens.arch.embed_scale`.
        """
        root = Path(checkpoint_dir)
        if not root.is_dir():
            raise CheckpointNotFoundError(f"{root}: not a checkpoint directory.")
        shard, key = _locate(root)
        if config is None:
            from transformers import AutoConfig

            try:
                config = AutoConfig.from_pretrained(str(root))
            except (OSError, ValueError) as exc:
                raise CheckpointNotFoundError(f"{root}: no readable config.json ({exc}).") from exc
        with _open_shard(shard) as f:
            try:
                weight = f.get_tensor(key)
            except Exception as exc:
                raise CheckpointError(
                    f"{shard}: cannot read {key!r} ({type(exc).__name__}: {exc}); the file is "
                    "truncated or corrupt. Re-download the checkpoint."
                ) from exc
        weight = weight.to(dtype)
        d = text_config(config).hidden_size
        if weight.ndim != 2 or weight.shape[1] != d:
            raise UnsupportedArchitectureError(
                f"{shard.name}:{key} has shape {tuple(weight.shape)}, but config.json says "
                f"hidden_size={d}; the weights and config do not belong together."
            )
        return cls(weight, embed_scale(config))

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> EmbeddingTable:
        return EmbeddingTable(self.weight.to(device=device, dtype=dtype), self.scale)

    def __call__(self, ids: Int[Tensor, "*batch seq"]) -> Float[Tensor, "*batch seq d_model"]:
        ids = ids.to(self.weight.device)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise IndexError(
                f"token ids must be in [0, {self.vocab_size}); got {int(ids.min())}..{int(ids.max())}"
            )
        rows = torch.nn.functional.embedding(ids, self.weight)
        return rows * self._scale_t.to(rows.device)

    def __repr__(self) -> str:
        return f"EmbeddingTable(vocab={self.vocab_size}, d_model={self.d_model}, scale={self.scale:.4g}, dtype={self.dtype})"
