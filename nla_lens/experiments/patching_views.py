"""Drawing a patching frame: a matplotlib heatmap, an HTML page, an interactive plotly figure.

Colour scales are anchored to a meaningful range and centred at 0, so noise is
never stretched into contrast: the normalised metric (1 = clean run, 0 =
corrupted run) always spans [-1, 1]; any other value spans +-max|value|, and at
least +-``MIN_SPAN`` (values of order 1e-17 stay white). Every view shows each
cell's explanation, and marks cells patched after layer K (their layer-K
explanation cannot change).
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from ..errors import CaptureError, MissingExtraError
from .html import HTMLPage

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["color_range", "patching_html", "plot_patching", "plot_patching_interactive"]

#: The smallest half-width of a colour scale (raw metrics below it are noise-level).
MIN_SPAN = 1e-3


def one_prompt(df: pd.DataFrame, batch: int) -> pd.DataFrame:
    """The rows of prompt ``batch`` of a (possibly batched) patching frame."""
    if "batch" not in df.columns:
        return df
    if batch not in set(df["batch"]):
        raise CaptureError(
            f"no rows for batch {batch}; the frame holds batches {sorted(set(df['batch']))}."
        )
    return df[df["batch"] == batch]


def color_range(df: pd.DataFrame, value: str) -> tuple[float, float]:
    """A symmetric range centred at 0 for ``value`` (see the module docs)."""
    if value == "metric" and "logit_diff" in df.columns:
        return -1.0, 1.0  # the normalised logit difference
    vals = [abs(float(v)) for v in df[value] if v is not None and math.isfinite(float(v))]
    span = max([MIN_SPAN, *vals])
    return -span, span


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_patching(
    df: pd.DataFrame,
    *,
    value: str = "metric",
    label_chars: int = 28,
    ax: Any = None,
    batch: int = 0,
) -> Any:
    """Heatmap of ``value`` over layers (rows) and positions (columns) for prompt ``batch``,
    each cell labelled with its value and the start of its explanation (``*`` marks
    cells after layer K). Returns the matplotlib Figure (closed, so a notebook shows it
    once, as the cell's value)."""
    import matplotlib.pyplot as plt

    df = one_prompt(df, batch)
    grid = df.pivot(index="layer", columns="position", values=value).astype(float)
    text = df.pivot(index="layer", columns="position", values="explanation")
    after = (
        df.pivot(index="layer", columns="position", values="downstream_of_k")
        if "downstream_of_k" in df.columns
        else None
    )
    own = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(1.9 * grid.shape[1] + 2, 0.8 * grid.shape[0] + 1.5))
    lo, hi = color_range(df, value)
    im = ax.imshow(grid.values, cmap="RdBu_r", aspect="auto", vmin=lo, vmax=hi)
    ax.set_xticks(range(grid.shape[1]))
    tokens = df.drop_duplicates("position").set_index("position")["token"]
    ax.set_xticklabels([f"{p}\n{tokens[p]}" for p in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(layer) for layer in grid.index])
    ax.set_xlabel("position (token)")
    ax.set_ylabel("patched layer")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid.values[i, j]
            shade = 0.5 if not math.isfinite(v) else float(im.norm(v))
            mark = "*" if after is not None and bool(after.values[i, j]) else ""
            ax.text(
                j, i, f"{v:.2f}{mark}\n{_shorten(str(text.values[i, j]), label_chars)}",
                ha="center", va="center", fontsize=7,
                color="white" if shade < 0.2 or shade > 0.8 else "black",
            )  # fmt: skip
    ax.figure.colorbar(im, ax=ax, label=value)
    ax.set_title(f"activation patching: {value} (labels: explanation at layer K; * = after K)")
    if own:
        plt.close(ax.figure)
    return ax.figure


def _cell_colour(v: float, lo: float, hi: float) -> str:
    if not math.isfinite(v):
        return "#eeeeee"
    t = max(-1.0, min(1.0, v / hi if v >= 0 else -v / lo))  # -1 .. 1, 0 = white
    hue = 0 if t > 0 else 220  # red above 0, blue below
    light = 100 - 45 * abs(t)
    return f"hsl({hue},70%,{light:.0f}%)"


def patching_html(df: pd.DataFrame, *, value: str = "metric", batch: int = 0) -> HTMLPage:
    """A page of ``value`` over layers x positions for prompt ``batch``: each cell holds its
    value and explanation (full text on hover); cells after layer K are dashed."""
    df = one_prompt(df, batch)
    layers = sorted(df["layer"].unique())
    positions = sorted(df["position"].unique())
    lo, hi = color_range(df, value)
    cells = {(r.layer, r.position): r for r in df.itertuples()}
    head = "".join(
        f"<th>{p}<br><code>{html.escape(str(cells[(layers[0], p)].token))}</code></th>"
        for p in positions
    )
    body = ""
    for layer in layers:
        tds = ""
        for p in positions:
            r = cells[(layer, p)]
            v = float(getattr(r, value))
            after = bool(getattr(r, "downstream_of_k", False))
            style = f"background:{_cell_colour(v, lo, hi)};" + (
                "border:2px dashed #888;" if after else ""
            )
            tds += (
                f'<td class="nla-cell" title="{html.escape(str(r.explanation))}" style="{style}">'
                f"<b>{v:.3f}</b><br><small>{html.escape(_shorten(str(r.explanation), 40))}</small></td>"
            )
        body += f"<tr><th>{layer}</th>{tds}</tr>"
    note = (
        f"<div>activation patching: <b>{html.escape(value)}</b>, colour centred at 0 over "
        f"[{lo:.3g}, {hi:.3g}]; each cell: value and the explanation of the patched layer-K "
        "residual (hover for all of it); dashed = patched after layer K.</div>"
    )
    table = (
        f"<table><thead><tr><th>layer \\ pos</th>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
    return HTMLPage(note + table, title=f"activation patching: {value}")


def plot_patching_interactive(df: pd.DataFrame, *, value: str = "metric", batch: int = 0) -> Any:
    """An interactive plotly heatmap (hover shows each cell's explanation); needs plotly."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise MissingExtraError("plotly", "plot", "an interactive patching heatmap") from exc
    df = one_prompt(df, batch)
    grid = df.pivot(index="layer", columns="position", values=value).astype(float)
    text = df.pivot(index="layer", columns="position", values="explanation")
    lo, hi = color_range(df, value)
    hover = "layer %{y}, position %{x}<br>" + value + " %{z:.3f}<br>%{customdata}<extra></extra>"
    heat = go.Heatmap(
        z=grid.values,
        x=[str(p) for p in grid.columns],
        y=[str(x) for x in grid.index],
        customdata=text.values,
        zmin=lo,
        zmax=hi,
        zmid=0.0,
        colorscale="RdBu_r",
        hovertemplate=hover,
    )
    fig = go.Figure(heat)
    fig.update_layout(
        title=f"activation patching: {value}", xaxis_title="position", yaxis_title="patched layer"
    )
    return fig
