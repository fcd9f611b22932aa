"""Per-token transcripts: every position's token, residual norm, explanation(s)
and scores, with the known-noisy positions flagged. Renders as text (like the
published worked examples), notebook HTML (coloured by fve_nrm) and a DataFrame.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation, baseline_notes, notes_html
from .html import HTMLPage, fve_colour

if TYPE_CHECKING:
    import pandas as pd

    from ..core.metrics import BaselineFit

__all__ = ["EARLY_POSITIONS", "Transcript", "TranscriptEntry", "noise_flags"]

#: Positions before this are flagged "early": layer K has seen few tokens (docs/recipe.md, section 6).
EARLY_POSITIONS = 10
#: A residual norm this many times the sequence's median is flagged "high_norm" (e.g. Gemma's BOS).
HIGH_NORM_FACTOR = 4.0

Section = Literal["prompt", "reply"]


def noise_flags(
    positions: Sequence[int], norms: Sequence[float], tokens: Sequence[str], bos: str | None
) -> list[tuple[str, ...]]:
    """Flags for the known-noisy inputs: early positions, BOS, outlier norms."""
    median = statistics.median(norms) if norms else 0.0
    out = []
    for p, n, t in zip(positions, norms, tokens, strict=True):
        flags = []
        if p < EARLY_POSITIONS:
            flags.append("early")
        if bos is not None and t == bos:
            flags.append("bos")
        if median > 0 and n > HIGH_NORM_FACTOR * median:
            flags.append("high_norm")
        out.append(tuple(flags))
    return out


@dataclass(frozen=True)
class TranscriptEntry:
    """One position: its token, raw residual norm, explanation(s) and flags."""

    position: int
    token: str
    section: Section
    norm: float
    explanations: tuple[Explanation, ...]
    flags: tuple[str, ...] = ()

    @property
    def explanation(self) -> Explanation:
        return self.explanations[0]

    def _mean(self, attr: str) -> float | None:
        vals = [getattr(e, attr) for e in self.explanations]
        return None if any(v is None for v in vals) else sum(vals) / len(vals)

    @property
    def mse_nrm(self) -> float | None:
        return self._mean("mse_nrm")

    @property
    def cos(self) -> float | None:
        return self._mean("cos")

    @property
    def fve_nrm(self) -> float | None:
        return self._mean("fve_nrm")

    @property
    def noisy(self) -> bool:
        return bool(self.flags)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


@dataclass(frozen=True)
class Transcript:
    """The per-token reading of one prompt (and optionally a generated reply)."""

    entries: tuple[TranscriptEntry, ...]
    vectors: Float[Tensor, "n d_model"]
    layer: int
    model_name: str = ""
    injection_scale: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: The baseline behind fve_nrm and the call's fit check (see ``Explanations.baseline_fit``).
    baseline: str | None = None
    baseline_fit: BaselineFit | None = None

    def notes(self) -> list[str]:
        """The baseline behind the scores, and the fit check's verdict."""
        return baseline_notes(self.baseline, self.baseline_fit)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.entries)

    def __getitem__(self, i: int) -> TranscriptEntry:
        return self.entries[i]

    @property
    def positions(self) -> list[int]:
        return [e.position for e in self.entries]

    def to_text(self) -> str:
        """Readable text: one header per token with its scores, the full explanation under it."""
        lines = [
            f"NLA transcript: {self.model_name}  layer {self.layer} residual (output of block {self.layer})",
            f"{len(self.entries)} positions; flags: early = first {EARLY_POSITIONS} tokens, bos, "
            f"high_norm = norm > {HIGH_NORM_FACTOR:g}x median. ||v|| is the raw norm"
            + (
                f"; every vector is rescaled to {self.injection_scale:g} before injection."
                if self.injection_scale
                else "."
            ),
            *self.notes(),
            "",
        ]
        for e in self.entries:
            flag = f"  [{', '.join(e.flags)}]" if e.flags else ""
            lines.append(
                f"[{e.position:>3}]  {e.section.upper():<6} token={e.token!r}  ||v||={e.norm:.1f}  "
                f"mse_nrm={_fmt(e.mse_nrm)}  cos={_fmt(e.cos)}  fve_nrm={_fmt(e.fve_nrm)}{flag}"
            )
            for k, ex in enumerate(e.explanations):
                prefix = f"  ({k}) " if len(e.explanations) > 1 else "    "
                lines.extend(prefix + line for line in (ex.text or "<empty>").splitlines())
                if ex.truncated:
                    lines.append("    (truncated: no </explanation>; raise max_new_tokens)")
            lines.append("")
        return "\n".join(lines)

    __str__ = to_text

    def to_frame(self) -> pd.DataFrame:
        """One row per (position, sample)."""
        import pandas as pd

        rows = [
            {
                "position": e.position,
                "token": e.token,
                "section": e.section,
                "norm": e.norm,
                "sample": ex.sample,
                "explanation": ex.text,
                "truncated": ex.truncated,
                "mse_nrm": ex.mse_nrm,
                "cos": ex.cos,
                "fve_nrm": ex.fve_nrm,
                "flags": ",".join(e.flags),
                "noisy": e.noisy,
            }
            for e in self.entries
            for ex in e.explanations
        ]
        frame = pd.DataFrame(rows)
        frame.attrs["baseline"] = self.baseline
        if self.baseline_fit is not None:
            frame.attrs["baseline_fit"] = str(self.baseline_fit)
        return frame

    def to_html(self) -> HTMLPage:
        """Notebook HTML: tokens coloured by fve_nrm (red low, green high), explanations below;
        ``.save(path)`` writes it as a page."""
        cells = []
        for e in self.entries:
            fve = e.fve_nrm
            bg = fve_colour(fve)
            title = html.escape(
                f"pos {e.position} | ||v||={e.norm:.1f} | cos={_fmt(e.cos)} | fve_nrm={_fmt(fve)}"
                + (f" | flags: {', '.join(e.flags)}" if e.flags else "")
                + "\n"
                + e.explanation.text
            )
            border = "border-bottom:2px dashed #999;" if e.noisy else ""
            cells.append(
                f'<span class="nla-tok" title="{title}" style="background:{bg};{border}'
                f'padding:1px 3px;margin:1px;border-radius:3px;display:inline-block">'
                f"{html.escape(e.token)}</span>"
            )
        rows = "".join(
            "<tr>"
            f"<td>{e.position}</td><td><code>{html.escape(e.token)}</code></td><td>{e.section}</td>"
            f"<td>{e.norm:.1f}</td><td>{_fmt(e.cos)}</td><td>{_fmt(e.fve_nrm)}</td>"
            f"<td>{html.escape(', '.join(e.flags))}</td>"
            f"<td style='text-align:left'>{'<br>'.join(html.escape(x.text) for x in e.explanations)}</td></tr>"
            for e in self.entries
        )
        return HTMLPage(
            f'<div class="nla-transcript"><div><b>NLA transcript</b> {html.escape(self.model_name)} '
            f"layer {self.layer}; colour = fve_nrm (red 0, green 1); dashed = noisy position</div>"
            + notes_html(self.notes())
            + f"<div style='line-height:2'>{''.join(cells)}</div>"
            "<table><thead><tr><th>pos</th><th>token</th><th>section</th><th>||v||</th><th>cos</th>"
            f"<th>fve_nrm</th><th>flags</th><th>explanation</th></tr></thead><tbody>{rows}</tbody></table></div>",
            title=f"NLA transcript: {self.model_name} layer {self.layer}",
        )

    def _repr_html_(self) -> str:
        return str(self.to_html())
