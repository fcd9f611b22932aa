"""Residual capture for TransformerLens 4's ``TransformerBridge`` (optional extra ``transformer-lens``).

The layer-K residual is the hook point ``blocks.K.hook_resid_post``. On a
bridge booted the default way (``TransformerBridge.boot_transformers``: raw
Hugging Face weights) it equals the Hugging Face block output exactly.

Weight processing (``bridge.process_weights()``, or
``bridge.enable_compatibility_mode()`` without ``no_processing=True``) rewrites
the weights. For RMSNorm models (Gemma, Qwen, Llama: every architecture the NLA
releases use) the residual stream is unchanged by it, up to ~1e-6 relative float
noise from folding the norm gains; only the logits move (``center_unembed``
shifts each position's logits by a constant, which leaves probabilities alone).
For LayerNorm models ``center_writing_weights`` removes each residual's mean, so
the vectors at ``hook_resid_post`` are no longer the model's:
:func:`check_bridge` refuses that case with :class:`SubjectMismatchError`.

Nothing here imports transformer_lens at module import; only :func:`boot_bridge` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..errors import CaptureError, MissingExtraError, SubjectMismatchError
from .edits import BoundEdit
from .frameworks import hook_name
from .hf import check_layer, first_device, mask_position_ids

__all__ = [
    "ResidualRecorder",
    "TLHook",
    "boot_bridge",
    "bridge_changes_residuals",
    "check_bridge",
    "edit_hooks",
    "run_bridge",
]

#: A TransformerLens forward hook: (hook-point name or name filter, ``fn(activation, hook)``).
TLHook = tuple[str | Callable[[str], bool], Callable[..., Any]]

_LAYERNORM_TYPES = ("LN", "LNPre")


def bridge_changes_residuals(bridge: Any) -> str | None:
    """Why this bridge's ``hook_resid_post`` differs from the raw model's block output, or None.

    Only weight processing on a LayerNorm model does (``center_writing_weights``
    subtracts each residual's mean; TransformerLens skips it for RMSNorm models).
    Read from ``bridge._weights_processed`` (set by ``process_weights``, which
    ``enable_compatibility_mode`` calls unless ``no_processing=True``) and
    ``bridge.cfg.normalization_type`` / ``final_rms``. The bridge does not record
    which processing flags were used, so any processing of a LayerNorm model
    counts.
    """
    if not bool(getattr(bridge, "_weights_processed", False)):
        return None
    cfg = getattr(bridge, "cfg", None)
    norm = getattr(cfg, "normalization_type", None)
    if norm in _LAYERNORM_TYPES and not bool(getattr(cfg, "final_rms", False)):
        return (
            f"its weights were processed (process_weights / enable_compatibility_mode) and the "
            f"model uses LayerNorm ({norm}), so center_writing_weights has removed each "
            "residual's mean: blocks.K.hook_resid_post no longer holds the model's residual"
        )
    return None


def check_bridge(bridge: Any) -> None:
    """Raise :class:`SubjectMismatchError` if the bridge's residuals are not the raw model's."""
    reason = bridge_changes_residuals(bridge)
    if reason is not None:
        raise SubjectMismatchError(
            f"this TransformerBridge cannot be used to capture residuals for an NLA: {reason}. "
            "NLAs were trained on raw Hugging Face residuals. Fix: boot a fresh bridge with "
            "TransformerBridge.boot_transformers(...) and do not call process_weights() or "
            "enable_compatibility_mode() (use enable_compatibility_mode(no_processing=True) if "
            "you need legacy hook names)."
        )


def _n_layers(bridge: Any) -> int:
    n = getattr(getattr(bridge, "cfg", None), "n_layers", None)
    if isinstance(n, int):
        return n
    blocks = getattr(bridge, "blocks", None)
    if blocks is None:
        raise CaptureError(f"{type(bridge).__name__} has no cfg.n_layers and no blocks")
    return len(blocks)


def _check_layer(bridge: Any, layer: int) -> None:
    check_layer(layer, _n_layers(bridge), "the bridge")


def _tl_edit(fn: Callable[[Tensor], Tensor], activation: Tensor, hook: Any) -> Tensor:
    return fn(activation)


def edit_hooks(bridge: Any, edits: Sequence[BoundEdit]) -> list[TLHook]:
    """TransformerLens hooks on ``blocks.L.hook_resid_post`` applying bound edits."""
    for layer, _ in edits:
        _check_layer(bridge, layer)
    return [(hook_name(layer), functools.partial(_tl_edit, fn)) for layer, fn in edits]


def _bridge_device(bridge: Any) -> torch.device:
    device = getattr(getattr(bridge, "cfg", None), "device", None)
    if device is not None:
        return torch.device(device)
    return first_device(bridge.original_model)


class ResidualRecorder(AbstractContextManager["ResidualRecorder"]):
    """Records ``blocks.{layer}.hook_resid_post`` during any bridge run, next to the user's own hooks.

    As a context manager it attaches itself for the duration of the block::

        with ResidualRecorder(bridge, layer) as rec:
            bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", my_edit)])
        rec.residual  # [batch, seq, d_model], reflects my_edit

    or pass it as a hook yourself: ``bridge.run_with_hooks(tokens, fwd_hooks=[rec.fwd_hook])``.
    It never modifies the activation. Every firing is kept in ``rec.residuals``
    (one per forward, e.g. one per decoding step under ``generate``);
    ``rec.residual`` is the latest. Hooks on the same hook point run in the
    order they were added, so the recorder sees edits made at ``blocks.{layer}``
    by hooks attached before it; edits to earlier hook points always show.

    Entering checks the bridge with :func:`check_bridge` and the layer range.
    """

    def __init__(self, bridge: Any, layer: int) -> None:
        check_bridge(bridge)
        _check_layer(bridge, layer)
        self.bridge = bridge
        self.layer = layer
        self.hook_name = hook_name(layer)
        self.residuals: list[Tensor] = []
        self._context: AbstractContextManager[Any] | None = None

    def __call__(self, activation: Tensor, hook: Any) -> None:
        self.residuals.append(activation.detach().clone())

    @property
    def fwd_hook(self) -> tuple[str, ResidualRecorder]:
        """``(hook_name, self)``, for ``fwd_hooks=[...]`` lists."""
        return (self.hook_name, self)

    @property
    def residual(self) -> Tensor:
        """The residual from the latest forward, ``[batch, seq, d_model]``."""
        if not self.residuals:
            raise CaptureError(
                f"ResidualRecorder({self.hook_name}) has recorded nothing yet: run the bridge "
                "inside the `with` block (or with rec.fwd_hook in fwd_hooks) first."
            )
        return self.residuals[-1]

    def clear(self) -> None:
        self.residuals.clear()

    def __enter__(self) -> ResidualRecorder:
        if self._context is not None:
            raise CaptureError("this ResidualRecorder is already attached")
        self._context = self.bridge.hooks(fwd_hooks=[self.fwd_hook])
        self._context.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(exc_type, exc, tb)


def run_bridge(
    bridge: Any,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"],
    layer: int,
    *,
    fwd_hooks: Sequence[TLHook] = (),
    edits: Sequence[BoundEdit] = (),
) -> tuple[Float[Tensor, "batch seq d_model"], Float[Tensor, "batch seq vocab"]]:
    """Run the bridge once with ``fwd_hooks``, ``edits`` and a recorder; return (layer residual, logits).

    The recorder is added after the user's hooks and the edits (each on
    ``blocks.L.hook_resid_post``), so their changes (including at
    ``blocks.{layer}.hook_resid_post`` itself) are reflected. Position ids are
    counted over real tokens, as Hugging Face's ``generate`` does.
    """
    check_bridge(bridge)
    _check_layer(bridge, layer)
    recorder = ResidualRecorder(bridge, layer)
    device = _bridge_device(bridge)
    with torch.no_grad():
        logits = bridge.run_with_hooks(
            input_ids.to(device),
            fwd_hooks=[*fwd_hooks, *edit_hooks(bridge, edits), recorder.fwd_hook],
            attention_mask=attention_mask.to(device),
            position_ids=mask_position_ids(attention_mask).to(device),
            return_type="logits",
        )
    if len(recorder.residuals) != 1:
        raise CaptureError(
            f"{recorder.hook_name} fired {len(recorder.residuals)} times in one forward (expected once)"
        )
    return recorder.residual, logits.detach()


@contextmanager
def _no_torchvision_autoinstall() -> Any:
    """Stop TransformerLens from ``pip install``-ing torchvision while it looks for an image processor.

    ``boot_transformers`` loads ``AutoProcessor`` for multimodal models (Gemma-3
    ``*ForConditionalGeneration``) and, when that fails, installs torchvision
    with pip and retries. nla_lens never needs the processor.
    """
    try:
        from transformer_lens.model_bridge.sources.transformers import helpers
    except ImportError:  # layout changed: nothing to guard
        yield
        return
    original = getattr(helpers, "_ensure_torchvision", None)
    if original is None:
        yield
        return
    helpers._ensure_torchvision = lambda: False
    try:
        yield
    finally:
        helpers._ensure_torchvision = original


def boot_bridge(hf_model: nn.Module, tokenizer: Any = None, *, name: str | None = None) -> Any:
    """Wrap an already-loaded Hugging Face model in a raw (unprocessed) ``TransformerBridge``.

    Offline-safe equivalent of ``TransformerBridge.boot_transformers(name,
    hf_model=hf_model, tokenizer=tokenizer, device=<model's device>,
    dtype=<model's dtype>)``. Notes:

    - the bridge is booted on the model's own device (the default would be CUDA
      when present, whatever the model's device);
    - TransformerLens switches ``hf_model`` to eager attention in place;
    - the bridge keeps its own tokenizer: TransformerLens reloads the given one
      from ``name_or_path`` with ``add_bos_token=True``, so a tokenizer built in
      memory (never saved) is refused; ``tokenizer=None`` loads it from ``name``;
    - ``name`` defaults to ``hf_model.config._name_or_path`` (a hub id or local dir);
    - for multimodal models TransformerLens would ``pip install torchvision`` when
      no image processor loads; that is switched off during the boot.

    Weights are not processed, so :func:`check_bridge` passes.
    """
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:
        raise MissingExtraError(
            "transformer_lens", "transformer-lens", "booting a TransformerBridge"
        ) from exc
    name = (
        name
        or getattr(hf_model.config, "_name_or_path", "")
        or getattr(hf_model, "name_or_path", "")
    )
    if not name:
        raise CaptureError(
            "boot_bridge needs the model's hub id or local directory (config._name_or_path is "
            "empty, e.g. for a model built from a config): pass name=..., after saving the "
            "model and tokenizer there if need be."
        )
    init_kwargs = getattr(tokenizer, "init_kwargs", None)
    if (
        tokenizer is not None
        and isinstance(init_kwargs, dict)
        and not init_kwargs.get("name_or_path")
    ):
        raise CaptureError(
            "TransformerLens reloads the bridge's tokenizer from its name_or_path, and this "
            "tokenizer has none (it was built in memory). Save it with "
            "tokenizer.save_pretrained(dir) and pass AutoTokenizer.from_pretrained(dir), or "
            "pass tokenizer=None to load the one saved with the model."
        )
    dtype = next(hf_model.parameters()).dtype
    with _no_torchvision_autoinstall():
        return TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=first_device(hf_model), dtype=dtype
        )
