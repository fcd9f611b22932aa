"""Activation patching with explanations.

For each (layer, position), one run is repeated with the residual output of block
``layer`` at ``position`` replaced by the other run's: the corrupted run's into
the clean run (``direction="noising"``, the default) or the clean run's into the
corrupted run (``"denoising"``). Each row has

* the metric, its name (``metric_name``) and ``effect``, the metric mapped to one
  convention (0 = no effect, 1 = behaves like the donor run; see
  :mod:`~nla_lens.experiments.patching_metrics`);
* the explanation of the patched run's layer-K residual at the patched position
  (what moved) and at the **readout** position, the metric's position, by default
  each prompt's last token (what it did to the answer), with the subject's answer
  there and whether the readout's reading changed from the unpatched run's;
* cross-fits: how well the clean and the corrupted runs' explanations (at the
  patched position) reconstruct the patched residual through the AR.

All explanations are made in one batched AV call. ``df.attrs`` names the metric, its
meaning, the direction, the prompts and the answers; the views show them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.pair import NLAPair
from ..core.progress import bar_options
from ..core.sampling import Sampling
from ..errors import CaptureError
from ..subjects import ResidualEdit, as_subject, capture_residual, resolve_positions
from ..subjects.inputs import token_text
from .difference import explain_difference
from .flagged import explain_flagged, score_flagged
from .grid import as_layers, as_positions
from .patching_metrics import (
    Direction,
    Metric,
    Reader,
    answer_ids,
    effect_of,
    kl_at,
    kl_to_clean,
    logit_diff,
    metric_info,
    normalized_logit_diff,
    read_continuations,
)
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


def _replace_with(values: Tensor) -> Any:
    """Replace the selected ``[batch, 1, d]`` residuals by ``values`` ``[batch, d]``."""

    def fn(selected: Tensor) -> Tensor:
        return values.to(selected.device, selected.dtype).unsqueeze(1).expand_as(selected)

    return fn


def _real_logits(logits: Tensor, mask: Tensor) -> list[Tensor]:
    """Each row's logits at its real tokens only, ``[n_real, vocab]`` (padding dropped)."""
    return [row[m.bool().to(row.device)] for row, m in zip(logits, mask, strict=True)]


def _at(cap: Any, p: int) -> Tensor:
    """Each row's captured residual at real-token position ``p``, ``[batch, d]``."""
    rows = torch.arange(cap.residual.shape[0])
    return cap.residual[rows, capture_cols(cap.attention_mask, p)].float().cpu()


def _prompt_texts(inputs: Any, tokens: list[list[str]]) -> list[str]:
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, (list, tuple)) and all(isinstance(t, str) for t in inputs):
        return list(inputs)
    return [" ".join(row) for row in tokens]


def activation_patching(
    nla: NLAPair,
    model: Any,
    clean: Any,
    corrupt: Any,
    *,
    layers: Any,
    positions: Any,
    metric: Metric | None = None,
    answer_tokens: tuple[int | str, int | str] | None = None,
    direction: Direction = "noising",
    readout: int = -1,
    reader: Reader | None = None,
    tokenizer: Any = None,
    progress: bool | None = None,
    sampling: Sampling | None = None,
    explain_differences: bool = False,
    level: float = 0.9,
    n_boot: int = 2000,
    **settings: Any,
) -> pd.DataFrame:
    """Patch each (layer, position) between ``clean`` and ``corrupt``; explain and score.

    ``clean`` and ``corrupt`` are one prompt each, or equally long batches of
    prompts (pair ``i`` of the batches must have the same number of tokens;
    prompts of a batch may differ in length, padded either side). ``layers`` are
    block indices; ``positions`` and ``readout`` count over each prompt's real tokens
    (negative from its last); ``layers`` and ``positions`` are each one int or a list,
    range, numpy array or 1-D tensor of ints (anything else raises ``CaptureError``
    before the subject runs). Works with TransformerBridge, nnsight and Hugging Face
    models; one row per (batch, layer, position).

    ``direction="noising"`` patches the corrupted run into the clean run,
    ``"denoising"`` the clean run into the corrupted run; the columns are the same.
    ``metric(patched_logits, clean_logits, corrupt_logits) -> float`` sees each
    prompt's ``[n_real, vocab]`` logits; default: with ``answer_tokens=(clean answer,
    corrupted answer)`` (ids, or words that are one token of the subject's tokenizer)
    the normalised logit difference at ``readout`` (1 = the clean run, 0 = the
    corrupted run; the raw difference is in ``logit_diff``), else KL to the clean run
    there. ``effect`` maps any metric to 0 = no effect, 1 = behaves like the donor run.

    ``readout_explanation`` explains the patched run's layer-K residual at ``readout``;
    ``answer`` is the subject's top token there. ``reader(text)`` (for the toy pair:
    ``nla_lens.toy.read_explanation``) says which continuation an explanation names:
    ``readout_next`` and ``readout_changed`` (the reading differs from the unpatched
    run's) use it, else ``readout_changed`` compares the texts. ``downstream_of_k``
    marks cells patched after layer K, whose layer-K explanations cannot change.

    With ``samples >= 2`` (and an AR), each row gets ``crossfit_delta``: the mean
    score of the clean run's samples minus the corrupted run's samples on the
    patched residual (positive: it still reads as clean), with a bootstrap interval
    over the samples at ``level`` (``crossfit_delta_lo`` / ``_hi``).
    ``explain_differences=True`` adds ``difference_explanation`` and
    ``readout_difference_explanation``: explanations of the patched minus the unpatched
    layer-K residual at the patched position and at the readout (what the patch changed).
    """
    import pandas as pd

    if direction not in ("noising", "denoising"):
        raise CaptureError(
            f"direction must be 'noising' (corrupted into clean) or 'denoising' (clean into "
            f"corrupted), got {direction!r}."
        )
    subject = as_subject(model, tokenizer)
    layers, positions = as_layers(layers, subject.n_layers), as_positions(positions)
    answers = answer_ids(answer_tokens, subject.tokenizer) if answer_tokens is not None else None
    raw_ld = logit_diff(*answers, position=readout) if answers is not None else None
    if metric is None:
        metric = (
            normalized_logit_diff(*answers, position=readout)
            if answers is not None
            else kl_at(readout)
        )
    info = metric_info(metric)
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
    bad = [p for p in [*positions, readout] if not -n_min <= p < n_min]
    if bad:
        raise CaptureError(
            f"positions {bad} out of range for a {n_min}-token prompt (valid {-n_min}..{n_min - 1}, "
            "counted over real tokens; readout= counts the same way)."
        )
    if clean_k.logits is None or corrupt_k.logits is None:
        raise CaptureError(
            "this model's capture returned no logits; activation patching needs them."
        )
    noising = direction == "noising"
    base_in, donor_in = (clean, corrupt) if noising else (corrupt, clean)
    base_k = clean_k if noising else corrupt_k
    donor_full = {
        layer: capture_residual(subject, donor_in, layer, keep_logits=False) for layer in layers
    }
    clean_logits = _real_logits(clean_k.logits, clean_k.attention_mask)
    corrupt_logits = _real_logits(corrupt_k.logits, corrupt_k.attention_mask)
    batch = len(lengths_clean)

    def score(logits: list[Tensor]) -> list[float]:
        return [metric(logits[b], clean_logits[b], corrupt_logits[b]) for b in range(batch)]

    on_clean, on_corrupt = score(clean_logits), score(corrupt_logits)
    on_base, on_donor = (on_clean, on_corrupt) if noising else (on_corrupt, on_clean)
    rows_b = torch.arange(batch)
    tokens = base_k.real_tokens()
    grid = [(layer, p) for layer in layers for p in positions]
    patched_vecs: list[Tensor] = []  # [batch, d] per grid cell, at the patched position
    readout_vecs: list[Tensor] = []  # [batch, d] per grid cell, at the readout
    values: list[list[float]] = []
    raw_values: list[list[float]] = []
    top: list[list[int]] = []
    for layer, p in tqdm(grid, desc="patching", unit="cell", **bar_options(progress)):
        donor_cap = donor_full[layer]
        donor = donor_cap.residual[rows_b, capture_cols(donor_cap.attention_mask, p)]
        edit = ResidualEdit(layer, _replace_with(donor), positions=[p])
        run = capture_residual(subject, base_in, nla.layer, positions=[p, readout], edits=edit)
        if run.logits is None:
            raise CaptureError("the patched run returned no logits.")
        patched_logits = _real_logits(run.logits, run.attention_mask)
        values.append(score(patched_logits))
        if raw_ld is not None:
            raw_values.append([raw_ld(lg, lg, lg) for lg in patched_logits])
        top.append([int(lg[readout].argmax()) for lg in patched_logits])
        patched_vecs.append(run.residual[:, 0].float().cpu())
        readout_vecs.append(run.residual[:, 1].float().cpu())
    rel = {p: [p % n for n in lengths_clean] for p in positions}
    clean_vecs = torch.stack([_at(clean_k, p) for p in positions])
    corrupt_vecs = torch.stack([_at(corrupt_k, p) for p in positions])
    ro_clean, ro_corrupt = _at(clean_k, readout), _at(corrupt_k, readout)

    # Cells patched after layer K leave every layer-K residual as the unpatched run's:
    # their readout explanation is the unpatched run's, so only cells up to K are explained.
    live = [i for i, (layer, _) in enumerate(grid) if layer <= nla.layer]
    ro_live = (
        torch.stack([readout_vecs[i] for i in live]) if live else torch.zeros(0, batch, nla.d_model)
    )
    # one batched AV call: every patched cell, the live readouts, then the references
    parts = [torch.stack(patched_vecs).reshape(-1, nla.d_model), ro_live.reshape(-1, nla.d_model),
             clean_vecs.reshape(-1, nla.d_model), corrupt_vecs.reshape(-1, nla.d_model),
             ro_clean, ro_corrupt]  # fmt: skip
    starts = [0]
    for part in parts:
        starts.append(starts[-1] + part.shape[0])
    s = Sampling.of(sampling, **settings)
    exps = explain_flagged(nla, torch.cat(parts), s)
    first = [e for e in exps if e.sample == 0]
    patched_e, ro_e, clean_e, corrupt_e, ro_clean_e, ro_corrupt_e = (
        first[starts[k] : starts[k + 1]] for k in range(6)
    )
    ro_base_e = ro_clean_e if noising else ro_corrupt_e
    live_at = {i: j for j, i in enumerate(live)}
    col = {p: j for j, p in enumerate(positions)}

    def ref(es: list[Any], p: int, b: int) -> Any:
        return es[col[p] * batch + b]

    def readout_of(i: int, b: int) -> Any:
        return ro_e[live_at[i] * batch + b] if i in live_at else ro_base_e[b]

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
    tokenizer = subject.tokenizer
    decode = (lambda i: token_text(tokenizer, i)) if tokenizer is not None else None
    n = len(cells)
    rows: list[dict[str, Any]] = []
    for j, (i, layer, p, b) in enumerate(cells):
        e = patched_e[i * batch + b]
        ce, xe = ref(clean_e, p, b), ref(corrupt_e, p, b)
        ro, ro_base = readout_of(i, b), ro_base_e[b]
        reading = read_continuations(reader, ro.text)
        base_reading = read_continuations(reader, ro_base.text)
        answer = top[i][b]
        row: dict[str, Any] = {
            "batch": b,
            "layer": layer,
            "position": rel[p][b],
            "token": tokens[b][rel[p][b]],
            "metric_name": info.name,
            "metric": values[i][b],
            "effect": effect_of(values[i][b], on_base[b], on_donor[b]),
            "downstream_of_k": layer > nla.layer,
            "explanation": e.text,
            "mse_nrm": e.mse_nrm,
            "cos": e.cos,
            "fve_nrm": e.fve_nrm,
            "clean_explanation": ce.text,
            "corrupt_explanation": xe.text,
            "same_as_clean": e.text == ce.text,
            "same_as_corrupt": e.text == xe.text,
            "readout_position": readout % lengths_clean[b],
            "readout_explanation": ro.text,
            "clean_readout_explanation": ro_clean_e[b].text,
            "corrupt_readout_explanation": ro_corrupt_e[b].text,
            "readout_next": reading[0] if reading else None,
            "readout_changed": (
                ro.text != ro_base.text
                if reading is None
                else (reading[:1] != (base_reading or ())[:1])
            ),
            "answer_id": answer,
            "answer": decode(answer) if decode is not None else str(answer),
        }
        if reading is not None:
            row["readout_names_answer"] = str(row["answer"]).strip().lstrip("▁") in reading
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
            sides = [groups[start + col[p] * batch + b] for start in (starts[2], starts[3])]
            own, other = (scorer.values(t, vec.expand(len(t), -1)) for t in sides)
            iv = bootstrap_delta(own, other, level=level, n_boot=n_boot, seed=j)
            rows[j].update(
                crossfit_delta=iv.estimate, crossfit_delta_lo=iv.low, crossfit_delta_hi=iv.high
            )
    if explain_differences:
        base_vecs = clean_vecs if noising else corrupt_vecs
        ro_base_v = ro_clean if noising else ro_corrupt
        patched = torch.stack([patched_vecs[i][b] for i, _, _, b in cells])
        patched_ro = torch.stack([readout_vecs[i][b] for i, _, _, b in cells])
        base_at = torch.stack([base_vecs[col[p], b] for _, _, p, b in cells])
        base_ro = torch.stack([ro_base_v[b] for _, _, _, b in cells])
        diff = explain_difference(
            nla, torch.cat([patched, patched_ro]), torch.cat([base_at, base_ro]), sides=False,
            label_a="patched", label_b="unpatched", sampling=Sampling(max_new_tokens=s.max_new_tokens),
        )  # fmt: skip
        for j in range(n):
            d, r = diff.explanations[j], diff.explanations[n + j]
            rows[j]["difference_explanation"] = None if d is None else d.text
            rows[j]["difference_norm"] = diff.norms[j]
            rows[j]["readout_difference_explanation"] = None if r is None else r.text
            rows[j]["readout_difference_norm"] = diff.norms[n + j]
    df = pd.DataFrame(rows)
    clean_words = None
    if answers is not None:
        clean_words = [decode(a) if decode is not None else str(a) for a in answers]
    df.attrs.update(
        metric=info.name,
        metric_meaning=info.meaning,
        direction=direction,
        base_run="clean" if noising else "corrupted",
        donor_run="corrupted" if noising else "clean",
        effect_meaning=(
            "0 = no effect (like the unpatched "
            f"{'clean' if noising else 'corrupted'} run), 1 = behaves like the "
            f"{'corrupted' if noising else 'clean'} run"
        ),
        layer_k=nla.layer,
        readout=readout,
        clean_prompts=_prompt_texts(clean, clean_k.real_tokens()),
        corrupt_prompts=_prompt_texts(corrupt, corrupt_k.real_tokens()),
        answers=None if clean_words is None else tuple(clean_words),
        answer_ids=answers,
    )
    return df


def capture_cols(attention_mask: Tensor, position: int) -> Tensor:
    """Each row's absolute column of ``position`` (counted over its real tokens)."""
    return resolve_positions(attention_mask, [position])[:, 0]
