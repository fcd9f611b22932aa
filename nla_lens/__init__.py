"""nla_lens: read residual-stream activations with Natural Language Autoencoders.

>>> from nla_lens import NLA
>>> nla = NLA.from_pretrained("kitft/nla-gemma3-12b-L32-av", "kitft/nla-gemma3-12b-L32-ar")  # doctest: +SKIP
>>> nla.explain(vectors)  # doctest: +SKIP
"""

from __future__ import annotations

from .backends import (
    GenerationBackend,
    GenerationOutput,
    LocalBackend,
    SamplingParams,
    SGLangBackend,
    VLLMEngineBackend,
    VLLMServerBackend,
)
from .cache import ExplanationCache
from .embedding import EmbeddingTable
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
from .jobs import JobResult, explain_dataset
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
    "EmbeddingTable",
    "Explanation",
    "ExplanationCache",
    "GenerationBackend",
    "GenerationOutput",
    "IncompleteResultsError",
    "InjectionError",
    "JobResult",
    "LocalBackend",
    "MissingExtraError",
    "MissingValueHeadError",
    "NLAError",
    "NLAMeta",
    "PairMismatchError",
    "Provenance",
    "Reconstructor",
    "ReleasedPair",
    "RoleMismatchError",
    "SGLangBackend",
    "SamplingParams",
    "Scores",
    "SidecarError",
    "SubjectMismatchError",
    "TokenizerDriftError",
    "UnsupportedArchitectureError",
    "VLLMEngineBackend",
    "VLLMServerBackend",
    "VectorError",
    "Verbalizer",
    "__version__",
    "estimate_baseline",
    "explain_dataset",
    "extract_explanation",
    "load_sidecar",
]
