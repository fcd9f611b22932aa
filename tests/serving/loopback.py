"""A loopback HTTP server for the wire-contract tests and the server benchmark.

It speaks SGLang's ``POST /generate`` (``input_embeds``) and vLLM's
``POST /v1/completions`` (``prompt_embeds`` = base64 of ``torch.save`` bytes), each
also with ``"stream": true`` (server-sent events: SGLang's cumulative ``text`` /
``output_ids``, vLLM's ``text_completion`` deltas, then ``data: [DONE]``)
and decodes in-process with a Hugging Face causal LM (the toy AV), written
independently of nla_lens: ``model.generate(inputs_embeds=...)``, stopping on
EOS or a stop string. Requests that arrive together are decoded as one batch
(as a real engine's continuous batcher would), greedy ones by prompt length.

Bound to 127.0.0.1 on a free port; used only by tests and ``bench/``. Faults
can be injected to test the clients' retry logic (see :class:`Faults`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from aiohttp import web
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList


@dataclass
class Faults:
    """What the server does wrong. Request numbers count every POST (retries
    included) from 1; "tries" count POSTs with the same body (one prompt's retries)."""

    drop_on: set[int] = field(default_factory=set)  # close the connection without replying
    error_first: int = 0  # reply 500 to the first k tries of every prompt
    slow_first: int = (
        0  # sleep `slow_seconds` before replying, for the first k tries of every prompt
    )
    slow_seconds: float = 0.0
    bad_request_on: set[int] = field(default_factory=set)  # reply 400 with a message
    malformed_on: set[int] = field(
        default_factory=set
    )  # reply 200 with a body that is not the contract
    garbage_on: set[int] = field(default_factory=set)  # reply 200 with a body that is not JSON
    drop_stream_on: set[int] = field(default_factory=set)  # abort a stream after half its events
    end_stream_on: set[int] = field(default_factory=set)  # end a stream early, cleanly, no finish


@dataclass
class Stats:
    requests: int = 0
    replies: Counter[str] = field(
        default_factory=Counter
    )  # prompt key -> 200 replies with a decode
    tries: Counter[str] = field(default_factory=Counter)  # prompt key -> POSTs
    batches: list[int] = field(default_factory=list)  # sizes of decode batches
    max_inflight: int = 0  # most requests open at once
    streams: int = 0  # streamed replies sent to the end


@dataclass
class _Job:
    embeds: torch.Tensor
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    future: asyncio.Future[tuple[str, list[int], str]]


class _StopOnStrings(StoppingCriteria):
    """Stop a row once its decoded text contains a stop string (generating from
    embeddings only, ``input_ids`` holds just the new tokens)."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tokenizer, self.stop = tokenizer, stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool)  # type: ignore[return-value]


class Decoder:
    """Greedy/sampled decoding from prompt embeddings with a Hugging Face causal LM."""

    def __init__(self, model_dir: str | Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32
        ).eval()
        self.d_model = self.model.get_input_embeddings().weight.shape[1]
        eos = self.model.generation_config.eos_token_id
        self.eos = sorted(
            {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None}
        )
        self.pad = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos[0]
        )

    @torch.inference_mode()
    def decode(self, jobs: list[_Job]) -> list[tuple[str, list[int], str]]:
        """Decode jobs of one prompt length and one sampling setting as a batch."""
        first = jobs[0]
        embeds = torch.stack([j.embeds for j in jobs]).float()
        kwargs: dict[str, Any] = dict(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            max_new_tokens=first.max_new_tokens,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
        )
        if first.stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_StopOnStrings(self.tokenizer, first.stop)]
            )
        if first.temperature == 0.0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(
                do_sample=True, temperature=first.temperature, top_p=first.top_p, top_k=None
            )
        with torch.random.fork_rng(devices=[]):
            if first.seed is not None:
                torch.manual_seed(first.seed)
            out = self.model.generate(**kwargs)
        return [self._finish(row.tolist(), first) for row in out]

    def _finish(self, ids: list[int], job: _Job) -> tuple[str, list[int], str]:
        end = next((i for i, t in enumerate(ids) if t in self.eos), None)
        kept = ids if end is None else ids[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        cuts = [text.index(s) + len(s) for s in job.stop if s in text]
        if (
            cuts
        ):  # keep the ids up to the token that completed the stop string (batch padding follows)
            k = next(
                k
                for k in range(1, len(kept) + 1)
                if any(
                    s in self.tokenizer.decode(kept[:k], skip_special_tokens=True) for s in job.stop
                )
            )
            return text[: min(cuts)], kept[:k], "stop"
        return text, kept, "stop" if end is not None else "length"


class LoopbackServer:
    """``with LoopbackServer(av_dir) as srv: SGLangBackend(srv.url)``."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        faults: Faults | None = None,
        max_batch: int = 64,
        batch_window: float = 0.005,
    ) -> None:
        self.decoder = Decoder(model_dir)
        self.model_name = str(model_dir)
        self.faults = faults or Faults()
        self.stats = Stats()
        self.max_batch = max_batch
        self.batch_window = batch_window
        self._lock = threading.Lock()
        self._inflight = 0
        self._last_seen = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopback-decode")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(
        self, faults: Faults | None = None, *, quiet: float = 0.2, timeout: float = 30.0
    ) -> None:
        """New faults and zeroed stats, once requests left over from an aborted call have drained
        (no request in flight and none arriving for ``quiet`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._inflight == 0 and time.monotonic() - self._last_seen >= quiet
            if idle:
                break
            time.sleep(0.02)
        with self._lock:
            self.faults = faults or Faults()
            self.stats = Stats()

    def __enter__(self) -> LoopbackServer:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), daemon=True, name="loopback-http"
        )
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("loopback server did not start within 30 s")
        return self

    def __exit__(self, *exc: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/generate", self._tracked(self._sglang))
        app.router.add_post("/v1/completions", self._tracked(self._vllm))
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._queue = asyncio.Queue()
        batcher = loop.create_task(self._batcher())
        ready.set()
        loop.run_forever()
        batcher.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(batcher)
        loop.close()

    # ---- batching ------------------------------------------------------------------
    async def _batcher(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            deadline = loop.time() + self.batch_window
            while len(jobs) < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), timeout=max(timeout, 0)))
                except asyncio.TimeoutError:
                    break
            for group in self._groups(jobs):
                with self._lock:
                    self.stats.batches.append(len(group))
                try:
                    results = await loop.run_in_executor(self._pool, self.decoder.decode, group)
                except Exception as exc:  # surface decode failures as 500s
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)
                    continue
                for j, r in zip(group, results, strict=True):
                    if not j.future.done():
                        j.future.set_result(r)

    @staticmethod
    def _groups(jobs: list[_Job]) -> Iterator[list[_Job]]:
        by_key: dict[tuple[Any, ...], list[_Job]] = {}
        for j in jobs:
            if (
                j.temperature != 0.0
            ):  # a seeded sample is decoded alone, so its seed alone decides it
                yield [j]
                continue
            key = (j.embeds.shape[0], j.max_new_tokens, j.stop)
            by_key.setdefault(key, []).append(j)
        yield from by_key.values()

    async def _decode(
        self, embeds: torch.Tensor, sampling: dict[str, Any]
    ) -> tuple[str, list[int], str]:
        assert self._queue is not None
        stop = sampling.get("stop") or ()
        job = _Job(
            embeds=embeds,
            max_new_tokens=int(sampling["max_new_tokens"]),
            temperature=float(sampling.get("temperature", 1.0)),
            top_p=float(sampling.get("top_p", 1.0)),
            seed=sampling.get("seed"),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            future=asyncio.get_running_loop().create_future(),
        )
        await self._queue.put(job)
        return await job.future

    def _tracked(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            with self._lock:
                self._inflight += 1
                self.stats.max_inflight = max(self.stats.max_inflight, self._inflight)
                self._last_seen = time.monotonic()
            try:
                return await handler(request)
            finally:
                with self._lock:
                    self._inflight -= 1
                    self._last_seen = time.monotonic()

        return wrapped

    # ---- faults ----------------------------------------------------------------------
    async def _fault(self, request: web.Request, key: str) -> web.StreamResponse | None:
        with self._lock:
            self.stats.requests += 1
            n = self.stats.requests
            self.stats.tries[key] += 1
            tries = self.stats.tries[key]
            f = self.faults
        if n in f.drop_on:
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=500)  # never reaches the client: the connection is gone
        if tries <= f.slow_first:
            await asyncio.sleep(f.slow_seconds)
        if tries <= f.error_first:
            return web.Response(status=500, text="injected internal error")
        if n in f.bad_request_on:
            return web.json_response(
                {"error": {"message": "injected bad request: prompt too long"}}, status=400
            )
        if n in f.malformed_on:
            return web.json_response({"unexpected": "shape", "n": n})
        if n in f.garbage_on:
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        return None

    def _done(self, key: str) -> None:
        with self._lock:
            self.stats.replies[key] += 1

    # ---- routes ------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _check_width(self, embeds: torch.Tensor) -> str | None:
        if embeds.ndim != 2 or embeds.shape[1] != self.decoder.d_model:
            return (
                f"prompt embeddings must be [seq, {self.decoder.d_model}], got {list(embeds.shape)}"
            )
        return None

    async def _sglang(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        key = hashlib.sha256(raw).hexdigest()
        fault = await self._fault(request, key)
        if fault is not None:
            return fault
        body = json.loads(raw)
        if "input_ids" in body or "text" in body:
            return web.json_response({"error": "send input_embeds only"}, status=400)
        embeds = torch.tensor(body["input_embeds"], dtype=torch.float32)
        sp = dict(body.get("sampling_params") or {})
        sp.setdefault("max_new_tokens", 128)
        sp["seed"] = sp.pop("sampling_seed", None)
        if (msg := self._check_width(embeds)) is not None:
            return web.json_response({"error": {"message": msg}}, status=400)
        text, ids, finish = await self._decode(embeds, sp)
        stop = sp.get("stop") or []
        matched = next((s for s in stop if text.endswith(s)), None)
        if matched is not None and not sp.get("no_stop_trim", False):
            text = text[: -len(matched)]
        if body.get("stream"):
            return await self._sglang_stream(request, ids, text, finish, matched, embeds.shape[0])
        self._done(key)
        meta = {
            "finish_reason": {"type": finish, **({"matched": matched} if matched else {})},
            "prompt_tokens": embeds.shape[0],
            "completion_tokens": len(ids),
        }
        return web.json_response({"text": text, "output_ids": ids, "meta_info": meta})

    async def _vllm(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        key = hashlib.sha256(raw).hexdigest()
        fault = await self._fault(request, key)
        if fault is not None:
            return fault
        body = json.loads(raw)
        if body.get("prompt") not in (None,):
            return web.json_response({"error": {"message": "send prompt_embeds only"}}, status=400)
        embeds = torch.load(io.BytesIO(base64.b64decode(body["prompt_embeds"])), weights_only=True)
        if (msg := self._check_width(embeds)) is not None:
            return web.json_response(
                {"error": {"message": msg, "type": "BadRequestError", "code": 400}}, status=400
            )
        sp = {
            "max_new_tokens": body.get("max_tokens", 16),
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "seed": body.get("seed"),
            "stop": body.get("stop") or [],
        }
        text, ids, finish = await self._decode(embeds, sp)
        matched = next((s for s in sp["stop"] if text.endswith(s)), None)
        if matched is not None and not body.get("include_stop_str_in_output", False):
            text = text[: -len(matched)]
        if body.get("stream"):
            return await self._vllm_stream(request, body, ids, text, finish, matched)
        self._done(key)
        choice: dict[str, Any] = {
            "index": 0,
            "text": text,
            "finish_reason": finish,
            "stop_reason": matched,
        }
        if body.get("return_token_ids"):
            choice["token_ids"] = ids
        usage = {"prompt_tokens": embeds.shape[0], "completion_tokens": len(ids)}
        return web.json_response(
            {
                "id": f"cmpl-{key[:12]}",
                "object": "text_completion",
                "model": self.model_name,
                "choices": [choice],
                "usage": usage,
            }
        )

    # ---- streaming (server-sent events) ---------------------------------------------------
    def _prefixes(self, ids: list[int], final: str) -> list[tuple[list[int], str]]:
        """(ids, text) after each generated token, the last one's text the final reply text."""
        tok = self.decoder.tokenizer
        out = [(ids[:k], tok.decode(ids[:k], skip_special_tokens=True)) for k in range(1, len(ids))]
        return [*out, (ids, final)]

    async def _send_events(
        self, request: web.Request, events: list[dict[str, Any]]
    ) -> web.StreamResponse:
        with self._lock:
            n = self.stats.requests
            f = self.faults
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        cut = len(events) // 2 if n in f.drop_stream_on or n in f.end_stream_on else None
        for i, event in enumerate(events):
            if cut is not None and i == max(cut, 1):
                if n in f.drop_stream_on and request.transport is not None:
                    request.transport.abort()
                else:
                    await resp.write_eof()
                return resp
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await asyncio.sleep(0)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        with self._lock:
            self.stats.streams += 1
        return resp

    async def _sglang_stream(
        self,
        request: web.Request,
        ids: list[int],
        text: str,
        finish: str,
        matched: str | None,
        n_prompt: int,
    ) -> web.StreamResponse:
        events = []
        steps = self._prefixes(ids, text) if ids else [([], text)]
        for k, (part_ids, part) in enumerate(steps):
            last = k == len(steps) - 1
            meta: dict[str, Any] = {
                "finish_reason": (
                    {"type": finish, **({"matched": matched} if matched else {})} if last else None
                ),
                "prompt_tokens": n_prompt,
                "completion_tokens": len(part_ids),
            }
            events.append({"text": part, "output_ids": part_ids, "meta_info": meta})
        return await self._send_events(request, events)

    async def _vllm_stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        ids: list[int],
        text: str,
        finish: str,
        matched: str | None,
    ) -> web.StreamResponse:
        events, sent, sent_ids = [], "", 0
        steps = self._prefixes(ids, text) if ids else [([], text)]
        for k, (part_ids, part) in enumerate(steps):
            last = k == len(steps) - 1
            if not last and not part.startswith(sent):
                continue  # a token that changed earlier text (a split character): wait for more
            choice: dict[str, Any] = {
                "index": 0,
                "text": part[len(sent) :] if part.startswith(sent) else part,
                "finish_reason": finish if last else None,
                "stop_reason": matched if last else None,
            }
            if body.get("return_token_ids"):
                choice["token_ids"] = part_ids[sent_ids:]
            sent, sent_ids = part, len(part_ids)
            events.append(
                {
                    "id": "cmpl-stream",
                    "object": "text_completion",
                    "model": self.model_name,
                    "choices": [choice],
                }
            )
        return await self._send_events(request, events)
