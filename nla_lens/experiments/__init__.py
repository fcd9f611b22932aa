"""Experiments over a pair and a subject: runs and diffs, patching, steering, transcripts, search.

Each is a function of ``(nla, model, ...)``; the public :class:`nla_lens.NLA`
exposes them as methods too.
"""

from __future__ import annotations

from .difference import DifferenceExplanation, explain_difference
from .export import NeuronpediaExport, to_neuronpedia, validate_neuronpedia
from .faithfulness import FaithfulnessReport, faithfulness_report, split_segments
from .features import FeatureExplanations, explain_features
from .html import HTMLPage
from .patching import activation_patching, kl_to_clean, logit_diff, normalized_logit_diff
from .patching_views import patching_html, plot_patching, plot_patching_interactive
from .reading import SearchHit, build_transcript, search
from .runs import ExplainedRun, RunDiff, explain_run, read_subject
from .steering import (
    SteeredGeneration,
    SteeringResult,
    add_direction,
    edit_steering_delta,
    steer_by_edit,
    steered_generate,
    steering_vector,
    typical_norm,
)
from .transcript import Transcript, TranscriptEntry
from .uncertainty import (
    Interval,
    SampledExplanations,
    VectorSamples,
    best_of_k,
    bootstrap_delta,
    sample_explanations,
)

__all__ = [
    "DifferenceExplanation",
    "ExplainedRun",
    "FaithfulnessReport",
    "FeatureExplanations",
    "HTMLPage",
    "Interval",
    "NeuronpediaExport",
    "RunDiff",
    "SampledExplanations",
    "SearchHit",
    "SteeredGeneration",
    "SteeringResult",
    "Transcript",
    "TranscriptEntry",
    "VectorSamples",
    "activation_patching",
    "add_direction",
    "best_of_k",
    "bootstrap_delta",
    "build_transcript",
    "edit_steering_delta",
    "explain_difference",
    "explain_features",
    "explain_run",
    "faithfulness_report",
    "kl_to_clean",
    "logit_diff",
    "normalized_logit_diff",
    "patching_html",
    "plot_patching",
    "plot_patching_interactive",
    "read_subject",
    "sample_explanations",
    "search",
    "split_segments",
    "steer_by_edit",
    "steered_generate",
    "steering_vector",
    "to_neuronpedia",
    "typical_norm",
    "validate_neuronpedia",
]
