"""Displayable HTML: a string that renders in a notebook and saves as a standalone page."""

from __future__ import annotations

import html
import os
from pathlib import Path

__all__ = ["HTMLPage", "fve_colour"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}"
)


class HTMLPage(str):
    """HTML that renders in a notebook (``_repr_html_``) and ``.save(path)`` writes as a
    standalone page (``<html>``, UTF-8 charset, a title). It is also the HTML string itself."""

    page_title: str

    def __new__(cls, body: str, title: str = "nla_lens") -> HTMLPage:
        page = super().__new__(cls, body)
        page.page_title = title
        return page

    def _repr_html_(self) -> str:
        return str(self)

    def page(self) -> str:
        """The standalone document."""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.page_title)}</title><style>{_STYLE}</style></head>"
            f"<body>\n{self}\n</body></html>\n"
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the standalone page to ``path`` (UTF-8); returns the path."""
        out = Path(path)
        out.write_text(self.page(), encoding="utf-8")
        return out


def fve_colour(fve: float | None) -> str:
    """A cell background for an fve_nrm: red at 0 (or below), green at 1, grey when unknown."""
    if fve is None:
        return "#eeeeee"
    hue = max(0.0, min(1.0, fve)) * 120
    return f"hsl({hue:.0f}, 70%, 85%)"
