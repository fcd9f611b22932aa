"""Streaming through a server's own streaming responses (server-sent events).

One ``stream: true`` request per prompt, at most ``max_in_flight`` open at a time,
on an event loop in a worker thread; each ``data:`` event becomes a
:class:`~nla_lens.core.backend.DecodeUpdate` for the caller's thread. A stream that
drops midway (connection lost, the body ends without a finish reason, 5xx) is
retried as ``generate`` retries a request; the retried decode's text is checked
against what was already handed on, and text seen before is not repeated. When it
differs (a sampled decode without a seed), or the retries run out, iteration raises
:class:`~nla_lens.errors.BackendError`: a row is never finished from a partial stream.
"""

from __future__ import annotations

import asyncio
import json
import queue
import random
import threading
from collections.abc import AsyncGenerator, Iterable, Iterator
from contextlib import aclosing, suppress
from typing import Any

from torch import Tensor

from ..core.backend import DecodeUpdate, GenerationOutput, Sampling
from ..errors import BackendError
from ._net import RETRYABLE_4XX, _Retryable, _short, import_aiohttp

__all__ = ["HTTPDecodeStream"]

_DONE = object()


class HTTPDecodeStream:
    """A streamed decode of prompts on an SGLang or vLLM server (see the module doc)."""

    def __init__(self, backend: Any, items: list[Tensor], params: Sampling) -> None:
        # ``backend``: the HTTPBackend that opened this stream (not imported: _http imports us)
        self.backend, self.items, self.params = backend, items, params
        self._queue: queue.Queue[Any] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._thread: threading.Thread | None = None
        self._cancelled: set[int] = set()
        self._closed = False

    # ---- the caller's side ----------------------------------------------------------
    def __iter__(self) -> Iterator[list[DecodeUpdate]]:
        if self._thread is not None:
            raise RuntimeError("a decode stream can be iterated once")
        if not self.items:
            return
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), daemon=True, name="nla_lens-stream"
        )
        self._thread.start()
        ready.wait()
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                while not self._queue.empty():  # what has arrived meanwhile, as one step
                    batch.append(self._queue.get_nowait())
                updates: list[DecodeUpdate] = []
                for x in batch:
                    if x is _DONE:
                        if updates:
                            yield updates
                        return
                    if isinstance(x, BaseException):
                        raise x
                    if x.row not in self._cancelled:
                        updates.append(x)
                if updates:
                    yield updates
        finally:
            self.close()

    def cancel(self, rows: Iterable[int]) -> None:
        """Stop streaming ``rows``: their requests are closed (the server aborts them)."""
        for r in rows:
            self._cancelled.add(int(r))
            task, loop = self._tasks.get(int(r)), self._loop
            if task is not None and loop is not None and not loop.is_closed():
                with suppress(RuntimeError):  # the loop closed meanwhile: nothing to cancel
                    loop.call_soon_threadsafe(task.cancel)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.cancel(range(len(self.items)))
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ---- the event loop's side ---------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._all(ready))
        except BaseException as exc:  # handed to the caller, raised there
            self._queue.put(exc)
        finally:
            self._queue.put(_DONE)
            loop.close()

    async def _all(self, ready: threading.Event) -> None:
        aiohttp = import_aiohttp()
        b = self.backend
        sem = asyncio.Semaphore(b.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=b.timeout)
        connector = aiohttp.TCPConnector(limit=b.max_in_flight)
        headers = {"Content-Type": "application/json", **b.headers}
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers
        ) as session:
            for i, e in enumerate(self.items):
                self._tasks[i] = asyncio.ensure_future(self._one(session, sem, e, i))
            ready.set()
            pending: set[asyncio.Task[None]] = set(self._tasks.values())
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                failed = [t.exception() for t in done if not t.cancelled() and t.exception()]
                if failed:
                    for t in pending:
                        t.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    raise failed[0]  # type: ignore[misc]

    async def _one(self, session: Any, sem: asyncio.Semaphore, embeds: Tensor, index: int) -> None:
        b, params = self.backend, self.params
        delivered = ""  # text already handed on for this prompt
        last: Exception | None = None
        body: bytes | None = None
        for attempt in range(b.retries + 1):
            if attempt:
                delay = min(b.max_backoff, b.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1)
                await asyncio.sleep(delay)
            try:
                async with sem:
                    if body is None:
                        body = json.dumps(
                            {**b._body(embeds, params, index), "stream": True}
                        ).encode()
                    events = self._events(session, body, index)
                    async with aclosing(events):
                        async for text, output in events:
                            if not (text.startswith(delivered) or delivered.startswith(text)):
                                raise self._diverged(index)
                            if output is not None:
                                self._queue.put(DecodeUpdate(index, output.text, output))
                                return
                            if len(text) > len(delivered):
                                delivered = text
                                self._queue.put(DecodeUpdate(index, text))
                raise _Retryable("the stream ended before the decode finished")
            except _Retryable as exc:
                last = exc
        raise BackendError(
            f"{b.name} server at {b.url}{b.path}: prompt {index}'s stream failed after "
            f"{b.retries + 1} attempts; last error: {last}. Is the server up and healthy (try "
            f"{b.url}/health)? Raise timeout= or retries= for slow servers."
        )

    def _diverged(self, index: int) -> BackendError:
        b = self.backend
        return BackendError(
            f"{b.name} server at {b.url}{b.path}: prompt {index}'s stream dropped and its retried "
            "decode wrote different text than was already streamed (a sampled decode without a "
            "seed?); no explanation of it is returned. Pass a seed, or use generate()."
        )

    async def _events(
        self, session: Any, body: bytes, index: int
    ) -> AsyncGenerator[tuple[str, GenerationOutput | None], None]:
        """``(raw text so far, final output or None)`` per ``data:`` event of one request."""
        aiohttp = import_aiohttp()
        b = self.backend
        url = b.url + b.path
        state: dict[str, Any] = {"text": "", "ids": []}
        try:
            async with session.post(url, data=body) as resp:
                if resp.status >= 400:
                    text = await resp.text()
                    if resp.status >= 500 or resp.status in RETRYABLE_4XX:
                        raise _Retryable(f"HTTP {resp.status}: {_short(text, 200)}")
                    raise BackendError(
                        f"{b.name} server at {url} rejected prompt {index} with HTTP "
                        f"{resp.status}: {_short(text)}."
                    )
                async for line in resp.content:
                    line = line.strip()
                    if not line or line.startswith(b":"):
                        continue
                    if not line.startswith(b"data:"):
                        raise b._malformed({"line": line.decode(errors="replace")}, "not SSE")
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                    except ValueError as exc:
                        raise BackendError(
                            f"{b.name} server at {url} streamed an event for prompt {index} that "
                            f"is not JSON: {_short(data.decode(errors='replace'), 200)!r}"
                        ) from exc
                    event = b._stream_chunk(chunk, state, self.params)
                    if event is not None:
                        yield event
        except asyncio.TimeoutError as exc:
            raise _Retryable(f"no end of stream within timeout={b.timeout}s") from exc
        except aiohttp.ClientError as exc:  # the connection dropped, reset or broke the body
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
