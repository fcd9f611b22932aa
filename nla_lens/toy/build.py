"""Build the toy NLA pair: subject (plain + multimodal), AV, AR, quality figures.

Deterministic: every random draw comes from a seeded generator, data order is
fixed, and the sidecars hold no timestamps. ``python -m nla_lens.toy build``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

from .cards import write_card, write_sidecar
from .recall import DETERMINERS, PLACES, make_pairs
from .recipe import (
    AVPrompt,
    av_prompt,
    extract_explanation,
    greedy_explain,
    mse_nrm,
    parse_explanation,
    reconstruct,
)
from .subject import (
    D_MODEL,
    EXTRACTION_LAYER,
    NUM_LAYERS,
    Residuals,
    build_multimodal,
    build_subject,
    sample_chat_residuals,
    sample_residuals,
    sequence_residuals,
    subject_corpus,
    task_sequence_ids,
)
from .tokenizer import build_tokenizer, content_token_ids
from .train import (
    TrainConfig,
    explanation_for,
    make_ar,
    make_av,
    train_ar,
    train_av,
    train_subject,
)
from .vocab import CONFIDENT, TOKEN_NAMES
from .world import WorldFigures, measure_world

__all__ = ["BuildConfig", "Quality", "build", "build_base", "evaluate", "measure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    seq_len: int = 32
    train_sequences: int = 2048
    heldout_sequences: int = 1000
    chat_train_sequences: int = 2048
    chat_heldout_sequences: int = 128
    chat_max_new_tokens: int = 16
    task_train_sequences: int = 1500
    task_heldout_sequences: int = 200
    world_pairs: int = 64
    ar_next_only: float = 0.125
    ar_balanced: float = 0.25
    subject_task: int = 20000
    subject_random: int = 4000
    subject_chat: int = 3000
    subject_swap: float = 0.25
    subject: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=2500, batch_size=64, lr=3e-3, warmup=100, seed=3)
    )
    av: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1200, batch_size=64, lr=2e-3, seed=11)
    )
    ar: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=2000, batch_size=64, lr=3e-3, seed=12)
    )


@dataclass(frozen=True)
class Quality:
    """Round-trip figures on held-out residuals (the toy's published baseline).

    ``accuracy`` .. ``n``: random content sequences after BOS, one position >= 2
    each; ``accuracy`` is the fraction whose explanation names the token, ``exact``
    the fraction equal to the target (token, and next token where the subject is
    confident). ``chat_*``: every position (BOS, template and special tokens included)
    of held-out chat-formatted conversations: the fraction of greedy decodes that
    close ``</explanation>`` within ``chat_max_new_tokens`` new tokens, and the
    fraction that name the token. ``next_*``: every held-out position (content, chat
    and task sequences) where the subject's top next-token probability is at least
    ``confident``: the fraction whose explanation names the subject's own argmax
    next token; ``task_next_named``: the same at the task's answer positions. The
    rest: the subject on :func:`nla_lens.toy.tasks` pairs (see ``world.py``).
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
    task_accuracy: float
    patch_layer: int
    patch_recovery: float
    patch_recovery_control: float
    steer_alpha: float
    steer_success: float
    steer_full_success: float
    steer_edit_success: float
    task_n: int


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels on one thread: same bytes whatever the core count, and no
    OpenMP spin-wait collapse when the cores are shared."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


_PARTS = ("subject", "subject_multimodal", "av", "ar")


def build_base(
    out: Path, seed: int = 0, cfg: BuildConfig | None = None
) -> tuple[PreTrainedTokenizerFast, Gemma3ForCausalLM]:
    """Tokenizer, subject (trained on the toy task and generic text) and its multimodal
    twin; saved under ``out``."""
    cfg = cfg or BuildConfig(seed=seed)
    with _deterministic():
        tokenizer = build_tokenizer()
        subject = build_subject(tokenizer, seed)
        content = content_token_ids(tokenizer)
        other = sorted(set(tokenizer.get_vocab().values()) - set(content))
        corpus, queries = subject_corpus(
            tokenizer, content, other, n_task=cfg.subject_task, n_random=cfg.subject_random,
            n_chat=cfg.subject_chat, seq_len=cfg.seq_len,
            generator=torch.Generator().manual_seed(seed + 7),
        )  # fmt: skip
        log.info("training the subject on %d sequences", len(corpus))
        train_subject(
            subject, corpus, queries, int(tokenizer.pad_token_id), cfg.subject, cfg.subject_swap
        )
        multimodal = build_multimodal(subject, tokenizer, seed + 1)
    for name, model in (("subject", subject), ("subject_multimodal", multimodal)):
        _save(model, tokenizer, out / name)
        write_card(out / name, name, d_model=D_MODEL, n_layers=NUM_LAYERS, layer=EXTRACTION_LAYER)
    _make_readable(out)
    return tokenizer, subject


def _save(model: nn.Module, tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    if directory.is_dir():  # no stale files from an earlier build
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    model.save_pretrained(directory)  # type: ignore[operator]
    tokenizer.save_pretrained(directory)
    # transformers 5 writes its backend's class name; the generic fast class also loads in 4.x.
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _residuals(
    subject: Gemma3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    n: int,
    seq_len: int,
    seed: int,
    per_seq: int | None,
    first_position: int = 2,
) -> Residuals:
    gen = torch.Generator().manual_seed(seed)
    return sample_residuals(
        subject,
        content_token_ids(tokenizer),
        tokenizer.bos_token_id,
        n_sequences=n,
        seq_len=seq_len,
        generator=gen,
        positions_per_sequence=per_seq,
        first_position=first_position,
    )


def _chat_residuals(
    subject: Gemma3ForCausalLM, tokenizer: PreTrainedTokenizerFast, n: int, seed: int
) -> Residuals:
    content = content_token_ids(tokenizer)
    other = sorted(set(tokenizer.get_vocab().values()) - set(content))  # specials and tags
    gen = torch.Generator().manual_seed(seed)
    return sample_chat_residuals(subject, tokenizer, content, other, n_sequences=n, generator=gen)


def _task_residuals(
    subject: Gemma3ForCausalLM, tokenizer: PreTrainedTokenizerFast, n: int, seed: int
) -> Residuals:
    gen = torch.Generator().manual_seed(seed)
    seqs = [task_sequence_ids(tokenizer, gen) for _ in range(n)]
    return sequence_residuals(subject, seqs, int(tokenizer.pad_token_id))


def _concat(*parts: Residuals) -> Residuals:
    return Residuals(
        torch.cat([p.vectors for p in parts]),
        torch.cat([p.tokens for p in parts]),
        torch.cat([p.positions for p in parts]),
        torch.cat([p.next_tokens for p in parts]),
        torch.cat([p.next_probs for p in parts]),
    )


def _name(tokenizer: PreTrainedTokenizerFast, token_id: int) -> str:
    token = str(tokenizer.convert_ids_to_tokens(token_id))
    return TOKEN_NAMES.get(token, token)


def _explain(
    av: Gemma3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompt: AVPrompt,
    data: Residuals,
    injection_scale: float,
    max_new_tokens: int,
) -> tuple[list[str], list[bool]]:
    texts = greedy_explain(
        av, tokenizer, prompt, data.vectors, injection_scale, max_new_tokens=max_new_tokens
    )
    return [extract_explanation(t) for t in texts], ["</explanation>" in t for t in texts]


def _named(
    tokenizer: PreTrainedTokenizerFast, explanations: list[str], data: Residuals
) -> tuple[list[bool], list[bool]]:
    """Per row: (token named, next token named) by the explanation."""
    parsed = [parse_explanation(e) for e in explanations]
    tok = [
        t == _name(tokenizer, int(w))
        for (t, _), w in zip(parsed, data.tokens.tolist(), strict=False)
    ]
    nxt = [
        w >= 0 and n is not None and n == _name(tokenizer, int(w))
        for (_, n), w in zip(parsed, data.next_tokens.tolist(), strict=False)
    ]
    return tok, nxt


@torch.no_grad()
def evaluate(
    av: Gemma3ForCausalLM,
    ar: Gemma3ForCausalLM,
    head: nn.Linear,
    tokenizer: PreTrainedTokenizerFast,
    prompt: AVPrompt,
    held: Residuals,
    injection_scale: float,
    mse_scale: float,
    chat: Residuals,
    task: Residuals,
    world: WorldFigures,
    chat_max_new_tokens: int = 16,
) -> Quality:
    """Greedy AV decode -> explanation -> AR -> normalised MSE against the original vectors
    on ``held``; termination and accuracy of the AV on every position of ``chat``; naming
    of the subject's confident next token on every held-out set."""
    chat_texts, closed = _explain(av, tokenizer, prompt, chat, injection_scale, chat_max_new_tokens)
    chat_tok, chat_next = _named(tokenizer, chat_texts, chat)
    if not all(closed):
        missed = sorted(
            {_name(tokenizer, int(w)) for w, c in zip(chat.tokens, closed, strict=False) if not c}
        )
        log.warning("chat decodes left open for: %s", ", ".join(missed[:10]))
    explanations, _ = _explain(av, tokenizer, prompt, held, injection_scale, chat_max_new_tokens)
    held_tok, held_next = _named(tokenizer, explanations, held)
    truth = [
        explanation_for(tokenizer, int(w), int(n))
        for w, n in zip(held.tokens.tolist(), held.next_tokens.tolist(), strict=False)
    ]
    exact = sum(e == t for e, t in zip(explanations, truth, strict=True)) / len(truth)
    task_texts, _ = _explain(av, tokenizer, prompt, task, injection_scale, chat_max_new_tokens)
    _, task_next = _named(tokenizer, task_texts, task)
    confident = torch.cat([held.next_tokens, chat.next_tokens, task.next_tokens]) >= 0
    named = torch.tensor([*held_next, *chat_next, *task_next])[confident]
    answer = torch.tensor(task_next)[(task.next_tokens >= 0) & _answer_positions(tokenizer, task)]

    pred = reconstruct(ar, head, tokenizer, explanations)
    mse = float(mse_nrm(pred, held.vectors, mse_scale).mean())
    cos = float(nn.functional.cosine_similarity(pred, held.vectors, dim=-1).mean())
    v_n = held.vectors * (mse_scale / held.vectors.norm(dim=-1, keepdim=True))
    baseline = float(((v_n - v_n.mean(dim=0)) ** 2).mean())
    return Quality(
        accuracy=round(sum(held_tok) / len(held_tok), 4),
        exact=round(exact, 4),
        fve_nrm=round(1.0 - mse / baseline, 4),
        mse_nrm=round(mse, 4),
        cos=round(cos, 4),
        baseline_var=round(baseline, 4),
        n=len(truth),
        chat_terminated=round(sum(closed) / len(closed), 4),
        chat_accuracy=round(
            sum(t and c for t, c in zip(chat_tok, closed, strict=False)) / len(closed), 4
        ),
        chat_max_new_tokens=chat_max_new_tokens,
        chat_n=len(chat.tokens),
        confident=CONFIDENT,
        next_named=round(float(named.float().mean()), 4),
        next_n=int(named.numel()),
        task_next_named=round(float(answer.float().mean()), 4),
        task_next_n=int(answer.numel()),
        **asdict(world),
    )


def _answer_positions(tokenizer: PreTrainedTokenizerFast, task: Residuals) -> Tensor:
    """Rows of task-sequence residuals at a determiner where the subject confidently
    predicts a place: the query's last token (in a fact the place is unpredictable)."""
    dets = torch.tensor(tokenizer.convert_tokens_to_ids(list(DETERMINERS)))
    places = torch.tensor(tokenizer.convert_tokens_to_ids(list(PLACES)))
    return torch.isin(task.tokens, dets) & torch.isin(task.next_tokens, places)


def _save_ar(
    ar: Gemma3ForCausalLM,
    head: nn.Linear,
    subject: Gemma3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    directory: Path,
) -> None:
    """Save the AR as a plain Gemma3ForCausalLM (norm weight kept for a clean load) + value head."""
    trained_norm = ar.model.norm
    norm = Gemma3RMSNorm(D_MODEL, eps=subject.config.rms_norm_eps)
    with torch.no_grad():
        norm.weight.copy_(subject.model.norm.weight)
    ar.model.norm = norm
    _save(ar, tokenizer, directory)
    ar.model.norm = trained_norm
    save_file(
        {"weight": head.weight.detach().float().contiguous()},
        str(directory / "value_head.safetensors"),
    )


def build(out: Path, cfg: BuildConfig | None = None) -> Quality:
    """Build and save all four checkpoints and ``quality.json`` under ``out``."""
    cfg = cfg or BuildConfig()
    log.info("tokenizer and subject")
    tokenizer, subject = build_base(out, cfg.seed, cfg)
    train_pair(out, cfg, tokenizer, subject)
    return measure(out, cfg)


def train_pair(
    out: Path,
    cfg: BuildConfig,
    tokenizer: PreTrainedTokenizerFast,
    subject: Gemma3ForCausalLM,
    parts: tuple[str, ...] = ("av", "ar"),
) -> None:
    """Sample the subject's residuals, train and save the AV and/or the AR under ``out``."""
    with _deterministic():
        prompt = av_prompt(tokenizer)
        mse_scale = math.sqrt(D_MODEL)

        log.info("sampling training residuals")
        content = _residuals(
            subject, tokenizer, cfg.train_sequences, cfg.seq_len, cfg.seed + 2, None, 1
        )
        injection_scale = round(float(content.vectors.norm(dim=-1).mean()), 2)
        chat = _chat_residuals(subject, tokenizer, cfg.chat_train_sequences, cfg.seed + 4)
        task = _task_residuals(subject, tokenizer, cfg.task_train_sequences, cfg.seed + 7)
        data = _concat(content, chat, task)
        log.info(
            "%d residuals (%d from chats, %d from the task, %d confident), injection_scale %.2f",
            len(data.tokens), len(chat.tokens), len(task.tokens),
            int((data.next_tokens >= 0).sum()), injection_scale,
        )  # fmt: skip

        if "av" in parts:
            log.info("training the AV")
            av = make_av(subject)
            train_av(av, tokenizer, prompt, data, injection_scale, cfg.av)
            av.eval()
            _save(av, tokenizer, out / "av")
            write_sidecar(
                out / "av", role="av", tokenizer=tokenizer, prompt=prompt, d_model=D_MODEL,
                layer=EXTRACTION_LAYER, injection_scale=injection_scale, mse_scale=mse_scale, train=cfg.av,
            )  # fmt: skip
            write_card(
                out / "av", "av", d_model=D_MODEL, n_layers=NUM_LAYERS, layer=EXTRACTION_LAYER
            )

        if "ar" in parts:
            log.info("training the AR")
            ar, head = make_ar(subject, cfg.ar.seed)
            train_ar(
                ar, head, tokenizer, data, mse_scale, cfg.ar, cfg.ar_next_only, cfg.ar_balanced
            )
            ar.eval()
            _save_ar(ar, head, subject, tokenizer, out / "ar")
            write_sidecar(
                out / "ar", role="ar", tokenizer=tokenizer, prompt=prompt, d_model=D_MODEL,
                layer=EXTRACTION_LAYER, injection_scale=None, mse_scale=mse_scale, train=cfg.ar,
            )  # fmt: skip
            write_card(
                out / "ar",
                "ar",
                d_model=D_MODEL,
                n_layers=EXTRACTION_LAYER + 1,
                layer=EXTRACTION_LAYER,
            )


def measure(out: Path, cfg: BuildConfig | None = None) -> Quality:
    """Measure the checkpoints saved under ``out`` (as :func:`build` does after training)
    and write ``quality.json``."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    cfg = cfg or BuildConfig()
    with _deterministic():
        log.info("measuring the round trip on held-out residuals and the task")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out / "subject"))
        subject = AutoModelForCausalLM.from_pretrained(str(out / "subject"), dtype=torch.float32)
        av = AutoModelForCausalLM.from_pretrained(str(out / "av"), dtype=torch.float32)
        ar = AutoModelForCausalLM.from_pretrained(str(out / "ar"), dtype=torch.float32)
        subject.eval(), av.eval(), ar.eval()
        ar.model.norm = nn.Identity()
        head = nn.Linear(D_MODEL, D_MODEL, bias=False)
        head.load_state_dict(load_file(str(out / "ar" / "value_head.safetensors")))
        import yaml

        meta = yaml.safe_load((out / "av" / "nla_meta.yaml").read_text(encoding="utf-8"))
        injection_scale = float(meta["extraction"]["injection_scale"])
        mse_scale = float(meta["extraction"]["mse_scale"])
        prompt = av_prompt(tokenizer)
        held = _residuals(subject, tokenizer, cfg.heldout_sequences, cfg.seq_len, cfg.seed + 3, 1)
        held_chat = _chat_residuals(subject, tokenizer, cfg.chat_heldout_sequences, cfg.seed + 5)
        held_task = _task_residuals(subject, tokenizer, cfg.task_heldout_sequences, cfg.seed + 8)
        world = measure_world(
            subject, av, ar, head, tokenizer, prompt, injection_scale,
            make_pairs(tokenizer, cfg.world_pairs),
        )  # fmt: skip
        quality = evaluate(
            av, ar, head, tokenizer, prompt, held, injection_scale, mse_scale,
            held_chat, held_task, world, cfg.chat_max_new_tokens,
        )  # fmt: skip
    (out / "quality.json").write_text(
        json.dumps(asdict(quality), indent=2) + "\n", encoding="utf-8"
    )
    _make_readable(out)
    return quality


def _make_readable(out: Path) -> None:
    """safetensors writes 0600 files; shipped package data must be world-readable."""
    for name in (*_PARTS, "quality.json"):
        path = out / name
        for f in [path, *path.rglob("*")] if path.is_dir() else [path]:
            if f.is_file():
                f.chmod(0o644)
