"""The local backend's decode loop: one step at a time, finished rows leave the batch.

:class:`LocalDecodeStream` prefills the prompts (their shared prefix once, see
:mod:`.shared_prefix`), then decodes one token per running row per step. A row
that ends (EOS, a stop string, ``max_new_tokens``) or that the caller cancels is
dropped from the batch and its KV cache at once, so the rows still running do not
pay for it. ``LocalBackend.generate`` drains this same loop, so a streamed decode
run to completion is the decode ``generate`` returns (same batches, same numbers).

Sampling draws each row's tokens from its own generator (seeded ``seed + row``, or
from torch's global generator when no seed is given), so a row's sample does not
depend on which other rows share its batch or when they leave it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from . import shared_prefix
from .backend import DecodeUpdate
from .sampling import Sampling
from .tokens import batch_decoder


@runtime_checkable
class LoopBackend(Protocol):
    """What the loop reads from its backend (``LocalBackend`` has it; named here, not
    imported, so the loop does not import the backend that drives it)."""

    @property
    def model(self) -> Any: ...
    @property
    def tokenizer(self) -> Any: ...
    @property
    def eos_ids(self) -> Any: ...
    @property
    def share_prefix(self) -> bool: ...
    def _shared_prefix_cache(self, embeds: Tensor, mask: Tensor) -> Any: ...
    def _finish(self, ids: list[int], params: Sampling) -> Any: ...


__all__ = ["LocalDecodeStream", "top_p_filter"]

#: Generated tokens re-decoded per step to look for a stop string (it may span tokens).
STOP_WINDOW = 16


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering as transformers' ``TopPLogitsWarper`` does it (keeps >= 1 token)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - top_p)
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))


class LocalDecodeStream:
    """One streamed decode of a batch of prompt embeddings on a :class:`LocalBackend`.

    Iterating yields, per decode step, a list of :class:`DecodeUpdate` for the rows
    that produced a token (``text`` only when made with ``text=True``; ``output`` on
    a row's last update). :meth:`cancel` drops rows before the next step; they get
    no further update. Torch state (inference mode, attention routing) is entered
    per step, never held while the caller runs between steps.
    """

    def __init__(
        self, backend: LoopBackend, embeds: Tensor, mask: Tensor, params: Sampling, *, text: bool
    ) -> None:
        self.backend = backend
        self.params = params
        self.text = text
        self.embeds = embeds
        self.mask = mask
        self._cancelled: set[int] = set()
        self._closed = False
        self._iterated = False
        # on the CPU the Rust decode pool would take cores from the model's own threads
        on_cpu = next(backend.model.parameters()).device.type == "cpu"
        self._decode = batch_decoder(backend.tokenizer, parallel=not on_cpu)

    def cancel(self, rows: Iterable[int]) -> None:
        """Stop decoding ``rows`` (indices into this call's prompts) before the next step."""
        self._cancelled.update(int(r) for r in rows)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> LocalDecodeStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- the loop ------------------------------------------------------------------
    def _generators(self, n: int, device: torch.device) -> list[torch.Generator] | None:
        if self.params.greedy:
            return None
        seed = self.params.seed
        if seed is None:  # follow torch.manual_seed, as transformers' sampling does
            seed = int(torch.randint(0, 2**62, (1,)).item())
        return [torch.Generator(device=device).manual_seed(seed + i) for i in range(n)]

    def _next_tokens(self, logits: Tensor, gens: list[torch.Generator] | None) -> Tensor:
        scores = logits.float()
        if gens is None:
            return scores.argmax(dim=-1)
        scores = top_p_filter(scores / self.params.temperature, self.params.top_p)
        probs = scores.softmax(dim=-1)
        return torch.cat(
            [torch.multinomial(probs[i : i + 1], 1, generator=g)[0] for i, g in enumerate(gens)]
        )

    def __iter__(self) -> Iterator[list[DecodeUpdate]]:
        if self._iterated:
            raise RuntimeError("a decode stream can be iterated once")
        self._iterated = True
        b = self.backend
        model, params = b.model, self.params
        device = next(model.parameters()).device
        embeds, mask = self.embeds.to(device), self.mask.to(device)
        n = embeds.shape[0]
        rows = list(range(n))  # the prompt index of each row still in the batch
        ids: list[list[int]] = [[] for _ in range(n)]
        gens = self._generators(n, device)
        keep_logits = _logits_to_keep(model)
        with torch.inference_mode():
            shared = b._shared_prefix_cache(embeds, mask) if b.share_prefix else None
        first: Tensor | None = None  # the first step's logits, where the prefill gave them
        if shared is None:
            from transformers import DynamicCache

            cache: Any = DynamicCache(config=model.config)
            cascade = False
        else:
            cache, cascade, *given = shared
            first = given[0] if given else None
        cached = cache.get_seq_length() if shared is not None else 0
        positions = mask.long().cumsum(-1) - 1
        positions = positions.masked_fill(mask == 0, 1)
        step_in: dict[str, Tensor] = {
            "inputs_embeds": embeds[:, cached:],
            "position_ids": positions[:, cached:],
        }
        last_pos = positions[:, -1:]
        limit = shared_prefix.window(model) if cascade else None
        for _ in range(params.max_new_tokens):
            if self._closed or not rows:
                return
            if limit is not None and cache.get_seq_length() + _length(step_in) > limit:
                with torch.inference_mode():  # past the window: the model's own attention
                    cache, cascade, limit = shared_prefix.to_plain(cache, model.config), False, None
            with (
                torch.inference_mode(),
                shared_prefix.active(model, cache) if cascade and first is None else nullcontext(),
            ):
                if first is not None:  # the prefill ran the whole prompt
                    logits, first = first, None
                else:
                    out = model(
                        **step_in,
                        attention_mask=mask,
                        past_key_values=cache,
                        use_cache=True,
                        **keep_logits,
                    )
                    logits = out.logits[:, -1, :]
                gens_now = None if gens is None else [gens[r] for r in rows]
                new = self._next_tokens(logits, gens_now).tolist()
            updates, keep = self._advance(rows, ids, new)
            if updates:
                yield updates
            keep = [i for i in keep if rows[i] not in self._cancelled]
            if not keep:
                return
            if len(keep) < len(rows):
                idx = torch.tensor(keep, device=device)
                with torch.inference_mode():
                    cache.batch_select_indices(idx)
                mask, last_pos = mask[idx], last_pos[idx]
                new = [new[i] for i in keep]
                rows = [rows[i] for i in keep]
            last_pos = last_pos + 1
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            step_in = {
                "input_ids": torch.tensor(new, device=device).view(-1, 1),
                "position_ids": last_pos,
            }
        # max_new_tokens reached: the rows still running end here (finish_reason "length")
        final = [
            DecodeUpdate(r, self._text(ids[r]), self.backend._finish(list(ids[r]), params))
            for r in rows
            if r not in self._cancelled
        ]
        if final and not self._closed:
            yield final

    def _advance(
        self, rows: list[int], ids: list[list[int]], new: list[int]
    ) -> tuple[list[DecodeUpdate], list[int]]:
        """Append each row's token; the updates of this step and the batch indices still running."""
        b, params = self.backend, self.params
        last_step = False
        for r, tok in zip(rows, new, strict=True):
            ids[r].append(tok)
            last_step = len(ids[r]) >= params.max_new_tokens
        done = [tok in b.eos_ids for tok in new]
        # one call per step for every row still running
        texts = self._decode([ids[r] for r in rows]) if self.text else [""] * len(rows)
        if params.stop:
            # explain's rule: a stop string in the decode of the row's last STOP_WINDOW tokens.
            # A stop string there is in the row's whole text too, so where the whole texts
            # are at hand only the rows whose text holds one have their tails decoded.
            check = [
                i
                for i, t in enumerate(texts)
                if not done[i] and (not self.text or any(s in t for s in params.stop))
            ]
            if check:
                tails = self._decode([ids[rows[i]][-STOP_WINDOW:] for i in check])
                for i, t in zip(check, tails, strict=True):
                    done[i] = any(s in t for s in params.stop)
        updates, keep = [], []
        for i, (r, d) in enumerate(zip(rows, done, strict=True)):
            text = texts[i].rstrip("\ufffd")  # an incomplete character waits for its last token
            if d:
                updates.append(DecodeUpdate(r, text, b._finish(list(ids[r]), params)))
            else:
                keep.append(i)
                if self.text and not last_step:
                    updates.append(DecodeUpdate(r, text))
        return updates, keep

    def _text(self, ids: list[int]) -> str:
        if not self.text:
            return ""
        return self._decode([ids])[0].rstrip(
            "\ufffd"
        )  # an incomplete multi-byte character waits for its last token


def _length(step_in: dict[str, Tensor]) -> int:
    """Tokens a step feeds the model."""
    x = step_in.get("inputs_embeds", step_in.get("input_ids"))
    return 0 if x is None else int(x.shape[1])


def _logits_to_keep(model: Any) -> dict[str, int]:
    """``logits_to_keep=1`` where the model takes it (only the last position's logits)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}
