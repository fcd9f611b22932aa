"""Where a streamed explanation's segments end, decided as the text arrives.

A segment is a line; a line that runs long is cut after a sentence end
(``.``, ``!``, ``?`` or ``;`` followed by a space) once its current segment holds
:data:`SENTENCE_MIN_CHARS` characters. A line ends at its newline, the moment it
arrives; a sentence end counts only once non-space text follows it. Every decision
depends only on the text before it: the ends found on a prefix of the text are the
first ends found on the whole (the stream never re-cuts). A completed segment can
therefore be the explanation's last, when the AV closes right after a newline
(``explain_stream`` then scores it again with the row).
"""

from __future__ import annotations

import re

from .explanation import EXPLANATION_CLOSE, EXPLANATION_OPEN

__all__ = ["SENTENCE_MIN_CHARS", "explanation_view", "may_end", "segment_ends", "segment_spans"]

#: A long line is cut at a sentence end only once its segment is at least this long.
SENTENCE_MIN_CHARS = 80
_LINE = re.compile(r"[ \t\r]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?;])[ \t]+(?=\S)")


def _held_back(text: str, tag: str) -> str:
    """``text`` less a tail that could be the start of ``tag`` (still arriving): the longest
    tail shorter than the tag that the tag starts with. Such a tail begins with the tag's
    first character, so only those positions are tried, earliest (longest) first."""
    i = text.find(tag[0], max(0, len(text) - len(tag) + 1))
    while i >= 0:
        if tag.startswith(text[i:]):
            return text[:i]
        i = text.find(tag[0], i + 1)
    return text


def explanation_view(raw: str) -> str | None:
    """The explanation text written so far in a partial decode ``raw``: what follows
    ``<explanation>``, up to ``</explanation>`` or a tail that may become it, left-stripped.
    None while the open tag has not appeared (the decode may still open it)."""
    start = raw.find(EXPLANATION_OPEN)
    if start < 0:
        return None
    body = raw[start + len(EXPLANATION_OPEN) :]
    close = body.find(EXPLANATION_CLOSE)
    body = body[:close] if close >= 0 else _held_back(body, EXPLANATION_CLOSE)
    return body.lstrip()


def segment_ends(text: str) -> list[int]:
    """Offsets in ``text`` where completed segments end (before their separator)."""
    ends: list[int] = []
    start = 0
    line_breaks = [(m.start(), m.end()) for m in _LINE.finditer(text)]
    line_breaks.append((len(text), len(text)))
    for stop, after in line_breaks:
        for m in _SENTENCE.finditer(text, start, stop):
            if m.start() - start >= SENTENCE_MIN_CHARS and text[start : m.start()].strip():
                ends.append(m.start())
                start = m.end()
        if stop < len(text) and text[start:stop].strip():
            ends.append(stop)
            start = after
    return ends


def may_end(text: str, after: int) -> bool:
    """False when :func:`segment_ends` of ``text`` can find no end past ``after``, the end
    of its last completed segment (0 for none): what follows holds no newline, and no
    sentence end in a segment that long. A cheap test the stream makes per row per step."""
    tail = text[after:].lstrip()
    return "\n" in tail or (len(tail) > SENTENCE_MIN_CHARS and any(c in tail for c in ".!?;"))


def segment_spans(text: str, *, final: bool) -> list[tuple[int, int]]:
    """``(start, end)`` of each segment of ``text``; with ``final`` the text is complete
    and what follows the last boundary is a segment too."""
    ends = segment_ends(text)
    spans, start = [], 0
    for end in ends:
        spans.append((start, end))
        start = _skip_space(text, end)
    if final and text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i
