"""Quantized loading of AV, AR and subject: the names, the backends, the checks.

``quantization=`` takes one of :data:`QUANTIZATIONS` (``None`` or ``"none"`` = full
precision). The decoder's Linear weights are quantized through transformers'
``quantization_config``; embeddings, the LM head, norms and the AR's ``d x d`` value head
stay at the load dtype (so the AV's injected row is never quantized). These are the
layouts :func:`nla_lens.plan` prices as ``int8`` and ``4bit``.

4-bit is NF4 (one absmax per 64 weights, no double quantization) and computes at the
load dtype (``bnb_4bit_compute_dtype``). On a CPU with AVX512-BF16, bitsandbytes would
repack the weights for a fused kernel that casts activations and scales to bfloat16
whatever that dtype is; :func:`keep_compute_dtype` turns that off unless the load dtype is
bfloat16, so a float32 load computes in float32 on every CPU, as it does on CUDA.

What a loaded model is quantized with is read back from its modules
(:func:`quantization_of`), so a model quantized by hand is recorded as well, and every
provenance, cache key and job fingerprint carries it: a quantized result never mixes
with a full-precision one.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import (
    MissingQuantizationBackendError,
    QuantizationDeviceError,
    QuantizationError,
    UnknownQuantizationError,
)

__all__ = [
    "QUANTIZATIONS",
    "QuantScheme",
    "check_quantized",
    "keep_compute_dtype",
    "quantization_config",
    "quantization_of",
    "resolve_quantization",
    "weight_bytes",
]

#: The extra that installs both backends: ``pip install 'nla-lens[quant]'``.
EXTRA = "quant"


@dataclass(frozen=True)
class QuantScheme:
    """One way of loading quantized: its name, backend package and what it does."""

    name: str
    backend: Literal["bitsandbytes", "torchao"]
    plan_precision: Literal["int8", "4bit"]  # the column of nla_lens.plan that prices it
    description: str


QUANTIZATIONS: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme("int8", "bitsandbytes", "int8", "LLM.int8() 8-bit weights (bitsandbytes)"),
        QuantScheme(
            "4bit",
            "bitsandbytes",
            "4bit",
            "4-bit NF4 weights, compute at the load dtype (bitsandbytes)",
        ),
        QuantScheme("torchao-int8", "torchao", "int8", "int8 weight-only (torchao)"),
    )
}
_ALIASES = {"8bit": "int8", "nf4": "4bit"}


def resolve_quantization(name: object) -> QuantScheme | None:
    """The scheme named ``name`` (None or ``"none"``: full precision; ``"8bit"`` and ``"nf4"``
    are read as ``"int8"`` and ``"4bit"``)."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise UnknownQuantizationError(
            f"quantization={name!r} must be a name: one of {list(QUANTIZATIONS)}, or None for "
            "full precision."
        )
    key = name.strip().lower()
    if key == "none":
        return None
    key = _ALIASES.get(key, key)
    if key not in QUANTIZATIONS:
        listed = ", ".join(f"{n!r} ({s.description})" for n, s in QUANTIZATIONS.items())
        raise UnknownQuantizationError(
            f"quantization={name!r} is not a quantization nla_lens loads; use one of {listed}, "
            "or None for full precision. nla_lens.plan(...) shows what each saves."
        )
    return QUANTIZATIONS[key]


def _backend(scheme: QuantScheme) -> Any:
    try:
        return importlib.import_module(scheme.backend)
    except ImportError as exc:
        raise MissingQuantizationBackendError(
            scheme.backend, EXTRA, f"quantization={scheme.name!r}"
        ) from exc


@functools.cache
def _probe(scheme_name: str, device: str) -> str | None:
    """Quantize and run one small Linear on ``device``; the backend's complaint, or None."""
    from torch import nn

    scheme = QUANTIZATIONS[scheme_name]
    lib = _backend(scheme)
    x = torch.randn(2, 64, device=device)
    try:
        if scheme.backend == "torchao":
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            lin = nn.Linear(64, 64, bias=False).to(device)
            quantize_(lin, Int8WeightOnlyConfig())
            lin(x)
        elif scheme.name == "int8":
            lin = lib.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False).to(device)
            lin(x.half())
        else:
            lin = lib.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32).to(device)
            lin(x)
    except Exception as exc:  # NotImplementedError, RuntimeError: no kernel for this device
        return f"{type(exc).__name__}: {exc}"
    return None


def check_device(scheme: QuantScheme, device: torch.device) -> None:
    """Refuse a device the backend cannot quantize on, before anything is downloaded."""
    _backend(scheme)
    if device.type == "meta":
        raise QuantizationDeviceError(
            f"quantization={scheme.name!r} on device='meta': the meta device holds no weights to "
            "quantize. For sizes without loading anything use nla_lens.plan(...)."
        )
    problem = _probe(scheme.name, str(device))
    if problem is not None:
        raise QuantizationDeviceError(
            f"quantization={scheme.name!r} ({scheme.description}) cannot run on device="
            f"'{device}' with the installed {scheme.backend} ({problem}). Use another device "
            "(bitsandbytes runs on CUDA and CPU), another quantization, or None."
        )


class _Once(logging.Filter):
    """Lets each message through once (bitsandbytes logs its int8 cast at every matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _log_once(name: str) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _Once) for f in logger.filters):
        logger.addFilter(_Once())


def quantization_config(scheme: QuantScheme, dtype: torch.dtype) -> Any:
    """The transformers ``quantization_config`` that loads ``scheme``."""
    _backend(scheme)
    if scheme.backend == "bitsandbytes":
        _log_once("bitsandbytes.autograd._functions")
    if scheme.backend == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    from transformers import BitsAndBytesConfig

    if scheme.name == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
    )


def keep_compute_dtype(model: Any, dtype: torch.dtype) -> int:
    """Keep a 4-bit model's CPU matmuls at ``dtype``: bitsandbytes' AVX512-BF16 kernel
    (taken at the first CPU forward when the CPU has the instructions) casts to bfloat16,
    so unless ``dtype`` is bfloat16 it is switched off, layer by layer, before any forward.
    Returns how many layers were switched."""
    if dtype == torch.bfloat16:
        return 0
    switched = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            switched += 1
    return switched


def quantization_of(model: Any) -> str | None:
    """What a loaded model's Linear weights are quantized with, read from its modules:
    ``"int8"``, ``"4bit"`` (NF4; ``"4bit-fp4"`` for FP4), ``"torchao-int8"`` (or
    ``"torchao-<tensor class>"``), or None for none."""
    if model is None or not hasattr(model, "modules"):
        return None
    for module in model.modules():
        kind = type(module).__name__
        if kind == "Linear8bitLt":
            return "int8"
        weight = getattr(module, "weight", None)
        if kind in ("Linear4bit", "LinearNF4", "LinearFP4"):
            quant_type = getattr(weight, "quant_type", "nf4")
            return "4bit" if quant_type == "nf4" else f"4bit-{quant_type}"
        if weight is not None and type(weight).__module__.startswith("torchao"):
            cls = type(weight).__name__
            return "torchao-int8" if cls == "Int8Tensor" else f"torchao-{cls}"
    return None


def check_quantized(model: Any, scheme: QuantScheme | None, what: str) -> str | None:
    """The quantization read back from ``model``, refused unless it is what was asked."""
    got = quantization_of(model)
    want = None if scheme is None else scheme.name
    if got != want:
        raise QuantizationError(
            f"{what}: asked for quantization={want!r} but the loaded model is {got or 'not quantized'}; "
            f"{scheme.backend if scheme else 'transformers'} did not quantize its Linear layers "
            "(an architecture the backend skips?). Load it with quantization=None."
        )
    return got


def _tensor_bytes(t: Any) -> int:
    if type(t).__module__.startswith("torchao") and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()  # the int8 data and its scales
        return sum(_tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    n = int(t.numel() * t.element_size())
    state = getattr(t, "quant_state", None)  # bitsandbytes 4-bit: one absmax per block
    absmax = getattr(state, "absmax", None)
    if isinstance(absmax, torch.Tensor):
        n += int(absmax.numel() * absmax.element_size())
    scales = getattr(t, "SCB", None)  # bitsandbytes int8: one scale per output row
    if isinstance(scales, torch.Tensor):
        n += int(scales.numel() * scales.element_size())
    return n


def weight_bytes(model: Any) -> int:
    """Bytes a loaded model's parameters and buffers take, quantized ones counted as they
    are stored (int8 or packed 4-bit data plus their scales; tied weights once)."""
    tensors = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return sum(_tensor_bytes(t) for t in tensors.values())
