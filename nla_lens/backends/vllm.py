"""vLLM backends: an OpenAI-compatible server client and the offline engine.

Both need the engine started with prompt embeddings enabled
(``--enable-prompt-embeds`` / ``LLM(..., enable_prompt_embeds=True)``).

Server wire format (``POST /v1/completions``), one request per prompt::

    {"model": "<served name>", "prompt_embeds": "<base64 of torch.save(tensor [T, d])>",
     "max_tokens": 200, "temperature": 0.0, "top_p": 1.0, "seed": 7,
     "stop": ["</explanation>"], "include_stop_str_in_output": true,
     "skip_special_tokens": true, "return_token_ids": true}

and the reply's ``choices[0]`` carries ``text``, ``finish_reason`` and (with
``return_token_ids``) ``token_ids``. Streaming (``explain_stream``) adds ``"stream": true``;
the reply is server-sent events of ``text_completion`` chunks whose ``choices[0].text`` is
the new text (and ``token_ids`` the new ids), ``finish_reason`` set on the last, then
``data: [DONE]``.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.backend import GenerationOutput, Sampling
from ..errors import BackendError, MissingExtraError
from ._http import HTTPBackend, finish_from_text

__all__ = ["VLLMEngineBackend", "VLLMServerBackend", "encode_prompt_embeds"]


def encode_prompt_embeds(embeds: Float[Tensor, "seq d_model"]) -> str:
    """vLLM's ``prompt_embeds`` wire encoding: base64 of ``torch.save`` bytes.

    The tensor is copied first: ``torch.save`` of a view writes its whole
    underlying storage (e.g. the entire batch it was sliced from).
    """
    buf = io.BytesIO()
    torch.save(embeds.detach().to("cpu").clone(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class VLLMServerBackend(HTTPBackend):
    """Client of a vLLM OpenAI-compatible server (``--enable-prompt-embeds``).

    ``model`` is the served model name (by default the path or id the server was
    started with); None leaves it out of the request. Prompt ``i`` of a call is
    sampled with seed ``params.seed + i``. Embeddings travel in their own dtype
    (float32 from :class:`~nla_lens.Verbalizer` by default); the server casts.
    """

    name = "vllm"
    path = "/v1/completions"

    def __init__(self, url: str, model: str | None = None, **options: Any) -> None:
        """``options``: the shared client settings of :class:`HTTPBackend` (max_in_flight,
        timeout, retries, backoff, max_backoff, skip_special_tokens, headers)."""
        super().__init__(url, **options)
        self.model = model

    def _body(self, embeds: Tensor, params: Sampling, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt_embeds": encode_prompt_embeds(embeds),
            "max_tokens": int(params.max_new_tokens),
            "temperature": float(params.temperature),
            "top_p": float(params.top_p),
            "stop": list(params.stop),
            "include_stop_str_in_output": True,
            "skip_special_tokens": self.skip_special_tokens,
            "return_token_ids": True,
        }
        if self.model is not None:
            body["model"] = self.model
        if params.seed is not None:
            body["seed"] = int(params.seed) + index
        return body

    def _parse(self, reply: Any, params: Sampling) -> GenerationOutput:
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            raise self._malformed(reply, "expected 'choices' with exactly one entry")
        choice = choices[0]
        if not isinstance(choice.get("text"), str):
            raise self._malformed(reply, "choices[0] has no string 'text'")
        ids = choice.get("token_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise self._malformed(reply, "choices[0].token_ids is not a list of ints")
        text, reason = finish_from_text(choice["text"], params, choice.get("finish_reason"))
        if reason is None:
            raise self._malformed(reply, f"finish_reason {choice.get('finish_reason')!r}")
        return GenerationOutput(text=text, token_ids=tuple(ids), finish_reason=reason)

    def _stream_chunk(
        self, chunk: Any, state: dict[str, Any], params: Sampling
    ) -> tuple[str, GenerationOutput | None] | None:
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list):
            raise self._malformed(chunk, "a streamed event without 'choices'")
        if not choices:  # e.g. a usage-only event
            return None
        choice = choices[0]
        if (
            len(choices) != 1
            or not isinstance(choice, dict)
            or not isinstance(choice.get("text"), str)
        ):
            raise self._malformed(chunk, "a streamed event without one choice with string 'text'")
        state["text"] += choice["text"]  # a delta: the new text only
        ids = choice.get("token_ids") or []
        if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
            state["ids"] += ids
        reported = choice.get("finish_reason")
        if reported is None:
            return state["text"], None
        text, reason = finish_from_text(state["text"], params, reported)
        if reason is None:
            raise self._malformed(chunk, f"finish_reason {reported!r}")
        return text, GenerationOutput(
            text=text, token_ids=tuple(state["ids"]), finish_reason=reason
        )

    def __repr__(self) -> str:
        return f"VLLMServerBackend({self.url!r}, model={self.model!r}, max_in_flight={self.max_in_flight})"


class VLLMEngineBackend:
    """The offline vLLM engine in this process, fed prompt embeddings.

    ``engine_kwargs`` go to ``vllm.LLM`` (e.g. ``dtype="bfloat16"``,
    ``max_model_len=512``, ``gpu_memory_utilization=0.4``); prompt embeddings
    are always enabled. Scripts that build it should sit under
    ``if __name__ == "__main__":`` (vLLM starts worker processes), or set
    ``VLLM_ENABLE_V1_MULTIPROCESSING=0``.
    """

    name = "vllm-engine"

    def __init__(self, checkpoint_dir: str | os.PathLike[str], **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise MissingExtraError(
                "vllm", "vllm", "VLLMEngineBackend (the offline vLLM engine)"
            ) from exc
        self._vllm = vllm
        self.checkpoint_dir = str(checkpoint_dir)
        kwargs = {**engine_kwargs, "enable_prompt_embeds": True}
        self.llm = vllm.LLM(model=self.checkpoint_dir, **kwargs)

    def _sampling(self, params: Sampling, index: int) -> Any:
        return self._vllm.SamplingParams(
            temperature=float(params.temperature),
            top_p=float(params.top_p),
            max_tokens=int(params.max_new_tokens),
            seed=None if params.seed is None else int(params.seed) + index,
            stop=list(params.stop),
            include_stop_str_in_output=True,
            skip_special_tokens=True,
        )

    def generate(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> list[GenerationOutput]:
        params = Sampling.check(params)
        items = [e.detach().to("cpu").contiguous() for e in prompt_embeds]
        if not items:
            return []
        prompts = [{"prompt_embeds": e} for e in items]
        sampling = [self._sampling(params, i) for i in range(len(items))]
        outs = self.llm.generate(prompts, sampling, use_tqdm=False)
        if len(outs) != len(items):
            raise BackendError(f"vLLM returned {len(outs)} results for {len(items)} prompts.")
        result = []
        for i, out in enumerate(outs):
            comp = out.outputs[0]
            text, reason = finish_from_text(comp.text, params, comp.finish_reason)
            if reason is None:
                raise BackendError(
                    f"vLLM prompt {i}: finish_reason {comp.finish_reason!r} (aborted?)."
                )
            result.append(
                GenerationOutput(
                    text=text, token_ids=tuple(int(t) for t in comp.token_ids), finish_reason=reason
                )
            )
        return result

    def __repr__(self) -> str:
        return f"VLLMEngineBackend({self.checkpoint_dir!r})"
