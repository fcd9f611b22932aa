"""Reading a subject model with the pair: transcripts and search by description.

Kept apart from :mod:`nla_lens.pair` so the pair stays small; ``NLA.transcript``
and ``NLA.search`` call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import CaptureError, VectorError
from .metrics import normalize
from .runs import token_table
from .transcript import Transcript, TranscriptEntry, noise_flags
from .vectors import as_vector_batch

if TYPE_CHECKING:
    from .pair import NLA

__all__ = ["SearchHit", "build_transcript", "search"]


def build_transcript(
    nla: NLA,
    model: Any,
    text_or_messages: Any,
    *,
    positions: Sequence[int] | None = None,
    samples: int = 1,
    reply_tokens: int = 0,
    tokenizer: Any = None,
    temperature: float | None = None,
    **sampling: Any,
) -> Transcript:
    """Explain every chosen position of one prompt (and of a generated reply).

    ``positions`` count over the sequence's real tokens (None = all). With
    ``reply_tokens > 0`` the subject first generates that many tokens greedily
    and the reply's positions are read too. ``samples > 1`` samples several
    explanations per position (temperature defaults to 1.0 then, else greedy).
    """
    from .capture import capture_residual, check_subject, generate_and_capture

    check_subject(model, d_model=nla.d_model, layer=nla.layer, base_model=nla.base_model)
    if (
        isinstance(text_or_messages, list)
        and text_or_messages
        and isinstance(text_or_messages[0], list)
    ):
        raise CaptureError(
            "transcript() reads one prompt or one conversation at a time; loop over a batch."
        )
    if reply_tokens:
        gen = generate_and_capture(
            model, text_or_messages, nla.layer, reply_tokens, tokenizer=tokenizer
        )
        cap, is_reply = gen.captured, gen.is_reply[0]
        real = (gen.is_prompt[0] | gen.is_reply[0]).nonzero().flatten().tolist()
    else:
        cap = capture_residual(
            model, text_or_messages, nla.layer, tokenizer=tokenizer, keep_logits=False
        )
        is_reply = torch.zeros(cap.input_ids.shape[1], dtype=torch.bool)
        real = cap.attention_mask[0].nonzero().flatten().tolist()
    if positions is not None:
        try:
            real = [real[p] for p in positions]
        except IndexError:
            raise CaptureError(
                f"positions {list(positions)} out of range for {len(real)} tokens."
            ) from None
    vectors = cap.residual[0, real].float().cpu()
    tokens = [token_table(cap)[0][c] for c in real]
    rel = (
        list(range(len(real)))
        if positions is None
        else [p % len(cap.attention_mask[0].nonzero()) for p in positions]
    )
    norms = vectors.norm(dim=1).tolist()
    bos = getattr(tokenizer or getattr(nla.av, "tokenizer", None), "bos_token", None)
    flags = noise_flags(rel, norms, tokens, bos)
    temp = temperature if temperature is not None else (1.0 if samples > 1 else 0.0)
    exps = nla.explain(vectors, samples=samples, temperature=temp, **sampling)
    entries = tuple(
        TranscriptEntry(
            position=rel[i],
            token=tokens[i],
            section="reply" if bool(is_reply[c]) else "prompt",
            norm=norms[i],
            explanations=tuple(exps[i * samples : (i + 1) * samples]),
            flags=flags[i],
        )
        for i, c in enumerate(real)
    )
    name = getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
    return Transcript(
        entries=entries,
        vectors=vectors,
        layer=nla.layer,
        model_name=str(name),
        injection_scale=nla.av.meta.injection_scale,
        meta={"reply": gen.reply_text[0] if reply_tokens and gen.reply_text else None},
    )


@dataclass(frozen=True)
class SearchHit:
    """A captured position ranked by closeness to a description's reconstruction."""

    rank: int
    index: int
    score: float
    position: int | None = None
    token: str | None = None
    explanation: str | None = None


def search(
    nla: NLA,
    description: str,
    activations: Any,
    *,
    top_k: int = 5,
    centered: bool = False,
) -> list[SearchHit]:
    """Rank positions by cosine between their residual and ``AR(description)``.

    ``activations`` is a ``[n, d]`` batch or a :class:`Transcript`. Both sides are
    normalised to ``mse_scale`` as in scoring; ``centered=True`` first subtracts
    the activations' mean from both (useful where residuals cluster around
    their mean, e.g. Gemma-3-12B layer 32)."""
    transcript = activations if isinstance(activations, Transcript) else None
    vectors: Float[Tensor, "n d"] = as_vector_batch(
        transcript.vectors if transcript is not None else activations,
        nla.d_model,
        what="activations",
    )
    if top_k < 1:
        raise VectorError(f"top_k must be >= 1, got {top_k}.")
    target = nla.reconstruct([description])[0]
    scale = nla._need_ar("search").mse_scale
    v, t = normalize(vectors, scale), normalize(target, scale)
    if centered:
        mean = v.mean(dim=0)
        v, t = v - mean, t - mean
    scores = torch.nn.functional.cosine_similarity(v, t.unsqueeze(0), dim=1)
    order = scores.argsort(descending=True)[:top_k].tolist()
    hits = []
    for rank, i in enumerate(order):
        entry: TranscriptEntry | None = transcript.entries[i] if transcript is not None else None
        hits.append(
            SearchHit(
                rank=rank,
                index=i,
                score=float(scores[i]),
                position=entry.position if entry else None,
                token=entry.token if entry else None,
                explanation=entry.explanation.text if entry else None,
            )
        )
    return hits
