"""The released NLA pairs (docs/recipe.md, section 7), for discovery and checks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RELEASED_PAIRS", "ReleasedPair"]


@dataclass(frozen=True)
class ReleasedPair:
    subject: str
    layer: int
    n_layers: int
    d_model: int
    av: str
    ar: str
    gated: bool


RELEASED_PAIRS: dict[str, ReleasedPair] = {
    "gemma3-12b-L32": ReleasedPair(
        "google/gemma-3-12b-it",
        32,
        48,
        3840,
        "kitft/nla-gemma3-12b-L32-av",
        "kitft/nla-gemma3-12b-L32-ar",
        True,
    ),
    "gemma3-27b-L41": ReleasedPair(
        "google/gemma-3-27b-it",
        41,
        62,
        5376,
        "kitft/nla-gemma3-27b-L41-av",
        "kitft/nla-gemma3-27b-L41-ar",
        True,
    ),
    "qwen2.5-7b-L20": ReleasedPair(
        "Qwen/Qwen2.5-7B-Instruct",
        20,
        28,
        3584,
        "kitft/nla-qwen2.5-7b-L20-av",
        "kitft/nla-qwen2.5-7b-L20-ar",
        False,
    ),
    "llama3.3-70b-L53": ReleasedPair(
        "meta-llama/Llama-3.3-70B-Instruct",
        53,
        80,
        8192,
        "kitft/Llama-3.3-70B-NLA-L53-av",
        "kitft/Llama-3.3-70B-NLA-L53-ar",
        True,
    ),
}
