"""``--av``, ``--ar`` and ``--subject``, shared by every subcommand; ``toy`` names the shipped toy pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import NLAError

__all__ = ["TOY", "add_pair_args", "resolve"]

#: The word that stands for the shipped toy checkpoints in --av / --ar / --subject.
TOY = "toy"


def add_pair_args(p: Any, *, subject: bool, av_required: bool = False) -> None:
    g = p.add_argument_group("checkpoints ('toy' = the shipped offline toy pair)")
    g.add_argument(
        "--av", required=av_required, default=None if av_required else TOY,
        help="AV checkpoint: a local directory, a hub id, or 'toy'"
        + ("" if av_required else " (default: toy)"),
    )  # fmt: skip
    g.add_argument(
        "--ar", default=None if av_required else TOY,
        help="AR checkpoint, for scores (cos, fve_nrm): a directory, a hub id, or 'toy'"
        + ("" if av_required else " (default: toy)"),
    )  # fmt: skip
    if subject:
        g.add_argument(
            "--subject", default=TOY,
            help="subject model: a directory, a hub id, or 'toy' (default: toy)",
        )  # fmt: skip


def _toy_part(name: str) -> str:
    from ..toy import checkpoints

    return str(getattr(checkpoints(), name))


def resolve(value: str | None, part: str) -> str | None:
    """A checkpoint argument as a path or hub id (``toy`` -> the shipped toy's ``part``)."""
    if value is None:
        return None
    if value == TOY:
        return _toy_part(part)
    if not value.strip():
        raise NLAError(f"--{part} is empty; pass a directory, a hub id, or 'toy'.")
    return str(Path(value)) if Path(value).exists() else value
