"""One sampling object, from ``NLA.explain`` through caches and jobs down to the backends.

:class:`Sampling` holds every setting that changes what the AV writes
(temperature, top_p, max_new_tokens, seed, stop strings) and how a call is cut
up (samples per vector, batch size). It is validated once, when it is made, so
a bad value is refused with a :class:`~nla_lens.errors.SamplingError` before any
model runs, never passed on to transformers or a server.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import SamplingError
from .explanation import EXPLANATION_CLOSE

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "Sampling"]

#: The AV's default decoding budget (released explanations are well under 200 tokens).
DEFAULT_MAX_NEW_TOKENS = 200
_SEED_LIMIT = 2**63
#: Upper bounds that keep a typo (an extra zero or three) from reaching the model:
#: the AV's explanations are ~100 tokens, and each sample is one more decode.
MAX_NEW_TOKENS_LIMIT = 2**15
SAMPLES_LIMIT = 4096
BATCH_SIZE_LIMIT = 2**16
#: Below this a temperature overflows the logits (inf/NaN probabilities in torch);
#: above the upper one decoding is uniform noise.
_MIN_TEMPERATURE, _MAX_TEMPERATURE = 1e-3, 100.0


def _int(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SamplingError(
            f"{name} must be a whole number, got {value!r} ({type(value).__name__})."
        )
    v = int(value)
    if v < low or (high is not None and v >= high):
        span = f">= {low}" if high is None else f"between {low} and {high - 1}"
        raise SamplingError(f"{name} must be {span}, got {v}.")
    return v


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SamplingError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    v = float(value)
    if not math.isfinite(v):
        raise SamplingError(f"{name} must be finite, got {v}.")
    return v


@dataclass(frozen=True)
class Sampling:
    """Decoding settings for the AV. ``temperature == 0`` (the default) is greedy.

    ``samples`` explanations are drawn per vector (needs ``temperature > 0`` when
    above 1); ``batch_size`` vectors are decoded per backend call; ``seed`` makes
    sampled decodes reproducible (ignored when greedy).
    """

    temperature: float = 0.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    top_p: float = 1.0
    seed: int | None = None
    samples: int = 1
    batch_size: int = 64
    stop: tuple[str, ...] = (EXPLANATION_CLOSE,)

    def __post_init__(self) -> None:
        t = _float("temperature", self.temperature)
        if t != 0 and not _MIN_TEMPERATURE <= t <= _MAX_TEMPERATURE:
            raise SamplingError(
                f"temperature must be 0 (greedy) or in [{_MIN_TEMPERATURE}, {_MAX_TEMPERATURE:g}], "
                f"got {t}. The AV was trained at 1.0; use temperature=0 for greedy decoding."
            )
        p = _float("top_p", self.top_p)
        if not 0 < p <= 1:
            raise SamplingError(f"top_p must be in (0, 1], got {p}.")
        set_ = object.__setattr__
        set_(self, "temperature", t)
        set_(self, "top_p", p)
        set_(
            self,
            "max_new_tokens",
            _int("max_new_tokens", self.max_new_tokens, low=1, high=MAX_NEW_TOKENS_LIMIT + 1),
        )
        set_(self, "samples", _int("samples", self.samples, low=1, high=SAMPLES_LIMIT + 1))
        set_(
            self,
            "batch_size",
            _int("batch_size", self.batch_size, low=1, high=BATCH_SIZE_LIMIT + 1),
        )
        if self.seed is not None:
            set_(self, "seed", _int("seed", self.seed, low=0, high=_SEED_LIMIT))
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise SamplingError(f"stop must be non-empty strings, got {self.stop!r}.")
        set_(self, "stop", stop)
        if self.samples > 1 and t == 0.0:
            raise SamplingError(
                f"samples > 1 with temperature=0 would repeat one greedy decode (samples={self.samples}); "
                "set temperature > 0 (the AV was trained at 1.0)."
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def of(cls, sampling: Sampling | Mapping[str, Any] | None = None, **overrides: Any) -> Sampling:
        """A Sampling from an existing one or a mapping, with keyword overrides
        (``None`` overrides are ignored); unknown names are refused."""
        names = {f.name for f in fields(cls)}
        base: dict[str, Any] = {}
        if isinstance(sampling, Sampling):
            base = asdict(sampling)
        elif isinstance(sampling, Mapping):
            base = dict(sampling)
        elif sampling is not None:
            raise SamplingError(
                f"sampling must be a nla_lens.Sampling or a mapping of its settings, got "
                f"{type(sampling).__name__} {sampling!r}; e.g. Sampling(temperature=1.0, seed=0)."
            )
        given = {**base, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(given) - names)
        if unknown:
            raise SamplingError(
                f"unknown sampling setting(s) {unknown}; the settings are {sorted(names)}."
            )
        return cls(**given)

    @classmethod
    def check(cls, params: Any) -> Sampling:
        """``params`` as a validated Sampling, for entry points (backends) that may be
        called directly: a Sampling is re-checked, a mapping converted, anything else refused."""
        return cls.of(params)

    def replace(self, **changes: Any) -> Sampling:
        return replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """The settings that change a decode (for caches and job fingerprints); the seed
        is left out when greedy, where it changes nothing."""
        return {
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "top_p": self.top_p,
            "seed": None if self.greedy else self.seed,
            "stop": list(self.stop),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop"] = list(self.stop)
        return out
