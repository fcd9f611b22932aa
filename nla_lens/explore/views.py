"""What the explorer shows: a token strip (prompt and reply) and a patching grid.

A :class:`View` is built from a subject model and a prompt or chat (live: clicking a
token explains its residual), from a :class:`~nla_lens.experiments.Transcript`
(live too: it holds its vectors), or from a saved transcript or patching table (a
``.csv`` / ``.parquet`` that ``Transcript.to_frame()`` or ``activation_patching``
wrote: its saved explanations are shown, nothing is recomputed). Everything a view
sends to the front end is plain JSON (no NaN: missing numbers are null).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.metrics import BaselineFit
from ..core.pair import NLAPair
from ..errors import CaptureError, ExplorerError, MissingExtraError
from ..experiments.patching_views import color_range, one_prompt
from ..experiments.runs import read_subject
from ..experiments.transcript import noise_flags
from ..subjects import as_subject, generate_and_capture

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "StripToken",
    "View",
    "fit_json",
    "jsonable",
    "load_table",
    "patching_grid",
    "view_from_model",
    "view_from_table",
    "view_from_transcript",
]

#: Explanation columns of a patching frame, in the order the cell panel shows them; any
#: other ``*_explanation`` column follows.
EXPLANATION_COLUMNS = (
    "explanation",
    "readout_explanation",
    "clean_explanation",
    "corrupt_explanation",
    "difference_explanation",
)
TABLE_SUFFIXES = (".csv", ".parquet")


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars made Python and non-finite floats made None (valid JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass(frozen=True)
class StripToken:
    """One token of the strip: its position over the real tokens, text, section and flags;
    ``saved`` holds a saved explanation (text and scores) where the view came from a table."""

    index: int
    position: int
    token: str
    section: str = "prompt"
    flags: tuple[str, ...] = ()
    saved: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {"index": self.index, "position": self.position, "token": self.token,
             "section": self.section, "flags": list(self.flags), "saved": self.saved}
        )  # fmt: skip


def fit_json(fit: BaselineFit | None, n: int) -> dict[str, Any]:
    """The fit flag as the front end shows it (why there is none when there is none)."""
    if fit is None:
        return {"fits": None, "message": f"fit check: n/a ({n} vectors without BOS and "
                "outlier norms; it needs 32 or more)"}  # fmt: skip
    return {"fits": bool(fit.fits), "ratio": float(fit.ratio),
            "message": f"{fit} (BOS and outlier-norm positions left out)"}  # fmt: skip


@dataclass(frozen=True)
class View:
    """One thing to explore: a token strip (live when ``vectors`` is set) and/or a grid."""

    name: str
    title: str
    strip: tuple[StripToken, ...] = ()
    vectors: Float[Tensor, "n d_model"] | None = field(default=None, repr=False)
    patching: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None

    @property
    def live(self) -> bool:
        return self.vectors is not None

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {"name": self.name, "title": self.title, "live": self.live,
             "strip": [t.to_json() for t in self.strip], "patching": self.patching,
             "fit": self.fit}
        )  # fmt: skip


def _strip_view(
    nla: NLAPair, name: str, title: str, tokens: Sequence[str], sections: Sequence[str],
    vectors: Tensor, bos: str | None,
) -> View:  # fmt: skip
    v = vectors.detach().to("cpu", torch.float32)
    norms = v.norm(dim=1).tolist()
    positions = list(range(len(tokens)))
    flags = noise_flags(positions, norms, list(tokens), bos)
    strip = tuple(StripToken(i, i, tokens[i], sections[i], flags[i]) for i in range(len(tokens)))
    # The fit check reads the strip's ordinary tokens: a BOS or outlier-norm residual alone
    # would make any baseline look wrong.
    keep = [i for i, f in enumerate(flags) if not {"bos", "high_norm"} & set(f)]
    fit, w = None, v[keep]
    if nla.ar is not None and len(keep) and torch.isfinite(w).all() and bool((w != 0).any(1).all()):
        fit = nla.baseline_fit(w)
    return View(name, title, strip, v, None, fit_json(fit, len(keep)))


def view_from_model(
    nla: NLAPair,
    model: Any,
    inputs: Any,
    *,
    tokenizer: Any = None,
    reply_tokens: int = 0,
    name: str = "prompt",
    **capture_options: Any,
) -> View:
    """Run the subject on ``inputs`` (text or a chat), optionally generating ``reply_tokens``
    tokens greedily first, and keep every real token's layer-K residual."""
    if isinstance(reply_tokens, bool) or not isinstance(reply_tokens, int) or reply_tokens < 0:
        raise ExplorerError(f"reply_tokens must be a whole number >= 0, got {reply_tokens!r}.")
    if reply_tokens and capture_options:
        raise ExplorerError(
            f"a generated reply is decoded without edits or hooks, so {sorted(capture_options)} "
            "would apply to the capture but not to the reply: pass reply_tokens=0 with edits "
            "(or generate the steered reply first, e.g. steered_generate, and explore its text)."
        )
    if reply_tokens:
        subject = as_subject(model, tokenizer)
        subject.check(d_model=nla.d_model, layer=nla.layer, base_model=nla.base_model)
        gen = generate_and_capture(subject, inputs, nla.layer, reply_tokens)
        cap, is_reply = gen.captured, gen.is_reply[0]
    else:
        subject, cap = read_subject(
            nla, model, inputs, tokenizer=tokenizer, keep_logits=False, **capture_options
        )
        is_reply = torch.zeros(cap.input_ids.shape[1], dtype=torch.bool)
    if cap.input_ids.shape[0] != 1:
        raise CaptureError("the explorer reads one prompt or one chat at a time.")
    real = cap.attention_mask[0].nonzero().flatten().tolist()
    tokens = cap.real_tokens()[0]
    sections = ["reply" if bool(is_reply[c]) else "prompt" for c in real]
    bos = getattr(subject.tokenizer, "bos_token", None)
    title = subject.info.name_or_path or type(subject.model).__name__
    return _strip_view(nla, name, f"{title} layer {nla.layer}", tokens, sections,
                       cap.residual[0, real], bos)  # fmt: skip


def view_from_transcript(nla: NLAPair, transcript: Any, *, name: str = "transcript") -> View:
    """A live view of a :class:`~nla_lens.experiments.Transcript` (its tokens and vectors)."""
    entries = list(transcript.entries)
    view = _strip_view(
        nla, name, f"{transcript.model_name} layer {transcript.layer}",
        [e.token for e in entries], [e.section for e in entries], transcript.vectors, None,
    )  # fmt: skip
    strip = tuple(
        StripToken(i, e.position, e.token, e.section, tuple(e.flags), _saved(e.explanation))
        for i, e in enumerate(entries)
    )
    return View(view.name, view.title, strip, view.vectors, None, view.fit)


def _text(x: Any) -> str | None:
    """A table cell as text: None for a missing one (None or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return str(x)


def _saved(e: Any) -> dict[str, Any]:
    return {"text": e.text, "cos": e.cos, "fve_nrm": e.fve_nrm, "truncated": e.truncated}


def load_table(path: Path) -> pd.DataFrame:
    """Read a saved table (``.csv`` or ``.parquet``)."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas ships with the data extra
        raise MissingExtraError("pandas", "data", "reading a saved table") from exc
    if path.suffix not in TABLE_SUFFIXES:
        raise ExplorerError(f"{path.name}: the explorer reads .csv or .parquet tables.")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ExplorerError(f"{path.name} could not be read as a table: {exc}") from exc


def patching_grid(df: pd.DataFrame, *, batch: int = 0) -> dict[str, Any]:
    """A patching frame (``activation_patching``'s rows) as the grid the front end draws."""
    missing = [c for c in ("layer", "position", "metric") if c not in df.columns]
    if missing:
        raise ExplorerError(
            f"not a patching frame: it lacks the column(s) {missing} (it has {list(df.columns)})."
        )
    df = one_prompt(df, batch)
    cols = [c for c in EXPLANATION_COLUMNS if c in df.columns]
    cols += sorted(c for c in df.columns if c.endswith("_explanation") and c not in cols)
    # colour by ``effect`` (0 = no effect, 1 = like the donor run) where the frame has it
    value = "effect" if "effect" in df.columns else "metric"
    lo, hi = color_range(df, value)
    cells = []
    for r in df.to_dict("records"):
        cells.append(
            {"layer": r["layer"], "position": r["position"], "metric": r["metric"],
             "token": r.get("token"), "cos": r.get("cos"), "fve_nrm": r.get("fve_nrm"),
             **({"effect": r["effect"]} if value == "effect" else {}),
             "downstream_of_k": bool(r.get("downstream_of_k", False)),
             "explanations": {c: _text(r[c]) for c in cols}}
        )  # fmt: skip
    tokens = {str(c["position"]): c["token"] for c in cells}
    return jsonable(
        {"layers": sorted({c["layer"] for c in cells}),
         "positions": sorted({c["position"] for c in cells}), "tokens": tokens,
         "columns": cols, "value": value, "range": [lo, hi], "cells": cells}
    )  # fmt: skip


def view_from_table(name: str, df: pd.DataFrame) -> View:
    """A saved table: a patching frame (layer, position, metric) or a saved transcript
    (position, token, explanation; one row per position and sample)."""
    if {"layer", "metric"} <= set(df.columns):
        return View(name, f"patching: {name}", patching=patching_grid(df))
    missing = [c for c in ("position", "token", "explanation") if c not in df.columns]
    if missing:
        raise ExplorerError(
            f"{name}: neither a patching frame (layer, position, metric) nor a saved transcript "
            f"(position, token, explanation); it lacks {missing}."
        )
    rows = df[df["sample"] == 0] if "sample" in df.columns else df.drop_duplicates("position")
    strip = []
    for i, r in enumerate(rows.to_dict("records")):
        flags = tuple(f for f in str(r.get("flags") or "").split(",") if f and f != "nan")
        saved = {k: r.get(k) for k in ("cos", "fve_nrm", "truncated")}
        saved["text"] = _text(r["explanation"]) or ""
        strip.append(
            StripToken(i, int(r["position"]), str(r["token"]), str(r.get("section", "prompt")),
                       flags, jsonable(saved))
        )  # fmt: skip
    return View(name, f"saved transcript: {name}", tuple(strip))
