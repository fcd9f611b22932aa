"""The sampling options every subcommand shares, turned into one :class:`Sampling`."""

from __future__ import annotations

import argparse
from typing import Any

from ..core.sampling import Sampling

__all__ = ["add_sampling_args", "sampling_from"]

_DEFAULT = Sampling()


def add_sampling_args(p: Any, *, seed: int | None = None) -> None:
    """--temperature, --top-p, --max-new-tokens, --samples, --seed, --batch-size."""
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--temperature", type=float, default=_DEFAULT.temperature,
        help="0 = greedy (default); the AV was trained at 1.0",
    )  # fmt: skip
    g.add_argument(
        "--top-p", type=float, default=_DEFAULT.top_p, help="nucleus sampling mass (default 1.0)"
    )
    g.add_argument(
        "--max-new-tokens", type=int, default=_DEFAULT.max_new_tokens,
        help=f"most tokens per explanation (default {_DEFAULT.max_new_tokens})",
    )  # fmt: skip
    g.add_argument(
        "--samples", type=int, default=_DEFAULT.samples,
        help="explanations per vector (needs --temperature > 0)",
    )  # fmt: skip
    g.add_argument(
        "--seed", type=int, default=seed,
        help="seed for sampled decodes" + (f" (default {seed})" if seed is not None else ""),
    )  # fmt: skip
    g.add_argument(
        "--batch-size", type=int, default=_DEFAULT.batch_size,
        help=f"vectors per AV batch (default {_DEFAULT.batch_size})",
    )  # fmt: skip


def sampling_from(args: argparse.Namespace) -> Sampling:
    """The parsed options as one validated Sampling (a bad value exits with its message)."""
    return Sampling(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        samples=args.samples, seed=args.seed, batch_size=args.batch_size,
    )  # fmt: skip
