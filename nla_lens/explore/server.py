"""Serving the explorer with uvicorn on the loopback address, in a background thread."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExplorerError, MissingExtraError
from .explorer import Explorer

__all__ = ["LOOPBACK", "RunningExplorer", "check_address", "serve"]

#: How long ``serve`` waits for the server to bind before giving up.
START_TIMEOUT_S = 30.0


@dataclass
class RunningExplorer:
    """A started explorer: ``url`` (with its token) opens it; ``stop()`` shuts it down."""

    host: str
    port: int
    token: str
    server: Any = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/?token={self.token}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self.thread.is_alive():
                self.thread.join(timeout=0.5)
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self) -> RunningExplorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def check_address(host: str, port: int, *, allow_remote: bool = False) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote``, and a bad ``port``."""
    if host not in LOOPBACK and not allow_remote:
        raise ExplorerError(
            f"host {host!r} is not the loopback address: the explorer runs models for whoever "
            "reaches it, so it binds to 127.0.0.1 by default. Pass allow_remote=True "
            "(--allow-remote) to serve on another address."
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ExplorerError(f"port must be a number 0..65535 (0 = any free port), got {port!r}.")


def serve(
    explorer: Explorer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    allow_remote: bool = False,
) -> RunningExplorer:
    """Start the explorer's web app in a background thread and return once it listens.

    Binds to the loopback address unless ``host`` names another and ``allow_remote=True``
    (anyone who can reach that address and has the token can then run the models).
    ``port=0`` picks a free port. ``token`` defaults to a fresh random one.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingExtraError("uvicorn", "explore", "the explorer's web server") from exc
    from .app import LOOPBACK_NAMES, build_app

    check_address(host, port, allow_remote=allow_remote)
    token = token or secrets.token_urlsafe(24)
    hosts = set(LOOPBACK_NAMES) | {host}
    config = uvicorn.Config(
        build_app(explorer, token=token, hosts=hosts), host=host, port=port,
        log_level="warning", lifespan="off", access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="nla-lens-explore", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ExplorerError(f"the explorer could not listen on {host}:{port} (in use?).")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningExplorer(host, int(bound), token, server, thread)
