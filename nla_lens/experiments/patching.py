"""Activation patching with explanations.

For each (layer, position), the clean run is repeated with the residual output
of block ``layer`` at ``position`` replaced by the corrupted run's. Each row of
the result has the metric, the explanation of the patched run's layer-K
residual at that position, and cross-fits: how well the clean and the corrupted
runs' explanations (at that position) reconstruct the patched residual through
the AR. All explanations are made in one batched AV call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.pair import NLAPair
from ..core.progress import bar_options
from ..core.sampling import Sampling
from ..errors import CaptureError
from ..subjects import ResidualEdit, as_subject, capture_residual, resolve_positions
from .difference import explain_difference
from .flagged import explain_flagged, score_flagged
from .grid import as_layers, as_positions
from .runs import read_subject
from .uncertainty import TextScorer, bootstrap_delta

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "activation_patching",
    "kl_to_clean",
    "logit_diff",
    "normalized_logit_diff",
]

Metric = Callable[[Tensor, Tensor, Tensor], float]


def logit_diff(correct: int, incorrect: int) -> Metric:
    """Metric: ``logit[correct] - logit[incorrect]`` at the last position of the patched run."""

    def metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
        return float(patched[-1, correct] - patched[-1, incorrect])

    return metric


def normalized_logit_diff(correct: int, incorrect: int) -> Metric:
    """Metric: the logit difference rescaled so the clean run is 1 and the corrupted run 0
    (a patch that moves the answer all the way to the corrupted one scores 0). NaN when
    the clean and corrupted runs have the same logit difference (nothing to recover)."""
    raw = logit_diff(correct, incorrect)

    def metric(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
        lo, hi = raw(corrupt, clean, corrupt), raw(clean, clean, corrupt)
        if abs(hi - lo) < 1e-6:
            return float("nan")
        return (raw(patched, clean, corrupt) - lo) / (hi - lo)

    return metric


def kl_to_clean(patched: Tensor, clean: Tensor, corrupt: Tensor) -> float:
    """Metric: KL(clean || patched) of the next-token distribution at the last position
    (clamped at 0: float error can make an identical distribution's KL slightly negative)."""
    p = torch.log_softmax(clean[-1].float(), -1)
    q = torch.log_softmax(patched[-1].float(), -1)
    return max(0.0, float((p.exp() * (p - q)).sum()))


def _replace_with(values: Tensor) -> Callable[[Tensor], Tensor]:
    """Replace the selected ``[batch, 1, d]`` residuals by ``values`` ``[batch, d]``."""

    def fn(selected: Tensor) -> Tensor:
        return values.to(selected.device, selected.dtype).unsqueeze(1).expand_as(selected)

    return fn


def _real_logits(logits: Tensor, mask: Tensor) -> list[Tensor]:
    """Each row's logits at its real tokens only, ``[n_real, vocab]`` (padding dropped)."""
    return [row[m.bool().to(row.device)] for row, m in zip(logits, mask, strict=True)]


def activation_patching(
    nla: NLAPair,
    model: Any,
    clean: Any,
    corrupt: Any,
    *,
    layers: Any,
    positions: Any,
    metric: Metric | None = None,
    answer_tokens: tuple[int, int] | None = None,
    tokenizer: Any = None,
    progress: bool | None = None,
    sampling: Sampling | None = None,
    explain_differences: bool = False,
    level: float = 0.9,
    n_boot: int = 2000,
    **settings: Any,
) -> pd.DataFrame:
    """Patch each (layer, position) from ``corrupt`` into ``clean``; explain and score.

    ``clean`` and ``corrupt`` are one prompt each, or equally long batches of
    prompts (pair ``i`` of the batches must have the same number of tokens;
    prompts of a batch may differ in length, padded either side). ``layers`` are
    block indices and ``positions`` count over each prompt's real tokens (negative
    from its last); each is one int or a list, range, numpy array or 1-D tensor of
    ints (anything else raises ``CaptureError`` before the subject runs). ``metric(
    patched_logits, clean_logits, corrupt_logits) -> float`` sees each prompt's
    ``[n_real, vocab]`` logits; default: with ``answer_tokens=(correct, incorrect)``
    the normalised logit difference (1 = the clean run, 0 = the corrupted run; the
    raw difference is in ``logit_diff``), else KL to the clean run. Works with
    TransformerBridge, nnsight and Hugging Face models. Returns one row per
    (batch, layer, position); ``downstream_of_k`` marks cells patched after
    layer K, whose layer-K explanation cannot change.

    With ``samples >= 2`` (and an AR), each row gets ``crossfit_delta``: the mean
    score of the clean run's samples minus the corrupted run's samples on the
    patched residual (positive: it still reads as clean), with a bootstrap interval
    over the samples at ``level`` (``crossfit_delta_lo`` / ``_hi``).
    ``explain_differences=True`` adds ``difference_explanation``: the explanation of
    the patched minus the clean layer-K residual at that position (what the patch changed).
    """
    import pandas as pd

    subject = as_subject(model, tokenizer)
    layers, positions = as_layers(layers, subject.n_layers), as_positions(positions)
    raw_ld = logit_diff(*answer_tokens) if answer_tokens is not None else None
    if metric is None:
        metric = normalized_logit_diff(*answer_tokens) if answer_tokens is not None else kl_to_clean
    _, clean_k = read_subject(nla, subject, clean)
    corrupt_k = capture_residual(subject, corrupt, nla.layer)
    lengths_clean = clean_k.attention_mask.sum(1).tolist()
    lengths_corrupt = corrupt_k.attention_mask.sum(1).tolist()
    if lengths_clean != lengths_corrupt:
        raise CaptureError(
            f"clean and corrupted prompts must pair up with equal lengths, got {lengths_clean} and "
            f"{lengths_corrupt} real tokens. Pick prompts that tokenize to the same number of tokens."
        )
    n_min = min(lengths_clean)
    bad = [p for p in positions if not -n_min <= p < n_min]
    if bad:
        raise CaptureError(
            f"positions {bad} out of range for a {n_min}-token prompt (valid {-n_min}..{n_min - 1}, "
            "counted over real tokens)."
        )
    if clean_k.logits is None or corrupt_k.logits is None:
        raise CaptureError(
            "this model's capture returned no logits; activation patching needs them."
        )
    corrupt_full = {
        layer: capture_residual(subject, corrupt, layer, keep_logits=False) for layer in layers
    }
    clean_logits = _real_logits(clean_k.logits, clean_k.attention_mask)
    corrupt_logits = _real_logits(corrupt_k.logits, corrupt_k.attention_mask)
    batch = len(lengths_clean)
    rows_b = torch.arange(batch)
    tokens = clean_k.real_tokens()
    grid = [(layer, p) for layer in layers for p in positions]
    patched_vecs: list[Tensor] = []  # [batch, d] per grid cell
    values: list[list[float]] = []
    raw_values: list[list[float]] = []
    for layer, p in tqdm(grid, desc="patching", unit="cell", **bar_options(progress)):
        donor_cap = corrupt_full[layer]
        cols = capture_cols(donor_cap.attention_mask, p)
        donor = donor_cap.residual[rows_b, cols]
        edit = ResidualEdit(layer, _replace_with(donor), positions=[p])
        run = capture_residual(subject, clean, nla.layer, positions=[p], edits=edit)
        if run.logits is None:
            raise CaptureError("the patched run returned no logits.")
        patched_logits = _real_logits(run.logits, run.attention_mask)
        values.append(
            [metric(patched_logits[b], clean_logits[b], corrupt_logits[b]) for b in range(batch)]
        )
        if raw_ld is not None:
            raw_values.append(
                [
                    raw_ld(patched_logits[b], clean_logits[b], corrupt_logits[b])
                    for b in range(batch)
                ]
            )
        patched_vecs.append(run.residual[:, 0].float().cpu())
    rel = {p: [p % n for n in lengths_clean] for p in positions}
    clean_vecs = (
        torch.stack(
            [clean_k.residual[rows_b, capture_cols(clean_k.attention_mask, p)] for p in positions]
        )
        .float()
        .cpu()
    )
    corrupt_vecs = (
        torch.stack(
            [
                corrupt_k.residual[rows_b, capture_cols(corrupt_k.attention_mask, p)]
                for p in positions
            ]
        )
        .float()
        .cpu()
    )
    n_cells, m = len(grid), len(positions)
    # one batched AV call: every patched cell, then the clean and corrupted references
    flat = torch.cat([torch.stack(patched_vecs).reshape(-1, nla.d_model),
                      clean_vecs.reshape(-1, nla.d_model), corrupt_vecs.reshape(-1, nla.d_model)])  # fmt: skip
    s = Sampling.of(sampling, **settings)
    exps = explain_flagged(nla, flat, s)
    first = [e for e in exps if e.sample == 0]
    patched_e = first[: n_cells * batch]
    clean_e = first[n_cells * batch : n_cells * batch + m * batch]
    corrupt_e = first[n_cells * batch + m * batch :]
    col = {p: j for j, p in enumerate(positions)}

    def ref(es: list[Any], p: int, b: int) -> Any:
        return es[col[p] * batch + b]

    cells = [(i, layer, p, b) for i, (layer, p) in enumerate(grid) for b in range(batch)]
    fits = None
    if nla.ar is not None:
        texts = [ref(clean_e, p, b).text for _, _, p, b in cells] + [
            ref(corrupt_e, p, b).text for _, _, p, b in cells
        ]
        skip = [bool(ref(clean_e, p, b).skipped) for _, _, p, b in cells] + [
            bool(ref(corrupt_e, p, b).skipped) for _, _, p, b in cells
        ]
        vecs = torch.stack([patched_vecs[i][b] for i, _, _, b in cells])
        fits = score_flagged(nla, texts, torch.cat([vecs, vecs]), skip)
    n = len(cells)
    rows: list[dict[str, Any]] = []
    for j, (i, layer, p, b) in enumerate(cells):
        e = patched_e[i * batch + b]
        ce, xe = ref(clean_e, p, b), ref(corrupt_e, p, b)
        position = rel[p][b]
        row: dict[str, Any] = {
            "batch": b,
            "layer": layer,
            "position": position,
            "token": tokens[b][position],
            "metric": values[i][b],
            "downstream_of_k": layer > nla.layer,
            "explanation": e.text,
            "mse_nrm": e.mse_nrm,
            "cos": e.cos,
            "fve_nrm": e.fve_nrm,
            "clean_explanation": ce.text,
            "corrupt_explanation": xe.text,
            "same_as_clean": e.text == ce.text,
            "same_as_corrupt": e.text == xe.text,
        }
        if raw_ld is not None:
            row["logit_diff"] = raw_values[i][b]
        if e.skipped:
            row["skipped"] = e.skipped
        if fits is not None:
            row["crossfit_cos_clean"] = fits.cos[j]
            row["crossfit_cos_corrupt"] = fits.cos[n + j]
            if nla.baseline is not None:
                row["crossfit_fve_nrm_clean"] = fits.fve_nrm[j]
                row["crossfit_fve_nrm_corrupt"] = fits.fve_nrm[n + j]
        rows.append(row)
    if s.samples >= 2 and nla.ar is not None and not any(e.skipped for e in exps):
        groups: dict[int, list[str]] = {}
        for e in exps:
            groups.setdefault(e.index, []).append(e.text)
        scorer = TextScorer(nla, batch_size=s.batch_size)
        for j, (i, _, p, b) in enumerate(cells):
            vec = patched_vecs[i][b].unsqueeze(0)
            sides = [groups[n_cells * batch + off + col[p] * batch + b] for off in (0, m * batch)]
            own, other = (scorer.values(t, vec.expand(len(t), -1)) for t in sides)
            iv = bootstrap_delta(own, other, level=level, n_boot=n_boot, seed=j)
            rows[j].update(
                crossfit_delta=iv.estimate, crossfit_delta_lo=iv.low, crossfit_delta_hi=iv.high
            )
    if explain_differences:
        patched = torch.stack([patched_vecs[i][b] for i, _, _, b in cells])
        clean_at = torch.stack([clean_vecs[col[p], b] for _, _, p, b in cells])
        diff = explain_difference(
            nla, patched, clean_at, sides=False, label_a="patched", label_b="clean",
            sampling=Sampling(max_new_tokens=s.max_new_tokens),
        )  # fmt: skip
        for j, d in enumerate(diff.explanations):
            rows[j]["difference_explanation"] = None if d is None else d.text
            rows[j]["difference_norm"] = diff.norms[j]
    return pd.DataFrame(rows)


def capture_cols(attention_mask: Tensor, position: int) -> Tensor:
    """Each row's absolute column of ``position`` (counted over its real tokens)."""
    return resolve_positions(attention_mask, [position])[:, 0]
