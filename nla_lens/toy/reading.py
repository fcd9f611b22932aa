"""What a toy explanation says, as fields: the one place tests, tutorials and the
demo read the toy AV's words.

>>> r = read_explanation('facts: 1 so far\\nreading "the owl is": owl, fact 2; facts: cat in house\\ntoken " is"; next comes in')
>>> r.kind, r.places, r.entity, r.token, r.next
('facts', ('house',), 'owl', ' is', 'in')

Every check of toy explanation *content* goes through :func:`read_explanation`,
so the toy's wording can change without touching the checks. Any of the three
phrasings of each line (see ``nla_lens/toy/describe.py``) parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .describe import describe_next

__all__ = ["ToyReading", "describe_next", "read_explanation"]

_KINDS = (
    ("question", ("question about", "asks where", "asking about")),
    ("facts", ("facts:", "listing animals:", "where animals are:")),
    ("random", ("random",)),
    ("chat", ("chat",)),
    ("start", ("start", "starts here")),
)
_PAIR = re.compile(r"(\w+) in (\w+)")
_LISTED = re.compile(r"; (?:facts|so far|facts so far): (.*)$")  # line 2's tail: the facts so far
_ENTITY = re.compile(r"(?:question about|asks where|asking about) (\w+)")
_QUOTED = re.compile(r'"(.*)"')
_ABOUT = re.compile(r'"(?:: about |: |, (?:fact \d+|the question) of )(\w+)')
_FACT = re.compile(r"fact (\d+)")
_TOKEN = re.compile(
    r'^(?:token|last piece|the token) (?:"(?P<quoted>.*?)"|(?P<name>[^;]+?))\s*(?:;|$)'
)
_SECOND = ("reading", "the phrase", 'words "', "no words", "nothing read", "no phrase",
           "no sentence", "not a phrase")  # fmt: skip
_OPEN = ("next could be any word", "any word may follow", "then any word at all")
_NEXT = (
    re.compile(r"^(?:next comes|then|followed by) (?P<a>.+?)(?:, (?:maybe|perhaps) (?P<b>.+))?$"),
    re.compile(r"^(?:unsure:|either|maybe) (?P<a>.+?) or (?P<b>.+)$"),
)


@dataclass(frozen=True)
class ToyReading:
    """The fields of one toy explanation (None / empty where the text does not say).

    ``kind`` is the kind of text line 1 names (``"facts"``, ``"question"``,
    ``"random"``, ``"chat"``, ``"start"``); ``entities`` and ``places`` the facts line 2
    (after the phrase) says the text has listed so far; ``phrase`` the words line 2 quotes and ``entity``
    the animal the sentence is about (line 2, else line 1); ``fact`` its fact number
    (0 for the question); ``token`` the last token line 3 names, exactly as it decodes
    (``" is"``, with its space) or a special token's name (``"start of text"``);
    ``next`` the continuation it names first and ``alternatives`` the others (None
    and empty where line 3 says any word may follow: the subject has no guess).
    """

    text: str
    kind: str | None = None
    entities: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    phrase: str | None = None
    entity: str | None = None
    fact: int | None = None
    token: str | None = None
    next: str | None = None
    alternatives: tuple[str, ...] = ()

    @property
    def lines(self) -> tuple[str, ...]:
        """The explanation's lines (three for a well-formed one)."""
        return tuple(line.strip() for line in self.text.splitlines() if line.strip())

    @property
    def continuations(self) -> tuple[str, ...]:
        """Every continuation named, the first one first."""
        return ((self.next,) if self.next else ()) + self.alternatives

    @property
    def word(self) -> str | None:
        """The token without its leading space (``"is"`` for ``" is"``)."""
        return None if self.token is None else self.token.strip()

    def names_next(self, word: str) -> bool:
        """Whether ``word`` (with or without its leading space) is among the continuations."""
        return word.strip() in self.continuations


def _kind(line: str) -> str | None:
    for kind, keys in _KINDS:
        if any(line.startswith(k) or f" {k}" in line for k in keys):
            return kind
    return None


def _third(line: str) -> tuple[str | None, str | None, tuple[str, ...]]:
    token_match = _TOKEN.match(line)
    token = None
    if token_match:
        token = token_match.group("quoted")
        if token is None:
            token = token_match.group("name").strip()
    rest = line.split(";", 1)[1].strip() if ";" in line else line
    if rest in _OPEN:
        return token, None, ()
    for pattern in _NEXT:
        found = pattern.search(rest)
        if found:
            others = (found.group("b"),) if found.group("b") else ()
            return token, found.group("a"), others
    return token, None, ()


def read_explanation(text: str) -> ToyReading:
    """Parse a toy explanation (the text between the tags) into its fields.

    Lines may be missing (a prefix, or a cut-short decode): the fields of the lines
    present are filled. A line is recognised by its wording, not its index.
    """
    stripped = text.strip()
    first = second = third = ""
    for raw in stripped.splitlines():
        line = raw.strip()
        if _TOKEN.match(line) or any(p.match(line) for p in _NEXT):
            third = third or line
        elif line.startswith(_SECOND):
            second = second or line
        elif line:
            first = first or line
    kind = _kind(first) if first else None
    listed = _LISTED.search(second)
    pairs = _PAIR.findall(listed.group(1)) if listed else []
    if listed:
        second = second[: listed.start()]
    entity_1 = _ENTITY.search(first)
    quoted = _QUOTED.search(second)
    about = _ABOUT.search(second)
    fact = _FACT.search(second)
    token, nxt, others = _third(third) if third else (None, None, ())
    entity = about.group(1) if about else (entity_1.group(1) if entity_1 else None)
    return ToyReading(
        stripped,
        kind=kind,
        entities=tuple(e for e, _ in pairs),
        places=tuple(p for _, p in pairs),
        phrase=quoted.group(1) if quoted else None,
        entity=entity,
        fact=0 if "the question" in second else (int(fact.group(1)) if fact else None),
        token=token,
        next=nxt,
        alternatives=others,
    )
