"""The explorer's web app (Starlette): the page, its assets, the state and the stream.

Safe by default:

* every request needs the per-session token (``?token=`` in the URL the server
  prints, then a same-site cookie, or the ``X-NLA-Token`` header), compared in
  constant time; without it the answer is 401;
* a request from another origin (an ``Origin`` header that is not this server, or
  ``Sec-Fetch-Site: cross-site``) is refused with 403, and so is a ``Host`` header
  that names another machine (the DNS-rebinding guard);
* the only files it serves are its own assets, by name from a fixed list; views are
  looked up by name among those given (never by a path from the request);
* bad requests get a 4xx with a JSON ``{"error": ...}`` saying what was wrong, and an
  unexpected failure a 500 without a traceback (the traceback goes to the log).

The page sets a Content-Security-Policy of ``'self'``: the browser loads nothing
from anywhere else, so the explorer works offline.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable, Iterator
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import NLAError
from .explorer import Explorer, NotGivenError

__all__ = ["ASSETS", "COOKIE", "LOOPBACK_NAMES", "build_app"]

log = logging.getLogger(__name__)

#: The files the app serves, by name: its own front end, read from the package.
ASSETS = {
    "explorer.js": "text/javascript; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}
COOKIE = "nla_lens_explore"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY = 64 * 1024
_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'self'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def asset(name: str) -> bytes:
    return resources.files("nla_lens.explore").joinpath("static", name).read_bytes()


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: the token, origin and host checks, and the security headers."""

    def __init__(self, app: ASGIApp, token: str, hosts: Iterable[str]) -> None:
        self.app, self.token, self.hosts = app, token, frozenset(hosts)

    async def refuse(self, send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in _HEADERS.items())
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if _hostname(host) not in self.hosts:
            await self.refuse(send, 403, f"Host {host!r} refused: this explorer answers only "
                              f"as {sorted(self.hosts)} (a guard against DNS rebinding).")  # fmt: skip
            return
        origin = headers.get("origin")
        if (origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}") or (
            headers.get("sec-fetch-site") == "cross-site"
        ):
            await self.refuse(send, 403, f"cross-origin request refused (Origin {origin!r}): "
                              "the explorer answers only its own page.")  # fmt: skip
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = (query.get("token") or [None])[0]
        cookie = SimpleCookie(headers.get("cookie", ""))
        given = (
            from_query
            or headers.get("x-nla-token")
            or (cookie[COOKIE].value if COOKIE in cookie else None)
        )
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            what = "no session token" if not given else "a wrong session token"
            await self.refuse(send, 401, f"{what}: open the explorer at the URL it printed "
                              "when it started (it ends in ?token=...).")  # fmt: skip
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                for k, v in _HEADERS.items():
                    h.setdefault(k, v)
                if from_query:
                    h.append(
                        "set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    return _error(getattr(exc, "status_code", 400), str(getattr(exc, "detail", exc)))


async def _nla_error(request: Request, exc: Exception) -> Response:
    return _error(404 if isinstance(exc, NotGivenError) else 400, str(exc))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("explorer: %s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error (the server log has the details)")


class _LineStream(StreamingResponse):
    """The explorer's messages as NDJSON lines. A client that goes away mid-stream (a
    closed tab) is routine: the stream is closed, so its decode stops, the lock it holds
    is released and the token is not remembered as explained, and nothing escapes to
    the server as an application error (under ASGI 2.4 Starlette raises ClientDisconnect)."""

    def __init__(self, messages: Iterator[dict[str, Any]], path: str) -> None:
        self.messages, self.path = messages, path
        super().__init__(self._lines(), media_type="application/x-ndjson")

    def _lines(self) -> Iterator[str]:
        for m in self.messages:
            yield json.dumps(m, allow_nan=False) + "\n"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            log.info("explorer: the client closed %s mid-stream", self.path)
        finally:
            close = getattr(self.messages, "close", None)
            if close is not None:
                await run_in_threadpool(close)  # a decode may need to wind down


def build_app(explorer: Explorer, *, token: str, hosts: Iterable[str] = LOOPBACK_NAMES) -> Any:
    """The ASGI app serving ``explorer``; ``hosts`` are the host names it answers as."""

    async def index(request: Request) -> Response:
        return Response(asset("index.html"), media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return _error(404, f"no asset {name!r}; the explorer serves only {sorted(ASSETS)}.")
        return Response(asset(name), media_type=ASSETS[name])

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def state(request: Request) -> Response:
        return JSONResponse(explorer.state(request.query_params.get("view")))

    async def explain(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, f"request body over {MAX_BODY} bytes")
        try:
            msg = json.loads(body or b"null")
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
            return _error(400, 'the body must be JSON: {"view": NAME, "index": N}')
        if not isinstance(msg, dict) or "index" not in msg:
            return _error(400, 'the body must be a JSON object {"view": NAME, "index": N}')
        stream = explorer.explain(msg.get("view"), msg["index"])  # raises (-> 4xx) before streaming
        return _LineStream(stream, request.url.path)

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/static/{name:str}", static, methods=["GET"]),
            Route("/favicon.ico", favicon, methods=["GET"]),
            Route("/api/state", state, methods=["GET"]),
            Route("/api/explain", explain, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error, NLAError: _nla_error, Exception: _server_error},
    )  # fmt: skip
    return Guard(app, token, hosts)
