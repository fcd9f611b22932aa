"""The generation-backend protocol: prompt embeddings in, generated text out.

The AV adapter (:class:`nla_lens.Verbalizer`) builds the injected prompt
embeddings itself (tokenize, embed with the architecture's scale, overwrite the
marker row); a backend only decodes from them. The in-process transformers
backend, the SGLang client and the vLLM clients all meet this protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from .sampling import Sampling

__all__ = [
    "DecodeStream",
    "DecodeUpdate",
    "GenerationBackend",
    "GenerationOutput",
    "OneShotStream",
    "Sampling",
    "StreamingBackend",
    "open_stream",
]


@dataclass(frozen=True)
class GenerationOutput:
    """One decode: the generated text (stop string included), its token ids,
    and whether it ended on a stop string / EOS (``"stop"``) or ran out of
    tokens (``"length"``)."""

    text: str
    token_ids: tuple[int, ...] = field(default=())
    finish_reason: Literal["stop", "length"] = "stop"


@runtime_checkable
class GenerationBackend(Protocol):
    """Decodes from prompt embeddings; one output per prompt, in order."""

    name: str

    def generate(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> list[GenerationOutput]:
        """Decode each prompt (a ``[seq, d]`` embedding, or rows of one ``[n, seq, d]``
        tensor when all prompts have one length); outputs in input order."""
        ...


@dataclass(frozen=True)
class DecodeUpdate:
    """One row's progress in a streamed decode.

    ``row`` is the prompt's index in the call, ``text`` the text decoded so far (raw, as
    :attr:`GenerationOutput.text` will be; an incomplete character is held back), and
    ``output`` is set on the row's last update only: the same :class:`GenerationOutput`
    ``generate`` would have returned for it.
    """

    row: int
    text: str
    output: GenerationOutput | None = None


@runtime_checkable
class DecodeStream(Protocol):
    """A decode in progress: iterate for lists of :class:`DecodeUpdate` (one list per step
    or network read), :meth:`cancel` rows to stop decoding them (they get no further
    update), :meth:`close` to abandon the rest. Iteration raises
    :class:`~nla_lens.errors.BackendError` when a row cannot be decoded; it never ends
    with a row neither finished nor cancelled."""

    def __iter__(self) -> Iterator[list[DecodeUpdate]]: ...

    def cancel(self, rows: Iterable[int]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamingBackend(GenerationBackend, Protocol):
    """A backend that can also stream: the local backend, and the SGLang and vLLM clients
    (through the servers' own streaming responses)."""

    def stream(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> DecodeStream:
        """Start decoding each prompt; updates arrive as tokens do."""
        ...


class OneShotStream:
    """The stream of a backend that cannot stream: one ``generate`` call, then every row's
    final update at once (so callers need one code path; nothing arrives early)."""

    def __init__(self, backend: GenerationBackend, prompt_embeds: Any, params: Sampling) -> None:
        self.backend, self.prompt_embeds, self.params = backend, prompt_embeds, params
        self._closed = False

    def __iter__(self) -> Iterator[list[DecodeUpdate]]:
        if self._closed:
            return
        outs = self.backend.generate(self.prompt_embeds, self.params)
        yield [DecodeUpdate(i, o.text, o) for i, o in enumerate(outs)]

    def cancel(self, rows: Iterable[int]) -> None:
        """Nothing to cancel: the rows were decoded in one call."""

    def close(self) -> None:
        self._closed = True


def open_stream(backend: GenerationBackend, prompt_embeds: Any, params: Sampling) -> DecodeStream:
    """``backend.stream(...)`` where the backend streams, else a :class:`OneShotStream`."""
    stream = getattr(backend, "stream", None)
    if callable(stream):
        result: DecodeStream = stream(prompt_embeds, params)
        return result
    return OneShotStream(backend, prompt_embeds, params)
