"""Generation backends: in-process transformers (default) and serving-engine clients.

Server clients (``sglang``, ``vllm``) import their HTTP stack (aiohttp, extra
``serve``) and the vLLM engine (``vllm``) lazily, when first used.
"""

from __future__ import annotations

from ..core.backend import GenerationBackend, GenerationOutput, Sampling
from ..core.local_backend import LocalBackend
from .sglang import SGLangBackend
from .vllm import VLLMEngineBackend, VLLMServerBackend

__all__ = [
    "GenerationBackend",
    "GenerationOutput",
    "LocalBackend",
    "SGLangBackend",
    "Sampling",
    "VLLMEngineBackend",
    "VLLMServerBackend",
]
