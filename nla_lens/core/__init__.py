"""The NLA pair and nothing else: checkpoints, sidecar, architecture table, AV, AR, metrics.

Knows no subject framework (TransformerLens, nnsight) and no workflow; every
layer above builds on it. The recipe it implements is described in
``docs/recipe.md``.
"""

from __future__ import annotations

from .explanation import Explanation, extract_explanation
from .metrics import PUBLISHED_BASELINES, Baseline, Scores, estimate_baseline
from .pair import NLAPair
from .provenance import CheckpointRecord, Provenance
from .reconstructor import Reconstructor
from .releases import RELEASED_PAIRS, ReleasedPair
from .sampling import DEFAULT_MAX_NEW_TOKENS, Sampling
from .sidecar import NLAMeta, load_sidecar
from .streaming import RowFinished, SegmentScored, TextDelta, stop_when_flat
from .verbalizer import Verbalizer

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "PUBLISHED_BASELINES",
    "RELEASED_PAIRS",
    "Baseline",
    "CheckpointRecord",
    "Explanation",
    "NLAMeta",
    "NLAPair",
    "Provenance",
    "Reconstructor",
    "ReleasedPair",
    "RowFinished",
    "Sampling",
    "Scores",
    "SegmentScored",
    "TextDelta",
    "Verbalizer",
    "estimate_baseline",
    "extract_explanation",
    "load_sidecar",
    "stop_when_flat",
]
