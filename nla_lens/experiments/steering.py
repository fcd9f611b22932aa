"""Steering: by a description (AR: text -> direction) or by editing an explanation.

* :func:`steering_vector` reconstructs a description with the AR and scales the
  direction to the subject's typical layer-K residual norm.
* :func:`add_direction` adds ``alpha * direction`` at a layer during any run
  (TransformerLens, nnsight, Hugging Face), e.g. with ``NLA.explain_run``.
* :func:`edit_steering_delta` turns an edited explanation into a delta,
  ``AR(e') - AR(e)`` rescaled to ``||h||``; :func:`steer_by_edit` applies it over
  an alpha sweep and explains each new residual to confirm the edit took. With a
  model, each result also holds the subject's answer before and after the edit,
  and says whether the steered residual's explanation names that answer.

Descriptions are checked first: an empty one, or one with words the AR's
tokenizer does not know, raises :class:`~nla_lens.errors.DescriptionError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.explanation import Explanation
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..core.vectors import as_vector_batch
from ..errors import CaptureError, VectorError
from ..subjects import Positions, ResidualEdit, as_subject
from ..subjects.generate import left_align
from ..subjects.inputs import token_text
from .descriptions import check_description
from .patching_metrics import Reader, read_continuations
from .runs import ExplainedRun, explain_run

__all__ = [
    "SteeredGeneration",
    "SteeringResult",
    "add_direction",
    "edit_steering_delta",
    "steer_by_edit",
    "steered_generate",
    "steering_vector",
    "typical_norm",
]


def _unit(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(1e-12)


def typical_norm(nla: NLAPair, reference: Any = None) -> float:
    """The median norm of ``reference`` activations, else the AV's injection scale
    (released pairs set it to the mean layer-K residual norm)."""
    if reference is not None:
        return float(as_vector_batch(reference, nla.d_model, keep_norm=True).norm(dim=1).median())
    if nla.av.meta.injection_scale is None:
        raise VectorError("no typical norm known: pass reference activations.")
    return float(nla.av.meta.injection_scale)


def steering_vector(
    nla: NLAPair, description: str, *, reference: Any = None, subtract: str | None = None
) -> Float[Tensor, " d_model"]:
    """A layer-K direction for ``description``: ``AR(description)`` (minus ``AR(subtract)``
    if given), unit-normalised and scaled to the typical residual norm. An empty
    description, or words the AR's tokenizer does not know, raise ``DescriptionError``."""
    texts = [check_description(nla, description)]
    if subtract is not None:
        texts.append(check_description(nla, subtract, "description to subtract"))
    pred = nla.reconstruct(texts)
    direction = _unit(pred[0]) - (_unit(pred[1]) if subtract is not None else 0)
    return _unit(direction) * typical_norm(nla, reference)


def _direction(direction: Any) -> Tensor:
    vec = torch.as_tensor(direction).float().flatten()
    if vec.numel() == 0 or not bool(torch.isfinite(vec).all()):
        raise VectorError("the steering direction must be a non-empty, finite vector.")
    return vec


def add_direction(
    direction: Any, alpha: float, layer: int, *, positions: Positions = None
) -> ResidualEdit:
    """An edit adding ``alpha * direction`` to the residual output of block ``layer`` at
    ``positions`` (counted over each row's real tokens; None = every position). Pass it as
    ``edits=`` or unpack it: ``nla.explain_run(model, prompt, **add_direction(...))``."""
    vec = _direction(direction)

    def add(selected: Tensor) -> Tensor:
        return selected + (alpha * vec).to(selected.device, selected.dtype)

    return ResidualEdit(layer, add, positions)


def edit_steering_delta(
    nla: NLAPair, h: Any, explanation: str, edited: str
) -> Float[Tensor, " d_model"]:
    """``AR(edited) - AR(explanation)``, each reconstruction rescaled to ``||h||``."""
    v = as_vector_batch(h, nla.d_model, what="h", keep_norm=True)[0]
    texts = [
        check_description(nla, explanation, "explanation"),
        check_description(nla, edited, "edited explanation"),
    ]
    pred = nla.reconstruct(texts)
    return (_unit(pred[1]) - _unit(pred[0])) * v.norm()


@dataclass(frozen=True)
class SteeringResult:
    """One alpha of a steering sweep: the new residual and its explanation.

    With a model: ``run`` is the steered run, ``answer`` the subject's top next token at
    the steered position after the edit and ``answer_before`` without it, ``before`` the
    explanation of the unedited residual there. ``reads`` are the continuations the
    steered explanation names (by ``reader``; None without one) and ``agrees`` whether
    they include the subject's answer: False is the case to look at, where the words and
    the behaviour part ways (``note`` says so).
    """

    alpha: float
    vector: Float[Tensor, " d_model"]
    explanation: Explanation
    run: ExplainedRun | None = None
    before: Explanation | None = None
    answer: str | None = None
    answer_before: str | None = None
    reads: tuple[str, ...] | None = None

    @property
    def agrees(self) -> bool | None:
        """Whether the steered explanation names the subject's answer (None: unknown)."""
        if self.reads is None or self.answer is None:
            return None
        return _word(self.answer) in self.reads

    @property
    def note(self) -> str:
        """One line: what the words say and what the subject does."""
        said = f"the steered residual reads {self.explanation.text!r}"
        if self.answer is None:
            return f"alpha={self.alpha:g}: {said}"
        did = f"the answer {self.answer_before!r} -> {self.answer!r}"
        if self.agrees is False:
            named = ", ".join(self.reads or ()) or "no continuation"
            return (
                f"alpha={self.alpha:g}: {did}, but {said} (it names {named}): the words and "
                "the behaviour disagree"
            )
        return f"alpha={self.alpha:g}: {did}; {said}"

    def _repr_html_(self) -> str:
        import html

        warn = " style='background:#fde2e2'" if self.agrees is False else ""
        before = "" if self.before is None else html.escape(self.before.text)
        return (
            f"<table><tr><th>alpha</th><th>answer before -> after</th><th>readout before</th>"
            f"<th>readout after</th></tr><tr{warn}><td>{self.alpha:g}</td>"
            f"<td>{html.escape(str(self.answer_before))} -> {html.escape(str(self.answer))}</td>"
            f"<td>{before}</td><td>{html.escape(self.explanation.text)}</td></tr></table>"
            f"<div>{html.escape(self.note)}</div>"
        )


def _word(token: str) -> str:
    return token.strip().lstrip("\u2581")


def steer_by_edit(
    nla: NLAPair,
    h: Any,
    explanation: str,
    edited: str,
    *,
    alphas: Sequence[float] = (1.0,),
    model: Any = None,
    inputs: Any = None,
    position: int = -1,
    tokenizer: Any = None,
    reader: Reader | None = None,
    sampling: Sampling | None = None,
    **settings: Any,
) -> list[SteeringResult]:
    """Steer ``h`` toward an edited explanation and explain the result, per alpha.

    Without ``model`` the new residual is ``h + alpha * delta``. With ``model`` and
    ``inputs`` (one prompt) the delta is added at layer K, ``position`` (counted
    over the prompt's real tokens), during a real forward pass, and the residual
    read back from that run is explained (so the explanation reflects what the
    model carries); each result then holds the subject's answer before and after
    the edit, the explanation before it, and, with ``reader`` (for the toy pair
    ``nla_lens.toy.read_explanation``), whether the steered explanation names the answer.
    """
    delta = edit_steering_delta(nla, h, explanation, edited)
    base = as_vector_batch(h, nla.d_model, what="h", keep_norm=True)[0]
    s = Sampling.of(sampling, **settings)
    if model is None:
        vectors = torch.stack([base + a * delta for a in alphas])
        exps = [e for e in nla.explain(vectors, sampling=s) if e.sample == 0]
        return [SteeringResult(a, v, e) for a, v, e in zip(alphas, vectors, exps, strict=True)]
    if inputs is None:
        raise CaptureError("steer_by_edit(model=...) also needs inputs= (the prompt to run).")
    plain = explain_run(
        nla, model, inputs, positions=position, label="unedited", tokenizer=tokenizer, sampling=s
    )
    tok = as_subject(model, tokenizer).tokenizer

    def top(run: ExplainedRun) -> str | None:
        if run.logits is None:
            return None
        pos, n = run.rows[0][1], len(run.tokens[0])  # one prompt: unpadded (or left-padded)
        best = int(run.logits[0, pos - n].argmax())
        return token_text(tok, best) if tok is not None else str(best)

    before = top(plain)
    results = []
    for a in alphas:
        edit = add_direction(delta, a, nla.layer, positions=position)
        run = explain_run(
            nla, model, inputs, positions=position, label=f"alpha={a:g}", edits=edit,
            tokenizer=tokenizer, sampling=s,
        )  # fmt: skip
        results.append(
            SteeringResult(
                a,
                run.vectors[0],
                run.explanations[0],
                run,
                before=plain.explanations[0],
                answer=top(run),
                answer_before=before,
                reads=read_continuations(reader, run.explanations[0].text),
            )
        )
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

    Runs on the subject's Hugging Face module (a forward hook on decoder block
    ``layer``) for all three frameworks, so a TransformerBridge, an nnsight model
    and the plain model give the same tokens. Prompts are left-padded. Exactly
    ``max_new_tokens`` tokens are generated (no early stop), so runs with
    different ``alpha`` line up token by token.
    """
    subject = as_subject(model, tokenizer)
    edit = add_direction(direction, alpha, layer).bind(None)
    prompt = left_align(subject.encode(inputs, padding_side="left"), subject.pad_id())
    out = subject.generate(prompt, max_new_tokens, edits=[edit], exact_length=True)
    n = prompt.input_ids.shape[1]
    tok = subject.tokenizer
    texts = (
        [tok.decode(row[n:], skip_special_tokens=True) for row in out.tolist()]
        if tok is not None
        else []
    )
    return SteeredGeneration(token_ids=out, prompt_length=n, texts=texts)
