"""Shared machinery of the HTTP serving clients (SGLang, vLLM).

One request per prompt, sent concurrently with at most ``max_in_flight`` open
at a time; each is retried with exponential backoff on timeouts, connection
errors, 5xx (and 408/429) replies. A 4xx reply or a malformed reply is a
:class:`~nla_lens.errors.BackendError` at once. Results come back one per
prompt, in prompt order. ``generate`` is synchronous and also works when called
from inside a running event loop (Jupyter): the requests then run on a fresh
loop in a worker thread. ``agenerate`` is the coroutine for async callers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import random
from collections.abc import Sequence
from typing import Any, Literal

from jaxtyping import Float
from torch import Tensor

from ..core.backend import GenerationOutput, Sampling
from ..errors import BackendError
from ._net import RETRYABLE_4XX, _Retryable, _short, import_aiohttp

__all__ = ["HTTPBackend", "finish_from_text", "import_aiohttp", "run_sync"]

log = logging.getLogger("nla_lens.backends")


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, inside a running loop or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop is running in this thread (Jupyter, an async app): run on a fresh loop in a worker.
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="nla_lens-http"
    ) as pool:
        return pool.submit(asyncio.run, coro).result()


def finish_from_text(
    text: str, params: Sampling, reported: Any
) -> tuple[str, Literal["stop", "length"] | None]:
    """The text cut after its first stop string (kept, as the local backend does) and the
    finish reason: the server's ``"stop"``/``"length"``, inferred when it gave none, None
    when it reported anything else (e.g. ``"abort"``)."""
    hits = [text.find(s) + len(s) for s in params.stop if s and s in text]
    if hits:
        text = text[: min(hits)]
    if reported in ("stop", "length"):
        return text, "stop" if hits else reported
    if reported is None:
        return text, "stop" if hits else "length"
    return text, None


class HTTPBackend:
    """Base of the server clients: subclasses build one request body per prompt and parse its reply."""

    name = "http"
    path = "/"

    def __init__(
        self,
        url: str,
        *,
        max_in_flight: int = 32,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        skip_special_tokens: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise BackendError(
                f"server url {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:30000)."
            )
        if max_in_flight < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise BackendError(
                f"bad client settings: max_in_flight={max_in_flight} (>= 1), retries={retries} (>= 0), "
                f"timeout={timeout} (> 0), backoff={backoff} (>= 0)."
            )
        self.url = url.rstrip("/")
        self.max_in_flight = max_in_flight
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.skip_special_tokens = skip_special_tokens
        self.headers = dict(headers or {})

    # ---- to implement --------------------------------------------------------
    def _body(self, embeds: Tensor, params: Sampling, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, reply: Any, params: Sampling) -> GenerationOutput:
        raise NotImplementedError

    def _stream_chunk(
        self, chunk: Any, state: dict[str, Any], params: Sampling
    ) -> tuple[str, GenerationOutput | None] | None:
        """One streamed event: ``(raw text so far, the final output once finished)``, or
        None for an event without text (``state`` carries text and ids between events)."""
        raise NotImplementedError

    # ---- public ----------------------------------------------------------------
    def generate(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> list[GenerationOutput]:
        """One output per prompt, in order. Raises :class:`BackendError` on failure."""
        result: list[GenerationOutput] = run_sync(self.agenerate(prompt_embeds, params))
        return result

    def stream(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> Any:
        """Decode each prompt through the server's streaming responses (``stream: true``,
        server-sent events); see :mod:`nla_lens.backends._stream`."""
        from ._stream import HTTPDecodeStream

        params = Sampling.check(params)
        import_aiohttp()
        return HTTPDecodeStream(self, list(prompt_embeds), params)

    async def agenerate(
        self,
        prompt_embeds: Sequence[Float[Tensor, "_seq d_model"]] | Float[Tensor, "n seq d_model"],
        params: Sampling,
    ) -> list[GenerationOutput]:
        """The coroutine behind :meth:`generate`, for callers already in an event loop."""
        params = Sampling.check(params)
        aiohttp = import_aiohttp()
        items = list(prompt_embeds)
        if not items:
            return []
        sem = asyncio.Semaphore(self.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        headers = {"Content-Type": "application/json", **self.headers}
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers
        ) as session:
            tasks = [
                asyncio.ensure_future(self._one(session, sem, e, params, i))
                for i, e in enumerate(items)
            ]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    # ---- one prompt ------------------------------------------------------------
    async def _one(
        self,
        session: Any,
        sem: asyncio.Semaphore,
        embeds: Tensor,
        params: Sampling,
        index: int,
    ) -> GenerationOutput:
        # Encoded on first send, so only the bodies of prompts in flight (or retrying) are alive.
        body: bytes | None = None
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                backoff = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                # Jitter, so that the retries of many prompts spread out.
                delay = backoff * random.uniform(0.5, 1.0)
                log.info(
                    "%s: retry %d of prompt %d in %.2fs: %s", self.name, attempt, index, delay, last
                )
                await asyncio.sleep(delay)
            try:
                async with sem:
                    if body is None:
                        body = json.dumps(self._body(embeds, params, index)).encode()
                    reply = await self._post(session, body, index)
            except _Retryable as exc:
                last = exc
                continue
            return self._parse(reply, params)
        raise BackendError(
            f"{self.name} server at {self.url}{self.path}: prompt {index} failed after {self.retries + 1} "
            f"attempts; last error: {last}. Is the server up and healthy (try {self.url}/health)? "
            "Raise timeout= or retries= for slow servers."
        )

    async def _post(self, session: Any, body: bytes, index: int) -> Any:
        aiohttp = import_aiohttp()
        url = self.url + self.path
        try:
            async with session.post(url, data=body) as resp:
                status = resp.status
                text = await resp.text()
        except asyncio.TimeoutError as exc:
            raise _Retryable(f"no reply within timeout={self.timeout}s") from exc
        except (
            aiohttp.ClientError
        ) as exc:  # refused/reset connection, server disconnected, bad payload
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if status >= 500 or status in RETRYABLE_4XX:
            raise _Retryable(f"HTTP {status}: {_short(text, 200)}")
        if status >= 400:
            raise BackendError(
                f"{self.name} server at {url} rejected prompt {index} with HTTP {status}: {_short(text)}. "
                "Check that the server runs the AV checkpoint with prompt embeddings enabled and that "
                "the embedding width matches its hidden size."
            )
        try:
            return json.loads(text)
        except ValueError as exc:
            raise BackendError(
                f"{self.name} server at {url} sent a reply to prompt {index} that is not JSON "
                f"(HTTP {status}): {_short(text, 200)!r}"
            ) from exc

    def _malformed(self, reply: Any, what: str) -> BackendError:
        return BackendError(
            f"{self.name} server at {self.url}{self.path} sent a malformed reply ({what}): "
            f"{_short(json.dumps(reply, default=str), 300)}. Is this really a {self.name} server?"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, max_in_flight={self.max_in_flight})"
