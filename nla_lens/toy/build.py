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
from torch import nn
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

from .cards import write_card, write_sidecar
from .recipe import AVPrompt, av_prompt, extract_explanation, greedy_explain, mse_nrm, reconstruct
from .subject import (
    D_MODEL,
    EXTRACTION_LAYER,
    NUM_LAYERS,
    Residuals,
    build_multimodal,
    build_subject,
    sample_chat_residuals,
    sample_residuals,
)
from .tokenizer import build_tokenizer, content_token_ids
from .train import TrainConfig, explanation_for, make_ar, make_av, train_ar, train_av

__all__ = ["BuildConfig", "Quality", "build", "build_base", "evaluate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    seq_len: int = 32
    train_sequences: int = 2048
    heldout_sequences: int = 1000
    chat_train_sequences: int = 2048
    chat_heldout_sequences: int = 128
    chat_max_new_tokens: int = 12
    av: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=2e-3, seed=11)
    )
    ar: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=700, batch_size=64, lr=3e-3, seed=12)
    )


@dataclass(frozen=True)
class Quality:
    """Round-trip figures on held-out residuals (the toy's published baseline).

    ``accuracy`` .. ``n``: random content sequences after BOS, one position >= 2
    each. ``chat_*``: every position (BOS, template and special tokens included)
    of held-out chat-formatted conversations: the fraction of greedy decodes that
    close ``</explanation>`` within ``chat_max_new_tokens`` new tokens, and the
    fraction that name the token exactly.
    """

    accuracy: float
    fve_nrm: float
    mse_nrm: float
    cos: float
    baseline_var: float
    n: int
    chat_terminated: float
    chat_accuracy: float
    chat_max_new_tokens: int
    chat_n: int


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


def build_base(out: Path, seed: int = 0) -> tuple[PreTrainedTokenizerFast, Gemma3ForCausalLM]:
    """Tokenizer, subject and multimodal subject (no training); saved under ``out``."""
    with _deterministic():
        tokenizer = build_tokenizer()
        subject = build_subject(tokenizer, seed)
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


def _concat(*parts: Residuals) -> Residuals:
    return Residuals(
        torch.cat([p.vectors for p in parts]),
        torch.cat([p.tokens for p in parts]),
        torch.cat([p.positions for p in parts]),
    )


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
    chat_max_new_tokens: int = 12,
) -> Quality:
    """Greedy AV decode -> explanation -> AR -> normalised MSE against the original vectors
    on ``held``; termination and accuracy of the AV on every position of ``chat``."""
    terminated, chat_accuracy = _chat_figures(
        av, tokenizer, prompt, chat, injection_scale, chat_max_new_tokens
    )
    texts = greedy_explain(av, tokenizer, prompt, held.vectors, injection_scale)
    explanations = [extract_explanation(t) for t in texts]
    truth = [explanation_for(tokenizer, int(w)) for w in held.tokens.tolist()]
    accuracy = sum(e == t for e, t in zip(explanations, truth, strict=True)) / len(truth)
    pred = reconstruct(ar, head, tokenizer, explanations)
    mse = float(mse_nrm(pred, held.vectors, mse_scale).mean())
    cos = float(nn.functional.cosine_similarity(pred, held.vectors, dim=-1).mean())
    v_n = held.vectors * (mse_scale / held.vectors.norm(dim=-1, keepdim=True))
    baseline = float(((v_n - v_n.mean(dim=0)) ** 2).mean())
    return Quality(
        accuracy=round(accuracy, 4),
        fve_nrm=round(1.0 - mse / baseline, 4),
        mse_nrm=round(mse, 4),
        cos=round(cos, 4),
        baseline_var=round(baseline, 4),
        n=len(truth),
        chat_terminated=round(terminated, 4),
        chat_accuracy=round(chat_accuracy, 4),
        chat_max_new_tokens=chat_max_new_tokens,
        chat_n=len(chat.tokens),
    )


def _chat_figures(
    av: Gemma3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompt: AVPrompt,
    chat: Residuals,
    injection_scale: float,
    max_new_tokens: int,
) -> tuple[float, float]:
    """(fraction of decodes closing ``</explanation>``, fraction naming the token exactly)."""
    texts = greedy_explain(
        av, tokenizer, prompt, chat.vectors, injection_scale, max_new_tokens=max_new_tokens
    )
    truth = [explanation_for(tokenizer, int(w)) for w in chat.tokens.tolist()]
    closed = ["</explanation>" in t for t in texts]
    named = [
        c and extract_explanation(t) == w for t, w, c in zip(texts, truth, closed, strict=True)
    ]
    if not all(closed):
        missed = sorted({w for w, c in zip(truth, closed, strict=True) if not c})
        log.warning("chat decodes left open for: %s", ", ".join(missed[:10]))
    return sum(closed) / len(texts), sum(named) / len(texts)


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
    with _deterministic():
        log.info("tokenizer and subject")
        tokenizer, subject = build_base(out, cfg.seed)
        prompt = av_prompt(tokenizer)
        mse_scale = math.sqrt(D_MODEL)

        log.info("sampling training residuals")
        content = _residuals(
            subject, tokenizer, cfg.train_sequences, cfg.seq_len, cfg.seed + 2, None, 1
        )
        injection_scale = round(float(content.vectors.norm(dim=-1).mean()), 2)
        chat = _chat_residuals(subject, tokenizer, cfg.chat_train_sequences, cfg.seed + 4)
        data = _concat(content, chat)
        log.info(
            "%d residuals (%d from chats), injection_scale %.2f",
            len(data.tokens), len(chat.tokens), injection_scale,
        )  # fmt: skip

        log.info("training the AV")
        av = make_av(subject)
        train_av(av, tokenizer, prompt, data, injection_scale, cfg.av)
        av.eval()
        _save(av, tokenizer, out / "av")
        write_sidecar(
            out / "av", role="av", tokenizer=tokenizer, prompt=prompt, d_model=D_MODEL,
            layer=EXTRACTION_LAYER, injection_scale=injection_scale, mse_scale=mse_scale, train=cfg.av,
        )  # fmt: skip
        write_card(out / "av", "av", d_model=D_MODEL, n_layers=NUM_LAYERS, layer=EXTRACTION_LAYER)

        log.info("training the AR")
        ar, head = make_ar(subject, cfg.ar.seed)
        train_ar(ar, head, tokenizer, data, mse_scale, cfg.ar)
        ar.eval()
        _save_ar(ar, head, subject, tokenizer, out / "ar")
        write_sidecar(
            out / "ar", role="ar", tokenizer=tokenizer, prompt=prompt, d_model=D_MODEL,
            layer=EXTRACTION_LAYER, injection_scale=None, mse_scale=mse_scale, train=cfg.ar,
        )  # fmt: skip
        write_card(
            out / "ar", "ar", d_model=D_MODEL, n_layers=EXTRACTION_LAYER + 1, layer=EXTRACTION_LAYER
        )

        log.info("measuring the round trip on held-out residuals")
        held = _residuals(subject, tokenizer, cfg.heldout_sequences, cfg.seq_len, cfg.seed + 3, 1)
        held_chat = _chat_residuals(subject, tokenizer, cfg.chat_heldout_sequences, cfg.seed + 5)
        quality = evaluate(
            av, ar, head, tokenizer, prompt, held, injection_scale, mse_scale,
            held_chat, cfg.chat_max_new_tokens,
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
