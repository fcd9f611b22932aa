"""The SGLang client: decode AV prompt embeddings on an SGLang server.

Wire format (SGLang's native ``POST /generate``), one request per prompt::

    {"input_embeds": [[float, ...], ...],          # [T, d]: embeddings only, never ids
     "sampling_params": {"temperature": 0.0, "max_new_tokens": 200, "top_p": 1.0,
                         "stop": ["</explanation>"], "no_stop_trim": true,
                         "skip_special_tokens": true, "sampling_seed": 7}}

The reply is ``{"text": ..., "meta_info": {"finish_reason": {"type": "stop"}}}``
(or a one-element list of that). Streaming (``explain_stream``) sends the same body
with ``"stream": true``; the reply is server-sent events, ``data: {...}`` each with the
text and ``output_ids`` so far (SGLang's default, cumulative, streaming output) and
``meta_info.finish_reason`` set on the last, then ``data: [DONE]``. Launch the server with
``--disable-radix-cache``: its prefix cache keys on token ids, which embedding
requests do not have, so different prompts would alias (docs/recipe.md, section 3).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..core.backend import GenerationOutput, Sampling
from ._http import HTTPBackend, finish_from_text

__all__ = ["SGLangBackend"]


class SGLangBackend(HTTPBackend):
    """Client of an SGLang server running the AV checkpoint (``--disable-radix-cache``).

    Prompt ``i`` of a call is sampled with seed ``params.seed + i`` (distinct
    seeds, so repeated prompts give distinct samples; :class:`~nla_lens.Verbalizer`
    offsets ``params.seed`` by each batch's first row, so a row's seed does not
    depend on the batching). ``skip_special_tokens=True`` decodes text as the
    in-process backend does; the stop string is kept (``no_stop_trim``).
    """

    name = "sglang"
    path = "/generate"

    def _body(self, embeds: Tensor, params: Sampling, index: int) -> dict[str, Any]:
        sampling: dict[str, Any] = {
            "temperature": float(params.temperature),
            "max_new_tokens": int(params.max_new_tokens),
            "top_p": float(params.top_p),
            "stop": list(params.stop),
            "no_stop_trim": True,
            "skip_special_tokens": self.skip_special_tokens,
        }
        if params.seed is not None:
            sampling["sampling_seed"] = int(params.seed) + index
        return {"input_embeds": embeds.detach().float().cpu().tolist(), "sampling_params": sampling}

    def _parse(self, reply: Any, params: Sampling) -> GenerationOutput:
        if isinstance(reply, list):
            if len(reply) != 1:
                raise self._malformed(reply, f"a list of {len(reply)} results for one prompt")
            reply = reply[0]
        if not isinstance(reply, dict) or not isinstance(reply.get("text"), str):
            raise self._malformed(reply, "no string 'text'")
        ids = reply.get("output_ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise self._malformed(reply, "'output_ids' is not a list of ints")
        meta = reply.get("meta_info") or {}
        finish = meta.get("finish_reason") if isinstance(meta, dict) else None
        kind = finish.get("type") if isinstance(finish, dict) else finish
        text, reason = finish_from_text(reply["text"], params, kind)
        if reason is None:
            raise self._malformed(reply, f"finish_reason {kind!r} (the request was aborted?)")
        return GenerationOutput(text=text, token_ids=tuple(ids), finish_reason=reason)

    def _stream_chunk(
        self, chunk: Any, state: dict[str, Any], params: Sampling
    ) -> tuple[str, GenerationOutput | None] | None:
        if isinstance(chunk, list) and len(chunk) == 1:
            chunk = chunk[0]
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise self._malformed(chunk, "a streamed event without a string 'text'")
        state["text"] = chunk["text"]  # cumulative: the text so far
        ids = chunk.get("output_ids")
        if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
            state["ids"] = ids
        meta = chunk.get("meta_info") or {}
        finish = meta.get("finish_reason") if isinstance(meta, dict) else None
        if finish is None:
            return state["text"], None
        kind = finish.get("type") if isinstance(finish, dict) else finish
        text, reason = finish_from_text(state["text"], params, kind)
        if reason is None:
            raise self._malformed(chunk, f"finish_reason {kind!r} (the request was aborted?)")
        return text, GenerationOutput(
            text=text, token_ids=tuple(state["ids"]), finish_reason=reason
        )
