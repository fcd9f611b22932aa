"""Residual capture for nnsight models (optional extra ``nnsight``).

The layer-K residual is ``<decoder layers>[K].output`` (a tensor under
transformers 5). The path to the decoder layers comes from the architecture
table applied to the wrapped Hugging Face module (``model._module``):
``model.layers`` for a causal LM, ``model.language_model.layers`` for
Gemma-3's multimodal ``*ForConditionalGeneration``.

nnsight runs a ``with model.trace(...)`` block by reading its source, so
:func:`residual` must be called from code in a file (not stdin / ``python -c``).
This module imports nnsight only inside :func:`capture`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core.arch import decoder_layers, layers_module_path
from ..errors import CaptureError, MissingExtraError
from .edits import BoundEdit, by_layer
from .frameworks import detect_framework, hf_model_of
from .hf import check_layer, first_device, mask_position_ids

__all__ = ["capture", "layer_envoy", "layers_envoy", "residual"]


def layers_envoy(model: Any) -> Any:
    """The nnsight envoy of the decoder-layer ``ModuleList`` (usable inside or outside a trace)."""
    if detect_framework(model) != "nnsight":
        raise CaptureError(f"expected an nnsight model, got {type(model).__name__}")
    return model.get(layers_module_path(hf_model_of(model)))


def layer_envoy(model: Any, layer: int) -> Any:
    """The nnsight envoy of decoder block ``layer`` (plain and multimodal layouts)."""
    _check_layer(model, layer)
    return layers_envoy(model)[layer]


def _check_layer(model: Any, layer: int) -> None:
    check_layer(layer, len(decoder_layers(hf_model_of(model))), "the model")


def residual(model: Any, layer: int) -> Any:
    """The layer-``layer`` residual, read INSIDE a ``model.trace(...)`` / ``model.generate(...)`` block.

    Returns the block's output as nnsight serves it (call ``.save()`` on it to
    keep it after the block)::

        with model.trace(prompt):
            h = nla_lens.capture.residual(model, 32).save()

    nnsight serves modules in execution order: read it after any edits you make
    to earlier layers and before touching later ones.
    """
    out = layer_envoy(model, layer).output
    if isinstance(out, (tuple, list)):  # transformers < 5 returned (hidden, ...)
        out = out[0]
    return out


def capture(
    model: Any,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"],
    layer: int,
    intervene: Callable[[Any], Any] | None = None,
    edits: Sequence[BoundEdit] = (),
) -> tuple[Float[Tensor, "batch seq d_model"], Float[Tensor, "batch seq vocab"]]:
    """Trace one forward of ``model``; return (layer-``layer`` residual, logits) as real tensors.

    ``edits`` are applied first, in block order (nnsight serves modules in
    execution order), each by reassigning ``layers[L].output``; then
    ``intervene(model)`` is called inside the trace before layer ``layer`` is
    read, so it can edit any earlier module's output (e.g.
    ``model.model.layers[0].output[:] = 0``); edits to layers after ``layer``
    are out of execution order and nnsight will refuse them.
    """
    try:
        import nnsight
    except ImportError as exc:
        raise MissingExtraError("nnsight", "nnsight", "capturing residuals with nnsight") from exc
    _check_layer(model, layer)
    for edit_layer, _ in edits:
        _check_layer(model, edit_layer)
    device = first_device(hf_model_of(model))
    kwargs = {
        "attention_mask": attention_mask.to(device),
        "position_ids": mask_position_ids(attention_mask).to(device),
        "use_cache": False,
    }
    try:
        with torch.no_grad(), model.trace(input_ids.to(device), **kwargs):
            for edit_layer, fn in by_layer(edits):
                envoy = layer_envoy(model, edit_layer)
                envoy.output = fn(envoy.output)
            if intervene is not None:
                intervene(model)
            hidden = nnsight.save(residual(model, layer))
            logits = nnsight.save(model.output.logits)
    except Exception as exc:
        if type(exc).__name__ != "OutOfOrderError":
            raise
        raise CaptureError(
            f"nnsight could not serve the modules in the order asked ({exc}). `intervene` runs "
            f"before layer {layer} is read, so it may only touch layers before {layer} (and "
            "in execution order); read later layers in your own model.trace() block instead."
        ) from exc
    return _materialise(hidden, "residual"), _materialise(logits, "logits").detach()


def _materialise(value: Any, what: str) -> Tensor:
    value = getattr(value, "value", value)  # older nnsight proxies
    if not isinstance(value, Tensor):
        raise CaptureError(
            f"nnsight returned {type(value).__name__} for the {what}, expected a tensor"
        )
    return value.detach()
