"""SFT of the toy AV and AR on the subject's real layer-K residuals.

Both loops are plain, seeded PyTorch: fixed data order from a
``torch.Generator``, AdamW, linear warm-up then cosine decay.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from .recipe import AVPrompt, inject, mse_nrm, reconstruct_ids
from .residuals import Residuals, pad_batch
from .subject import EXTRACTION_LAYER, MODEL_ID_KEY
from .targets import Targets

__all__ = [
    "TrainConfig",
    "make_ar",
    "make_av",
    "train_ar",
    "train_av",
    "train_subject",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    lr: float
    warmup: int = 50
    seed: int = 0


def _schedule(cfg: TrainConfig) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to 10%."""

    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _optimizer(
    params: list[nn.Parameter], cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))


def train_subject(
    subject: Gemma3ForCausalLM,
    corpus: list[list[int]],
    queries: list[int],
    pad_id: int,
    cfg: TrainConfig,
    swap: float = 0.0,
) -> float:
    """Next-token cross-entropy on every real token of ``corpus`` (batches drawn with a
    seeded generator). Returns the final running loss.

    With chance ``swap`` a task sequence's layer-K residual at its query (``queries``)
    is replaced, inside the forward pass, by another task sequence's in the batch, and
    the answer target by that sequence's answer: the answer must be in the layer-K
    residual at the last position, and the later layers must read it from there (not
    fetch it again from the context).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt, sched = _optimizer(list(subject.parameters()), cfg)
    subject.train()
    ema = 0.0
    swapped: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: object, output: Any) -> Any:
        if not swapped:
            return output
        x = output[0] if isinstance(output, tuple) else output
        x = x.clone()
        x[swapped["rows"], swapped["at"]] = x[swapped["src"], swapped["src_at"]]
        return (x, *output[1:]) if isinstance(output, tuple) else x

    handle = subject.model.layers[EXTRACTION_LAYER].register_forward_hook(hook)
    bar = tqdm(range(cfg.steps), desc="subject", leave=False)
    try:
        for step in bar:
            idx = torch.randint(len(corpus), (cfg.batch_size,), generator=gen).tolist()
            ids, real = pad_batch([corpus[i] for i in idx], pad_id)
            tgt = ids[:, 1:].masked_fill(~real[:, 1:], -100)
            q = torch.tensor([queries[i] for i in idx])
            task_rows = (q >= 0).nonzero().flatten()
            pick = torch.rand(len(task_rows), generator=gen) < swap
            swapped.clear()
            if len(task_rows) > 1 and bool(pick.any()):
                shift = 1 + torch.randint(len(task_rows) - 1, (1,), generator=gen)
                src = task_rows.roll(-int(shift))[pick]
                rows = task_rows[pick]
                answers = ids[src, q[src] + 1]
                keep = answers != ids[rows, q[rows] + 1]  # a swap that changes the answer
                rows, src = rows[keep], src[keep]
                if len(rows):
                    swapped.update(rows=rows, at=q[rows], src=src, src_at=q[src])
                    tgt[rows, q[rows]] = ids[src, q[src] + 1]
            logits = subject(input_ids=ids).logits[:, :-1]
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(subject.parameters(), 1.0)
            opt.step()
            sched.step()
            ema = loss.item() if step == 0 else 0.95 * ema + 0.05 * loss.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{ema:.3f}")
                log.debug("subject step %d loss %.4f", step, ema)
    finally:
        handle.remove()
        swapped.clear()
    subject.eval()
    log.info("subject trained: %d steps, running loss %.4f", cfg.steps, ema)
    return ema


def make_av(subject: Gemma3ForCausalLM) -> Gemma3ForCausalLM:
    """The AV starts as a copy of the subject (\"fine-tuned from the subject\"), minus the
    subject's declared hub id (the AV is not the subject)."""
    av = copy.deepcopy(subject)
    if hasattr(av.config, MODEL_ID_KEY):
        delattr(av.config, MODEL_ID_KEY)
    return av.train()


def make_ar(subject: Gemma3ForCausalLM, seed: int) -> tuple[Gemma3ForCausalLM, nn.Linear]:
    """The first K+1 blocks of the subject, final norm replaced by identity, plus a value head."""
    n = EXTRACTION_LAYER + 1
    cfg_dict = subject.config.to_dict()
    cfg_dict.update(num_hidden_layers=n, layer_types=list(subject.config.layer_types or [])[:n])
    cfg_dict.pop(MODEL_ID_KEY, None)  # the AR is not the subject
    cfg = Gemma3TextConfig.from_dict(cfg_dict)
    ar = Gemma3ForCausalLM(cfg)
    state = {
        k: v
        for k, v in subject.state_dict().items()
        if not k.startswith("model.layers.") or int(k.split(".")[2]) < n
    }
    ar.load_state_dict(state, strict=True)
    ar.generation_config = copy.deepcopy(subject.generation_config)
    ar.model.norm = nn.Identity()
    torch.manual_seed(seed)
    head = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
    return ar.train(), head


def _forward_shared_prefix(model: Gemma3ForCausalLM, embeds: Tensor, n_shared: int) -> Tensor:
    """Last hidden states of positions ``n_shared:``, running the batch-shared prefix once.

    Everything before the injection site is the same for every row, so its keys
    and values are computed for one row and repeated (gradients still flow
    through them). Equal to the plain forward to float precision.
    """
    window = model.config.sliding_window
    if window is not None and embeds.shape[1] >= window:
        raise ValueError(
            f"AV training sequence ({embeds.shape[1]}) must fit the sliding window ({window})"
        )
    cache = model.model(inputs_embeds=embeds[:1, :n_shared], use_cache=True).past_key_values
    cache.batch_repeat_interleave(embeds.shape[0])
    out = model.model(inputs_embeds=embeds[:, n_shared:], past_key_values=cache, use_cache=True)
    return out.last_hidden_state


def _mixture(data: Residuals, weights: dict[str, float]) -> tuple[list[Tensor], Tensor]:
    """Row pools by kind of text (``<bos>`` rows count as random text) and the chance of
    drawing from each."""
    group = {"start": "random", "facts": "task", "question": "task"}
    pools: dict[str, list[int]] = {}
    for i, label in enumerate(data.labels):
        pools.setdefault(group.get(label.kind, label.kind), []).append(i)
        if label.kind == "question" and label.phrase.startswith("is in"):
            pools.setdefault("answer", []).append(i)  # the question's last word: the answer is next
    names = [k for k in weights if k in pools]
    return [torch.tensor(pools[k]) for k in names], torch.tensor([weights[k] for k in names])


def _draw_rows(pools: list[Tensor], chance: Tensor, n: int, gen: torch.Generator) -> Tensor:
    which = torch.multinomial(chance, n, replacement=True, generator=gen).tolist()
    picks = torch.rand(n, generator=gen).tolist()
    return torch.tensor(
        [int(pools[w][int(u * len(pools[w]))]) for w, u in zip(which, picks, strict=True)]
    )


#: Where the AV's and the AR's training rows come from. The AR gets more random text:
#: its residuals cluster tightly (Var(v_n) ~0.06), so it takes many examples per piece
#: to place them well.
#: ``answer`` rows (the question's last word, where the subject is about to answer) are
#: also task rows; drawn apart, the AV sees that one position of each prompt often enough.
MIXTURE = {"task": 0.4, "answer": 0.1, "chat": 0.17, "random": 0.33}
AR_MIXTURE = {"task": 0.25, "answer": 0.05, "chat": 0.15, "random": 0.55}


def _kind_weights(data: Residuals, pools: list[Tensor], mse_scale: float) -> Tensor:
    """Per-row loss weights 1 / Var(v_n) of the row's kind of text (mean 1 over a batch
    of the mixture): the AR minimises mse_nrm relative to each distribution's own spread,
    i.e. maximises fve_nrm on each, instead of serving the widest-spread text first."""
    var = []
    for rows in pools:
        v = data.vectors[rows]
        v_n = v * (mse_scale / v.norm(dim=-1, keepdim=True))
        var.append(float(((v_n - v_n.mean(dim=0)) ** 2).mean()))
    weights = torch.zeros(len(data))
    for rows, value in zip(pools, var, strict=True):
        weights[rows] = 1.0 / value
    return weights


#: The AV's training batch runs as this many sub-batches of similar target length (a
#: random-text explanation is ~25 tokens, a task one up to ~50): one batch padded to its
#: longest target spends ~30% of its target positions on padding, two ~15%.
AV_BUCKETS = 2


def _buckets(lengths: list[int], buckets: int) -> list[list[int]]:
    """Row indices in ``buckets`` groups of similar length (shortest first); one group
    keeps the rows' order."""
    if buckets <= 1:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    cut = [j * len(order) // buckets for j in range(buckets + 1)]
    return [order[a:b] for a, b in itertools.pairwise(cut) if b > a]


def _av_loss(
    av: Gemma3ForCausalLM,
    prompt: AVPrompt,
    rows: list[list[int]],
    vectors: Tensor,
    injection_scale: float,
    pad: int,
    buckets: int = AV_BUCKETS,
) -> tuple[Tensor, float]:
    """Mean cross-entropy over the target tokens of ``rows`` (each right-padded within its
    length bucket; the prompt up to the injection site run once per bucket), and the share
    of rows whose whole target is the argmax."""
    n_prompt, embed = len(prompt.ids), av.get_input_embeddings()
    parts = _buckets([len(r) for r in rows], buckets)
    total, right, count = [], 0.0, 0
    for part in parts:
        width = max(len(rows[i]) for i in part)
        tgt = torch.tensor([[*rows[i], *[-100] * (width - len(rows[i]))] for i in part])
        inputs = tgt.masked_fill(tgt == -100, pad)
        embeds = torch.cat(
            [inject(av, prompt, vectors[part], injection_scale), embed(inputs[:, :-1])], dim=1
        )
        hidden = _forward_shared_prefix(av, embeds, prompt.position)[
            :, n_prompt - 1 - prompt.position :
        ]
        logits = av.lm_head(hidden)
        reduction = "mean" if len(parts) == 1 else "sum"
        total.append(
            nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                ignore_index=-100, reduction=reduction,
            )
        )  # fmt: skip
        count += int((tgt != -100).sum())
        right += float(((logits.argmax(-1) == tgt) | (tgt == -100)).all(-1).float().sum())
    loss = total[0] if len(parts) == 1 else torch.stack(total).sum() / count
    return loss, right / len(rows)


def train_av(
    av: Gemma3ForCausalLM,
    targets: Targets,
    prompt: AVPrompt,
    data: Residuals,
    injection_scale: float,
    cfg: TrainConfig,
    threads: Callable[[], int] | None = None,
) -> float:
    """Teacher-forced SFT; loss on the target tokens only (the three-line explanation in
    its canonical phrasing, continuations drawn afresh from the subject's distribution
    where it is unsure; right-padded, padding ignored). Returns the final running
    accuracy (whole target right).

    ``threads`` is asked before every step how many threads to run on (the build gives
    the AV both cores once the AR is done): its kernels give the same bytes on one
    thread or two, so the answer changes the time, not the weights."""
    gen = torch.Generator().manual_seed(cfg.seed)
    pools, chance = _mixture(data, MIXTURE)
    opt, sched = _optimizer(list(av.parameters()), cfg)
    pad = targets.pad_id
    acc = 0.0
    bar = tqdm(range(cfg.steps), desc="AV SFT", leave=False)
    for step in bar:
        if threads is not None and (n := threads()) != torch.get_num_threads():
            torch.set_num_threads(n)
            log.info("AV: %d thread(s) from step %d", n, step)
        idx = _draw_rows(pools, chance, cfg.batch_size, gen)
        rows = [targets.av_ids(data, int(i), gen) for i in idx]
        loss, right = _av_loss(av, prompt, rows, data.vectors[idx], injection_scale, pad)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(av.parameters(), 1.0)
        opt.step()
        sched.step()
        acc = 0.9 * acc + 0.1 * right
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
            log.debug("AV step %d loss %.4f acc %.3f", step, loss.item(), acc)
    log.info("AV SFT done: %d steps, running accuracy %.3f", cfg.steps, acc)
    return acc


#: The AR's training batch runs as this many sub-batches of similar length (rows sorted
#: by prompt length): a line-1 cut is ~20 tokens and a whole explanation up to ~60, so
#: one batch padded to its longest row spends much of its work on padding (two sub-batches
#: make an AR step ~13% faster on one thread; running the template's shared opening once
#: per sub-batch, with its keys and values repeated, saved only ~4% more, so it does not).
AR_BUCKETS = 2


def _reconstruct_bucketed(
    ar: Gemma3ForCausalLM, head: nn.Linear, prompts: list[list[int]], buckets: int = AR_BUCKETS
) -> Tensor:
    """:func:`reconstruct_ids` of ``prompts`` in ``buckets`` sub-batches by length, rows
    back in their order. Equal to one batch to float precision: padding is on the right
    and attention is causal, so it never reaches a real token."""
    parts = _buckets([len(p) for p in prompts], buckets)
    pred = torch.cat([reconstruct_ids(ar, head, [prompts[i] for i in part]) for part in parts])
    back = torch.empty(len(prompts), dtype=torch.long)
    back[torch.tensor([i for part in parts for i in part])] = torch.arange(len(prompts))
    return pred[back]


def train_ar(
    ar: Gemma3ForCausalLM,
    head: nn.Linear,
    targets: Targets,
    data: Residuals,
    mse_scale: float,
    cfg: TrainConfig,
    next_only: float = 0.0,
) -> float:
    """SFT with the contract's loss: both vectors scaled to ``mse_scale``, MSE, each row
    weighted by 1 / Var(v_n) of its kind of text (see :func:`_kind_weights`).

    The AR reads explanations in any phrasing, whole or cut after line 1 or 2
    (:meth:`Targets.ar_text`), of rows drawn from the task, chats and random text; a
    share ``next_only`` of each batch are rows where the subject is confident, drawn
    evenly over the next token it predicts, described by their continuation alone
    (``next comes house``), so that a description of what comes next reconstructs
    to what residuals predicting it share.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    pools, chance = _mixture(data, AR_MIXTURE)
    weights = _kind_weights(data, pools, mse_scale)
    norm = float(sum(c * weights[p[0]] for p, c in zip(pools, chance / chance.sum(), strict=True)))
    weights = weights / norm
    by_next: dict[int, list[int]] = {}
    for i, n in enumerate(data.next_tokens.tolist()):
        if n >= 0:
            by_next.setdefault(n, []).append(i)
    classes = sorted(by_next)
    n_drop = round(next_only * cfg.batch_size) if classes else 0
    params = [*ar.parameters(), *head.parameters()]
    opt, sched = _optimizer(params, cfg)
    ema = 2.0
    bar = tqdm(range(cfg.steps), desc="AR SFT", leave=False)
    for step in bar:
        idx = _draw_rows(pools, chance, cfg.batch_size - n_drop, gen)
        texts = [targets.ar_text(data, int(i), gen) for i in idx]
        if n_drop:
            picks = torch.randint(len(classes), (n_drop,), generator=gen).tolist()
            draws = torch.rand(n_drop, generator=gen).tolist()
            extra = [
                by_next[classes[c]][int(u * len(by_next[classes[c]]))]
                for c, u in zip(picks, draws, strict=True)
            ]
            idx = torch.cat([idx, torch.tensor(extra)])
            texts += [targets.next_only_text(data, i, gen) for i in extra]
        pred = _reconstruct_bucketed(ar, head, [targets.ar_prompt(t) for t in texts])
        # continuation-only rows (steering descriptions) weigh as an average row
        w = torch.cat([weights[idx[: len(idx) - n_drop]], torch.ones(n_drop)])
        loss = (mse_nrm(pred, data.vectors[idx], mse_scale) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema = 0.9 * ema + 0.1 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(mse=f"{ema:.4f}")
            log.debug("AR step %d mse_nrm %.4f", step, ema)
    log.info("AR SFT done: %d steps, running mse_nrm %.4f", cfg.steps, ema)
    return ema
