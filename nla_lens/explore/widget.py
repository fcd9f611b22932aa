"""The explorer inside a notebook: an anywidget that runs the web app's own front end.

``static/explorer.js`` is the widget's ES module as it is the page's: the page hands it
an HTTP stand-in for the widget model (``static/page.js``), the notebook the real one.
A click sends ``{"type": "explain", ...}`` to the kernel, which runs the pair there (on
the user's own model, with their edits) and sends each streamed message back as it comes.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

from ..errors import ExplorerError, MissingExtraError, NLAError
from .explorer import Explorer

__all__ = ["explorer_widget"]

_CLASS: Any = None


def _widget_class() -> Any:
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    try:
        import anywidget
        import traitlets
    except ImportError as exc:
        raise MissingExtraError("anywidget", "explore", "the notebook explorer") from exc
    static = resources.files("nla_lens.explore").joinpath("static")

    class ExplorerWidget(anywidget.AnyWidget):  # type: ignore[misc]
        """The explorer as a notebook widget (see :func:`nla_lens.NLA.explore`)."""

        _esm = static.joinpath("explorer.js").read_text(encoding="utf-8")
        _css = static.joinpath("explorer.css").read_text(encoding="utf-8")
        state = traitlets.Dict().tag(sync=True)

        def __init__(self, explorer: Explorer, **kwargs: Any) -> None:
            super().__init__(state=explorer.state(), **kwargs)
            self.explorer = explorer
            self.on_msg(self._on_message)

        def _on_message(self, _widget: Any, msg: Any, _buffers: Any = None) -> None:
            for reply in self.replies(msg):
                self.send(reply)

        def replies(self, msg: Any) -> Iterator[dict[str, Any]]:
            """The messages answering one front-end request, as they come (a bad request
            gets one ``error`` message)."""
            index = msg.get("index") if isinstance(msg, dict) else None
            try:
                if not isinstance(msg, dict):
                    raise ExplorerError(f"a widget request must be an object, got {msg!r}")
                yield from self.explorer.handle(msg)
            except NLAError as exc:
                yield {"type": "error", "index": index, "message": str(exc)}

    _CLASS = ExplorerWidget
    return _CLASS


def explorer_widget(explorer: Explorer) -> Any:
    """A notebook widget showing ``explorer`` (needs the ``explore`` extra: anywidget)."""
    return _widget_class()(explorer)
