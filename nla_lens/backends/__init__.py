"""Generation backends: in-process transformers (default) and serving-engine clients.

Server clients (``sglang``, ``vllm``) import their HTTP stack lazily.
"""

from __future__ import annotations

from .base import GenerationBackend, GenerationOutput, SamplingParams
from .local import LocalBackend

__all__ = ["GenerationBackend", "GenerationOutput", "LocalBackend", "SamplingParams"]
