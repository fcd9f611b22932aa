"""The toy AV's explanations: three lines, in the released order, from a position's label.

Each line leads with what the residual shows best, as released explanations do, so
the first line is short and the least reliable content comes last:

1. the context: what kind of text, in a few words (``facts: 2 so far``,
   ``question about dog``, ``random words``);
2. the phrase being read and what it binds to, then the facts listed so far
   (``reading "the owl is": owl, fact 3; facts: cat in house, dog in river``);
3. the last token, quoted as it decodes, and the subject's likely continuation, with
   alternatives where the subject is unsure (``token " is"; next comes in``).

The facts list sits at the end of line 2 because the layer-K residual keeps the
current sentence far better than the facts before it: listed first, the part the
AV most often invents would take half the explanation's tokens ahead of the parts
it reads well (and a streamed first line would wait for it).

Each line has three phrasings. The AV is trained on one of them, chosen by what
the residual itself shows (so its samples agree where the residual is clear); the
AR on all three, on cumulative prefixes (line 1, lines 1-2, all) and on
continuation-only descriptions (:func:`describe_next`), so it reads meaning rather
than one template. :func:`nla_lens.toy.read_explanation` parses any of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .labels import PositionLabel
from .vocab import CONFIDENT

__all__ = ["OPEN", "SURE", "continuation_words", "describe", "describe_next", "lines"]

#: Top next-token probability above which the AV names one continuation only.
SURE = 0.9
#: Below this the subject has no real guess (random text): the AV says so instead of
#: naming two near-uniform draws.
OPEN = 0.03


def _facts(label: PositionLabel) -> str:
    return ", ".join(f"{e} in {p}" for e, p in label.facts)


def _line1(label: PositionLabel, v: int) -> str:
    if label.kind == "start":
        return ("start of text", "the text starts here", "nothing yet, start of text")[v]
    if label.kind == "random":
        return ("random words", "words at random", "a random list of words")[v]
    if label.kind == "chat":
        if label.role is None:
            return ("chat, a new turn", "a chat: a turn starts", "chat text, new turn")[v]
        return (
            f"chat, {label.role} turn",
            f"a chat: the {label.role} speaks",
            f"chat text from the {label.role}",
        )[v]
    if label.kind == "question":
        e = label.entity
        return (f"question about {e}", f"asks where {e} is", f"asking about {e}")[v]
    n = len(label.facts)
    count = f"{n} so far" if n else "none yet"
    return (f"facts: {count}", f"listing animals: {count}", f"where animals are: {count}")[v]


def _facts_suffix(label: PositionLabel, v: int) -> str:
    """Line 2's tail on task text: the facts listed so far (none on a text without any)."""
    if label.kind not in ("facts", "question") or not label.facts:
        return ""
    return ("; facts: {}", "; so far: {}", "; facts so far: {}")[v].format(_facts(label))


def _line2(label: PositionLabel, v: int) -> str:
    return _line2_head(label, v) + _facts_suffix(label, v)


def _line2_head(label: PositionLabel, v: int) -> str:
    if label.kind == "start":
        return ("reading nothing yet", "no words yet", "nothing read yet")[v]
    if label.kind in ("random", "chat") or not label.phrase:
        return ("no phrase", "no sentence here", "not a phrase")[v]
    quoted = label.phrase.replace('"', "'")
    head = (f'reading "{quoted}"', f'the phrase "{quoted}"', f'words "{quoted}"')[v]
    if label.entity is None:
        return head
    what = "the question" if label.ordinal == 0 else f"fact {label.ordinal}"
    return (
        head
        + (
            f": {label.entity}, {what}",
            f", {what} of {label.entity}",
            f": about {label.entity}, {what}",
        )[v]
    )


def continuation_words(
    words: Sequence[str], probs: Sequence[float], generator: torch.Generator | None
) -> tuple[str, ...]:
    """Which continuations line 3 names, from the subject's top next tokens (best first).

    Sure (top probability >= :data:`SURE`): the best alone. Confident (>=
    ``CONFIDENT``): the best, then one other. Unsure: two. No guess (below
    :data:`OPEN`): none (line 3 says any word may follow). Without a generator the
    runners-up are taken in order (the canonical text); with one, the others are
    drawn from the subject's own distribution (so an AV trained on the draws
    samples them as the subject would).
    """
    p = torch.tensor([float(x) for x in probs])
    if p[0] < OPEN:
        return ()
    if p[0] >= SURE:
        return (words[0],)
    if generator is None:
        return tuple(words[:2])
    if p[0] >= CONFIDENT:
        rest = p[1:] / p[1:].sum()
        return (words[0], words[1 + int(torch.multinomial(rest, 1, generator=generator))])
    picks = torch.multinomial(p / p.sum(), 2, replacement=False, generator=generator)
    return tuple(words[int(i)] for i in picks)


def _line3(label: PositionLabel, nexts: tuple[str, ...], top: float, v: int) -> str:
    token = label.token if label.special else '"' + label.token.replace('"', "'") + '"'
    head = (f"token {token}", f"last piece {token}", f"the token {token}")[v]
    if not nexts:
        return (
            head
            + ("; next could be any word", "; any word may follow", "; then any word at all")[v]
        )
    if len(nexts) == 1:
        return head + ("; next comes {}", "; then {}", "; followed by {}")[v].format(nexts[0])
    if top >= CONFIDENT:
        return head + (
            "; next comes {}, maybe {}",
            "; then {}, perhaps {}",
            "; followed by {}, maybe {}",
        )[v].format(*nexts)
    return head + ("; unsure: {} or {}", "; either {} or {}", "; maybe {} or {}")[v].format(*nexts)


def lines(
    label: PositionLabel,
    nexts: tuple[str, ...],
    top: float,
    phrasing: tuple[int, int, int],
) -> tuple[str, str, str]:
    """The three lines of one explanation, each in the given phrasing (0, 1 or 2)."""
    return (
        _line1(label, phrasing[0]),
        _line2(label, phrasing[1]),
        _line3(label, nexts, top, phrasing[2]),
    )


def canonical_phrasing(label: PositionLabel, token_id: int) -> tuple[int, int, int]:
    """The AV's phrasing: chosen by what the residual shows (facts so far, which fact, the token)."""
    return (
        len(label.facts) % 3,
        label.ordinal % 3 if label.entity else token_id % 3,
        token_id % 3,
    )


def describe(label: PositionLabel, token_id: int, nexts: tuple[str, ...], top: float) -> str:
    """The AV's explanation of a position (its canonical phrasing), lines joined by newlines."""
    return "\n".join(lines(label, nexts, top, canonical_phrasing(label, token_id)))


def describe_next(word: str, phrasing: int = 0) -> str:
    """A continuation-only description: what the toy AR reads as "the next token is ``word``"."""
    return ("next comes {}", "then {}", "followed by {}")[phrasing].format(word)
