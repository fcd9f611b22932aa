"""nla_lens: read residual-stream activations with Natural Language Autoencoders.

>>> from nla_lens import NLA
>>> nla = NLA.from_pretrained("kitft/nla-gemma3-12b-L32-av", "kitft/nla-gemma3-12b-L32-ar")  # doctest: +SKIP
>>> nla.explain(vectors)  # doctest: +SKIP
"""

from __future__ import annotations

from .backends.base import GenerationBackend, GenerationOutput, SamplingParams
from .errors import (
    BackendError,
    CaptureError,
    CheckpointNotFoundError,
    IncompleteResultsError,
    InjectionError,
    MissingExtraError,
    MissingValueHeadError,
    NLAError,
    PairMismatchError,
    RoleMismatchError,
    SidecarError,
    SubjectMismatchError,
    TokenizerDriftError,
    UnsupportedArchitectureError,
    VectorError,
)
from .explanation import Explanation, extract_explanation
from .metrics import PUBLISHED_BASELINES, Baseline, Scores, estimate_baseline
from .pair import NLA
from .provenance import Provenance
from .reconstructor import Reconstructor
from .releases import RELEASED_PAIRS, ReleasedPair
from .sidecar import NLAMeta, load_sidecar
from .verbalizer import Verbalizer

__version__ = "0.1.0"

__all__ = [
    "NLA",
    "PUBLISHED_BASELINES",
    "RELEASED_PAIRS",
    "BackendError",
    "Baseline",
    "CaptureError",
    "CheckpointNotFoundError",
    "Explanation",
    "GenerationBackend",
    "GenerationOutput",
    "IncompleteResultsError",
    "InjectionError",
    "MissingExtraError",
    "MissingValueHeadError",
    "NLAError",
    "NLAMeta",
    "PairMismatchError",
    "Provenance",
    "Reconstructor",
    "ReleasedPair",
    "RoleMismatchError",
    "SamplingParams",
    "Scores",
    "SidecarError",
    "SubjectMismatchError",
    "TokenizerDriftError",
    "UnsupportedArchitectureError",
    "VectorError",
    "Verbalizer",
    "__version__",
    "estimate_baseline",
    "extract_explanation",
    "load_sidecar",
]
