"""One way to edit the residual stream, for every framework.

:func:`residual_edit` turns ``fn: residual [batch, seq, d] -> residual`` at
block ``layer`` into the keyword the capture functions take for that model:
TransformerLens ``fwd_hooks`` on ``blocks.L.hook_resid_post``, an nnsight
``intervene`` callable that reassigns ``layers[L].output`` inside the trace, or
a Hugging Face forward hook on ``layers[L]``. Patching and steering are both
built on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from .arch import decoder_layers, layers_module_path
from .capture.frameworks import detect_framework, hf_model_of, hook_name

__all__ = ["EditFn", "layer_envoy", "merge_edits", "residual_edit"]

EditFn = Callable[[Tensor], Tensor]


def layer_envoy(model: Any, layer: int) -> Any:
    """The nnsight envoy of decoder block ``layer`` (plain and multimodal layouts)."""
    envoy = model
    for part in layers_module_path(hf_model_of(model)).split("."):
        envoy = getattr(envoy, part)
    return envoy[layer]


def _tl_hook(fn: EditFn, activation: Tensor, hook: Any) -> Tensor:
    return fn(activation)


def _hf_hook(fn: EditFn, module: Any, args: Any, output: Any) -> Any:
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return fn(output)


def _nns_intervene(layer: int, fn: EditFn, model: Any) -> None:
    envoy = layer_envoy(model, layer)
    envoy.output = fn(envoy.output)


def residual_edit(model: Any, layer: int, fn: EditFn) -> dict[str, Any]:
    """``{"fwd_hooks": ...}``, ``{"intervene": ...}`` or ``{"hf_hooks": ...}`` for ``model``."""
    framework = detect_framework(model)
    if framework == "transformer_lens":
        return {"fwd_hooks": [(hook_name(layer), functools.partial(_tl_hook, fn))]}
    if framework == "nnsight":
        return {"intervene": functools.partial(_nns_intervene, layer, fn)}
    return {"hf_hooks": [(decoder_layers(model)[layer], functools.partial(_hf_hook, fn))]}


def merge_edits(edits: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine several :func:`residual_edit` results (applied in order)."""
    out: dict[str, Any] = {}
    intervenes = []
    for edit in edits:
        for key in ("fwd_hooks", "hf_hooks"):
            if key in edit:
                out[key] = [*out.get(key, []), *edit[key]]
        if "intervene" in edit:
            intervenes.append(edit["intervene"])
    if intervenes:

        def intervene(model: Any) -> None:
            for f in intervenes:
                f(model)

        out["intervene"] = intervene
    return out
