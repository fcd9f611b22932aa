"""Loading a subject model from a directory or a hub id, optionally quantized."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..core.loading import load_causal_lm, resolve_device, resolve_dtype
from ..core.quantization import check_device, resolve_quantization

__all__ = ["load_subject"]


def load_subject(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    quantization: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
) -> Any:
    """A Hugging Face subject model in eval mode on ``device`` (CUDA when available).

    ``quantization="int8" | "4bit" | "nf4" | "torchao-int8"`` loads its Linear weights quantized
    (``nla-lens[quant]``; :func:`nla_lens.plan` says what fits). Its residuals then differ a
    little from the full model's; :class:`~nla_lens.subjects.SubjectInfo` and transcripts
    say so. The tokenizer: :func:`nla_lens.core.loading.shared_tokenizer` (one parse shared
    with the pair's when the files are the same).

    >>> model = nla_lens.load_subject("google/gemma-3-12b-it", quantization="int8")  # doctest: +SKIP
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    scheme = resolve_quantization(quantization)
    if scheme is not None:
        check_device(scheme, dev)
    hub = {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}
    model = load_causal_lm(os.fspath(name_or_path), dt, scheme, dev, **hub)
    return (model if scheme is not None else model.to(dev)).eval()
