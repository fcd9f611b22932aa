"""Quantized loading of AV, AR and subject: the names, the backends, the checks.

``quantization=`` takes one of :data:`QUANTIZATIONS` (``None`` or ``"none"`` = full
precision). The decoder's Linear weights are quantized through transformers'
``quantization_config``; embeddings, the LM head, norms and the AR's ``d x d`` value head
stay at the load dtype (so the AV's injected row is never quantized). These are the
layouts :func:`nla_lens.plan` prices as ``int8``, ``4bit`` and ``nf4``.

``"4bit"`` is a mixed 4-bit layout in the manner of llama.cpp's Q4_K_M, which keeps the
attention value and MLP output projections at more bits than the rest: every decoder
Linear is NF4 (one absmax per 64 weights, no double quantization) except the
``v_proj`` and ``down_proj`` weights (:data:`KEPT_INT8`), which are int8 weight-only
(torchao, one scale per output row). On the toy AV this takes greedy explanations equal
to full precision from 57% (``"nf4"``, every Linear NF4) to 78% of fresh held-out
residuals, for 1.4 GB more than pure NF4 on the 12B AV (see docs/gpu.md).

NF4 computes at the load dtype (``bnb_4bit_compute_dtype``). On a CPU with AVX512-BF16,
bitsandbytes would repack the weights for a fused kernel that casts activations and
scales to bfloat16 whatever that dtype is; :func:`keep_compute_dtype` turns that off
unless the load dtype is bfloat16, so a float32 load computes in float32 on every CPU, as
it does on CUDA.

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
    "KEPT_INT8",
    "QUANTIZATIONS",
    "QuantScheme",
    "check_quantized",
    "finish_quantization",
    "keep_compute_dtype",
    "quantization_config",
    "quantization_of",
    "resolve_quantization",
    "weight_bytes",
]

#: The extra that installs both backends: ``pip install 'nla-lens[quant]'``.
EXTRA = "quant"

#: The Linear layers ``"4bit"`` keeps at int8 (by the last part of their module name): the
#: attention value and MLP output projections, as llama.cpp's Q4_K_M keeps them at more bits.
#: Gemma, Llama, Qwen and Mistral name them alike.
KEPT_INT8: tuple[str, ...] = ("v_proj", "down_proj")


@dataclass(frozen=True)
class QuantScheme:
    """One way of loading quantized: its name, backend package and what it does."""

    name: str
    backend: Literal["bitsandbytes", "torchao"]
    plan_precision: Literal["int8", "4bit", "nf4"]  # the column of nla_lens.plan that prices it
    description: str
    kept_int8: tuple[str, ...] = ()  # Linear names kept out of NF4, quantized int8 by torchao

    @property
    def backends(self) -> tuple[str, ...]:
        """The packages this scheme needs."""
        return (self.backend, "torchao") if self.kept_int8 else (self.backend,)


QUANTIZATIONS: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme("int8", "bitsandbytes", "int8", "LLM.int8() 8-bit weights (bitsandbytes)"),
        QuantScheme(
            "4bit",
            "bitsandbytes",
            "4bit",
            "4-bit NF4 weights, v_proj and down_proj int8 (bitsandbytes + torchao), compute "
            "at the load dtype",
            kept_int8=KEPT_INT8,
        ),
        QuantScheme(
            "nf4",
            "bitsandbytes",
            "nf4",
            "4-bit NF4 for every Linear weight, compute at the load dtype (bitsandbytes); "
            "smallest, least faithful",
        ),
        QuantScheme("torchao-int8", "torchao", "int8", "int8 weight-only (torchao)"),
    )
}
_ALIASES = {"8bit": "int8"}


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
    """The scheme's main backend module, once every package it needs imports."""
    modules = []
    for package in scheme.backends:
        try:
            modules.append(importlib.import_module(package))
        except ImportError as exc:
            raise MissingQuantizationBackendError(
                package, EXTRA, f"quantization={scheme.name!r}"
            ) from exc
    return modules[0]


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
            lin = lib.nn.Linear4bit(
                64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4"
            ).to(device)
            lin(x)
            if scheme.kept_int8:
                return _probe("torchao-int8", device)
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
    skip = {"llm_int8_skip_modules": ["lm_head", *scheme.kept_int8]} if scheme.kept_int8 else {}
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, **skip
    )


def _kept(scheme: QuantScheme) -> Any:
    """The filter that picks the Linear layers ``scheme`` keeps at int8."""
    from torch import nn

    def pick(module: Any, fqn: str) -> bool:
        return isinstance(module, nn.Linear) and fqn.rsplit(".", 1)[-1] in scheme.kept_int8

    return pick


def finish_quantization(model: Any, scheme: QuantScheme) -> int:
    """After a ``scheme`` load: quantize the Linear layers it keeps out of NF4
    (:data:`KEPT_INT8`) to int8 weight-only with torchao. Returns how many."""
    if not scheme.kept_int8:
        return 0
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    pick = _kept(scheme)
    n = sum(pick(m, name) for name, m in model.named_modules())
    if n:
        quantize_(model, Int8WeightOnlyConfig(), filter_fn=pick)
    return n


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
    ``"int8"``; ``"4bit"`` (NF4 with the :data:`KEPT_INT8` layers, and only they, torchao
    int8); ``"nf4"`` (every quantized Linear NF4; ``"4bit-fp4"`` for FP4);
    ``"torchao-int8"`` (or ``"torchao-<tensor class>"``); ``"mixed"`` for another mix;
    or None for none."""
    if model is None or not hasattr(model, "named_modules"):
        return None
    kinds: dict[str, set[str]] = {}  # kind -> last parts of the names holding it
    for name, module in model.named_modules():
        kind = type(module).__name__
        weight = getattr(module, "weight", None)
        if kind == "Linear8bitLt":
            got = "int8"
        elif kind in ("Linear4bit", "LinearNF4", "LinearFP4"):
            quant_type = getattr(weight, "quant_type", "nf4")
            got = "nf4" if quant_type == "nf4" else f"4bit-{quant_type}"
        elif weight is not None and type(weight).__module__.startswith("torchao"):
            cls = type(weight).__name__
            got = "torchao-int8" if cls == "Int8Tensor" else f"torchao-{cls}"
        else:
            continue
        kinds.setdefault(got, set()).add(name.rsplit(".", 1)[-1])
    if len(kinds) <= 1:
        return next(iter(kinds), None)
    kept = set(KEPT_INT8)
    if set(kinds) == {"nf4", "torchao-int8"} and kinds["torchao-int8"] <= kept:
        return "4bit" if not kinds["nf4"] & kept else "mixed"
    return "mixed"


def check_quantized(model: Any, scheme: QuantScheme | None, what: str) -> str | None:
    """The quantization read back from ``model``, refused unless it is what was asked."""
    got = quantization_of(model)
    want = None if scheme is None else scheme.name
    if got != want:
        raise QuantizationError(
            f"{what}: asked for quantization={want!r} but the loaded model is {got or 'not quantized'}; "
            f"{'/'.join(scheme.backends) if scheme else 'transformers'} did not quantize its "
            "Linear layers as that scheme does (an architecture the backend skips, or one "
            f"without {'/'.join(KEPT_INT8)} layers for '4bit'?). Load it with another "
            "quantization, or None."
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
