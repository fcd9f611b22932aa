"""The toy subject's in-context task: attribute recall, with clean/corrupted pairs.

A prompt states where two or three animals are, then asks about one of them::

    the cat is in my house. the dog is in the river. the cat is in our   ->   house

The answer is only in the context: it has to be moved from the queried fact's
place word (a known position) to the last position. Determiners are drawn
independently (so the query's last token varies and never gives the answer
away). A corrupted prompt changes the queried fact's place to one that does
not occur in the clean prompt; everything else, and the length, stays the same.

Positions count real tokens with ``<bos>`` at 0: word ``i`` of the text (``.`` counted
as a word) is at ``i + 1``. Every word after the first is the piece with its space
(``▁house``), so an answer's id is that of `` house``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "DETERMINERS",
    "ENTITIES",
    "PATCH_LAYER",
    "PLACES",
    "TASK_SEED",
    "TaskPair",
    "TaskPrompt",
    "join_words",
    "make_entity_pairs",
    "make_pairs",
    "task_prompt",
]

ENTITIES: tuple[str, ...] = (
    "cat", "dog", "horse", "fish", "rabbit", "tiger", "zebra", "fox",
    "owl", "bear", "wolf", "mouse", "duck", "goat", "frog", "lion",
)  # fmt: skip
PLACES: tuple[str, ...] = (
    "house", "river", "garden", "forest", "mountain", "school", "city", "farm",
    "island", "market", "bridge", "room", "park", "kitchen", "cave", "lake",
)  # fmt: skip
DETERMINERS: tuple[str, ...] = (
    "the", "a", "my", "his", "her", "our", "their", "this", "that", "your",
)  # fmt: skip

#: The decoder block whose output, patched at the queried fact's place word, moves the answer.
PATCH_LAYER = 0
#: Seed of :func:`nla_lens.toy.tasks` pairs (held out: the subject trains on other draws).
TASK_SEED = 20260


@dataclass(frozen=True)
class TaskPrompt:
    """One task prompt as words (no ``<bos>``), its answer and where the facts sit."""

    words: tuple[str, ...]
    answer: str
    source: int  # position (``<bos>`` = 0) of the queried fact's place word
    others: tuple[int, ...]  # positions of the other facts' place words

    @property
    def control(self) -> int:
        """A position after ``source`` unrelated to the answer: a later fact's place word,
        else the query's animal (the same word in a clean and a corrupted prompt)."""
        later = [p for p in self.others if p > self.source]
        return later[0] if later else len(self.words) - 3

    @property
    def text(self) -> str:
        return join_words(self.words)


@dataclass(frozen=True)
class TaskPair:
    """A clean/corrupted prompt pair of the toy task (same length in tokens).

    ``position`` is the index (``<bos>`` = 0, real tokens only) of the token that
    differs: the queried fact's place word, the information the answer is moved
    from. ``control_position`` is a later position unrelated to the answer (another
    fact's place word, else the query's animal): the run there differs only through
    the context. Answers are the next token after the whole prompt: ``clean_answer`` is
    the word (``"house"``), ``clean_answer_id`` the id of the piece the subject predicts
    (`` house``, with its space; ``tokenizer.decode([id])`` gives it).
    """

    clean: str
    corrupted: str
    clean_answer: str
    clean_answer_id: int
    corrupted_answer: str
    corrupted_answer_id: int
    position: int
    control_position: int


def join_words(words: tuple[str, ...] | list[str]) -> str:
    """Words as text: spaces between them, none before ``.``."""
    return " ".join(words).replace(" .", ".")


def _pick(seq: tuple[str, ...] | list[str], gen: torch.Generator) -> str:
    return seq[int(torch.randint(len(seq), (1,), generator=gen))]


def task_prompt(gen: torch.Generator, n_facts: int | None = None) -> TaskPrompt:
    """Draw one prompt: 2 or 3 facts about distinct animals in distinct places, then the query."""
    if n_facts is None:
        n_facts = 2 + int(torch.randint(2, (1,), generator=gen))
    ents = [ENTITIES[int(i)] for i in torch.randperm(len(ENTITIES), generator=gen)[:n_facts]]
    places = [PLACES[int(i)] for i in torch.randperm(len(PLACES), generator=gen)[:n_facts]]
    words: list[str] = []
    place_pos: list[int] = []
    for e, p in zip(ents, places, strict=True):
        words += ["the", e, "is", "in", _pick(DETERMINERS, gen)]
        place_pos.append(len(words) + 1)  # + 1 for <bos>
        words += [p, "."]
    q = int(torch.randint(n_facts, (1,), generator=gen))
    words += ["the", ents[q], "is", "in", _pick(DETERMINERS, gen)]
    others = tuple(p for i, p in enumerate(place_pos) if i != q)
    return TaskPrompt(tuple(words), places[q], place_pos[q], others)


def make_pairs(tokenizer, n: int, seed: int = TASK_SEED) -> list[TaskPair]:
    """``n`` clean/corrupted pairs, drawn deterministically from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        clean = task_prompt(gen)
        unused = [p for p in PLACES if p not in clean.words]
        new = _pick(unused, gen)
        words = list(clean.words)
        words[clean.source - 1] = new
        ids = tokenizer.convert_tokens_to_ids(["\u2581" + clean.answer, "\u2581" + new])
        pairs.append(
            TaskPair(
                clean=clean.text,
                corrupted=join_words(words),
                clean_answer=clean.answer,
                clean_answer_id=int(ids[0]),
                corrupted_answer=new,
                corrupted_answer_id=int(ids[1]),
                position=clean.source,
                control_position=clean.control,
            )
        )
    return pairs


def make_entity_pairs(tokenizer, n: int, seed: int = TASK_SEED) -> list[TaskPair]:
    """``n`` pairs whose corrupted prompt asks about *another* animal of the same facts.

    The facts are identical; only the query's animal differs (at ``position``), so the
    corrupted answer is that animal's place, a different place word from pair to pair.
    A metric that knows only the clean answer (KL, or the clean answer's probability)
    says the answer changed; which place it changed to is for the words to tell.
    ``control_position`` is the first fact's place word (the same in both prompts).
    """
    gen = torch.Generator().manual_seed(seed + 1)
    pairs: list[TaskPair] = []
    while len(pairs) < n:
        clean = task_prompt(gen)
        facts = len(clean.others) + 1
        query = len(clean.words) - 4  # the query's animal (words index)
        animals = [clean.words[i * 7 + 1] for i in range(facts)]
        places = [clean.words[i * 7 + 5] for i in range(facts)]
        others = [i for i, a in enumerate(animals) if a != clean.words[query]]
        k = others[int(torch.randint(len(others), (1,), generator=gen))]
        words = list(clean.words)
        words[query] = animals[k]
        ids = tokenizer.convert_tokens_to_ids(["\u2581" + clean.answer, "\u2581" + places[k]])
        pairs.append(
            TaskPair(
                clean=clean.text,
                corrupted=join_words(words),
                clean_answer=clean.answer,
                clean_answer_id=int(ids[0]),
                corrupted_answer=places[k],
                corrupted_answer_id=int(ids[1]),
                position=query + 1,
                control_position=6 if clean.source != 6 else 13,
            )
        )
    return pairs
