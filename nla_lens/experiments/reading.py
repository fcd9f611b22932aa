"""Reading a subject model with the pair: transcripts and search by description.

``NLA.transcript`` and ``NLA.search`` call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.metrics import normalize
from ..core.pair import NLAPair
from ..core.sampling import Sampling
from ..core.vectors import as_vector_batch
from ..errors import CaptureError, VectorError
from ..subjects import as_subject, generate_and_capture
from .descriptions import check_description
from .flagged import explain_flagged
from .grid import as_positions
from .runs import read_subject
from .transcript import Transcript, TranscriptEntry, noise_flags

__all__ = ["SearchHit", "build_transcript", "search"]


#: Whether a plain string given to a transcript is read as a chat message (the API and
#: ``nla-lens transcript`` share it; ``chat=`` / ``--chat`` / ``--plain`` override it).
CHAT_DEFAULT = False


def build_transcript(
    nla: NLAPair,
    model: Any,
    text_or_messages: Any,
    *,
    positions: Any = None,
    reply_tokens: int = 0,
    tokenizer: Any = None,
    sampling: Sampling | None = None,
    temperature: float | None = None,
    samples: int | None = None,
    chat: bool = CHAT_DEFAULT,
    **settings: Any,
) -> Transcript:
    """Explain every chosen position of one prompt (and of a generated reply).

    ``positions`` count over the sequence's real tokens (None = all; negative
    from the last). With ``reply_tokens > 0`` the subject first generates that
    many tokens greedily and the reply's positions are read too. ``samples > 1``
    samples several explanations per position (temperature defaults to 1.0
    then, else greedy). A string is read as plain text unless ``chat=True``, which
    reads it as one user message under the tokenizer's chat template (chat messages
    always are); ``nla-lens transcript`` shares this default (``CHAT_DEFAULT``).
    """
    if chat and isinstance(text_or_messages, str):
        text_or_messages = [{"role": "user", "content": text_or_messages}]
    if (
        isinstance(text_or_messages, list)
        and text_or_messages
        and isinstance(text_or_messages[0], list)
    ):
        raise CaptureError(
            "transcript() reads one prompt or one conversation at a time; loop over a batch."
        )
    # The settings are checked before the subject runs, so a bad one costs no compute.
    given = Sampling.of(sampling)
    want = samples if isinstance(samples, int) and not isinstance(samples, bool) else given.samples
    if temperature is None and want > 1 and given.greedy:
        temperature = 1.0  # several greedy samples would all be one decode
    s = Sampling.of(given, samples=samples, temperature=temperature, **settings)
    positions = None if positions is None else as_positions(positions)
    if reply_tokens:
        subject = as_subject(model, tokenizer)
        subject.check(d_model=nla.d_model, layer=nla.layer, base_model=nla.base_model)
        gen = generate_and_capture(subject, text_or_messages, nla.layer, reply_tokens)
        cap, is_reply = gen.captured, gen.is_reply[0]
    else:
        subject, cap = read_subject(
            nla, model, text_or_messages, tokenizer=tokenizer, keep_logits=False
        )
        is_reply = torch.zeros(cap.input_ids.shape[1], dtype=torch.bool)
    real = cap.attention_mask[0].nonzero().flatten().tolist()  # columns of the real tokens
    n = len(real)
    if positions is None:
        rel = list(range(n))
    else:
        bad = [p for p in positions if not -n <= p < n]
        if bad:
            raise CaptureError(
                f"positions {bad} out of range for {n} tokens: valid positions are {-n}..{n - 1} "
                "(counted over real tokens)."
            )
        rel = [p % n for p in positions]
    cols = [real[p] for p in rel]
    vectors = cap.residual[0, cols].float().cpu()
    tokens = [cap.real_tokens()[0][p] for p in rel]
    norms = vectors.norm(dim=1).tolist()
    bos = getattr(subject.tokenizer or getattr(nla.av, "tokenizer", None), "bos_token", None)
    flags = noise_flags(rel, norms, tokens, bos)
    exps = explain_flagged(nla, vectors, s)
    k = s.samples
    entries = tuple(
        TranscriptEntry(
            position=rel[i],
            token=tokens[i],
            section="reply" if bool(is_reply[c]) else "prompt",
            norm=norms[i],
            explanations=tuple(exps[i * k : (i + 1) * k]),
            flags=flags[i] + (("skipped",) if exps[i * k].skipped else ()),
        )
        for i, c in enumerate(cols)
    )
    name = subject.info.name_or_path or type(subject.model).__name__
    quant = subject.info.quantization
    if quant is not None:  # a quantized subject's residuals are not the full model's
        name = f"{name} ({quant}-quantized)"
    return Transcript(
        entries=entries,
        vectors=vectors,
        layer=nla.layer,
        model_name=str(name),
        injection_scale=nla.av.meta.injection_scale,
        meta={
            "reply": gen.reply_text[0] if reply_tokens and gen.reply_text else None,
            "subject_quantization": quant,
        },
        baseline=exps.baseline,
        baseline_fit=exps.baseline_fit,
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
    nla: NLAPair,
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
    target = nla.reconstruct([check_description(nla, description)])[0]
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
