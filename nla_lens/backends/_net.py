"""Shared by the HTTP backends' request and streaming paths: which failures to retry,
how to quote a server's reply, and the lazy aiohttp import."""

from __future__ import annotations

from typing import Any

from ..errors import MissingExtraError

__all__ = ["RETRYABLE_4XX", "import_aiohttp"]

#: 4xx codes that mean "try again later" rather than "your request is wrong".
RETRYABLE_4XX = frozenset({408, 429})


def import_aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError as exc:  # pragma: no cover - exercised where the extra is missing
        raise MissingExtraError("aiohttp", "serve", "the SGLang/vLLM server clients") from exc
    return aiohttp


class _Retryable(Exception):
    """A failure worth retrying (timeout, connection, 5xx)."""


def _short(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"
