"""A memory plan before anything loads: do subject, AV and AR fit a GPU, and at what precision?

:func:`plan` reads the checkpoints' ``config.json`` (a local directory or a hub id: only the
config is downloaded), builds each model on the meta device (no weights, no memory), counts
what nla_lens would put on the GPU, and prices it at bf16, int8 and 4-bit. The AV's KV cache
for a batch of explanations comes on top. What is counted:

- subject: the whole model as its base model loads (Gemma-3's vision tower included);
- AV: the text decoder and LM head (a multimodal wrapper's vision tower is dropped);
- AR: the K+1 decoder blocks and the ``d x d`` value head (no LM head, no final norm).

Quantized bytes follow how nla_lens quantizes (:mod:`nla_lens.core.quantization`): the Linear
weights of the decoder blocks at 1 byte (``int8``, plus a float32 scale per output row) or
half a byte (``nf4``, plus a float32 scale per 64 weights); ``4bit`` is NF4 except the
``v_proj`` and ``down_proj`` weights, at int8. Embeddings, LM head, norms and biases stay bf16.
The combinations tried are of bf16, int8 and 4bit; the table also prices ``nf4``.
Activations and the CUDA context are not counted: ``reserve`` (10% by default) is kept free.
"""

from __future__ import annotations

import html
import itertools
import math
import numbers
import operator
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, SupportsFloat, SupportsIndex

from ..errors import CheckpointError, DeviceError, NLAError

__all__ = [
    "COLUMNS",
    "PRECISIONS",
    "MemoryPlan",
    "ModelMemory",
    "count_model",
    "parse_bytes",
    "plan",
]

Precision = Literal["bf16", "int8", "4bit", "nf4"]
#: The precisions the plan combines (``nf4``, smaller and less faithful, is priced in the table).
PRECISIONS: tuple[Precision, ...] = ("bf16", "int8", "4bit")
COLUMNS: tuple[Precision, ...] = (*PRECISIONS, "nf4")
Role = Literal["subject", "av", "ar"]
GB = 10**9
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(value: str | SupportsFloat) -> int:
    """``"80GB"``, ``"80 GiB"``, ``"141e9"`` or a number of bytes, as bytes."""
    amount: float | None = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy numbers too
        try:
            amount = float(value)  # 10**400 overflows here: not an amount of memory
        except OverflowError:
            amount = None
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).upper() in _UNITS:
            amount = float(m.group(1)) * _UNITS[m.group(2).upper()]  # "1e400GB" is inf
    if amount is not None and math.isfinite(amount) and amount >= 1:
        return int(amount)
    raise DeviceError(
        f"gpu memory {value!r} is not an amount of memory; write e.g. '80GB', '24GiB' or a "
        "number of bytes."
    )


@dataclass(frozen=True)
class ModelMemory:
    """What one model puts on the GPU."""

    role: Role
    name: str
    params: int  # every parameter counted (tied weights once)
    quantizable: int  # of which Linear weights of the decoder blocks
    quant_rows: int  # output rows of those Linears (int8 keeps one float32 scale each)
    kv_bytes_per_token: int  # bf16 K and V over all layers, per token of one sequence (AV only)
    kept: int = 0  # of the quantizable, the v_proj / down_proj weights "4bit" keeps at int8
    kept_rows: int = 0  # their output rows

    def bytes(self, precision: Precision) -> int:
        rest = 2 * (self.params - self.quantizable)
        int8 = lambda n, rows: n + 4 * rows  # noqa: E731
        nf4 = lambda n: n // 2 + 4 * math.ceil(n / 64)  # noqa: E731
        if precision == "bf16":
            return 2 * self.params
        if precision == "int8":
            return rest + int8(self.quantizable, self.quant_rows)
        if precision == "nf4":
            return rest + nf4(self.quantizable)
        return rest + nf4(self.quantizable - self.kept) + int8(self.kept, self.kept_rows)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes of subject, AV and AR at each precision, the AV's KV cache, and what fits."""

    models: tuple[ModelMemory, ...]
    gpu_memory: int
    batch: int
    sequence_tokens: int  # AV prompt + explanation, per sequence
    reserve: float = 0.1
    combinations: tuple[tuple[tuple[Precision, ...], int, bool], ...] = field(default=())

    @property
    def kv_cache(self) -> int:
        return sum(m.kv_bytes_per_token for m in self.models) * self.batch * self.sequence_tokens

    @property
    def usable(self) -> int:
        return int(self.gpu_memory * (1 - self.reserve))

    def total(self, precisions: tuple[Precision, ...]) -> int:
        return self.kv_cache + sum(m.bytes(p) for m, p in zip(self.models, precisions, strict=True))

    def fits(self, precisions: tuple[Precision, ...]) -> bool:
        return self.total(precisions) <= self.usable

    def best(self) -> tuple[Precision, ...] | None:
        """The most precise combination that fits (fewest quantized bytes lost), or None."""
        fitting = [c for c, _, ok in self.combinations if ok]
        rank = {"bf16": 0, "int8": 1, "4bit": 2, "nf4": 3}
        return min(fitting, key=lambda c: (sum(rank[p] for p in c), c), default=None)

    def to_text(self) -> str:
        g = lambda b: f"{b / GB:8.2f} GB"  # noqa: E731
        lines = [f"{'model':<9} {'params':>15}  " + "  ".join(f"{p:>11}" for p in COLUMNS)]
        for m in self.models:
            row = "  ".join(g(m.bytes(p)) for p in COLUMNS)
            lines.append(f"{m.role:<9} {m.params:>15,}  {row}   {m.name}")
        lines.append(
            f"AV KV cache (bf16) for {self.batch} explanations of {self.sequence_tokens} tokens: "
            f"{self.kv_cache / GB:.2f} GB"
        )
        lines.append(
            f"GPU memory {self.gpu_memory / GB:.1f} GB, {self.reserve:.0%} kept free for "
            f"activations and the CUDA context: {self.usable / GB:.1f} GB usable"
        )
        roles = " / ".join(m.role for m in self.models)
        for combo, total, ok in self.combinations:
            mark = "fits" if ok else "does not fit"
            lines.append(f"  {roles} at {' / '.join(combo)}: {total / GB:7.2f} GB  {mark}")
        best = self.best()
        if best is None:
            lines.append("nothing fits this GPU")
        else:
            lines.append(f"most precise that fits: {' / '.join(best)}; load it with")
            lines.append(f"  {self.load_code(best)}")
        return "\n".join(lines)

    def load_code(self, precisions: tuple[Precision, ...]) -> str:
        """The calls that load ``precisions`` (one per model, in :attr:`models` order):
        bf16 is ``quantization=None``, the others the names of the same spelling
        (``"torchao-int8"`` is priced as int8 too)."""
        q = {
            m.role: (None if p == "bf16" else p)
            for m, p in zip(self.models, precisions, strict=True)
        }
        calls = []
        if "subject" in q:
            calls.append(f"load_subject(subject, quantization={q['subject']!r})")
        args = "av" + (", ar" if "ar" in q else "") + f", quantization={q['av']!r}"
        if "ar" in q and q["ar"] != q["av"]:
            args += f", ar_quantization={q['ar'] or 'none'!r}"
        calls.append(f"NLA.from_pretrained({args})")
        return "; ".join(calls)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.to_text())}</pre>"


def _unique_params(model: Any) -> tuple[int, int, int, int, int]:
    """(all parameters, Linear weights inside the decoder blocks, their output rows, and of
    those the weights and rows of the layers "4bit" keeps at int8)."""
    from torch import nn

    from .arch import decoder_layers
    from .quantization import KEPT_INT8

    total = sum(p.numel() for p in model.parameters())
    quant = rows = kept = kept_rows = 0
    for name, mod in decoder_layers(model).named_modules():
        if isinstance(mod, nn.Linear):
            quant += mod.weight.numel()
            rows += mod.weight.shape[0]
            if name.rsplit(".", 1)[-1] in KEPT_INT8:
                kept += mod.weight.numel()
                kept_rows += mod.weight.shape[0]
    return total, quant, rows, kept, kept_rows


def count_model(config: Any, role: Role, name: str = "") -> ModelMemory:
    """Build ``config``'s model on the meta device and count what ``role`` puts on the GPU."""
    import torch
    import transformers

    from .arch import arch_for, text_config, text_model

    arch_for(config)  # a clear error for an unsupported architecture
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    tc = text_config(config)
    d = int(tc.hidden_size)
    total, quant, rows, kept, kept_rows = _unique_params(model)
    if role != "subject":  # decoder + LM head only: a multimodal wrapper's vision tower stays off
        lm_head = model.get_output_embeddings()
        params = {id(p): p for p in text_model(model).parameters()}
        params |= {id(p): p for p in lm_head.parameters()} if lm_head is not None else {}
        total = sum(p.numel() for p in params.values())
    kv = 0
    if role == "av":
        heads = int(getattr(tc, "num_key_value_heads", None) or tc.num_attention_heads)
        head_dim = int(getattr(tc, "head_dim", None) or d // tc.num_attention_heads)
        kv = 2 * 2 * int(tc.num_hidden_layers) * heads * head_dim
    elif role == "ar":  # the LM head is dropped; the value head added
        head = model.get_output_embeddings()
        tied = head is not None and head.weight is model.get_input_embeddings().weight
        if head is not None and not tied:
            total -= head.weight.numel()
        total += d * d  # value_head
        total -= d  # the final norm becomes the identity
    return ModelMemory(role, name, total, quant, rows, kv, kept, kept_rows)


_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def _config(name_or_path: str | os.PathLike[str], who: str) -> Any:
    from transformers import AutoConfig

    from .arch import text_config

    try:
        config = AutoConfig.from_pretrained(str(name_or_path))
    except Exception as exc:  # OSError, ValueError, hub errors
        raise CheckpointError(
            f"{who} {str(name_or_path)!r}: cannot read its config.json ({type(exc).__name__}: "
            f"{exc}). Pass a checkpoint directory or a hub id (gated repos need HF_TOKEN)."
        ) from exc
    tc = text_config(config)
    for key in (*_SIZES, "intermediate_size"):
        n = getattr(tc, key, None)
        if n is None and key == "intermediate_size":
            continue  # not every architecture names its MLP width so
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CheckpointError(
                f"{who} {str(name_or_path)!r}: config.json has {key}={n!r}, not a whole number "
                ">= 1, so it describes no model that can exist. Fix or re-download config.json."
            )
    return config


def _count(src: str | os.PathLike[str], role: Role) -> ModelMemory:
    """``count_model`` of ``src``'s config, with anything its config cannot build named."""
    config = _config(src, role)
    name = Path(str(src)).name if Path(str(src)).is_dir() else str(src)
    try:
        return count_model(config, role, name)
    except NLAError:
        raise
    except Exception as exc:  # a config transformers cannot build, even on the meta device
        raise CheckpointError(
            f"{role} {str(src)!r}: its config.json describes no model transformers can build "
            f"({type(exc).__name__}: {exc}). Fix or re-download config.json."
        ) from exc


def _whole(what: str, n: Any, least: int) -> int:
    """``n`` as a whole number >= ``least`` (numpy integers too), or a DeviceError naming it."""
    if not isinstance(n, bool):
        try:
            value = operator.index(n)
        except TypeError:
            pass
        else:
            if value >= least:
                return value
    raise DeviceError(f"{what}={n!r} must be a whole number >= {least}.")


def plan(
    av: str | os.PathLike[str],
    ar: str | os.PathLike[str] | None = None,
    *,
    subject: str | os.PathLike[str] | None = None,
    gpu_memory: str | SupportsFloat = "80GB",
    batch: SupportsIndex = 64,
    explanation_tokens: SupportsIndex = 200,
    prompt_tokens: SupportsIndex = 110,
    reserve: float = 0.1,
) -> MemoryPlan:
    """The memory plan of a pair (and a subject): bytes at bf16 / int8 / 4bit (and nf4), the AV's KV
    cache for ``batch`` explanations of ``prompt_tokens + explanation_tokens`` tokens, and
    which combinations fit ``gpu_memory``. Reads configs only; loads no weights.

    >>> print(nla_lens.plan("kitft/nla-gemma3-12b-L32-av", "kitft/nla-gemma3-12b-L32-ar",
    ...                     subject="google/gemma-3-12b-it", gpu_memory="80GB"))  # doctest: +SKIP
    """
    batch = _whole("batch", batch, 1)
    explanation_tokens = _whole("explanation_tokens", explanation_tokens, 1)
    prompt_tokens = _whole("prompt_tokens", prompt_tokens, 0)
    if (
        isinstance(reserve, bool)
        or not isinstance(reserve, numbers.Real)
        or not 0 <= float(reserve) < 1
    ):
        raise DeviceError(
            f"reserve={reserve!r} is the fraction of GPU memory kept free: a number in [0, 1), "
            "e.g. reserve=0.1."
        )
    reserve = float(reserve)
    memory = parse_bytes(gpu_memory)
    parts: list[tuple[Role, Any]] = [("subject", subject), ("av", av), ("ar", ar)]
    models = tuple(_count(src, role) for role, src in parts if src is not None)
    p = MemoryPlan(models, memory, batch, prompt_tokens + explanation_tokens, reserve)
    combos = []
    for combo in itertools.product(PRECISIONS, repeat=len(models)):
        combos.append((combo, p.total(combo), p.fits(combo)))
    return MemoryPlan(models, memory, batch, p.sequence_tokens, reserve, tuple(combos))
