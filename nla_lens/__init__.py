"""nla_lens: read residual-stream activations with Natural Language Autoencoders.

>>> from nla_lens import NLA
>>> nla = NLA.from_pretrained("kitft/nla-gemma3-12b-L32-av", "kitft/nla-gemma3-12b-L32-ar")  # doctest: +SKIP
>>> nla.explain(vectors)  # doctest: +SKIP

The top level holds what a notebook user calls: the pair (:class:`NLA`), the
experiment verbs, :func:`explain_dataset`, the result types and
:class:`NLAError`. Errors live in :mod:`nla_lens.errors`, backends in
:mod:`nla_lens.backends`, capture and edits in :mod:`nla_lens.subjects`.
"""

from __future__ import annotations

from .core.explanation import Explanation, Explanations
from .core.metrics import Scores
from .core.plan import MemoryPlan, plan
from .core.reconstructor import Reconstructor
from .core.releases import RELEASED_PAIRS
from .core.sampling import Sampling
from .core.streaming import RowFinished, SegmentScored, TextDelta, stop_when_flat
from .core.verbalizer import Verbalizer
from .errors import NLAError
from .experiments import (
    DifferenceExplanation,
    ExplainedRun,
    FaithfulnessReport,
    FeatureExplanations,
    NeuronpediaExport,
    RunDiff,
    SampledExplanations,
    SearchHit,
    SteeredGeneration,
    SteeringResult,
    Transcript,
    activation_patching,
    add_direction,
    explain_run,
    faithfulness_report,
    patching_html,
    plot_patching,
    steer_by_edit,
    steered_generate,
    steering_vector,
    to_neuronpedia,
)
from .lens import NLA
from .serving import ExplanationCache, JobResult, explain_dataset
from .subjects import (
    ResidualEdit,
    ResidualRecorder,
    capture_residual,
    load_subject,
    residual_edit,
)

__version__ = "0.2.0"

__all__ = [
    "NLA",
    "RELEASED_PAIRS",
    "DifferenceExplanation",
    "ExplainedRun",
    "Explanation",
    "ExplanationCache",
    "Explanations",
    "FaithfulnessReport",
    "FeatureExplanations",
    "JobResult",
    "MemoryPlan",
    "NLAError",
    "NeuronpediaExport",
    "Reconstructor",
    "ResidualEdit",
    "ResidualRecorder",
    "RowFinished",
    "RunDiff",
    "SampledExplanations",
    "Sampling",
    "Scores",
    "SearchHit",
    "SegmentScored",
    "SteeredGeneration",
    "SteeringResult",
    "TextDelta",
    "Transcript",
    "Verbalizer",
    "__version__",
    "activation_patching",
    "add_direction",
    "capture_residual",
    "explain_dataset",
    "explain_run",
    "faithfulness_report",
    "load_subject",
    "patching_html",
    "plan",
    "plot_patching",
    "residual_edit",
    "steer_by_edit",
    "steered_generate",
    "steering_vector",
    "stop_when_flat",
    "to_neuronpedia",
]
