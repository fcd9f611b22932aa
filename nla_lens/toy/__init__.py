"""The shipped toy NLA pair: a tiny Gemma-3 subject, AV and AR for offline tests.

>>> from nla_lens.toy import checkpoints
>>> ckpt = checkpoints()  # doctest: +SKIP
>>> ckpt.av, ckpt.ar, ckpt.subject, ckpt.subject_multimodal  # doctest: +SKIP

The checkpoints live in ``nla_lens/toy/checkpoints/`` and are (re)built,
deterministically, by ``python -m nla_lens.toy build``. They are a toy: the
AV names the token a layer-2 residual came from; nothing about a real model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointNotFoundError

__all__ = ["DEFAULT_DIR", "EXTRACTION_LAYER", "ToyCheckpoints", "checkpoints"]

DEFAULT_DIR = Path(__file__).resolve().parent / "checkpoints"
EXTRACTION_LAYER = 2  # K: the toy AV/AR read hidden_states[K + 1] of the subject
_PARTS = ("subject", "subject_multimodal", "av", "ar")


@dataclass(frozen=True)
class ToyCheckpoints:
    """Paths of the shipped toy checkpoints (Hugging Face directories)."""

    subject: Path
    subject_multimodal: Path
    av: Path
    ar: Path
    root: Path

    @property
    def quality(self) -> Path:
        """``quality.json``: the builder's held-out figures (accuracy, fve_nrm, baseline_var, ...)."""
        return self.root / "quality.json"


def checkpoints(root: str | Path | None = None) -> ToyCheckpoints:
    """The toy checkpoint directories; raise if they have not been built."""
    base = Path(root) if root is not None else DEFAULT_DIR
    missing = [p for p in _PARTS if not (base / p / "config.json").is_file()]
    missing += [
        f"{p}/nla_meta.yaml" for p in ("av", "ar") if not (base / p / "nla_meta.yaml").is_file()
    ]
    if missing:
        raise CheckpointNotFoundError(
            f"the toy NLA checkpoints are missing under {base} ({', '.join(missing)}). "
            "Build them with `python -m nla_lens.toy build` (takes a few minutes on CPU)."
        )
    return ToyCheckpoints(
        subject=base / "subject",
        subject_multimodal=base / "subject_multimodal",
        av=base / "av",
        ar=base / "ar",
        root=base,
    )
