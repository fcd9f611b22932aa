"""Activation patching with explanations.

For each (layer, position), the clean run is repeated with the residual output
of block ``layer`` at ``position`` replaced by the corrupted run's. Each row of
the result has the metric, the explanation of the patched run's layer-K
residual at that position, and cross-fits: how well the clean and the corrupted
runs' explanations (at that position) reconstruct the patched residual through
the AR. All explanations are made in one batched AV call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import CaptureError
from .interventions import residual_edit
from .runs import token_table

if TYPE_CHECKING:
    import pandas as pd

    from .pair import NLA

__all__ = ["activation_patching", "kl_to_clean", "logit_diff", "patching_html", "plot_patching"]

Metric = Callable[[Tensor, Tensor, Tensor], float]


def logit_diff(correct: int, incorrect: int) -> Metric:
    """Metric: ``logit[correct] - logit[incorrect]`` at the last position of the patched run."""

    def metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
        return float(patched[-1, correct] - patched[-1, incorrect])

    return metric


def kl_to_clean(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
    """Metric: KL(clean || patched) of the next-token distribution at the last position."""
    p = torch.log_softmax(clean[-1].float(), -1)
    q = torch.log_softmax(patched[-1].float(), -1)
    return float((p.exp() * (p - q)).sum())


def _replace_at(values: Tensor, position: int) -> Callable[[Tensor], Tensor]:
    def fn(resid: Tensor) -> Tensor:
        out = resid.clone()
        out[:, position] = values.to(out.device, out.dtype)
        return out

    return fn


def activation_patching(
    nla: NLA,
    model: Any,
    clean: Any,
    corrupt: Any,
    *,
    layers: Sequence[int],
    positions: Sequence[int],
    metric: Metric | None = None,
    answer_tokens: tuple[int, int] | None = None,
    tokenizer: Any = None,
    progress: bool | None = None,
    **sampling: Any,
) -> pd.DataFrame:
    """Patch each (layer, position) from ``corrupt`` into ``clean``; explain and score.

    ``metric(patched_logits, clean_logits, corrupt_logits) -> float`` on ``[seq, vocab]``
    logits; default: logit difference when ``answer_tokens=(correct, incorrect)`` is
    given, else KL to the clean run. Works with TransformerBridge, nnsight and
    Hugging Face models. Returns one row per (layer, position).
    """
    import pandas as pd

    from .capture import capture_residual, check_subject

    check_subject(model, d_model=nla.d_model, layer=nla.layer, base_model=nla.base_model)
    if metric is None:
        metric = logit_diff(*answer_tokens) if answer_tokens is not None else kl_to_clean
    cap = {"tokenizer": tokenizer}
    clean_k = capture_residual(model, clean, nla.layer, positions=None, **cap)
    corrupt_k = capture_residual(model, corrupt, nla.layer, positions=None, **cap)
    if clean_k.input_ids.shape != corrupt_k.input_ids.shape or clean_k.input_ids.shape[0] != 1:
        raise CaptureError(
            f"clean and corrupted prompts must be single sequences of the same length, got "
            f"{tuple(clean_k.input_ids.shape)} and {tuple(corrupt_k.input_ids.shape)}. Pick prompts "
            "that tokenize to the same number of tokens."
        )
    seq = clean_k.input_ids.shape[1]
    bad = [p for p in positions if not -seq <= p < seq]
    if bad:
        raise CaptureError(f"positions {bad} out of range for a {seq}-token prompt.")
    positions = [p % seq for p in positions]
    corrupt_at = {
        layer: capture_residual(model, corrupt, layer, positions=None, **cap).residual[0]
        for layer in layers
    }
    if clean_k.logits is None or corrupt_k.logits is None:
        raise CaptureError(
            "this model's capture returned no logits; activation patching needs them."
        )
    clean_tokens = token_table(clean_k)[0]
    grid = [(layer, p) for layer in layers for p in positions]
    vectors, values = [], []
    for layer, p in tqdm(
        grid, desc="patching", disable=not (progress if progress is not None else len(grid) > 8)
    ):
        edit = residual_edit(model, layer, _replace_at(corrupt_at[layer][p], p))
        run = capture_residual(model, clean, nla.layer, positions=[p], **cap, **edit)
        if run.logits is None:
            raise CaptureError("the patched run returned no logits.")
        values.append(metric(run.logits[0], clean_k.logits[0], corrupt_k.logits[0]))
        vectors.append(run.residual[0, 0].float().cpu())
    clean_vecs = clean_k.residual[0, positions].float().cpu()
    corrupt_vecs = corrupt_k.residual[0, positions].float().cpu()
    n, m = len(grid), len(positions)
    exps = nla.explain(torch.cat([torch.stack(vectors), clean_vecs, corrupt_vecs]), **sampling)
    patched, clean_e, corrupt_e = exps[:n], exps[n : n + m], exps[n + m :]
    col = {p: j for j, p in enumerate(positions)}
    rows: list[dict[str, Any]] = []
    if nla.ar is not None:
        texts = [clean_e[col[p]].text for _, p in grid] + [corrupt_e[col[p]].text for _, p in grid]
        fits = nla.score(texts, torch.cat([torch.stack(vectors)] * 2))
    for i, ((layer, p), e) in enumerate(zip(grid, patched, strict=True)):
        row = {
            "layer": layer,
            "position": p,
            "token": clean_tokens[p],
            "metric": values[i],
            "explanation": e.text,
            "mse_nrm": e.mse_nrm,
            "cos": e.cos,
            "fve_nrm": e.fve_nrm,
            "clean_explanation": clean_e[col[p]].text,
            "corrupt_explanation": corrupt_e[col[p]].text,
            "same_as_clean": e.text == clean_e[col[p]].text,
            "same_as_corrupt": e.text == corrupt_e[col[p]].text,
        }
        if nla.ar is not None:
            row["crossfit_cos_clean"] = float(fits.cos[i])
            row["crossfit_cos_corrupt"] = float(fits.cos[n + i])
            if fits.fve_nrm is not None:
                row["crossfit_fve_clean"] = float(fits.fve_nrm[i])
                row["crossfit_fve_corrupt"] = float(fits.fve_nrm[n + i])
        rows.append(row)
    return pd.DataFrame(rows)


def plot_patching(
    df: pd.DataFrame, *, value: str = "metric", label_chars: int = 28, ax: Any = None
) -> Any:
    """Heatmap of ``value`` over layers (rows) and positions (columns), each cell
    labelled with the start of its explanation. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    grid = df.pivot(index="layer", columns="position", values=value)
    text = df.pivot(index="layer", columns="position", values="explanation")
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.9 * grid.shape[1] + 2, 0.8 * grid.shape[0] + 1.5))
    im = ax.imshow(grid.values, cmap="RdBu_r", aspect="auto")
    ax.set_xticks(range(grid.shape[1]))
    tokens = df.drop_duplicates("position").set_index("position")["token"]
    ax.set_xticklabels([f"{p}\n{tokens[p]}" for p in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(layer) for layer in grid.index])
    ax.set_xlabel("position (token)")
    ax.set_ylabel("patched layer")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            label = str(text.values[i, j])
            label = label if len(label) <= label_chars else label[: label_chars - 1] + "…"
            shade = im.norm(grid.values[i, j])
            color = "white" if shade < 0.2 or shade > 0.8 else "black"  # readable on dark cells
            ax.text(
                j,
                i,
                f"{grid.values[i, j]:.2f}\n{label}",
                ha="center",
                va="center",
                fontsize=7,
                color=color,
            )
    ax.figure.colorbar(im, ax=ax, label=value)
    ax.set_title(
        f"activation patching: {value} (labels: explanation of the patched layer-K residual)"
    )
    return fig if fig is not None else ax.figure


def patching_html(df: pd.DataFrame, *, value: str = "metric") -> str:
    """An HTML grid of ``value`` with each cell's explanation on hover (for notebooks)."""
    import html

    layers = sorted(df["layer"].unique())
    positions = sorted(df["position"].unique())
    lo, hi = float(df[value].min()), float(df[value].max())
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
            t = 0.5 if hi == lo else (v - lo) / (hi - lo)
            tds += (
                f'<td title="{html.escape(r.explanation)}" style="background:hsl({240 - 240 * t:.0f},70%,80%)">'
                f"{v:.3f}</td>"
            )
        body += f"<tr><th>{layer}</th>{tds}</tr>"
    return (
        f"<table><thead><tr><th>layer \\ pos</th>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
