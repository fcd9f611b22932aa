"""What the toy subject does on its task, measured: accuracy, activation patching,
and steering with the toy AR (the builder's own figures for ``quality.json``).

Interventions are forward hooks on a decoder block of the Hugging Face subject
(batch 1 or equal-length prompts, no padding), replacing or adding to its output
at one absolute position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast

from .describe import describe_next
from .reading import read_explanation
from .recall import PATCH_LAYER, TaskPair
from .recipe import AVPrompt, extract_explanation, greedy_explain, reconstruct
from .subject import EXTRACTION_LAYER

__all__ = ["WorldFigures", "block_edit", "edit_next", "measure_world"]

STEER_ALPHA = 1.0  # alpha * ||v|| = the typical residual norm (the AV's injection scale)


@contextmanager
def block_edit(
    model: Gemma3ForCausalLM, layer: int, fn: Callable[[Tensor], Tensor]
) -> Iterator[None]:
    """Replace the output of decoder block ``layer`` by ``fn(output)`` inside the block."""

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def edit_next(explanation: str, word: str) -> str:
    """The explanation with line 3's continuation replaced by ``word`` (lines 1-2 kept)."""
    reading = read_explanation(explanation)
    kept = [
        line for line in reading.lines if not line.startswith(("token", "last piece", "the token"))
    ]
    token = f'token "{reading.token}"; ' if reading.token is not None else ""
    return "\n".join([*kept, token + describe_next(word)])


@dataclass(frozen=True)
class WorldFigures:
    task_accuracy: float
    patch_layer: int
    patch_recovery: float
    patch_recovery_control: float
    steer_alpha: float
    steer_success: float
    steer_full_success: float
    steer_edit_success: float
    task_n: int


def _ids(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> Tensor:
    return torch.tensor([tokenizer(t)["input_ids"] for t in texts])


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True)


@torch.no_grad()
def measure_world(
    subject: Gemma3ForCausalLM,
    av: Gemma3ForCausalLM,
    ar: Gemma3ForCausalLM,
    head: nn.Linear,
    tokenizer: PreTrainedTokenizerFast,
    prompt: AVPrompt,
    injection_scale: float,
    pairs: list[TaskPair],
) -> WorldFigures:
    """Task accuracy, patching recovery and steering success over ``pairs`` (one at a time)."""
    right = 0
    rec: list[float] = []
    ctl: list[float] = []
    steer: list[bool] = []
    steer_full: list[bool] = []
    edit: list[bool] = []
    for p in pairs:
        clean, corrupt = _ids(tokenizer, [p.clean]), _ids(tokenizer, [p.corrupted])
        c_out = subject(input_ids=clean, output_hidden_states=True)
        k_out = subject(input_ids=corrupt, output_hidden_states=True)
        right += int(c_out.logits[0, -1].argmax()) == p.clean_answer_id

        def diff(logits: Tensor, p: TaskPair = p) -> float:
            return float(logits[p.clean_answer_id] - logits[p.corrupted_answer_id])

        d_clean, d_corrupt = diff(c_out.logits[0, -1]), diff(k_out.logits[0, -1])
        for pos, out in ((p.position, rec), (p.control_position, ctl)):
            source = k_out.hidden_states[PATCH_LAYER + 1][0, pos]

            def patch(h: Tensor, pos: int = pos, source: Tensor = source) -> Tensor:
                h = h.clone()
                h[0, pos] = source
                return h

            with block_edit(subject, PATCH_LAYER, patch):
                d = diff(subject(input_ids=clean).logits[0, -1])
            out.append((d_clean - d) / (d_clean - d_corrupt))

        # Steering toward the corrupted answer (a place the clean prompt never mentions).
        h = c_out.hidden_states[EXTRACTION_LAYER + 1][0, -1]
        text = extract_explanation(
            greedy_explain(av, tokenizer, prompt, h[None], injection_scale)[0]
        )
        target = p.corrupted_answer
        edited = edit_next(text, target)
        descriptions = [describe_next(target), edited, text]
        pred = reconstruct(ar, head, tokenizer, [*descriptions, edited])
        vectors = [
            _unit(pred[0]) * injection_scale,
            _unit(pred[1]) * injection_scale,
            (_unit(pred[3]) - _unit(pred[2])) * h.norm(),
        ]
        outs: tuple[list[bool], ...] = (steer, steer_full, edit)
        for vec, hits in zip(vectors, outs, strict=True):

            def add(x: Tensor, vec: Tensor = vec) -> Tensor:
                x = x.clone()
                x[0, -1] += STEER_ALPHA * vec
                return x

            with block_edit(subject, EXTRACTION_LAYER, add):
                got = int(subject(input_ids=clean).logits[0, -1].argmax())
            hits.append(got == p.corrupted_answer_id)
    n = len(pairs)
    return WorldFigures(
        task_accuracy=round(right / n, 4),
        patch_layer=PATCH_LAYER,
        patch_recovery=round(sum(rec) / n, 4),
        patch_recovery_control=round(sum(ctl) / n, 4),
        steer_alpha=STEER_ALPHA,
        steer_success=round(sum(steer) / n, 4),
        steer_full_success=round(sum(steer_full) / n, 4),
        steer_edit_success=round(sum(edit) / n, 4),
        task_n=n,
    )
