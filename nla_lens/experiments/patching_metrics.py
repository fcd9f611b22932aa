"""What a patching metric means, stated once: built-in metrics, their names and
directions, the ``effect`` every metric is mapped to, answer tokens given as words,
and reading a continuation out of an explanation.

``effect`` is the one convention every view colours by, whatever the metric:
0 = the patch had no effect (the patched run behaves like the run it patched),
1 = the patched run behaves like the donor run (the corrupted run when noising,
the clean run when denoising); computed as
``(metric - metric(base run)) / (metric(donor run) - metric(base run))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import AnswerTokenError, CaptureError

__all__ = [
    "Direction",
    "Metric",
    "MetricInfo",
    "Reader",
    "answer_ids",
    "effect_of",
    "kl_to_clean",
    "logit_diff",
    "metric_info",
    "normalized_logit_diff",
    "read_continuations",
]

Metric = Callable[[Tensor, Tensor, Tensor], float]
#: What an explanation names as the next token: a function of its text returning the
#: continuations named (first first), a single word, None, or an object with a
#: ``.continuations`` attribute (so ``nla_lens.toy.read_explanation`` works as it is).
Reader = Callable[[str], Any]
#: ``noising``: the corrupted run's activation patched into the clean run (TransformerLens's
#: "corrupted -> clean"); ``denoising``: the clean run's patched into the corrupted run.
Direction = Literal["noising", "denoising"]


def _named(fn: Metric, name: str, meaning: str) -> Metric:
    fn.metric_name = name  # type: ignore[attr-defined]
    fn.meaning = meaning  # type: ignore[attr-defined]
    return fn


def logit_diff(correct: int, incorrect: int, position: int = -1) -> Metric:
    """Metric: ``logit[correct] - logit[incorrect]`` at ``position`` (default the last real token)
    of the patched run."""

    def metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
        return float(patched[position, correct] - patched[position, incorrect])

    return _named(metric, "logit_diff", "logit(clean answer) - logit(corrupted answer)")


def normalized_logit_diff(correct: int, incorrect: int, position: int = -1) -> Metric:
    """Metric: the logit difference rescaled so the clean run is 1 and the corrupted run 0
    (a patch that moves the answer all the way to the corrupted one scores 0). NaN when
    the clean and corrupted runs have the same logit difference (nothing to recover)."""
    raw = logit_diff(correct, incorrect, position)

    def metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
        lo, hi = raw(corrupt, clean, corrupt), raw(clean, clean, corrupt)
        if abs(hi - lo) < 1e-6:
            return float("nan")
        return (raw(patched, clean, corrupt) - lo) / (hi - lo)

    return _named(
        metric,
        "normalized_logit_diff",
        "1 = the clean run's answer margin, 0 = the corrupted run's",
    )


def _kl(patched: Tensor, clean: Tensor, position: int) -> float:
    p = torch.log_softmax(clean[position].float(), -1)
    q = torch.log_softmax(patched[position].float(), -1)
    return max(0.0, float((p.exp() * (p - q)).sum()))


def kl_to_clean(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
    """Metric: KL(clean || patched) of the next-token distribution at the last position
    (clamped at 0: float error can make an identical distribution's KL slightly negative)."""
    return _kl(patched, clean, -1)


_named(kl_to_clean, "kl_to_clean", "0 = the clean run's next-token distribution, higher = further")


def kl_at(position: int) -> Metric:
    """:func:`kl_to_clean` at ``position`` (counted over real tokens)."""
    if position == -1:
        return kl_to_clean

    def metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
        return _kl(patched, clean, position)

    return _named(metric, "kl_to_clean", getattr(kl_to_clean, "meaning", ""))


@dataclass(frozen=True)
class MetricInfo:
    """A metric's name and what its values mean."""

    name: str
    meaning: str


def metric_info(metric: Metric) -> MetricInfo:
    """The name and meaning of a metric (a custom one is named by its ``__name__``)."""
    name = getattr(metric, "metric_name", None) or getattr(metric, "__name__", None) or "custom"
    meaning = getattr(metric, "meaning", None) or (
        "a custom metric; effect maps it to 0 = no effect, 1 = like the donor run"
    )
    return MetricInfo(str(name), str(meaning))


def effect_of(value: float, base: float, donor: float) -> float:
    """``(value - base) / (donor - base)``: 0 = like the unpatched run, 1 = like the donor run
    (NaN when the two runs score the same: there is nothing to move)."""
    if not all(math.isfinite(x) for x in (value, base, donor)) or abs(donor - base) < 1e-9:
        return float("nan")
    return (value - base) / (donor - base)


def _one_token(tokenizer: Any, word: str) -> int | None:
    """``word``'s id as a continuation: `` word`` when that is one token, else ``word`` itself
    (encoded, or as the literal name of a vocabulary entry such as ``▁park``)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    forms = [word] if word.startswith(" ") else [" " + word, word]
    for form in forms:
        ids = [int(i) for i in tokenizer(form, add_special_tokens=False)["input_ids"]]
        if len(ids) == 1 and ids[0] != unk:
            return ids[0]
    found = tokenizer.convert_tokens_to_ids(word)
    if isinstance(found, int) and found != unk and found >= 0:
        return found
    return None


def answer_ids(answer_tokens: Sequence[Any], tokenizer: Any) -> tuple[int, int]:
    """``(clean answer, corrupted answer)`` as token ids; each may be an id or a word that
    is one token of the subject's tokenizer (as a continuation, `` word``)."""
    if isinstance(answer_tokens, (str, bytes)) or len(answer_tokens) != 2:
        raise AnswerTokenError(
            f"answer_tokens must be a pair (clean answer, corrupted answer), got {answer_tokens!r}."
        )
    out = []
    for which, tok in zip(("clean", "corrupted"), answer_tokens, strict=True):
        if isinstance(tok, bool):
            raise AnswerTokenError(
                f"the {which} answer token must be an id or a word, got {tok!r}."
            )
        if isinstance(tok, str):
            if not tok.strip():
                raise AnswerTokenError(
                    f"the {which} answer is an empty string; give a word or an id."
                )
            if tokenizer is None:
                raise CaptureError(
                    f"answer_tokens has the word {tok!r} but the model has no tokenizer to look "
                    "it up: pass tokenizer=, or give token ids."
                )
            got = _one_token(tokenizer, tok)
            if got is None:
                pieces = tokenizer.convert_ids_to_tokens(
                    tokenizer(" " + tok.strip(), add_special_tokens=False)["input_ids"]
                )
                raise AnswerTokenError(
                    f"the {which} answer {tok!r} is not one token of the subject's tokenizer "
                    f"(it reads as {pieces}). Give a word that is one token, or its token id."
                )
            out.append(got)
        else:
            try:
                out.append(int(tok))
            except (TypeError, ValueError) as exc:
                raise AnswerTokenError(
                    f"the {which} answer token must be an id or a word, got {tok!r}."
                ) from exc
    return out[0], out[1]


def read_continuations(reader: Reader | None, text: str | None) -> tuple[str, ...] | None:
    """The continuations ``reader`` finds in ``text`` (None without a reader)."""
    if reader is None or text is None:
        return None
    got = reader(text)
    if got is None:
        return ()
    if hasattr(got, "continuations"):
        got = got.continuations
    if isinstance(got, str):
        return (got.strip(),) if got.strip() else ()
    return tuple(str(w).strip() for w in got if w is not None and str(w).strip())
