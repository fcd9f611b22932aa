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


@dataclass(frozen=True)
class SteeredGeneration:
    """A greedy generation under steering: prompt + new token ids, and the new text."""

    token_ids: Tensor
    prompt_length: int
    texts: list[str]


def steered_generate(
    model: Any,
    inputs: Any,
    direction: Any,
    alpha: float,
    layer: int,
    *,
    max_new_tokens: int = 20,
    tokenizer: Any = None,
) -> SteeredGeneration:
    """Greedy generation with ``alpha * direction`` added to the residual output of
    block ``layer`` at every position, prompt and generated tokens alike.

    TransformerLens: a hook on ``blocks.{layer}.hook_resid_post`` inside
    ``bridge.hooks(...)`` around ``bridge.generate``. nnsight and Hugging Face: a
    forward hook on the decoder block of the underlying Hugging Face model around
    its ``generate``. Exactly ``max_new_tokens`` tokens are generated (no early
    stop), so runs with different ``alpha`` line up token by token.
    """
    import functools

    from .arch import decoder_layers
    from .capture import detect_framework, encode, hf_model_of, hook_name, model_tokenizer
    from .interventions import _hf_hook

    vec = torch.as_tensor(direction).float().flatten()

    def fn(resid: Tensor) -> Tensor:
        return resid + (alpha * vec).to(resid.device, resid.dtype)

    framework = detect_framework(model)
    tok = tokenizer if tokenizer is not None else model_tokenizer(model, framework)
    enc = encode(inputs, tok, padding_side="left")
    ids, mask = enc.input_ids, enc.attention_mask
    if framework == "transformer_lens":
        if not bool(mask.all()):
            raise VectorError(
                "steered_generate on a TransformerBridge takes prompts of one length (no padding)."
            )
        with model.hooks(fwd_hooks=[(hook_name(layer), lambda act, hook: fn(act))]):
            out = model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                stop_at_eos=False,
                return_type="tokens",
                verbose=False,
            )
    else:
        hf: Any = hf_model_of(model)
        device = next(hf.parameters()).device
        handle = decoder_layers(hf)[layer].register_forward_hook(functools.partial(_hf_hook, fn))
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        try:
            with torch.inference_mode():
                out = hf.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=pad if pad is not None else 0,
                )
        finally:
            handle.remove()
    out = out.detach().cpu()
    n = ids.shape[1]
    texts = (
        [tok.decode(row[n:], skip_special_tokens=True) for row in out.tolist()]
        if tok is not None
        else []
    )
    return SteeredGeneration(token_ids=out, prompt_length=n, texts=texts)
