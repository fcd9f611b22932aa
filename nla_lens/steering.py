"""Steering: by a description (AR: text -> direction) or by editing an explanation.

* :func:`steering_vector` reconstructs a description with the AR and scales the
  direction to the subject's typical layer-K residual norm.
* :func:`add_direction` adds ``alpha * direction`` at a layer during any run
  (TransformerLens, nnsight, Hugging Face), e.g. with ``NLA.explain_run``.
* :func:`edit_steering_delta` turns an edited explanation into a delta,
  ``AR(e') - AR(e)`` rescaled to ``||h||``; :func:`steer_by_edit` applies it over
  an alpha sweep and explains each new residual to confirm the edit took.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import VectorError
from .explanation import Explanation
from .interventions import residual_edit
from .vectors import as_vector_batch

if TYPE_CHECKING:
    from .pair import NLA
    from .runs import ExplainedRun

__all__ = [
    "SteeringResult",
    "add_direction",
    "edit_steering_delta",
    "steer_by_edit",
    "steering_vector",
]


def _unit(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(1e-12)


def typical_norm(nla: NLA, reference: Any = None) -> float:
    """The median norm of ``reference`` activations, else the AV's injection scale
    (released pairs set it to the mean layer-K residual norm)."""
    if reference is not None:
        return float(as_vector_batch(reference, nla.d_model).norm(dim=1).median())
    if nla.av.meta.injection_scale is None:
        raise VectorError("no typical norm known: pass reference activations.")
    return float(nla.av.meta.injection_scale)


def steering_vector(
    nla: NLA, description: str, *, reference: Any = None, subtract: str | None = None
) -> Float[Tensor, " d_model"]:
    """A layer-K direction for ``description``: ``AR(description)`` (minus ``AR(subtract)``
    if given), unit-normalised and scaled to the typical residual norm."""
    texts = [description] if subtract is None else [description, subtract]
    pred = nla.reconstruct(texts)
    direction = _unit(pred[0]) - (_unit(pred[1]) if subtract is not None else 0)
    return _unit(direction) * typical_norm(nla, reference)


def add_direction(
    model: Any,
    direction: Any,
    alpha: float,
    layer: int,
    *,
    positions: int | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Intervention kwargs (``fwd_hooks`` / ``intervene`` / ``hf_hooks``) that add
    ``alpha * direction`` to the residual output of block ``layer`` at ``positions`` (all if None)."""
    vec = torch.as_tensor(direction).float().flatten()
    pos = (
        [positions]
        if isinstance(positions, int)
        else (None if positions is None else list(positions))
    )

    def fn(resid: Tensor) -> Tensor:
        out = resid.clone()
        delta = (alpha * vec).to(out.device, out.dtype)
        if pos is None:
            out += delta
        else:
            out[:, pos] += delta
        return out

    return residual_edit(model, layer, fn)


def edit_steering_delta(
    nla: NLA, h: Any, explanation: str, edited: str
) -> Float[Tensor, " d_model"]:
    """``AR(edited) - AR(explanation)``, each reconstruction rescaled to ``||h||``."""
    v = as_vector_batch(h, nla.d_model, what="h")[0]
    pred = nla.reconstruct([explanation, edited])
    return (_unit(pred[1]) - _unit(pred[0])) * v.norm()


@dataclass(frozen=True)
class SteeringResult:
    """One alpha of a steering sweep: the new residual and its explanation."""

    alpha: float
    vector: Float[Tensor, " d_model"]
    explanation: Explanation
    run: ExplainedRun | None = None


def steer_by_edit(
    nla: NLA,
    h: Any,
    explanation: str,
    edited: str,
    *,
    alphas: Sequence[float] = (1.0,),
    model: Any = None,
    inputs: Any = None,
    position: int = -1,
    **sampling: Any,
) -> list[SteeringResult]:
    """Steer ``h`` toward an edited explanation and explain the result, per alpha.

    Without ``model`` the new residual is ``h + alpha * delta``. With ``model`` and
    ``inputs`` the delta is added at layer K, ``position``, during a real forward
    pass (TransformerLens hooks, nnsight, Hugging Face), and the residual read back
    from that run is explained (so the explanation reflects what the model carries).
    """
    delta = edit_steering_delta(nla, h, explanation, edited)
    base = as_vector_batch(h, nla.d_model, what="h")[0]
    if model is None:
        vectors = torch.stack([base + a * delta for a in alphas])
        exps = nla.explain(vectors, **sampling)
        return [SteeringResult(a, v, e) for a, v, e in zip(alphas, vectors, exps, strict=True)]
    results = []
    for a in alphas:
        edit = add_direction(model, delta, a, nla.layer, positions=position)
        run = nla.explain_run(
            model, inputs, positions=position, label=f"alpha={a:g}", **edit, **sampling
        )
        results.append(SteeringResult(a, run.vectors[0], run.explanations[0], run))
    return results
