"""Experiments over a pair and a subject: runs and diffs, patching, steering, transcripts, search.

Each is a function of ``(nla, model, ...)``; the public :class:`nla_lens.NLA`
exposes them as methods too.
"""

from __future__ import annotations

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

__all__ = [
    "ExplainedRun",
    "HTMLPage",
    "RunDiff",
    "SearchHit",
    "SteeredGeneration",
    "SteeringResult",
    "Transcript",
    "TranscriptEntry",
    "activation_patching",
    "add_direction",
    "build_transcript",
    "edit_steering_delta",
    "explain_run",
    "kl_to_clean",
    "logit_diff",
    "normalized_logit_diff",
    "patching_html",
    "plot_patching",
    "plot_patching_interactive",
    "read_subject",
    "search",
    "steer_by_edit",
    "steered_generate",
    "steering_vector",
    "typical_norm",
]
