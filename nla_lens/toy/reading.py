"""What a toy explanation says, as fields: the one place tests, tutorials and the
demo read the toy AV's words.

>>> r = read_explanation("token : is ; next : in")
>>> r.token, r.next
('is', 'in')

Every check of toy explanation *content* goes through :func:`read_explanation`,
so the toy's wording can change without touching the checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ToyReading", "describe_next", "read_explanation"]

_OLD = re.compile(r"^(?:token : (?P<token>.*?))?(?:\s*;?\s*next : (?P<next>.*))?$", re.DOTALL)


@dataclass(frozen=True)
class ToyReading:
    """The fields of one toy explanation (None / empty where the text does not say).

    ``kind`` is the kind of text line 1 names (``"facts"``, ``"question"``,
    ``"random"``, ``"chat"``, ``"markup"``); ``entities`` and ``places`` what line 1
    says the text has listed so far; ``phrase`` the words line 2 quotes and
    ``entity`` the animal it says the sentence is about; ``token`` the last token
    line 3 names, ``next`` the continuation it names first and ``alternatives``
    the others.
    """

    text: str
    kind: str | None = None
    entities: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    phrase: str | None = None
    entity: str | None = None
    token: str | None = None
    next: str | None = None
    alternatives: tuple[str, ...] = ()

    @property
    def continuations(self) -> tuple[str, ...]:
        """Every continuation named, the first one first."""
        return ((self.next,) if self.next else ()) + self.alternatives

    def names_next(self, word: str) -> bool:
        """Whether ``word`` is among the continuations named."""
        return word in self.continuations


def read_explanation(text: str) -> ToyReading:
    """Parse a toy explanation (the text between the tags) into its fields."""
    stripped = text.strip()
    match = _OLD.match(stripped)
    if match is None:
        return ToyReading(stripped)
    return ToyReading(
        stripped, token=match.group("token") or None, next=match.group("next") or None
    )


def describe_next(word: str) -> str:
    """A description the toy AR reads as "the model is about to say ``word``".

    The text to hand :meth:`~nla_lens.NLA.steering_vector` on the toy pair, in the
    wording its AR was trained on; a steering direction built from it points at
    residuals whose next token is ``word``.
    """
    return f"next : {word}"
