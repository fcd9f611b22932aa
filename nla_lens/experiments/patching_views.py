"""Drawing a patching frame: a matplotlib heatmap, an HTML page, an interactive plotly figure.

Colour is the patch's ``effect``, with one convention for every metric: 0 (no
effect) is white, 1 (the patched run behaves like the donor run: the corrupted
run when noising) is full red, negative (moved away from the donor) blue, on a
fixed [-1, 1] scale, so noise is never stretched into contrast. Frames without an
``effect`` column are coloured by ``value`` centred at 0 over +-max|value| (at least
+-``MIN_SPAN``). Each cell shows its value, the explanation at the readout
(the answer's position) and, on a second line or on hover, the one at the patched
site; cells patched after layer K are marked. The page and the figures state the
metric, the direction, the prompts and the answers.
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
    out = df[df["batch"] == batch]
    out.attrs = dict(df.attrs)
    return out


def color_range(df: pd.DataFrame, value: str) -> tuple[float, float]:
    """A symmetric range centred at 0 for ``value`` (see the module docs)."""
    if value == "effect" or (value == "metric" and "logit_diff" in df.columns):
        return -1.0, 1.0  # effect, and the normalised logit difference: fixed scales
    vals = [abs(float(v)) for v in df[value] if v is not None and math.isfinite(float(v))]
    span = max([MIN_SPAN, *vals])
    return -span, span


def _colour_by(df: pd.DataFrame, value: str) -> str:
    return "effect" if "effect" in df.columns else value


def legend_text(df: pd.DataFrame) -> str:
    """What the colours mean, in words."""
    if "effect" not in df.columns:
        return "colour: the value, centred at 0 (white)"
    donor = df.attrs.get("donor_run", "corrupted")
    return (
        f"colour = effect of the patch: white 0 = no effect, red 1 = behaves like the {donor} "
        f"run, blue < 0 = moved away from the {donor} run"
    )


def _title(df: pd.DataFrame, value: str) -> str:
    metric = df.attrs.get("metric", value)
    direction = df.attrs.get("direction")
    how = {"noising": "corrupted into clean", "denoising": "clean into corrupted"}.get(
        str(direction), ""
    )
    return f"activation patching ({how}): {metric}" if how else f"activation patching: {metric}"


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _texts(df: pd.DataFrame, column: str) -> Any:
    col = column if column in df.columns else "explanation"
    return df.pivot(index="layer", columns="position", values=col)


def plot_patching(
    df: pd.DataFrame,
    *,
    value: str = "metric",
    label_chars: int = 28,
    ax: Any = None,
    batch: int = 0,
) -> Any:
    """Heatmap over layers (rows) and positions (columns) for prompt ``batch``, coloured by
    ``effect``; each cell labelled with its ``value``, the start of the readout explanation
    and, on a second line, the patched site's (``*`` marks cells after layer K). Returns
    the matplotlib Figure (closed, so a notebook shows it once, as the cell's value)."""
    import matplotlib.pyplot as plt

    df = one_prompt(df, batch)
    by = _colour_by(df, value)
    grid = df.pivot(index="layer", columns="position", values=value).astype(float)
    shade_grid = df.pivot(index="layer", columns="position", values=by).astype(float)
    readout, site = _texts(df, "readout_explanation"), _texts(df, "explanation")
    after = (
        df.pivot(index="layer", columns="position", values="downstream_of_k")
        if "downstream_of_k" in df.columns
        else None
    )
    own = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(2.2 * grid.shape[1] + 2, 0.95 * grid.shape[0] + 2.2))
    lo, hi = color_range(df, by)
    im = ax.imshow(shade_grid.values, cmap="RdBu_r", aspect="auto", vmin=lo, vmax=hi)
    ax.set_xticks(range(grid.shape[1]))
    tokens = df.drop_duplicates("position").set_index("position")["token"]
    ax.set_xticklabels([f"{p}\n{tokens[p]}" for p in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(layer) for layer in grid.index])
    ax.set_xlabel("patched position (token)")
    ax.set_ylabel("patched layer")
    two = "readout_explanation" in df.columns
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v, c = grid.values[i, j], shade_grid.values[i, j]
            shade = 0.5 if not math.isfinite(c) else float(im.norm(c))
            mark = "*" if after is not None and bool(after.values[i, j]) else ""
            label = f"{v:.2f}{mark}\n{_shorten(str(readout.values[i, j]), label_chars)}"
            if two:
                label += f"\nsite: {_shorten(str(site.values[i, j]), label_chars - 6)}"
            ax.text(
                j, i, label, ha="center", va="center", fontsize=6.5,
                color="white" if shade < 0.2 or shade > 0.8 else "black",
            )  # fmt: skip
    ax.figure.colorbar(im, ax=ax, label=legend_text(df).replace(": ", ":\n", 1))
    lines = [_title(df, value) + (f"; labels: {value}, " if value != by else "; labels: ")]
    lines[0] += (
        "readout explanation, site explanation (layer K; * = after K)"
        if two
        else ("explanation at layer K (* = after K)")
    )
    for k, name in (("clean_prompts", "clean"), ("corrupt_prompts", "corrupted")):
        if df.attrs.get(k):
            lines.append(f"{name}: {_shorten(str(df.attrs[k][batch]), 110)}")
    if df.attrs.get("answers"):
        a, b = df.attrs["answers"]
        lines.append(f"answers: clean {a!r}, corrupted {b!r}")
    ax.set_title("\n".join(lines), fontsize=8, loc="left")
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


def _header(df: pd.DataFrame, value: str, batch: int, lo: float, hi: float) -> str:
    a = df.attrs
    meaning = a.get("metric_meaning")
    out = f"<h3>{html.escape(_title(df, value))}</h3>"
    if meaning:
        out += f"<div>metric <b>{html.escape(str(a.get('metric')))}</b>: {html.escape(str(meaning))}</div>"
    rows = ""
    for k, name in (("clean_prompts", "clean"), ("corrupt_prompts", "corrupted")):
        prompts = a.get(k)
        if prompts:
            rows += (
                f"<tr><th>{name}</th><td><code>{html.escape(str(prompts[batch]))}</code></td></tr>"
            )
    if a.get("answers"):
        c, x = a["answers"]
        rows += (
            f"<tr><th>answers</th><td>clean <code>{html.escape(str(c))}</code>, corrupted "
            f"<code>{html.escape(str(x))}</code></td></tr>"
        )
    if rows:
        out += f'<table class="nla-prompts">{rows}</table>'
    swatches = "".join(
        f'<span style="background:{_cell_colour(t * hi if t >= 0 else -t * lo, lo, hi)};'
        f'padding:2px 10px;border:1px solid #ccc">{label}</span>'
        for t, label in (
            (-1.0, "-1"), (0.0, "0 no effect"),
            (1.0, f"1 behaves like the {a.get('donor_run', 'corrupted')} run"),
        )
    )  # fmt: skip
    by = _colour_by(df, value)
    scale = "" if by == "effect" else f" (over [{lo:.3g}, {hi:.3g}])"
    out += (
        f'<div class="nla-legend">{html.escape(legend_text(df))}{scale}: {swatches}<br>'
        "each cell: the value, the explanation of the patched run's layer-K residual at the "
        "readout (the answer's position; bold) and at the patched site (hover for all of it); "
        "dashed = patched after layer K (its layer-K explanations cannot change).</div>"
    )
    return out


def patching_html(df: pd.DataFrame, *, value: str = "metric", batch: int = 0) -> HTMLPage:
    """A page of ``value`` over layers x positions for prompt ``batch``, coloured by effect:
    the prompts, answers and a legend above; each cell holds its value, the readout
    explanation and the patched site's (full texts on hover); cells after layer K are dashed."""
    df = one_prompt(df, batch)
    by = _colour_by(df, value)
    layers = sorted(df["layer"].unique())
    positions = sorted(df["position"].unique())
    lo, hi = color_range(df, by)
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
            v, c = float(getattr(r, value)), float(getattr(r, by))
            after = bool(getattr(r, "downstream_of_k", False))
            style = f"background:{_cell_colour(c, lo, hi)};" + (
                "border:2px dashed #888;" if after else ""
            )
            site = str(r.explanation)
            ro = getattr(r, "readout_explanation", None)
            if ro is None:
                title, text = site, f"<small>{html.escape(_shorten(site, 40))}</small>"
            else:
                answer = getattr(r, "answer", None)
                title = f"readout: {ro}\nanswer: {answer}\npatched site: {site}"
                text = (
                    f"<small><b>{html.escape(_shorten(str(ro), 40))}</b><br>"
                    f"site: {html.escape(_shorten(site, 34))}</small>"
                )
            extra = f" ({by} {c:.2f})" if by != value else ""
            tds += (
                f'<td class="nla-cell" title="{html.escape(title)}" style="{style}">'
                f"<b>{v:.3f}</b>{extra}<br>{text}</td>"
            )
        body += f"<tr><th>{layer}</th>{tds}</tr>"
    table = (
        f"<table><thead><tr><th>layer \\ pos</th>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
    return HTMLPage(_header(df, value, batch, lo, hi) + table, title=_title(df, value))


def plot_patching_interactive(df: pd.DataFrame, *, value: str = "metric", batch: int = 0) -> Any:
    """An interactive plotly heatmap coloured by effect (hover shows the value, the readout
    explanation, the answer and the patched site's explanation); needs plotly."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise MissingExtraError("plotly", "plot", "an interactive patching heatmap") from exc
    import numpy as np

    df = one_prompt(df, batch)
    by = _colour_by(df, value)
    grid = df.pivot(index="layer", columns="position", values=value).astype(float)
    shade = df.pivot(index="layer", columns="position", values=by).astype(float)
    parts = [
        grid.values,
        _texts(df, "readout_explanation").values,
        _texts(df, "explanation").values,
    ]
    answers = _texts(df, "answer") if "answer" in df.columns else None
    parts.append(answers.values if answers is not None else np.full(grid.shape, ""))
    custom = np.dstack(parts)
    lo, hi = color_range(df, by)
    hover = (
        "layer %{y}, position %{x}<br>" + value + " %{customdata[0]:.3f}, " + by + " %{z:.2f}"
        "<br>readout: %{customdata[1]}<br>answer: %{customdata[3]}"
        "<br>patched site: %{customdata[2]}<extra></extra>"
    )
    heat = go.Heatmap(
        z=shade.values,
        x=[str(p) for p in grid.columns],
        y=[str(x) for x in grid.index],
        customdata=custom,
        zmin=lo,
        zmax=hi,
        zmid=0.0,
        colorscale="RdBu_r",
        hovertemplate=hover,
        colorbar={"title": {"text": "effect" if by == "effect" else by}},
    )
    fig = go.Figure(heat)
    sub = legend_text(df)
    if df.attrs.get("clean_prompts"):
        sub += f"<br>clean: {html.escape(_shorten(str(df.attrs['clean_prompts'][batch]), 100))}"
        sub += (
            f"<br>corrupted: {html.escape(_shorten(str(df.attrs['corrupt_prompts'][batch]), 100))}"
        )
    fig.update_layout(
        title={"text": f"{_title(df, value)}<br><sup>{sub}</sup>"},
        xaxis_title="patched position",
        yaxis_title="patched layer",
        margin={"t": 140},
    )
    return fig
