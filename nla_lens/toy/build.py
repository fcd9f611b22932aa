"""Build the toy NLA pair: subject (plain + multimodal), AV, AR, quality figures.

Deterministic: every random draw comes from a seeded generator, data order is
fixed, the sidecars hold no timestamps, and the thread counts are fixed (two where
two give the bytes of one: the subject, the AV once the AR is done, the measuring).
``python -m nla_lens.toy build`` (``--parts av,ar`` retrains the pair on the saved
subject; ``--compare-to DIR`` checks the bytes against another build). The bytes are
the same run to run on one kind of CPU, not across kinds: PyTorch's kernels round by
instruction set (ATen's AVX2 or AVX-512 loops, MKL's GEMM paths) and training
amplifies the difference (README, "Building").
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

from .cards import write_card, write_sidecar
from .quality import Quality, evaluate
from .recall import TASK_SEED, make_pairs
from .recipe import av_prompt
from .residuals import (
    Residuals,
    chat_sequence,
    concat,
    random_sequences,
    read_residuals,
    subject_corpus,
    task_sequence_ids,
)
from .subject import D_MODEL, EXTRACTION_LAYER, NUM_LAYERS, build_multimodal, build_subject
from .targets import Targets
from .tokenizer import build_tokenizer, token_ids
from .train import TrainConfig, make_ar, make_av, train_ar, train_av, train_subject
from .world import measure_world

__all__ = [
    "BuildConfig", "Quality", "build", "build_base", "measure", "train_pair", "train_parallel",
]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    seq_len: int = 32
    train_sequences: int = 2048
    heldout_sequences: int = 600
    chat_train_sequences: int = 2048
    chat_heldout_sequences: int = 24
    task_train_sequences: int = 3000
    task_heldout_prompts: int = 32
    world_pairs: int = 64
    ar_next_only: float = 0.2
    subject_task: int = 20000
    subject_random: int = 4000
    subject_chat: int = 3000
    subject_swap: float = 0.25
    subject: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=2500, batch_size=64, lr=3e-3, warmup=100, seed=3)
    )
    av: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1600, batch_size=64, lr=3e-3, seed=11)
    )
    ar: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=3600, batch_size=64, lr=3e-3, seed=12)
    )


#: Threads of the measuring (the same quality.json on 1 or 2 threads for the shipped pair).
MEASURE_THREADS = 2
#: Threads of the subject's training: its steps give the same bytes on 1 or 2 threads
#: (checked by tests/test_toy_build.py on a short run, and by the full build giving the
#: shipped bytes), so the subject uses both cores while nothing else runs.
SUBJECT_THREADS = 2


def _usable(threads: int) -> int:
    """``threads``, but no more than the machine's cores (the same bytes either way: the
    counts used here give the bytes of one thread; more would only spin on one core)."""
    return max(1, min(threads, os.cpu_count() or 1))


@contextmanager
def _deterministic(threads: int = 1) -> Iterator[None]:
    """Deterministic kernels on ``threads`` threads, at most one per core (one by default:
    no OpenMP spin-wait collapse when the AV and the AR share the cores)."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(_usable(threads))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


_PARTS = ("subject", "subject_multimodal", "av", "ar")


def build_base(
    out: Path, seed: int = 0, cfg: BuildConfig | None = None, threads: int = SUBJECT_THREADS
) -> tuple[PreTrainedTokenizerFast, Gemma3ForCausalLM]:
    """Tokenizer, subject (trained on the toy task, random text and chats) and its
    multimodal twin; saved under ``out``. ``threads`` does not change the bytes."""
    cfg = cfg or BuildConfig(seed=seed)
    with _deterministic(threads):
        tokenizer = build_tokenizer()
        subject = build_subject(tokenizer, seed)
        corpus, queries = subject_corpus(
            tokenizer, n_task=cfg.subject_task, n_random=cfg.subject_random,
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


def _generic(subject, tokenizer, n: int, seq_len: int, seed: int, one_each: bool) -> Residuals:
    """Random sequences: every position >= 1, or one random position >= 2 of each."""
    gen = torch.Generator().manual_seed(seed)
    seqs = random_sequences(tokenizer, n, seq_len, gen)
    pick = None
    if one_each:
        pick = [[int(p)] for p in torch.randint(2, seq_len + 1, (n,), generator=gen)]
    else:
        pick = [list(range(1, seq_len + 1))] * n
    return read_residuals(subject, tokenizer, seqs, "random", pick=pick)


def _chats(subject, tokenizer, n: int, seed: int) -> Residuals:
    gen = torch.Generator().manual_seed(seed)
    return read_residuals(
        subject, tokenizer, [chat_sequence(tokenizer, gen) for _ in range(n)], "chat"
    )


def _tasks(subject, tokenizer, n: int, seed: int) -> Residuals:
    gen = torch.Generator().manual_seed(seed)
    return read_residuals(
        subject, tokenizer, [task_sequence_ids(tokenizer, gen) for _ in range(n)], "task"
    )


def heldout_task_prompts(tokenizer: PreTrainedTokenizerFast, n: int) -> list[list[int]]:
    """Token ids of the clean prompts of the first ``n`` :func:`nla_lens.toy.tasks` pairs."""
    return [token_ids(tokenizer(p.clean)["input_ids"]) for p in make_pairs(tokenizer, n, TASK_SEED)]


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
    build_base(out, cfg.seed, cfg)
    train_parallel(out, cfg)
    return measure(out, cfg)


#: Set in each training worker of :func:`train_parallel`: the AR worker sets it when the
#: AR is saved, and the AV then runs on :data:`AV_THREADS` threads (its steps give the
#: same bytes on one thread or two; the AR's do not, so it keeps one).
_AR_DONE: Any = None
AV_THREADS = 2


def _init_worker(ar_done: Any) -> None:
    global _AR_DONE
    _AR_DONE = ar_done


def _av_threads() -> int:
    """The AV's threads now: one while the AR trains beside it, then both cores."""
    return _usable(AV_THREADS) if _AR_DONE is None or _AR_DONE.is_set() else 1


def _train_one(out: Path, cfg: BuildConfig, part: str) -> str:
    """One part (``"av"`` or ``"ar"``) on the saved subject: the work of one process."""
    from transformers import AutoModelForCausalLM

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{part}] %(message)s")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out / "subject"))
    subject = AutoModelForCausalLM.from_pretrained(str(out / "subject"), dtype=torch.float32)
    train_pair(out, cfg, tokenizer, subject.eval(), (part,), av_threads=_av_threads)
    if part == "ar" and _AR_DONE is not None:
        _AR_DONE.set()
    return part


def train_parallel(out: Path, cfg: BuildConfig, parts: tuple[str, ...] = ("av", "ar")) -> None:
    """Train the AV and the AR at once, one single-threaded process each (the same bytes
    as one after the other: each samples the same seeded data from the saved subject);
    once the AR is saved the AV takes both cores (see :data:`AV_THREADS`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if len(parts) == 1:
        _train_one(out, cfg, parts[0])
        return
    ctx = multiprocessing.get_context("spawn")
    ar_done = ctx.Event()
    with ProcessPoolExecutor(
        len(parts), mp_context=ctx, initializer=_init_worker, initargs=(ar_done,)
    ) as pool:
        for done in pool.map(_train_one, [out] * len(parts), [cfg] * len(parts), parts):
            log.info("%s trained", done)


def train_pair(
    out: Path,
    cfg: BuildConfig,
    tokenizer: PreTrainedTokenizerFast,
    subject: Gemma3ForCausalLM,
    parts: tuple[str, ...] = ("av", "ar"),
    av_threads: Callable[[], int] | None = None,
) -> None:
    """Sample the subject's residuals, train and save the AV and/or the AR under ``out``
    (the AV on ``av_threads()`` threads, asked at every step; one by default)."""
    with _deterministic():
        prompt = av_prompt(tokenizer)
        mse_scale = math.sqrt(D_MODEL)
        targets = Targets(tokenizer)

        log.info("sampling training residuals")
        content = _generic(
            subject, tokenizer, cfg.train_sequences, cfg.seq_len, cfg.seed + 2, False
        )
        injection_scale = round(float(content.vectors.norm(dim=-1).mean()), 2)
        chat = _chats(subject, tokenizer, cfg.chat_train_sequences, cfg.seed + 4)
        task = _tasks(subject, tokenizer, cfg.task_train_sequences, cfg.seed + 7)
        data = concat(content, chat, task)
        log.info(
            "%d residuals (%d from chats, %d from the task, %d confident), injection_scale %.2f",
            len(data), len(chat), len(task), int((data.next_tokens >= 0).sum()), injection_scale,
        )  # fmt: skip

        if "av" in parts:
            log.info("training the AV")
            av = make_av(subject)
            train_av(av, targets, prompt, data, injection_scale, cfg.av, av_threads)
            torch.set_num_threads(1)  # the AR's steps need one thread for their bytes
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
            train_ar(ar, head, targets, data, mse_scale, cfg.ar, cfg.ar_next_only)
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


BASELINE_SOURCES = {
    "generic": "toy build: one random position (>= 2) of each of {n} held-out random sequences",
    "chat": "toy build: every position of {n} held-out random chats",
    "task": "toy build: every position of the clean prompts of nla_lens.toy.tasks() pairs ({n} positions)",
}


def load_saved(out: Path) -> tuple[Any, ...]:
    """(tokenizer, subject, av, ar with identity norm, value head, injection_scale, mse_scale)."""
    import yaml
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out / "subject"))
    models = [
        AutoModelForCausalLM.from_pretrained(str(out / n), dtype=torch.float32).eval()
        for n in ("subject", "av", "ar")
    ]
    models[2].model.norm = nn.Identity()
    head = nn.Linear(D_MODEL, D_MODEL, bias=False)
    head.load_state_dict(load_file(str(out / "ar" / "value_head.safetensors")))
    meta = yaml.safe_load((out / "av" / "nla_meta.yaml").read_text(encoding="utf-8"))
    extraction = meta["extraction"]
    return (
        tokenizer,
        *models,
        head,
        float(extraction["injection_scale"]),
        float(extraction["mse_scale"]),
    )


def measure(out: Path, cfg: BuildConfig | None = None, threads: int = MEASURE_THREADS) -> Quality:
    """Measure the checkpoints saved under ``out`` (as :func:`build` does after training)
    and write ``quality.json``."""
    cfg = cfg or BuildConfig()
    with _deterministic(threads):
        log.info("measuring the round trip on held-out residuals and the task")
        tokenizer, subject, av, ar, head, injection_scale, mse_scale = load_saved(out)
        prompt = av_prompt(tokenizer)
        held = _generic(subject, tokenizer, cfg.heldout_sequences, cfg.seq_len, cfg.seed + 3, True)
        held_chat = _chats(subject, tokenizer, cfg.chat_heldout_sequences, cfg.seed + 5)
        held_task = read_residuals(
            subject, tokenizer, heldout_task_prompts(tokenizer, cfg.task_heldout_prompts), "task"
        )
        world = measure_world(
            subject, av, ar, head, tokenizer, prompt, injection_scale,
            make_pairs(tokenizer, cfg.world_pairs),
        )  # fmt: skip
        sources = {
            "generic": BASELINE_SOURCES["generic"].format(n=len(held)),
            "chat": BASELINE_SOURCES["chat"].format(n=cfg.chat_heldout_sequences),
            "task": BASELINE_SOURCES["task"].format(n=len(held_task)),
        }
        quality = evaluate(
            av, ar, head, tokenizer, prompt, injection_scale, mse_scale,
            held, held_chat, held_task, world, sources,
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
