"""The shipped toy NLA pair: a tiny Gemma-3 subject, AV and AR for offline tests.

>>> from nla_lens.toy import checkpoints
>>> ckpt = checkpoints()  # doctest: +SKIP
>>> ckpt.av, ckpt.ar, ckpt.subject, ckpt.subject_multimodal  # doctest: +SKIP

The checkpoints live in ``nla_lens/toy/checkpoints/`` and are (re)built,
deterministically, by ``python -m nla_lens.toy build``. They are a toy: the
subject is trained on an in-context recall task (:func:`tasks` gives
clean/corrupted prompt pairs for patching), random text and chats; the AV writes
three lines about a layer-3 residual, in the released AVs' order (the context in a
few words, the phrase being read with the facts listed so far, the token and its
likely continuation)::

    question about tiger
    reading "is in the": tiger, the question; facts: duck in mountain, tiger in house
    token " the"; next comes house

:func:`read_explanation` parses them into fields; :func:`describe_next` words a
steering description. Nothing here is about a real model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import CheckpointNotFoundError, NLAError
from .reading import ToyReading, describe_next, read_explanation

if TYPE_CHECKING:
    from .recall import TaskPair

__all__ = [
    "DEFAULT_DIR",
    "EXTRACTION_LAYER",
    "TaskPair",
    "ToyCheckpoints",
    "ToyReading",
    "checkpoints",
    "describe_next",
    "read_explanation",
    "tasks",
]

DEFAULT_DIR = Path(__file__).resolve().parent / "checkpoints"
EXTRACTION_LAYER = 3  # K: the toy AV/AR read hidden_states[K + 1] of the subject
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
            "Build them with `python -m nla_lens.toy build` (about 13 minutes on 2 CPU cores)."
        )
    return ToyCheckpoints(
        subject=base / "subject",
        subject_multimodal=base / "subject_multimodal",
        av=base / "av",
        ar=base / "ar",
        root=base,
    )


def tasks(
    n: int = 64, seed: int | None = None, corruption: Literal["place", "entity"] = "place"
) -> list[TaskPair]:
    """Clean/corrupted prompt pairs of the toy subject's task (attribute recall).

    >>> pair = tasks(1)[0]  # doctest: +SKIP
    >>> pair.clean, pair.clean_answer  # doctest: +SKIP
    ('the duck is in his mountain. the tiger is in his house. the tiger is in the', 'house')

    Each :class:`~nla_lens.toy.recall.TaskPair` holds both texts (same length in
    tokens), both answer tokens (string and id) and ``position``, the index
    (``<bos>`` = 0) of the token that differs: the place the answer is moved from.
    Drawn deterministically (``seed`` defaults to a held-out one).

    ``corruption="place"`` (default) changes the queried fact's place word to one the
    prompt never mentions; ``"entity"`` keeps the facts and asks about another animal
    of them (``position`` is the query's animal), so the corrupted answer is another
    fact's place, a different one from pair to pair.
    """
    from .recall import TASK_SEED, make_entity_pairs, make_pairs
    from .tokenizer import build_tokenizer

    if corruption not in ("place", "entity"):
        raise NLAError(f"corruption must be 'place' or 'entity', got {corruption!r}.")
    make = make_pairs if corruption == "place" else make_entity_pairs
    return make(build_tokenizer(), n, TASK_SEED if seed is None else seed)


def __getattr__(name: str) -> object:
    if name == "TaskPair":  # lazily: importing nla_lens.toy stays free of torch
        from .recall import TaskPair

        return TaskPair
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
