"""The generation-backend protocol: prompt embeddings in, generated text out.

The AV adapter (:class:`nla_lens.Verbalizer`) builds the injected prompt
embeddings itself (tokenize, embed with the architecture's scale, overwrite the
marker row); a backend only decodes from them. The in-process transformers
backend, the SGLang client and the vLLM clients all meet this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from .sampling import Sampling

__all__ = ["GenerationBackend", "GenerationOutput", "Sampling"]


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
