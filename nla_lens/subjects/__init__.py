"""Subject models: one adapter for Hugging Face, TransformerBridge and nnsight models.

Layer K is the output of decoder block K (0-indexed): Hugging Face
``hidden_states[K + 1]``, TransformerLens ``blocks.K.hook_resid_post``, nnsight
``.layers[K].output``. :func:`as_subject` wraps a model once
(:class:`Subject`); :func:`capture_residual` is the one capture entry point;
:class:`ResidualEdit` is the one edit type; positions always count over each
row's real tokens (:mod:`.positions`). Importing this package imports neither
nnsight nor transformer_lens.
"""

from __future__ import annotations

from .bridge import ResidualRecorder, boot_bridge, bridge_changes_residuals, check_bridge
from .capture import Captured, capture_residual
from .edits import Edits, ResidualEdit, as_edits, merge_edits, residual_edit
from .frameworks import Framework, detect_framework, hf_model_of, hook_name
from .generate import GeneratedCapture, generate_and_capture
from .guards import SubjectInfo, check_subject, subject_info
from .inputs import Encoded, encode
from .load import load_subject
from .nnsight import layer_envoy, residual
from .positions import Positions, relative_positions, resolve_positions
from .residuals import CapturedResidual, real_positions
from .subject import Subject, as_subject

__all__ = [
    "Captured",
    "CapturedResidual",
    "Edits",
    "Encoded",
    "Framework",
    "GeneratedCapture",
    "Positions",
    "ResidualEdit",
    "ResidualRecorder",
    "Subject",
    "SubjectInfo",
    "as_edits",
    "as_subject",
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
    "layer_envoy",
    "load_subject",
    "merge_edits",
    "real_positions",
    "relative_positions",
    "residual",
    "residual_edit",
    "resolve_positions",
    "subject_info",
]
