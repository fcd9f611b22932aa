"""What the toy subject's residual at each position is about: per-position labels.

The toy AV's explanations are written from these labels (``describe.py``). They
come from the token sequence the residual was read in, by a small grammar of the
toy's three kinds of text:

* ``task``: the recall task's facts and question (``the cat is in my house. ...
  the cat is in our``): which facts have been stated so far, which animal the
  current sentence is about, and whether it is a new fact or the question;
* ``chat``: chat-formatted turns: whose turn it is;
* ``random``: uniformly random pieces.

The AV is trained to write them from the residual alone: whatever of a label the
layer-K residual does not carry, the AV cannot name, and the AR's score says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerFast

from .recall import ENTITIES
from .vocab import SPACE, START_OF_TURN, TOKEN_NAMES

__all__ = ["NEWLINE_NAME", "PositionLabel", "TextKind", "label_sequence", "piece_text"]

TextKind = Literal["task", "chat", "random"]
_ANIMALS = frozenset(ENTITIES)
NEWLINE_NAME = "new line"
_PHRASE = 3  # pieces of the current sentence a phrase quotes at most
_PHRASE_GENERIC = 1  # random words and chats: the piece itself (the words before it are noise)


@dataclass(frozen=True)
class PositionLabel:
    """What a position's residual is about (see the module docstring).

    ``kind``: ``"start"`` (the ``<bos>``), ``"facts"`` (a task sentence that is a new
    fact, or whose animal is not yet read), ``"question"`` (the task's question: a
    sentence about an animal already placed), ``"chat"`` or ``"random"``.
    ``facts``: the (animal, place) pairs completed so far; ``entity`` the current
    sentence's animal; ``ordinal`` its fact number (1-based; 0 for the question);
    ``phrase`` the text of the last few pieces read (the current one last); ``token``
    the current piece as it decodes, or a special token's name (``special``);
    ``role`` the chat turn's speaker.
    """

    kind: str
    token: str
    special: bool = False
    facts: tuple[tuple[str, str], ...] = ()
    entity: str | None = None
    ordinal: int = 0
    phrase: str = ""
    role: str | None = None


def piece_text(tokenizer: PreTrainedTokenizerFast, token_id: int) -> tuple[str, bool]:
    """(how a piece decodes, or a special token's name; whether it is special)."""
    piece = str(tokenizer.convert_ids_to_tokens(token_id))
    if piece in TOKEN_NAMES:
        return TOKEN_NAMES[piece], True
    if piece == "\n":  # named, so an explanation's lines stay lines
        return NEWLINE_NAME, True
    return piece.replace(SPACE, " "), False


def _phrase(texts: Sequence[str]) -> str:
    return "".join(texts).strip()


def label_sequence(
    tokenizer: PreTrainedTokenizerFast, ids: Sequence[int], kind: TextKind
) -> list[PositionLabel]:
    """A label for every position of ``ids`` (``<bos>`` first, as the toy's sequences start)."""
    pieces = [piece_text(tokenizer, int(i)) for i in ids]
    if kind == "task":
        return _task_labels(pieces)
    if kind == "chat":
        return _chat_labels(pieces)
    return [
        PositionLabel("start", t, s)
        if i == 0
        else PositionLabel(
            "random", t, s, phrase=_phrase([p for p, _ in pieces[max(1, i - 1) : i + 1]])
        )
        for i, (t, s) in enumerate(pieces)
    ]


def _task_labels(pieces: list[tuple[str, bool]]) -> list[PositionLabel]:
    labels: list[PositionLabel] = []
    facts: list[tuple[str, str]] = []
    sentence: list[str] = []
    for i, (text, special) in enumerate(pieces):
        if i == 0 or special:
            labels.append(
                PositionLabel("start" if i == 0 else "facts", text, special, tuple(facts))
            )
            continue
        sentence.append(text)
        words = [w.strip() for w in sentence]
        entity = words[1] if len(words) > 1 and words[1] in _ANIMALS else None
        known = {e for e, _ in facts}
        question = entity is not None and entity in known
        if words[-1] == "." and entity is not None and len(words) >= 7 and not question:
            facts.append((entity, words[5]))
        labels.append(
            PositionLabel(
                "question" if question else "facts",
                text,
                False,
                tuple(facts),
                entity,
                0 if question else len([f for f in facts if f[0] != entity]) + 1,
                _phrase(sentence[-_PHRASE:]),
            )
        )
        if words[-1] == ".":
            sentence = []
    return labels


def _chat_labels(pieces: list[tuple[str, bool]]) -> list[PositionLabel]:
    labels: list[PositionLabel] = []
    role: str | None = None
    turn: list[str] = []
    start_name = TOKEN_NAMES[START_OF_TURN]
    for i, (text, special) in enumerate(pieces):
        if i == 0:
            labels.append(PositionLabel("start", text, special))
            continue
        if special and text == start_name:
            role, turn = None, []
        elif role is None and not any(turn) and text.strip() in ("user", "model"):
            role = text.strip()
        turn.append("" if special else text)
        labels.append(
            PositionLabel("chat", text, special, role=role, phrase=_phrase(turn[-_PHRASE_GENERIC:]))
        )
    return labels
