"""Shared-prefix ("cascade") attention for the local AV backend.

Every AV prompt in a batch is the same template up to the injected row, and the
``samples`` rows of one vector are identical to the end. Decoding them as ``n``
independent sequences keeps ``n`` copies of the prefix's keys and values,
copies them again at every step (the cache grows by concatenation) and reads
all of them in attention. Here the prefix is kept once: its keys and values sit
in one row, each step scores every row's queries against it in one matrix
product per key-value head, and only the short per-row tail (the injected row,
the end of the prompt and the tokens generated so far) is stored per row.
Distinct prompts are prefilled once and the tail cache is forked to their
duplicates, so the ``k`` samples of a vector share one prefill.

It is exact attention, only reordered: a softmax over the concatenated
prefix and tail scores. Used only where it is exact for the model: prompts
without padding, architectures whose attention is plain scaled dot product
(optionally soft-capped), and sequences that fit inside every sliding window: a
decode that grows past one goes on from a plain cache (:func:`to_plain`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "ATTENTION_NAME", "SUPPORTED_MODEL_TYPES", "active", "shared_prefix_cache", "supports",
    "to_plain", "window",
]  # fmt: skip

#: The name the attention function is registered under in transformers' AttentionInterface.
ATTENTION_NAME = "nla_shared_prefix"

#: Model types whose attention layers call the attention interface with plain
#: (query, key, value, scaling, sliding_window, softcap) and nothing else.
SUPPORTED_MODEL_TYPES = frozenset({"gemma2", "gemma3_text", "llama", "mistral", "qwen2", "qwen3"})

_registered = False


def window(model: Any) -> int | None:
    """The sliding window of ``model``'s sliding layers (None if no layer slides): shared-prefix
    attention is exact while a sequence holds at most this many tokens."""
    config = getattr(model, "config", None)
    size = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or []
    if size is None or (types and "sliding_attention" not in types):
        return None
    return int(size)


def to_plain(cache: Any, config: Any) -> Any:
    """The same keys and values as a plain transformers ``DynamicCache`` (the prefix repeated
    per row), for decoding on with the model's own attention: past a sliding window, where
    shared-prefix attention is no longer exact."""
    from transformers import DynamicCache

    plain = DynamicCache(config=config)
    for i, layer in enumerate(cache._layers):
        keys, values = layer.prefix_keys, layer.prefix_values
        if layer.keys is not None and layer.values is not None:
            n = layer.keys.shape[0]
            keys = torch.cat([keys.expand(n, -1, -1, -1), layer.keys], dim=-2)
            values = torch.cat([values.expand(n, -1, -1, -1), layer.values], dim=-2)
        plain.update(keys.contiguous(), values.contiguous(), i)
    return plain


def supports(model: Any, total_length: int) -> bool:
    """Whether shared-prefix attention is exact for ``model`` on sequences of ``total_length``."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():  # transformers would ignore the switch
        return False
    if any(
        getattr(m, "config", config) is not config for m in model.modules()
    ):  # a layer reading another config would not see the switch of attention
        return False
    size = window(model)
    return size is None or total_length <= size


class _Layer:
    """One decoder layer's cache: the prefix once (batch 1) and a per-row tail."""

    def __init__(self, keys: Tensor, values: Tensor) -> None:
        self.prefix_keys = keys
        self.prefix_values = values
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    @property
    def prefix_length(self) -> int:
        return int(self.prefix_keys.shape[-2])

    @property
    def tail_length(self) -> int:
        return 0 if self.keys is None else int(self.keys.shape[-2])


def shared_prefix_cache(prefix: list[tuple[Tensor, Tensor]]) -> Any:
    """A transformers ``Cache`` holding ``prefix`` (per layer: keys, values of one row) once.

    ``update`` appends to per-row tails and returns them; the registered attention
    function (:func:`shared_prefix_attention`) adds the prefix back in.
    """
    return _cache_class()(prefix)


_CLASS: type | None = None


def _cache_class() -> type:
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    from transformers import Cache  # subclassed lazily: importing nla_lens.core stays light

    class SharedPrefixCache(Cache):  # type: ignore[misc]
        def __init__(self, prefix: list[tuple[Tensor, Tensor]]) -> None:
            self._layers = [_Layer(k, v) for k, v in prefix]
            placeholders: list[Any] = [_NoLayer() for _ in prefix]
            super().__init__(layers=placeholders)

        def update(
            self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kw: Any
        ) -> tuple[Tensor, Tensor]:
            layer = self._layers[layer_idx]
            if layer.keys is None or layer.values is None:
                layer.keys, layer.values = key_states, value_states
            else:
                layer.keys = torch.cat([layer.keys, key_states], dim=-2)
                layer.values = torch.cat([layer.values, value_states], dim=-2)
            return layer.keys, layer.values

        def layer(self, layer_idx: int) -> _Layer:
            return self._layers[layer_idx]

        def get_seq_length(self, layer_idx: int = 0) -> int:
            layer = self._layers[layer_idx]
            return layer.prefix_length + layer.tail_length

        def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
            return self.get_seq_length(layer_idx) + query_length, 0

        def get_query_offset(self, layer_idx: int = 0) -> int:
            return self.get_seq_length(layer_idx)

        def get_max_length(self, layer_idx: int | None = None) -> int:
            return -1

        def batch_repeat_interleave(self, repeats: int) -> None:
            for layer in self._layers:
                if layer.keys is not None and layer.values is not None:
                    layer.keys = layer.keys.repeat_interleave(repeats, dim=0)
                    layer.values = layer.values.repeat_interleave(repeats, dim=0)

        def batch_select_indices(self, indices: Tensor) -> None:
            for layer in self._layers:
                if layer.keys is not None and layer.values is not None:
                    layer.keys = layer.keys[indices]
                    layer.values = layer.values[indices]

        def reorder_cache(self, beam_idx: Tensor) -> None:
            self.batch_select_indices(beam_idx)

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("a shared-prefix cache cannot be cropped")

        @property
        def is_compileable(self) -> bool:
            return False

        @property
        def is_initialized(self) -> bool:
            return True

        @property
        def is_sliding(self) -> list[bool]:
            return [False] * len(self._layers)

    _CLASS = SharedPrefixCache
    return _CLASS


class _NoLayer:
    """Placeholder so ``len(cache)`` and per-layer flags match the model."""

    is_sliding = False
    is_compileable = False
    is_initialized = True
    is_croppable = False

    def get_seq_length(self) -> int:  # pragma: no cover - the cache answers for its layers
        return 0


#: The cache each thread is decoding with (a stack: decodes do not nest, but stay safe if they do).
_STATE = threading.local()


def _stack() -> list[Any]:
    if not hasattr(_STATE, "stack"):
        _STATE.stack = []
    stack: list[Any] = _STATE.stack
    return stack


def shared_prefix_attention(
    module: Any,
    query: Float[Tensor, "n heads q head_dim"],
    key: Float[Tensor, "n kv_heads tail head_dim"],
    value: Float[Tensor, "n kv_heads tail head_dim"],
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Exact attention over [shared prefix | per-row tail] (transformers attention interface)."""
    stack = _stack()
    if not stack:
        raise RuntimeError(f"{ATTENTION_NAME} attention used outside a shared-prefix decode")
    layer: _Layer = stack[-1].layer(module.layer_idx)
    n, h, q, d = query.shape
    hk = key.shape[1]
    g = h // hk
    t = key.shape[-2]
    scale = scaling if scaling is not None else d**-0.5
    pk = layer.prefix_keys[0]  # (hk, P, d)
    pv = layer.prefix_values[0]
    p = pk.shape[-2]
    if sliding_window is not None and p + t > sliding_window:
        raise RuntimeError("shared-prefix attention past a sliding window")
    grouped = query.reshape(n, hk, g * q, d)  # heads of one kv head are adjacent
    flat = grouped.permute(1, 0, 2, 3).reshape(hk, n * g * q, d)
    s_pre = torch.matmul(flat, pk.transpose(-1, -2)) * scale  # (hk, n*g*q, P)
    s_pre = s_pre.reshape(hk, n, g * q, p).permute(1, 0, 2, 3)  # (n, hk, g*q, P)
    s_tail = torch.matmul(grouped, key.transpose(-1, -2)) * scale  # (n, hk, g*q, t)
    if softcap is not None:
        s_pre = torch.tanh(s_pre / softcap) * softcap
        s_tail = torch.tanh(s_tail / softcap) * softcap
    if q > 1:  # causal inside the tail: query i sits at tail position t - q + i
        qi = torch.arange(q, device=query.device).repeat(g).view(g * q, 1)
        kj = torch.arange(t, device=query.device).view(1, t)
        s_tail = s_tail.masked_fill(kj > qi + (t - q), float("-inf"))
    probs = torch.softmax(torch.cat([s_pre, s_tail], dim=-1).float(), dim=-1).to(query.dtype)
    w_pre, w_tail = probs[..., :p], probs[..., p:]
    w_flat = w_pre.permute(1, 0, 2, 3).reshape(hk, n * g * q, p)
    out = torch.matmul(w_flat, pv).reshape(hk, n, g * q, d).permute(1, 0, 2, 3)
    out = out + torch.matmul(w_tail, value)  # (n, hk, g*q, d)
    out = out.reshape(n, h, q, d).transpose(1, 2).contiguous()
    return out, None


def register() -> None:
    """Register the attention function with transformers (once)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
    _registered = True


#: Models whose switch to shared-prefix attention transformers has validated once (by id,
#: with the model itself held weakly so a freed model's id is not trusted again).
_SWITCHED: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


@contextlib.contextmanager
def active(model: Any, cache: Any) -> Iterator[None]:
    """Route ``model``'s attention through the shared prefix of ``cache`` inside the block.

    The first switch of a model goes through transformers' ``set_attn_implementation``
    (which validates the name and walks every submodule, ~1 ms on the toy and more on a
    large model); once that has set exactly this name, later switches set the one config
    every attention layer reads (:func:`supports` requires that they share it), twice a
    decode step at no cost."""
    register()
    config = model.config
    before = config._attn_implementation
    fast = _SWITCHED.get(id(model)) is model and before != ATTENTION_NAME
    if fast:
        config._attn_implementation_internal = ATTENTION_NAME
    else:
        model.set_attn_implementation(ATTENTION_NAME)
        if config._attn_implementation != ATTENTION_NAME:  # guarded by supports(); never silent
            model.set_attn_implementation(before)
            raise RuntimeError(
                f"{type(model).__name__} did not switch to {ATTENTION_NAME} attention"
            )
        _SWITCHED[id(model)] = model
    _stack().append(cache)
    try:
        yield
    finally:
        _stack().pop()
        if fast:
            config._attn_implementation_internal = before
        else:
            model.set_attn_implementation(before)
