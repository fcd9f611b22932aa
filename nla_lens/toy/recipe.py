"""The NLA recipe as the toy builder uses it: AV prompt, injection, decoding, AR forward.

A small self-contained implementation (the library's adapters are separate)
following docs/recipe.md: one-step chat-template tokenization, injection
through the AV's own (scaled) embedding module with the vector rescaled to
``injection_scale`` in fp32, explanation extraction from the decode with
special tokens skipped, and the AR read at the last token of its prompt
tokenized with special tokens.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast

from .tokenizer import token_id, token_ids
from .vocab import (
    AR_TEMPLATE,
    AV_TEMPLATE,
    END_OF_TURN,
    EXPLANATION_TEMPLATE,
    INJECTION_CHAR,
    NEXT_FIELD,
    TOKEN_NAMES,
)

__all__ = [
    "AVPrompt",
    "ar_prompt_ids",
    "av_prompt",
    "extract_explanation",
    "greedy_explain",
    "inject",
    "mse_nrm",
    "name_ids",
    "parse_explanation",
    "reconstruct",
    "reconstruct_ids",
    "target_ids",
]

_EXPLANATION = re.compile(r"<explanation>\s*(.*?)\s*</explanation>", re.DOTALL)
_FIELDS = re.compile(r"^(?:token : (?P<token>.*?))?(?:\s*;?\s*next : (?P<next>.*))?$", re.DOTALL)


@dataclass(frozen=True)
class AVPrompt:
    """The canonical AV prompt ids and the one injection site in them."""

    ids: tuple[int, ...]
    position: int
    marker_id: int
    left_id: int
    right_id: int


def av_prompt(tokenizer: PreTrainedTokenizerFast) -> AVPrompt:
    """Tokenize the AV template in one step through the chat template; find the marker."""
    (marker_id,) = token_ids(tokenizer.encode(INJECTION_CHAR, add_special_tokens=False))
    content = AV_TEMPLATE.format(injection_char=INJECTION_CHAR)
    ids = token_ids(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
        )
    )
    sites = [i for i, t in enumerate(ids) if t == marker_id]
    if len(sites) != 1 or not 0 < sites[0] < len(ids) - 1:
        raise ValueError(f"marker must occur once inside the AV prompt, found at {sites}")
    p = sites[0]
    return AVPrompt(tuple(ids), p, marker_id, ids[p - 1], ids[p + 1])


def name_ids(tokenizer: PreTrainedTokenizerFast, word_id: int) -> list[int]:
    """How the explanation names a token: itself, or for a special token or tag the plain
    words of :data:`~nla_lens.toy.vocab.TOKEN_NAMES` (readable after ``skip_special_tokens``)."""
    name = TOKEN_NAMES.get(str(tokenizer.convert_ids_to_tokens(word_id)))
    if name is None:
        return [word_id]
    ids = token_ids(tokenizer.encode(name, add_special_tokens=False))
    if tokenizer.unk_token_id in ids:
        raise ValueError(f"the name {name!r} has a word outside the toy vocabulary")
    return ids


def target_ids(
    tokenizer: PreTrainedTokenizerFast, word_id: int, next_id: int | None = None
) -> list[int]:
    """The AV's training target for a token (and, if given, the subject's confident
    next-token prediction): the explanation, then ``<end_of_turn>``."""
    head, tail = EXPLANATION_TEMPLATE.split("{word}")
    pre = token_ids(tokenizer.encode(head, add_special_tokens=False))
    post = token_ids(tokenizer.encode(tail, add_special_tokens=False))
    name = name_ids(tokenizer, word_id)
    if next_id is not None and next_id >= 0:
        field = NEXT_FIELD.split("{word}")[0]
        name += token_ids(tokenizer.encode(field, add_special_tokens=False))
        name += name_ids(tokenizer, next_id)
    return [*pre, *name, *post, token_id(tokenizer, END_OF_TURN)]


def parse_explanation(explanation: str) -> tuple[str | None, str | None]:
    """``"token : cat ; next : house"`` -> ``("cat", "house")``; a missing field is None."""
    match = _FIELDS.match(explanation.strip())
    if match is None:
        return None, None
    return match.group("token") or None, match.group("next") or None


def extract_explanation(text: str) -> str:
    """Text between ``<explanation>`` and ``</explanation>``, stripped (raw text if unclosed)."""
    match = _EXPLANATION.search(text)
    if match is None:
        return text.replace("<explanation>", "").strip()
    return match.group(1).strip()


def inject(av: Gemma3ForCausalLM, prompt: AVPrompt, vectors: Tensor, scale: float) -> Tensor:
    """Prompt embeddings [B, T, d] with the marker embedding overwritten by the rescaled vectors."""
    ids = torch.tensor(prompt.ids).expand(vectors.shape[0], -1)
    embeds = av.get_input_embeddings()(ids)  # Gemma's module applies the sqrt(d) scale
    v = vectors.float()
    v = v * (scale / v.norm(dim=-1, keepdim=True))
    embeds = embeds.clone()
    embeds[:, prompt.position] = v.to(embeds.dtype)
    return embeds


@torch.no_grad()
def greedy_explain(
    av: Gemma3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompt: AVPrompt,
    vectors: Tensor,
    scale: float,
    *,
    max_new_tokens: int = 12,
    batch_size: int = 256,
) -> list[str]:
    """Greedy AV decodes (KV-cached), decoded with special tokens skipped."""
    stop = torch.tensor(sorted({tokenizer.eos_token_id, token_id(tokenizer, END_OF_TURN)}))
    texts: list[str] = []
    embed = av.get_input_embeddings()
    for start in range(0, vectors.shape[0], batch_size):
        embeds = inject(av, prompt, vectors[start : start + batch_size], scale)
        b = embeds.shape[0]
        out = torch.empty(b, 0, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        step = av(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        for _ in range(max_new_tokens):
            nxt = step.logits[:, -1].argmax(-1)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= torch.isin(nxt, stop)
            if bool(done.all()):
                break
            step = av(
                inputs_embeds=embed(nxt[:, None]),
                past_key_values=step.past_key_values,
                use_cache=True,
            )
        stops = set(stop.tolist())
        for row in out.tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row) - 1)
            texts.append(str(tokenizer.decode(row[: cut + 1], skip_special_tokens=True)))
    return texts


def ar_prompt_ids(tokenizer: PreTrainedTokenizerFast, explanation: str) -> list[int]:
    """The AR prompt, tokenized WITH special tokens (one BOS)."""
    text = AR_TEMPLATE.format(explanation=explanation)
    return token_ids(tokenizer(text, add_special_tokens=True)["input_ids"])


def reconstruct(
    backbone: Gemma3ForCausalLM,
    value_head: nn.Linear,
    tokenizer: PreTrainedTokenizerFast,
    explanations: list[str],
) -> Tensor:
    """AR vectors [N, d] for explanation strings (see :func:`reconstruct_ids`)."""
    return reconstruct_ids(
        backbone, value_head, [ar_prompt_ids(tokenizer, e) for e in explanations]
    )


def reconstruct_ids(
    backbone: Gemma3ForCausalLM, value_head: nn.Linear, prompts: list[list[int]]
) -> Tensor:
    """AR vectors [N, d]: truncated backbone (final norm = identity), last token, value head.

    Prompts are grouped by length so no padding is needed.
    """
    if not isinstance(backbone.model.norm, nn.Identity):
        raise ValueError("the AR backbone's final norm must be nn.Identity()")
    groups: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(prompts):
        groups[len(ids)].append(i)
    if len(groups) == 1:
        hidden = backbone.model(input_ids=torch.tensor(prompts)).last_hidden_state[:, -1]
        return value_head(hidden).float()
    out = torch.empty(len(prompts), value_head.weight.shape[0])
    for idx in groups.values():
        batch = torch.tensor([prompts[i] for i in idx])
        hidden = backbone.model(input_ids=batch).last_hidden_state[:, -1]
        out[torch.tensor(idx)] = value_head(hidden).float()
    return out


def mse_nrm(pred: Tensor, gold: Tensor, mse_scale: float) -> Tensor:
    """Per-row MSE after scaling both to ``mse_scale`` L2 norm (= 2 (1 - cos) for sqrt(d))."""
    p = pred.float() * (mse_scale / pred.float().norm(dim=-1, keepdim=True))
    g = gold.float() * (mse_scale / gold.float().norm(dim=-1, keepdim=True))
    return ((p - g) ** 2).mean(dim=-1)
