"""The explorer: click a token, watch its explanation stream in with each prefix's score.

``nla-lens explore`` serves it as a local web app (:func:`serve`, Starlette + uvicorn,
loopback only, a per-session token); ``nla.explore(model, prompt)`` shows the same
front end as a notebook widget (:func:`explorer_widget`, anywidget) whose clicks run
in the kernel. Both need the ``explore`` extra; importing this package needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .explorer import Explorer, NotGivenError, make_explorer
from .stream import event_message, event_stream, messages
from .views import View, patching_grid, view_from_model, view_from_table, view_from_transcript

if TYPE_CHECKING:
    from .server import RunningExplorer

__all__ = [
    "Explorer",
    "NotGivenError",
    "RunningExplorer",
    "View",
    "event_message",
    "event_stream",
    "explorer_widget",
    "make_explorer",
    "messages",
    "patching_grid",
    "serve",
    "view_from_model",
    "view_from_table",
    "view_from_transcript",
]


def serve(explorer: Explorer, **kwargs: Any) -> RunningExplorer:
    """Start the explorer's web app (see :func:`nla_lens.explore.server.serve`)."""
    from .server import serve as _serve

    return _serve(explorer, **kwargs)


def explorer_widget(explorer: Explorer) -> Any:
    """The explorer as a notebook widget (see :mod:`nla_lens.explore.widget`)."""
    from .widget import explorer_widget as _widget

    return _widget(explorer)


def __getattr__(name: str) -> Any:
    if name == "RunningExplorer":
        from .server import RunningExplorer

        return RunningExplorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
