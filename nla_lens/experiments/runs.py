"""Explanations attached to a run of the subject, under any intervention.

:func:`explain_run` runs the subject once (with the user's TransformerLens
``fwd_hooks``, nnsight ``intervene`` callable, or Hugging Face forward hooks),
reads the layer-K residual at the chosen positions and explains every vector
in one batched AV call. :class:`ExplainedRun` holds the result and compares
two runs with :meth:`ExplainedRun.diff`: a cross-fit score says how well one
run's explanation reconstructs the other run's vector through the AR.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core.explanation import Explanation, baseline_notes, fmt, notes_html
from ..core.metrics import BaselineFit
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..errors import PairMismatchError
from ..subjects import Captured, Positions, Subject, as_subject, capture_residual
from .difference import DifferenceExplanation
from .difference import explain_difference as explain_diff
from .flagged import explain_flagged, score_flagged
from .html import HTMLPage, fve_colour
from .uncertainty import Interval, TextScorer, bootstrap_delta

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ExplainedRun", "RunDiff", "explain_run", "read_subject"]


def read_subject(
    nla: NLAPair,
    model: Any,
    inputs: Any,
    *,
    positions: Positions = None,
    tokenizer: Any = None,
    layer: int | None = None,
    **options: Any,
) -> tuple[Subject, Captured]:
    """Check the subject against the pair, then capture layer K (or ``layer``) from one run.

    ``options`` go to :func:`~nla_lens.subjects.capture_residual` (``edits``,
    ``fwd_hooks``, ``hf_hooks``, ``intervene``, ``keep_logits``, ...).
    """
    subject = as_subject(model, tokenizer)
    subject.check(d_model=nla.d_model, layer=nla.layer, base_model=nla.base_model)
    cap = capture_residual(
        subject, inputs, nla.layer if layer is None else layer, positions=positions, **options
    )
    return subject, cap


@dataclass(frozen=True)
class ExplainedRun:
    """One run of the subject, explained at chosen positions.

    ``rows[i] = (batch_index, position)`` locates ``vectors[i]`` and
    ``explanations[i]`` (the first sample per vector when ``samples > 1``; all
    samples are in ``all_explanations``). ``position`` counts over the row's
    real tokens (0 = its first), whatever the padding; ``tokens[b]`` holds row
    ``b``'s real tokens, so ``tokens[b][position]`` is the token read.
    """

    input_ids: Int[Tensor, "batch seq"]
    tokens: list[list[str]]
    rows: list[tuple[int, int]]
    vectors: Float[Tensor, "n d_model"]
    explanations: list[Explanation]
    all_explanations: list[Explanation]
    logits: Tensor | None = None
    label: str = "run"
    nla: NLAPair | None = field(default=None, repr=False, compare=False)
    #: The call's baseline fit check (see ``Explanations.baseline_fit``).
    baseline_fit: BaselineFit | None = field(default=None, repr=False, compare=False)

    def notes(self) -> list[str]:
        """The baseline behind the scores, and the fit check's verdict."""
        base = next((e.baseline for e in self.explanations if e.fve_nrm is not None), None)
        return baseline_notes(base, self.baseline_fit)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.explanations]

    def to_frame(self) -> pd.DataFrame:
        """One row per explained position."""
        import pandas as pd

        frame = pd.DataFrame(
            [
                {
                    "run": self.label,
                    "batch": b,
                    "position": p,
                    "token": self.tokens[b][p],
                    "norm": float(self.vectors[i].norm()),
                    "explanation": e.text,
                    "truncated": e.truncated,
                    "mse_nrm": e.mse_nrm,
                    "cos": e.cos,
                    "fve_nrm": e.fve_nrm,
                }
                for i, ((b, p), e) in enumerate(zip(self.rows, self.explanations, strict=True))
            ]
        )
        frame.attrs["notes"] = self.notes()
        return frame

    def to_html(self) -> HTMLPage:
        """A table of the explained positions, each row coloured by fve_nrm;
        ``.save(path)`` writes it as a page."""
        body = ""
        for (b, p), e in zip(self.rows, self.explanations, strict=True):
            text = e.text if not e.skipped else f"(skipped: {e.skipped})"
            body += (
                f"<tr style='background:{fve_colour(e.fve_nrm)}'><td>{b}</td><td>{p}</td>"
                f"<td><code>{html.escape(self.tokens[b][p])}</code></td>"
                f"<td style='text-align:left'>{html.escape(text)}</td>"
                f"<td>{fmt(e.cos)}</td><td>{fmt(e.fve_nrm)}</td></tr>"
            )
        return HTMLPage(
            f"<div><b>ExplainedRun</b> {html.escape(self.label)}: {len(self)} positions "
            "(rows coloured by fve_nrm: red 0, green 1)</div>"
            + notes_html(self.notes())
            + "<table><thead><tr><th>batch</th><th>pos</th><th>token</th><th>explanation</th>"
            f"<th>cos</th><th>fve_nrm</th></tr></thead><tbody>{body}</tbody></table>",
            title=f"ExplainedRun {self.label}",
        )

    def _repr_html_(self) -> str:
        return str(self.to_html())

    def __repr__(self) -> str:
        return f"ExplainedRun({self.label!r}, {len(self)} positions, texts={self.texts[:3]!r}{'…' if len(self) > 3 else ''})"

    def samples_per_vector(self) -> list[list[Explanation]]:
        """Every sample of each explained vector, in row order."""
        out: list[list[Explanation]] = [[] for _ in self.rows]
        for e in self.all_explanations:
            out[e.index].append(e)
        return out

    def diff(
        self,
        other: ExplainedRun,
        *,
        explain_difference: bool = False,
        level: float = 0.9,
        n_boot: int = 2000,
        seed: int = 0,
    ) -> RunDiff:
        """Side-by-side explanations and cross-fit scores against another run.

        When both runs drew ``samples >= 2`` explanations per vector, each row also
        gets bootstrap intervals (at ``level``) over the samples of the cross-fit
        deltas (see :class:`RunDiff`). ``explain_difference=True`` adds the
        explanation of ``other``'s residual minus this run's (what the intervention
        changed), in one more batched AV call.
        """
        nla = self.nla or other.nla
        if nla is None or nla.ar is None:
            raise PairMismatchError(
                "diff() scores explanations through the AR; load the pair with an AR."
            )
        if len(self) != len(other):
            raise PairMismatchError(
                f"cannot diff runs with {len(self)} and {len(other)} explained positions; "
                "explain the same positions in both runs."
            )
        # A's text against B's vector, then B's text against A's vector
        skip = [bool(e.skipped) for e in self.explanations + other.explanations]
        cross = score_flagged(
            nla, self.texts + other.texts, torch.cat([other.vectors, self.vectors]), skip
        )
        n = len(self)
        intervals = None
        sa, sb = self.samples_per_vector(), other.samples_per_vector()
        flagged = any(e.skipped for e in self.all_explanations + other.all_explanations)
        if min(len(x) for x in sa + sb) >= 2 and not flagged:
            scorer = TextScorer(nla)
            intervals = []
            for i in range(n):
                ta, tb = [e.text for e in sa[i]], [e.text for e in sb[i]]
                va, vb = self.vectors[i : i + 1], other.vectors[i : i + 1]
                on_a = [scorer.values(t, va.expand(len(t), -1)) for t in (ta, tb)]
                on_b = [scorer.values(t, vb.expand(len(t), -1)) for t in (tb, ta)]
                intervals.append(
                    {
                        "on_a": bootstrap_delta(*on_a, level=level, n_boot=n_boot, seed=seed + i),
                        "on_b": bootstrap_delta(*on_b, level=level, n_boot=n_boot, seed=seed + i),
                    }
                )
        difference = None
        if explain_difference:
            first = self.explanations[0].provenance if self.explanations else None
            sampling = None  # greedy, with the runs' token budget
            if first is not None:
                sampling = Sampling(max_new_tokens=first.sampling["max_new_tokens"])
            difference = explain_diff(
                nla, other.vectors, self.vectors, sides=False, label_a=other.label,
                label_b=self.label, sampling=sampling,
            )  # fmt: skip
        return RunDiff(
            a=self,
            b=other,
            cross_a_on_b={k: getattr(cross, k)[:n] for k in _METRICS},
            cross_b_on_a={k: getattr(cross, k)[n:] for k in _METRICS},
            intervals=None if intervals is None else tuple(intervals),
            difference=difference,
            metric="cos" if nla.baseline is None else "fve_nrm",
        )


_METRICS = ("mse_nrm", "cos", "fve_nrm")


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return None if len(vals) != len(xs) or not vals else sum(vals) / len(vals)


@dataclass(frozen=True)
class RunDiff:
    """Two runs side by side. ``cross_a_on_b``: A's explanation scored against B's
    vector (how well A's words reconstruct B's residual); ``cross_b_on_a`` the reverse.
    Self-fits are each run's own scores.

    With k >= 2 samples per vector in both runs, ``intervals[i]["on_a"]`` is a
    bootstrap interval over the samples of ``mean(A's samples on A's vector) -
    mean(B's samples on A's vector)`` (``metric``: fve_nrm, else cos), and
    ``"on_b"`` the same on B's vector: an interval clear of 0 says the runs read
    differently beyond sampling noise. ``difference`` explains B's residual minus A's.
    """

    a: ExplainedRun
    b: ExplainedRun
    cross_a_on_b: dict[str, list[float | None]]
    cross_b_on_a: dict[str, list[float | None]]
    intervals: tuple[dict[str, Interval], ...] | None = None
    difference: DifferenceExplanation | None = None
    metric: str = "fve_nrm"

    def summary(self) -> dict[str, float | None]:
        """Mean self-fit and cross-fit ``cos`` and ``fve_nrm``."""
        out: dict[str, float | None] = {}
        for metric in ("cos", "fve_nrm"):
            out[f"self_{metric}_a"] = _mean([getattr(e, metric) for e in self.a.explanations])
            out[f"self_{metric}_b"] = _mean([getattr(e, metric) for e in self.b.explanations])
            out[f"cross_{metric}_a_on_b"] = _mean(self.cross_a_on_b[metric])
            out[f"cross_{metric}_b_on_a"] = _mean(self.cross_b_on_a[metric])
        return out

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for i, ((bi, p), ea, eb) in enumerate(
            zip(self.a.rows, self.a.explanations, self.b.explanations, strict=True)
        ):
            rows.append(
                {
                    "batch": bi,
                    "position": p,
                    "token_a": self.a.tokens[bi][p],
                    "token_b": self.b.tokens[self.b.rows[i][0]][self.b.rows[i][1]],
                    "explanation_a": ea.text,
                    "explanation_b": eb.text,
                    "same_text": ea.text == eb.text,
                    "self_cos_a": ea.cos,
                    "self_cos_b": eb.cos,
                    "self_fve_nrm_a": ea.fve_nrm,
                    "self_fve_nrm_b": eb.fve_nrm,
                    "cross_cos_a_on_b": self.cross_a_on_b["cos"][i],
                    "cross_cos_b_on_a": self.cross_b_on_a["cos"][i],
                    "cross_fve_nrm_a_on_b": self.cross_a_on_b["fve_nrm"][i],
                    "cross_fve_nrm_b_on_a": self.cross_b_on_a["fve_nrm"][i],
                }
            )
            if self.intervals is not None:
                for side, iv in self.intervals[i].items():
                    name = f"delta_{self.metric}_{side}"
                    rows[-1].update(
                        {name: iv.estimate, f"{name}_lo": iv.low, f"{name}_hi": iv.high}
                    )
                rows[-1]["changed"] = any(iv.excludes_zero for iv in self.intervals[i].values())
            if self.difference is not None:
                d = self.difference.explanations[i]
                rows[-1]["explanation_b_minus_a"] = None if d is None else d.text
                rows[-1]["difference_norm"] = self.difference.norms[i]
                rows[-1]["difference_cos"] = None if d is None else d.cos
        return pd.DataFrame(rows)

    def to_html(self) -> HTMLPage:
        df = self.to_frame()
        return HTMLPage(
            f"<div><b>RunDiff</b> {html.escape(self.a.label)} vs {html.escape(self.b.label)}</div>"
            + df.to_html(index=False),
            title=f"RunDiff {self.a.label} vs {self.b.label}",
        )

    def _repr_html_(self) -> str:
        return str(self.to_html())


def explain_run(
    nla: NLAPair,
    model: Any,
    inputs: Any,
    *,
    positions: Positions = None,
    edits: Any = (),
    fwd_hooks: Sequence[tuple[Any, Callable[..., Any]]] = (),
    intervene: Callable[[Any], Any] | None = None,
    hf_hooks: Sequence[tuple[Any, Callable[..., Any]]] = (),
    tokenizer: Any = None,
    label: str = "run",
    sampling: Sampling | None = None,
    **settings: Any,
) -> ExplainedRun:
    """Run ``model`` once under the intervention and explain layer K at ``positions``.

    ``edits`` (e.g. ``add_direction(...)``) work for every framework; ``fwd_hooks``
    (TransformerBridge), ``hf_hooks`` (Hugging Face) and ``intervene`` (nnsight) are
    the frameworks' own idioms. ``positions`` count over each row's real tokens
    (None, the default everywhere, = every real token; -1 = each row's last).
    """
    # Sampling settings are checked before the subject runs; the rest go to nla.explain.
    names = {f.name for f in fields(Sampling)}
    s = Sampling.of(sampling, **{k: v for k, v in settings.items() if k in names})
    settings = {k: v for k, v in settings.items() if k not in names}
    _, cap = read_subject(
        nla, model, inputs, positions=positions, tokenizer=tokenizer, edits=edits,
        fwd_hooks=fwd_hooks, intervene=intervene, hf_hooks=hf_hooks,
    )  # fmt: skip
    batch, n_pos, _ = cap.residual.shape
    keep = (
        cap.attention_mask.bool()
        if positions is None
        else torch.ones(batch, n_pos, dtype=torch.bool)
    )
    rel = cap.relative
    vectors = cap.residual[keep.to(cap.residual.device)].float().cpu()
    rows = [(b, int(rel[b, j])) for b in range(batch) for j in range(n_pos) if keep[b, j]]
    exps = explain_flagged(nla, vectors, s, **settings)
    first = [e for e in exps if e.sample == 0]
    return ExplainedRun(
        input_ids=cap.input_ids,
        tokens=cap.real_tokens(),
        rows=rows,
        vectors=vectors,
        explanations=first,
        all_explanations=exps,
        logits=cap.logits,
        label=label,
        nla=nla,
        baseline_fit=exps.baseline_fit,
    )
