"""Explain SAE latents by their decoder rows.

An SAE latent writes its decoder row ``W_dec[i]`` into the residual stream; when
the SAE reads the same layer as the pair, the AV can verbalize that direction and
the AR can score the words against it. :func:`explain_features` takes a SAELens
``SAE``, any object with a ``W_dec`` of shape ``[d_sae, d_model]``, or that matrix
itself, and keeps the latent ids in its result.
"""

from __future__ import annotations

import html
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..core.vectors import as_vector_batch
from ..errors import FeatureError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FeatureExplanations", "decoder_matrix", "explain_features", "neuronpedia_id_of"]


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def decoder_matrix(sae: Any, d_model: int) -> Float[Tensor, "d_sae d_model"]:
    """``W_dec`` as a float32 ``[d_sae, d_model]`` tensor, from an SAE object or the matrix."""
    w = getattr(sae, "W_dec", sae)
    if not isinstance(w, Tensor):
        try:
            w = torch.as_tensor(w)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise FeatureError(
                f"expected an SAE with a W_dec [d_sae, d_model] (e.g. a SAELens SAE) or that "
                f"matrix, got {type(sae).__name__}."
            ) from exc
    w = w.detach()
    if w.ndim != 2:
        raise FeatureError(f"W_dec must be 2-D [d_sae, d_model], got shape {tuple(w.shape)}.")
    if w.shape[1] != d_model:
        hint = " (it looks transposed: pass W_dec.T)" if w.shape[0] == d_model else ""
        raise FeatureError(
            f"W_dec has shape {tuple(w.shape)} but the pair reads d_model={d_model}; expected "
            f"[d_sae, {d_model}]{hint}. Use an SAE trained on the layer the pair reads."
        )
    if not w.is_floating_point():
        raise FeatureError(f"W_dec must be a float tensor, got {w.dtype}.")
    return w.float().cpu()


def neuronpedia_id_of(sae: Any) -> str | None:
    """The SAE's Neuronpedia id (``"<model>/<source>"``) when SAELens recorded one."""
    cfg = getattr(sae, "cfg", None)
    for holder in (getattr(cfg, "metadata", None), cfg):
        value = getattr(holder, "neuronpedia_id", None)
        if isinstance(value, str) and value:
            return value
    return None


def _latent_ids(latent_ids: Any, d_sae: int) -> list[int]:
    if latent_ids is None:
        return list(range(d_sae))
    if isinstance(latent_ids, numbers.Integral) and not isinstance(latent_ids, bool):
        latent_ids = [latent_ids]
    if isinstance(latent_ids, Tensor):
        latent_ids = latent_ids.flatten().tolist()
    ids = list(latent_ids)
    bad_type = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if bad_type:
        raise FeatureError(f"latent ids must be whole numbers, got {bad_type[:5]}.")
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < d_sae]
    if bad:
        raise FeatureError(
            f"latent ids {bad[:5]} are out of range for an SAE with d_sae={d_sae} (valid 0..{d_sae - 1})."
        )
    if not out:
        raise FeatureError("no latent ids given; pass e.g. latent_ids=[0, 1, 2].")
    return out


@dataclass(frozen=True)
class FeatureExplanations:
    """Explanations of SAE decoder rows: ``explanations[i]`` explains latent ``latent_ids[i]``."""

    latent_ids: tuple[int, ...]
    directions: Float[Tensor, "n d_model"]
    explanations: tuple[Explanation, ...]
    all_explanations: tuple[Explanation, ...]
    neuronpedia_id: str | None = None

    def __len__(self) -> int:
        return len(self.latent_ids)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.explanations]

    def to_frame(self) -> pd.DataFrame:
        """One row per latent (the first sample when several were drawn)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "latent_id": lid,
                    "explanation": e.text,
                    "truncated": e.truncated,
                    "decoder_norm": float(self.directions[i].norm()),
                    "mse_nrm": e.mse_nrm,
                    "cos": e.cos,
                    "fve_nrm": e.fve_nrm,
                }
                for i, (lid, e) in enumerate(zip(self.latent_ids, self.explanations, strict=True))
            ]
        )

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{lid}</td><td style='text-align:left'>{html.escape(e.text)}</td>"
            f"<td>{_f(e.cos)}</td><td>{_f(e.fve_nrm)}</td></tr>"
            for lid, e in zip(self.latent_ids, self.explanations, strict=True)
        )
        src = f" {html.escape(self.neuronpedia_id)}" if self.neuronpedia_id else ""
        return (
            f"<div><b>FeatureExplanations</b>{src}: {len(self)} latents</div>"
            "<table><thead><tr><th>latent</th><th>explanation</th><th>cos</th><th>fve_nrm</th>"
            f"</tr></thead><tbody>{body}</tbody></table>"
        )


def explain_features(
    nla: NLAPair,
    sae: Any,
    latent_ids: Any = None,
    *,
    sampling: Sampling | None = None,
    progress: bool | None = None,
    **settings: Any,
) -> FeatureExplanations:
    """Explain the decoder rows ``W_dec[latent_ids]`` of ``sae`` (all latents when None).

    Each row is scored against itself through the AR. The AV rescales every row to
    its injection scale, so only the direction matters. All-zero (dead) rows are refused.
    """
    w = decoder_matrix(sae, nla.d_model)
    ids = _latent_ids(latent_ids, w.shape[0])
    rows = w[ids]
    dead = [lid for lid, n in zip(ids, rows.norm(dim=1).tolist(), strict=True) if n == 0]
    if dead:
        raise FeatureError(
            f"latents {dead[:5]} have all-zero decoder rows (dead latents); drop them."
        )
    rows = as_vector_batch(rows, nla.d_model, what="W_dec rows")  # refuses NaN / inf rows
    s = Sampling.of(sampling, **settings)
    exps = nla.explain_rows(rows, s, progress=progress)
    return FeatureExplanations(
        latent_ids=tuple(ids),
        directions=rows,
        explanations=tuple(e for e in exps if e.sample == 0),
        all_explanations=tuple(exps),
        neuronpedia_id=neuronpedia_id_of(sae),
    )
