"""The toy pair's figures, measured by the builder on held-out text (``quality.json``).

Each figure is measured with the builder's own recipe (``recipe.py``: greedy AV
decode, AR forward) on text the build did not train on:

* generic: one random position (>= 2) of each held-out random sequence;
* chat: every position of held-out chats;
* task: every position of the clean prompts of :func:`nla_lens.toy.tasks` pairs.

fve_nrm is always against the baseline of the same distribution, and the three
baselines are shipped (``baselines``), so ``nla.set_baseline("task")`` etc. can
use them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast

from .reading import read_explanation
from .recall import DETERMINERS, ENTITIES, PLACES
from .recipe import AVPrompt, extract_explanation, greedy_explain, mse_nrm, reconstruct
from .residuals import Residuals
from .targets import Targets
from .vocab import CONFIDENT
from .world import WorldFigures

__all__ = ["POSITION_CLASSES", "Quality", "baseline", "evaluate", "position_class"]

log = logging.getLogger(__name__)

POSITION_CLASSES = ("entity", "is", "in", "determiner", "place", ".", "last")
MAX_NEW_TOKENS = 96


def position_class(token: str, is_last: bool) -> str | None:
    """The class of a task-prompt position by its token (None for ``<bos>``)."""
    word = token.strip()
    if is_last:
        return "last"
    if word in ENTITIES:
        return "entity"
    if word in PLACES:
        return "place"
    if word in DETERMINERS:
        return "determiner"
    if word in ("is", "in", "."):
        return word
    return None


def baseline(vectors: Tensor, mse_scale: float) -> float:
    """Var(v_n): the mean squared deviation of the vectors scaled to ``mse_scale``."""
    v_n = vectors.float() * (mse_scale / vectors.float().norm(dim=-1, keepdim=True))
    return float(((v_n - v_n.mean(dim=0)) ** 2).mean())


@dataclass(frozen=True)
class Quality:
    """Held-out figures of the toy pair (see the module docstring).

    ``accuracy``..``n``: generic positions (token named, whole explanation equal to
    the canonical one, round trip against the generic baseline). ``chat_*``: every
    chat position (closed within ``chat_max_new_tokens``, token named). ``next_named``:
    every held-out position where the subject is confident (top probability >=
    ``confident``), the share whose explanation names its argmax next token first;
    ``task_next_named`` the same at the task's answer positions. ``task_*``: task
    prompts, fve_nrm per position class against the task baseline, token named,
    and at ``is`` the sentence's animal named. ``prefix_rise``: share of task
    explanations whose whole text scores higher than line 1 alone; ``swap_lowers``:
    share where replacing line 1 by another prompt's line 1 lowers the score.
    """

    accuracy: float
    exact: float
    fve_nrm: float
    mse_nrm: float
    cos: float
    baseline_var: float
    n: int
    chat_terminated: float
    chat_accuracy: float
    chat_max_new_tokens: int
    chat_n: int
    confident: float
    next_named: float
    next_n: int
    task_next_named: float
    task_next_n: int
    task_fve_nrm: dict[str, float]
    task_token_named: float
    task_entity_named: float
    task_positions: int
    prefix_rise: float
    swap_lowers: float
    task_accuracy: float
    patch_layer: int
    patch_recovery: float
    patch_recovery_control: float
    steer_alpha: float
    steer_success: float
    steer_full_success: float
    steer_edit_success: float
    task_n: int
    baselines: dict[str, dict[str, object]] = field(default_factory=dict)


def _explain(av, tokenizer, prompt, data: Residuals, scale: float) -> tuple[list[str], list[bool]]:
    texts = greedy_explain(
        av, tokenizer, prompt, data.vectors, scale, max_new_tokens=MAX_NEW_TOKENS
    )
    return [extract_explanation(t) for t in texts], ["</explanation>" in t for t in texts]


def _fve(pred: Tensor, gold: Tensor, mse_scale: float, var: float) -> Tensor:
    return 1.0 - mse_nrm(pred, gold, mse_scale) / var


def _reconstruct(ar, head, tokenizer, texts: list[str], batch: int = 512) -> Tensor:
    return torch.cat(
        [
            reconstruct(ar, head, tokenizer, texts[i : i + batch])
            for i in range(0, len(texts), batch)
        ]
    )


@torch.no_grad()
def evaluate(
    av: Gemma3ForCausalLM,
    ar: Gemma3ForCausalLM,
    head: nn.Linear,
    tokenizer: PreTrainedTokenizerFast,
    prompt: AVPrompt,
    injection_scale: float,
    mse_scale: float,
    held: Residuals,
    chat: Residuals,
    task: Residuals,
    world: WorldFigures,
    baseline_sources: dict[str, str],
) -> Quality:
    """Measure the pair on the three held-out sets (see :class:`Quality`)."""
    targets = Targets(tokenizer)
    readings: dict[str, list] = {}
    closed: dict[str, list[bool]] = {}
    texts: dict[str, list[str]] = {}
    for name, data in (("generic", held), ("chat", chat), ("task", task)):
        log.info("explaining %d held-out %s positions", len(data), name)
        texts[name], closed[name] = _explain(av, tokenizer, prompt, data, injection_scale)
        readings[name] = [read_explanation(t) for t in texts[name]]
    var = {
        "generic": baseline(held.vectors, mse_scale),
        "chat": baseline(chat.vectors, mse_scale),
        "task": baseline(task.vectors, mse_scale),
    }

    def named(name: str, data: Residuals) -> list[bool]:
        return [r.token == lab.token for r, lab in zip(readings[name], data.labels, strict=True)]

    def next_named(name: str, data: Residuals) -> list[bool]:
        return [
            r.next == targets._name(int(n))
            for r, n in zip(readings[name], data.next_tokens.tolist(), strict=True)
            if n >= 0
        ]

    pred = _reconstruct(ar, head, tokenizer, texts["generic"])
    mse = float(mse_nrm(pred, held.vectors, mse_scale).mean())
    truth = [targets.canonical(held, i) for i in range(len(held))]
    chat_named = named("chat", chat)

    task_pred = _reconstruct(ar, head, tokenizer, texts["task"])
    task_fve = _fve(task_pred, task.vectors, mse_scale, var["task"])
    last = torch.zeros(len(task), dtype=torch.bool)
    last[:-1] = task.positions[1:] == 0
    last[-1] = True
    classes = [position_class(lab.token, bool(e)) for lab, e in zip(task.labels, last, strict=True)]
    per_class = {
        c: round(float(task_fve[[k == c for k in classes]].mean()), 4) for c in POSITION_CLASSES
    }
    at_is = [i for i, c in enumerate(classes) if c == "is"]
    entity = [readings["task"][i].entity == task.labels[i].entity for i in at_is]
    answer = [
        readings["task"][i].next == targets._name(int(task.next_tokens[i]))
        for i, c in enumerate(classes)
        if c == "last" and int(task.next_tokens[i]) >= 0
    ]
    prefix, swap = _faithfulness(ar, head, tokenizer, texts["task"], task.vectors, mse_scale)
    nxt = next_named("generic", held) + next_named("chat", chat) + next_named("task", task)
    return Quality(
        accuracy=_share(named("generic", held)),
        exact=_share([t == g for t, g in zip(texts["generic"], truth, strict=True)]),
        fve_nrm=round(1.0 - mse / var["generic"], 4),
        mse_nrm=round(mse, 4),
        cos=round(float(nn.functional.cosine_similarity(pred, held.vectors, dim=-1).mean()), 4),
        baseline_var=round(var["generic"], 4),
        n=len(held),
        chat_terminated=_share(closed["chat"]),
        chat_accuracy=_share([a and c for a, c in zip(chat_named, closed["chat"], strict=True)]),
        chat_max_new_tokens=MAX_NEW_TOKENS,
        chat_n=len(chat),
        confident=CONFIDENT,
        next_named=_share(nxt),
        next_n=len(nxt),
        task_next_named=_share(answer),
        task_next_n=len(answer),
        task_fve_nrm=per_class,
        task_token_named=_share(named("task", task)),
        task_entity_named=_share(entity),
        task_positions=len(task),
        prefix_rise=prefix,
        swap_lowers=swap,
        **world.__dict__,
        baselines={
            name: {"variance": round(v, 4), "n": n, "source": baseline_sources[name]}
            for (name, v), n in zip(var.items(), (len(held), len(chat), len(task)), strict=True)
        },
    )


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else float("nan")


def _faithfulness(
    ar, head, tokenizer, texts: list[str], vectors: Tensor, mse_scale: float
) -> tuple[float, float]:
    """(share where the whole explanation beats line 1 alone, share where swapping in
    another explanation's line 1 lowers the score), over explanations of >= 3 lines
    whose line 1 differs from the one swapped in."""
    rows = [i for i, t in enumerate(texts) if len(t.splitlines()) >= 3]
    if not rows:
        return float("nan"), float("nan")
    donor = {i: rows[(k + len(rows) // 2) % len(rows)] for k, i in enumerate(rows)}
    rows = [i for i in rows if texts[donor[i]].splitlines()[0] != texts[i].splitlines()[0]]
    first = [texts[i].splitlines()[0] for i in rows]
    whole = [texts[i] for i in rows]
    swapped = [
        "\n".join([texts[donor[i]].splitlines()[0], *texts[i].splitlines()[1:]]) for i in rows
    ]
    if not rows:
        return float("nan"), float("nan")
    gold = vectors[rows]
    score = [
        -mse_nrm(_reconstruct(ar, head, tokenizer, t), gold, mse_scale)
        for t in (first, whole, swapped)
    ]
    return _share((score[1] > score[0]).tolist()), _share((score[2] < score[1]).tolist())
