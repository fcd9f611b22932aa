"""The in-process transformers backend: batched generation from prompt embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from . import shared_prefix
from .backend import GenerationOutput, Sampling
from .decode_loop import LocalDecodeStream, _logits_to_keep

__all__ = ["LocalBackend", "StopOnText", "left_pad"]

#: Shared prompt prefixes shorter than this are not worth a separate prefill.
MIN_SHARED_PREFIX = 8


class StopOnText:
    """A ``StoppingCriteria`` that ends a row once its decoded tail contains a stop string.

    Works with any tokenizer (the stop string may span several tokens); only the
    last ``window`` generated tokens of each row still running are decoded per
    step. Rows it has stopped, or that produced one of ``eos_ids``, are
    remembered as done (generate stops them for good), so make one instance per
    ``generate`` call.
    """

    def __init__(
        self,
        tokenizer: Any,
        stops: Sequence[str],
        prompt_length: int,
        window: int = 16,
        eos_ids: Sequence[int] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prompt_length = prompt_length
        self.window = window
        self.eos_ids = tuple(eos_ids)
        self.done: Tensor | None = None

    def __call__(self, input_ids: Tensor, scores: Tensor | None = None, **kwargs: Any) -> Tensor:
        if self.done is None or self.done.shape[0] != input_ids.shape[0]:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.eos_ids and input_ids.shape[1] > self.prompt_length:
            last = input_ids[:, -1]
            for eos in self.eos_ids:
                self.done |= last == eos
        running = (~self.done).nonzero().flatten().tolist()
        if running:
            tails = input_ids[running, self.prompt_length :][:, -self.window :].tolist()
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
            hit = [
                i for i, t in zip(running, texts, strict=True) if any(s in t for s in self.stops)
            ]
            self.done[hit] = True
        return self.done.clone()


def left_pad(
    prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
) -> tuple[Float[Tensor, "n seq d_model"], Tensor]:
    """Stack prompts of any lengths, left-padded with zeros, and their attention mask."""
    if isinstance(prompt_embeds, Tensor) and prompt_embeds.ndim == 3:
        n, t, _ = prompt_embeds.shape
        return prompt_embeds, torch.ones(n, t, dtype=torch.long, device=prompt_embeds.device)
    items = list(prompt_embeds)
    t = max(e.shape[0] for e in items)
    out = items[0].new_zeros(len(items), t, items[0].shape[-1])
    mask = torch.zeros(len(items), t, dtype=torch.long, device=out.device)
    for i, e in enumerate(items):
        out[i, t - e.shape[0] :] = e
        mask[i, t - e.shape[0] :] = 1
    return out, mask


class LocalBackend:
    """Decodes with a Hugging Face causal LM in this process.

    Prompts of equal length (the AV's case: one template, one injected row) are
    run without padding, and the prefix they all share is prefilled once
    (``share_prefix``); prompts of different lengths are left-padded with a
    correct attention mask, from which transformers derives the positions.
    """

    name = "local"

    def __init__(self, model: nn.Module, tokenizer: Any, *, share_prefix: bool = True) -> None:
        self.model: Any = model
        self.tokenizer = tokenizer
        self.share_prefix = share_prefix
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos_ids = eos if isinstance(eos, list) else [eos]
        eos_ids = [*eos_ids, tokenizer.eos_token_id]
        self.eos_ids = sorted({int(i) for i in eos_ids if i is not None})
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])

    def _shared_prefix_cache(self, embeds: Tensor, mask: Tensor) -> Any:
        """A KV cache of the prompts, their shared prefix computed once.

        AV prompts differ only from the injected row on, so the ~90% of the prompt
        before the marker is prefilled once per batch, and identical prompts (the
        ``samples`` rows of one vector) have their tails prefilled once. Where the
        model allows it (:mod:`.shared_prefix`) the prefix is also *kept* once and
        attended to by all rows together (while the sequence fits the model's sliding
        window: the decode loop converts the cache to a plain one when it grows past, so
        the decode's length does not decide it); otherwise its cache is repeated per row.
        Returns ``None`` when nothing is shared; else ``(cache, False)``, a cache of the
        prefix repeated per row (the decode loop feeds the rest of the prompt), or
        ``(cache, True, logits)``: the whole prompt cached, the prefix once, and the
        next-token logits at each prompt's last token (the rest of the prompt is prefilled
        in one forward that also gives the first token, as a plain prefill would).
        """
        n, t, _ = embeds.shape
        if n < 2 or not bool(mask.all()):
            return None
        same = (embeds == embeds[:1]).all(dim=2).all(dim=0)
        prefix = int(same.long().cumprod(0).sum())
        prefix = min(prefix, t - 1)  # the last token's logits come from the rows' own prefill
        if prefix < MIN_SHARED_PREFIX:
            return None
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        self.model(inputs_embeds=embeds[:1, :prefix], past_key_values=cache, use_cache=True)
        if not shared_prefix.supports(self.model, t):  # the decode loop leaves it at the window
            cache.batch_repeat_interleave(n)
            return cache, False
        layers = [(getattr(la, "keys", None), getattr(la, "values", None)) for la in cache.layers]
        if any(k is None or v is None or k.shape[-2] != prefix for k, v in layers):
            cache.batch_repeat_interleave(n)
            return cache, False
        shared = shared_prefix.shared_prefix_cache(layers)  # type: ignore[arg-type]
        tails = embeds[:, prefix:]  # the rest of each prompt, its last token included
        distinct, inverse = torch.unique(tails.reshape(n, -1), dim=0, return_inverse=True)
        with shared_prefix.active(self.model, shared):
            out = self.model(
                inputs_embeds=distinct.view(-1, *tails.shape[1:]),
                past_key_values=shared,
                use_cache=True,
                **_logits_to_keep(self.model),
            )
        shared.batch_select_indices(inverse)
        return shared, True, out.logits[:, -1, :][inverse]

    def stream(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> LocalDecodeStream:
        """Decode step by step (see :mod:`.decode_loop`): each step's text per running row,
        finished and cancelled rows leaving the batch."""
        params = Sampling.check(params)
        embeds, mask = left_pad(prompt_embeds)
        return LocalDecodeStream(self, embeds, mask, params, text=True)

    def generate(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> list[GenerationOutput]:
        """Decode every prompt to the end: the same loop as :meth:`stream`, drained."""
        params = Sampling.check(params)
        embeds, mask = left_pad(prompt_embeds)
        outputs: list[GenerationOutput | None] = [None] * embeds.shape[0]
        for updates in LocalDecodeStream(self, embeds, mask, params, text=False):
            for u in updates:
                if u.output is not None:
                    outputs[u.row] = u.output
        missing = [i for i, o in enumerate(outputs) if o is None]
        if missing:  # the loop ends every row it is not told to cancel
            raise RuntimeError(f"local decode ended without an output for rows {missing}")
        return [o for o in outputs if o is not None]

    def _finish(self, ids: list[int], params: Sampling) -> GenerationOutput:
        stop_at = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        kept = ids if stop_at is None else ids[:stop_at]
        while kept and kept[-1] == self.pad_id:  # rows that stopped on a stop string are padded
            kept.pop()
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        hit = [text.find(s) + len(s) for s in params.stop if s in text]
        if hit:
            text = text[: min(hit)]
        finished = stop_at is not None or bool(hit)
        return GenerationOutput(
            text=text, token_ids=tuple(kept), finish_reason="stop" if finished else "length"
        )
