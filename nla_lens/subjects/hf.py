"""Residual capture for plain Hugging Face ``transformers`` models, with forward hooks.

The layer-K residual is the output of decoder block K, read with a forward hook
on ``decoder_layers(model)[K]`` (``model.layers`` of a causal LM, or
``model.language_model.layers`` of Gemma-3's multimodal wrapper; see
:mod:`nla_lens.arch`). It equals ``hidden_states[K + 1]`` of a run with
``output_hidden_states=True`` for every block but the last: transformers
applies the final norm to the last entry of ``hidden_states``, while the hook
returns the block's raw output.

The whole forward runs (no early stop), so logits come back too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..core.arch import decoder_layers
from ..errors import CaptureError, SubjectMismatchError
from .edits import BoundEdit

__all__ = [
    "HFHook",
    "check_layer",
    "first_device",
    "install_edits",
    "mask_position_ids",
    "run_hf",
]

#: A user forward hook for the duration of one run: (module or its dotted name, hook).
#: The hook has torch's forward-hook signature ``hook(module, args, output)`` and may
#: return a replacement output.
HFHook = tuple[nn.Module | str, Callable[..., Any]]


def first_device(model: nn.Module) -> torch.device:
    """Where token ids should go: the input embedding's device (device_map-safe)."""
    try:
        emb = model.get_input_embeddings()  # type: ignore[operator]
        return emb.weight.device
    except (AttributeError, NotImplementedError, TypeError):
        return next(model.parameters()).device


def mask_position_ids(attention_mask: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq"]:
    """Positions counted over real tokens (as ``generate`` does), so left padding shifts nothing."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 1)


def _block_output(output: Any) -> Tensor:
    # transformers 5 decoder layers return a tensor; older ones a tuple.
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise CaptureError(f"decoder block returned {type(output).__name__}, expected a tensor")
    return output


def check_layer(layer: int, n_layers: int, what: str) -> None:
    """Refuse a block index the subject does not have."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise CaptureError(f"layer must be an int (a block index), got {layer!r}")
    if not 0 <= layer < n_layers:
        raise SubjectMismatchError(
            f"layer {layer} is out of range: {what} has {n_layers} decoder blocks "
            f"(valid 0..{n_layers - 1})."
        )


def _edit_hook(fn: Callable[[Tensor], Tensor], module: nn.Module, args: Any, output: Any) -> Any:
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return fn(output)


def install_edits(layers: Any, edits: Sequence[BoundEdit]) -> list[Any]:
    """Forward hooks applying bound edits to decoder blocks; returns their handles."""
    handles = []
    for layer, fn in edits:
        check_layer(layer, len(layers), "the subject")
        handles.append(layers[layer].register_forward_hook(functools.partial(_edit_hook, fn)))
    return handles


def _resolve_module(model: nn.Module, target: nn.Module | str) -> nn.Module:
    if isinstance(target, nn.Module):
        return target
    try:
        return model.get_submodule(target)
    except AttributeError as exc:
        raise CaptureError(
            f"hf_hooks: {type(model).__name__} has no submodule {target!r}. Names are dotted "
            "paths from the model, as in model.named_modules() (e.g. 'model.layers.3.mlp')."
        ) from exc


def run_hf(
    model: nn.Module,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"],
    layer: int,
    *,
    hf_hooks: Sequence[HFHook] = (),
    edits: Sequence[BoundEdit] = (),
) -> tuple[Float[Tensor, "batch seq d_model"], Float[Tensor, "batch seq vocab"]]:
    """Run ``model`` once and return (layer-``layer`` residual, logits), both on the model's device.

    ``hf_hooks`` and then ``edits`` are registered before the recorder, so a hook
    that edits block ``layer`` itself (or anything before it) is reflected in the
    residual. All hooks are removed afterwards, also on error. Runs under
    ``torch.no_grad()``.
    """
    layers = decoder_layers(model)
    check_layer(layer, len(layers), type(model).__name__)
    recorded: list[Tensor] = []

    def recorder(module: nn.Module, args: Any, output: Any) -> None:
        recorded.append(_block_output(output).detach().clone())

    device = first_device(model)
    with ExitStack() as stack, torch.no_grad():
        for target, hook in hf_hooks:
            handle = _resolve_module(model, target).register_forward_hook(hook)
            stack.callback(handle.remove)
        for handle in install_edits(layers, edits):
            stack.callback(handle.remove)
        stack.callback(layers[layer].register_forward_hook(recorder).remove)
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=mask_position_ids(attention_mask).to(device),
            use_cache=False,
        )
    if len(recorded) != 1:
        raise CaptureError(
            f"the hook on decoder block {layer} fired {len(recorded)} times in one forward "
            "(expected once); is gradient checkpointing or a custom forward re-running blocks?"
        )
    logits = out.logits if hasattr(out, "logits") else out[0]
    return recorded[0], logits.detach()
