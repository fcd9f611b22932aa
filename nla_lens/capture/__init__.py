"""Read layer-K residuals from a subject model: Hugging Face, TransformerBridge or nnsight.

Layer K is the output of decoder block K (0-indexed): Hugging Face
``hidden_states[K + 1]``, TransformerLens ``blocks.K.hook_resid_post``, nnsight
``.layers[K].output``. :func:`capture_residual` is the one entry point; the
framework modules (:mod:`.hf`, :mod:`.tlens`, :mod:`.nns`) are thin adapters
that only find the residual. Importing this package imports neither nnsight nor
transformer_lens.
"""

from __future__ import annotations

from .api import Captured, capture_residual, model_tokenizer
from .frameworks import Framework, detect_framework, hf_model_of, hook_name
from .generate import GeneratedCapture, generate_and_capture
from .guards import SubjectInfo, check_subject, subject_info
from .inputs import Encoded, encode
from .nns import residual
from .positions import resolve_positions
from .tlens import ResidualRecorder, boot_bridge, bridge_changes_residuals, check_bridge

__all__ = [
    "Captured",
    "Encoded",
    "Framework",
    "GeneratedCapture",
    "ResidualRecorder",
    "SubjectInfo",
    "boot_bridge",
    "bridge_changes_residuals",
    "capture_residual",
    "check_bridge",
    "check_subject",
    "detect_framework",
    "encode",
    "generate_and_capture",
    "hf_model_of",
    "hook_name",
    "model_tokenizer",
    "residual",
    "resolve_positions",
    "subject_info",
]
