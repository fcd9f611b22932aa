"""One declarative table of the architectures nla_lens supports.

Per model type it says where the decoder layers live (plain causal LM and
multimodal wrapper), whether the input embedding is scaled by sqrt(d), and the
name of the final norm. Nothing else in nla_lens should guess at module paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UnsupportedArchitectureError

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "arch_for",
    "decoder_layers",
    "embed_scale",
    "is_multimodal",
    "text_config",
    "text_model",
    "text_only_lm",
]


@dataclass(frozen=True)
class ArchSpec:
    """Where things live in one architecture family.

    Paths are dotted attribute paths from the top-level Hugging Face model
    (``*ForCausalLM`` / ``*ForConditionalGeneration``).
    """

    family: str
    text_model_path: str
    multimodal_text_model_path: str | None
    embed_scaled: bool
    final_norm_attr: str = "norm"
    layers_attr: str = "layers"
    #: transformers class of the text-only causal LM, for multimodal wrappers that cannot
    #: generate from ``inputs_embeds`` (Gemma3ForConditionalGeneration).
    text_lm_class: str | None = None


_GEMMA3 = ArchSpec(
    family="gemma3",
    text_model_path="model",
    multimodal_text_model_path="model.language_model",
    embed_scaled=True,
    text_lm_class="Gemma3ForCausalLM",
)
_QWEN2 = ArchSpec(
    family="qwen2", text_model_path="model", multimodal_text_model_path=None, embed_scaled=False
)
_LLAMA = ArchSpec(
    family="llama", text_model_path="model", multimodal_text_model_path=None, embed_scaled=False
)

#: model_type (of the top-level or the text config) -> spec.
ARCHITECTURES: dict[str, ArchSpec] = {
    "gemma3": _GEMMA3,
    "gemma3_text": _GEMMA3,
    "qwen2": _QWEN2,
    "llama": _LLAMA,
}


def text_config(config: Any) -> Any:
    """The config holding the text fields (``config.text_config`` for multimodal wrappers)."""
    sub = getattr(config, "text_config", None)
    return sub if sub is not None else config


def is_multimodal(config: Any) -> bool:
    return getattr(config, "text_config", None) is not None


def arch_for(config: Any) -> ArchSpec:
    """The :class:`ArchSpec` for a Hugging Face config, or a clear error."""
    for model_type in (
        getattr(config, "model_type", None),
        getattr(text_config(config), "model_type", None),
    ):
        if model_type in ARCHITECTURES:
            return ARCHITECTURES[model_type]
    found = getattr(config, "model_type", None)
    raise UnsupportedArchitectureError(
        f"architecture {found!r} is not supported by nla_lens; supported model types: "
        f"{sorted(ARCHITECTURES)}. Add an ArchSpec for it to nla_lens.arch.ARCHITECTURES."
    )


def embed_scale(config: Any) -> float:
    """The factor the model's embedding module applies: sqrt(d) for Gemma, 1 otherwise."""
    spec = arch_for(config)
    return math.sqrt(text_config(config).hidden_size) if spec.embed_scaled else 1.0


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def text_model(model: nn.Module) -> nn.Module:
    """The decoder stack (``*TextModel`` / ``*Model``) of a Hugging Face model.

    Accepts a causal LM, a multimodal wrapper, or the bare decoder itself.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no `.config`; pass a Hugging Face transformers model."
        )
    spec = arch_for(config)
    if hasattr(model, spec.layers_attr) and isinstance(
        getattr(model, spec.layers_attr), nn.ModuleList
    ):
        return model
    path = spec.multimodal_text_model_path if is_multimodal(config) else spec.text_model_path
    if path is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: no multimodal layout known for family {spec.family!r}."
        )
    try:
        return _get_path(model, path)
    except AttributeError as exc:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no `{path}`; expected the {spec.family} layout "
            f"(nla_lens.arch.ARCHITECTURES). Is this a supported transformers version (>=5)?"
        ) from exc


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks; block K's output is the layer-K residual."""
    spec = arch_for(model.config)
    layers = getattr(text_model(model), spec.layers_attr)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: `{spec.layers_attr}` is not a ModuleList"
        )
    return layers


def layers_module_path(model: nn.Module) -> str:
    """Dotted path from ``model`` to its decoder ``ModuleList`` (for nnsight envoys)."""
    spec = arch_for(model.config)
    if hasattr(model, spec.layers_attr) and isinstance(
        getattr(model, spec.layers_attr), nn.ModuleList
    ):
        return spec.layers_attr
    path = spec.multimodal_text_model_path if is_multimodal(model.config) else spec.text_model_path
    return f"{path}.{spec.layers_attr}"


def text_only_lm(model: nn.Module) -> nn.Module:
    """A text-only causal LM view of a multimodal wrapper, sharing its decoder and LM head.

    Gemma3ForConditionalGeneration cannot ``generate(inputs_embeds=...)`` (the AV's way of
    decoding), and its vision tower is dead weight for an AV. The view is built on the
    meta device and then given the wrapper's own modules, so no weights are copied.
    Plain causal LMs are returned as they are.
    """
    import torch
    import transformers

    config = model.config
    if not is_multimodal(config):
        return model
    spec = arch_for(config)
    if spec.text_lm_class is None or spec.multimodal_text_model_path is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: no text-only LM known for {spec.family!r}."
        )
    cls = getattr(transformers, spec.text_lm_class)
    with torch.device("meta"):
        view = cls(text_config(config))
    view.model = _get_path(model, spec.multimodal_text_model_path)
    view.lm_head = model.get_output_embeddings()  # type: ignore[operator]
    view.generation_config = model.generation_config
    leftover = [n for n, p in view.named_parameters() if p.is_meta]
    if leftover:
        raise UnsupportedArchitectureError(
            f"text-only view of {type(model).__name__} left {leftover} unset."
        )
    return view.eval()
