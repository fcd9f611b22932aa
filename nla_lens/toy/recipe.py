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
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast

from .tokenizer import token_id, token_ids
from .vocab import AR_TEMPLATE, AV_TEMPLATE, END_OF_TURN, INJECTION_CHAR

__all__ = [
    "AVPrompt",
    "ar_prompt_ids",
    "av_prompt",
    "extract_explanation",
    "greedy_explain",
    "inject",
    "mse_nrm",
    "reconstruct",
    "reconstruct_ids",
]

_EXPLANATION = re.compile(r"<explanation>\s*(.*?)\s*</explanation>", re.DOTALL)


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
    max_new_tokens: int = 96,
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
    backbone: Gemma3ForCausalLM, value_head: nn.Linear, prompts: list[list[int]], pad_id: int = 0
) -> Tensor:
    """AR vectors [N, d]: truncated backbone (final norm = identity), last token, value head.

    Prompts are right-padded (causal attention: padding never reaches a real token)
    and each row is read at its own last token.
    """
    if not isinstance(backbone.model.norm, nn.Identity):
        raise ValueError("the AR backbone's final norm must be nn.Identity()")
    lengths = torch.tensor([len(p) for p in prompts])
    ids = torch.full((len(prompts), int(lengths.max())), pad_id)
    for row, p in enumerate(prompts):
        ids[row, : len(p)] = torch.tensor(p)
    hidden = backbone.model(input_ids=ids).last_hidden_state
    return value_head(hidden[torch.arange(len(prompts)), lengths - 1]).float()


def mse_nrm(pred: Tensor, gold: Tensor, mse_scale: float) -> Tensor:
    """Per-row MSE after scaling both to ``mse_scale`` L2 norm (= 2 (1 - cos) for sqrt(d))."""
    p = pred.float() * (mse_scale / pred.float().norm(dim=-1, keepdim=True))
    g = gold.float() * (mse_scale / gold.float().norm(dim=-1, keepdim=True))
    return ((p - g) ** 2).mean(dim=-1)
