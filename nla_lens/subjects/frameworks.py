"""Which framework a subject model comes from, found without importing any of them.

nla_lens reads residuals from three kinds of object: a plain Hugging Face
``transformers`` model, a TransformerLens ``TransformerBridge``, and an nnsight
model (``LanguageModel`` / ``TransformersModel`` / ``NNsight``). Telling them
apart must not import transformer_lens or nnsight (both are optional extras,
and nnsight patches the interpreter on import), so the check reads the modules
that the object's class and its bases were defined in.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from ..errors import CaptureError

__all__ = ["Framework", "detect_framework", "hf_model_of", "hook_name"]

Framework = Literal["hf", "transformer_lens", "nnsight"]


def hook_name(layer: int) -> str:
    """The TransformerLens hook point holding the layer-``layer`` residual (block output)."""
    return f"blocks.{layer}.hook_resid_post"


def _root_modules(obj: Any) -> set[str]:
    """Top-level package names of the modules that define ``type(obj)`` and its bases."""
    return {(getattr(cls, "__module__", None) or "").split(".")[0] for cls in type(obj).__mro__}


def detect_framework(model: Any) -> Framework:
    """Say whether ``model`` is a Hugging Face model, a TransformerBridge or an nnsight model.

    Decided from the defining modules of ``type(model)`` and its bases
    (``type(model).__module__``), so user subclasses are recognised and neither
    optional package is imported. A legacy ``HookedTransformer`` (gone from
    TransformerLens 4) is refused: boot a ``TransformerBridge`` instead.
    """
    roots = _root_modules(model)
    if "nnsight" in roots:
        return "nnsight"
    if "transformer_lens" in roots:
        if type(model).__name__ == "HookedTransformer" or not hasattr(model, "run_with_hooks"):
            raise CaptureError(
                f"{type(model).__name__} from transformer_lens is not supported; nla_lens reads "
                "residuals from a TransformerBridge. Boot one with "
                "TransformerBridge.boot_transformers(model_id_or_dir) (no weight processing)."
            )
        return "transformer_lens"
    if isinstance(model, nn.Module) and hasattr(model, "config"):
        return "hf"
    raise CaptureError(
        f"cannot capture residuals from a {type(model).__module__}.{type(model).__qualname__}; "
        "expected a Hugging Face transformers model (e.g. AutoModelForCausalLM), a "
        "TransformerLens TransformerBridge, or an nnsight LanguageModel/TransformersModel."
    )


def hf_model_of(model: Any) -> nn.Module:
    """The Hugging Face module behind ``model`` (itself, ``bridge.original_model``, ``envoy._module``)."""
    framework = detect_framework(model)
    if framework == "hf":
        return model
    if framework == "transformer_lens":
        inner = getattr(model, "original_model", None)
    else:
        inner = getattr(model, "_module", None)
    if not isinstance(inner, nn.Module):
        raise CaptureError(
            f"could not find the Hugging Face module inside {type(model).__name__} "
            f"(framework {framework!r}); is this a supported version of it?"
        )
    return inner
