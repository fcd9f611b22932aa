"""The explorer's model: what it was given, what it shows, and the explaining of a token.

:class:`Explorer` is shared by the web app (:mod:`.app`) and the notebook widget
(:mod:`.widget`): both ask it for a view's state and stream :meth:`Explorer.explain`'s
messages to the same front end. It reads no file but the tables it was given, each
looked up by name (never by a path from a request).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..core.streaming import check_stop
from ..errors import ExplorerError, NLAError
from ..experiments.flagged import why_unexplainable
from .stream import Stop, messages
from .views import (
    TABLE_SUFFIXES,
    View,
    jsonable,
    load_table,
    patching_grid,
    view_from_model,
    view_from_table,
    view_from_transcript,
)

__all__ = ["Explorer", "NotGivenError", "make_explorer"]

log = logging.getLogger(__name__)


class NotGivenError(ExplorerError, LookupError):
    """A request named a view or token the explorer was not given (the app answers 404)."""


def _given_files(files: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        path = Path(f).expanduser().resolve()
        if not path.is_file():
            raise ExplorerError(f"{f}: no such file; pass saved .csv or .parquet tables.")
        if path.suffix not in TABLE_SUFFIXES:
            raise ExplorerError(
                f"{f}: the explorer reads saved tables (.csv, .parquet: a transcript's "
                "to_frame() or an activation_patching frame), not {path.suffix or 'this file'}."
            )
        name, k = path.name, 2
        while name in out:
            name, k = f"{path.stem}-{k}{path.suffix}", k + 1
        out[name] = path
    return out


class Explorer:
    """Views to explore with a pair: live ones (with vectors) and saved tables (``files``).

    ``sampling`` and ``stop`` go to every explanation (``stop``: None, a number of
    segments, or a function of the row's segments, as ``nla.explain_stream`` takes).
    """

    def __init__(
        self,
        nla: NLAPair,
        views: Iterable[View] = (),
        *,
        files: Iterable[str | os.PathLike[str]] = (),
        sampling: Sampling | None = None,
        stop: Stop = None,
    ) -> None:
        self.nla = nla
        self.sampling = Sampling.of(sampling)
        self.stop = check_stop(stop)
        self._views: dict[str, View] = {}
        for v in views:
            if v.name in self._views:
                raise ExplorerError(f"two views are named {v.name!r}; give each its own name.")
            self._views[v.name] = v
        self._files = _given_files(files)
        clash = set(self._files) & set(self._views)
        if clash:
            raise ExplorerError(f"a file and a view share the name(s) {sorted(clash)}.")
        if not self._views and not self._files:
            raise ExplorerError("nothing to explore: give a prompt, a transcript or a table.")
        self._lock = threading.Lock()
        self._done: dict[tuple[str, int], list[dict[str, Any]]] = {}

    @property
    def names(self) -> list[str]:
        """Every view's name: the live ones first, then the given files."""
        return [*self._views, *self._files]

    def view(self, name: str | None = None) -> View:
        """The view called ``name`` (the first one by default); a given file is read on first use."""
        name = self.names[0] if name is None else name
        if name not in self._views:
            if name not in self._files:
                raise NotGivenError(
                    f"no view named {name!r}: this explorer was given {self.names}."
                )
            self._views[name] = view_from_table(name, load_table(self._files[name]))
        return self._views[name]

    def state(self, name: str | None = None) -> dict[str, Any]:
        """What the front end draws for view ``name``, as JSON."""
        b = self.nla.baseline
        return jsonable(
            {"view": self.view(name).to_json(), "views": self.names, "layer": self.nla.layer,
             "scored": self.nla.ar is not None, "baseline": None if b is None else b.label,
             "stop": self.stop if isinstance(self.stop, int) else None}
        )  # fmt: skip

    def explain(self, name: Any, index: Any) -> Iterator[dict[str, Any]]:
        """Stream the explanation of token ``index`` of view ``name``: a ``start`` message,
        then ``delta`` / ``segment`` messages as they come, then ``finished`` (or ``error``).
        A token explained before is replayed from memory. ``name`` and ``index`` are as a
        request gave them: anything but a view's name (or None) and a whole number is refused."""
        if name is not None and not isinstance(name, str):
            raise ExplorerError(
                f"view must be a view's name (a string, one of {self.names}), got {name!r}."
            )
        view = self.view(name)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ExplorerError(f"index must be a token's index (a whole number), got {index!r}.")
        if not 0 <= index < len(view.strip):
            raise NotGivenError(
                f"no token {index} in view {view.name!r}: it has tokens 0..{len(view.strip) - 1}."
            )
        if view.vectors is None:
            raise ExplorerError(
                f"view {view.name!r} is a saved table without vectors: its saved explanations "
                "are shown as they are, nothing is recomputed."
            )
        return self._explain(view, index)

    def _explain(self, view: View, index: int) -> Iterator[dict[str, Any]]:
        tok = view.strip[index]
        yield {"type": "start", "index": index, "token": tok.token, "position": tok.position}
        key = (view.name, index)
        with self._lock:
            if key in self._done:
                yield from self._done[key]
                return
            vector = view.vectors[index]  # type: ignore[index]
            reason = why_unexplainable(vector.reshape(1, -1))[0]
            if reason is not None:
                yield {"type": "error", "index": index, "message": f"cannot explain: {reason}"}
                return
            sent: list[dict[str, Any]] = []
            try:
                for m in messages(self.nla, vector, index, sampling=self.sampling, stop=self.stop):
                    m = jsonable(m)
                    sent.append(m)
                    yield m
            except NLAError as exc:
                yield {"type": "error", "index": index, "message": str(exc)}
                return
            except Exception:
                log.exception("explaining token %d of %s failed", index, view.name)
                yield {"type": "error", "index": index,
                       "message": "internal error while explaining (see the server log)"}  # fmt: skip
                return
            self._done[key] = sent

    def handle(self, msg: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """One front-end request (``{"type": "explain", "view": ..., "index": ...}`` or
        ``{"type": "state", "view": ...}``) as the messages that answer it."""
        kind = msg.get("type")
        if kind == "explain":
            return self.explain(msg.get("view"), msg.get("index"))
        if kind == "state":
            return iter([{"type": "state", "state": self.state(msg.get("view"))}])
        raise ExplorerError(f"unknown request type {kind!r}: expected 'explain' or 'state'.")


def make_explorer(
    nla: NLAPair,
    model: Any = None,
    inputs: Any = None,
    *,
    tokenizer: Any = None,
    reply_tokens: int = 0,
    transcript: Any = None,
    patching: Any = None,
    files: Iterable[str | os.PathLike[str]] = (),
    sampling: Sampling | None = None,
    stop: Stop = None,
    **capture_options: Any,
) -> Explorer:
    """An :class:`Explorer` of a prompt or chat run through ``model`` (with optional edits and
    hooks in ``capture_options`` and a generated reply), a Transcript, a patching frame
    (``activation_patching``'s DataFrame) and saved tables (``files``)."""
    views: list[View] = []
    if (model is None) != (inputs is None):
        raise ExplorerError("pass both a model and a prompt (or chat), or neither.")
    if model is not None:
        views.append(
            view_from_model(nla, model, inputs, tokenizer=tokenizer, reply_tokens=reply_tokens,
                            **capture_options)
        )  # fmt: skip
    if transcript is not None:
        views.append(view_from_transcript(nla, transcript))
    if patching is not None:
        views.append(View("patching", "activation patching", patching=patching_grid(patching)))
    return Explorer(nla, views, files=files, sampling=sampling, stop=stop)
