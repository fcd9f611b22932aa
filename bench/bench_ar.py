"""AR throughput: reconstructing 64 explanations in batches vs one at a time.

The baseline is an independent one-at-a-time loop over the same AR: for each
explanation, format the AR prompt, tokenize with special tokens, forward the
truncated backbone, read the last token and apply the value head. Both are
timed in this run; the reconstructions must agree.

    python bench/bench_ar.py [--n 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from nla_lens import Reconstructor, toy

GOAL = 5.0  # batched / one-at-a-time throughput


def explanations(ar: Reconstructor, n: int) -> list[str]:
    """Toy-style explanations of varied lengths (the toy AV's format, sometimes longer)."""
    vocab = [t for t in ar.tokenizer.get_vocab() if t.isalpha() and t.islower()]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        words = [vocab[int(j)] for j in torch.randint(len(vocab), (1 + i % 7,), generator=g)]
        out.append("token: " + " ".join(words))
    return out


@torch.inference_mode()
def one_at_a_time(ar: Reconstructor, texts: list[str]) -> torch.Tensor:
    rows = []
    for t in texts:
        ids = ar.tokenizer(
            ar.template.format(explanation=t.strip()), add_special_tokens=True, return_tensors="pt"
        )["input_ids"]
        hidden = ar.backbone(input_ids=ids, use_cache=False).last_hidden_state
        rows.append(ar.value_head(hidden[0, -1]).float())
    return torch.stack(rows)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ar = Reconstructor.from_pretrained(toy.checkpoints().ar, device="cpu", dtype=torch.float32)
    texts = explanations(ar, args.n)
    ar.reconstruct(texts[:2]), one_at_a_time(ar, texts[:2])  # warm-up
    t_batch, t_loop = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        batched = ar.reconstruct(texts, batch_size=args.n, progress=False)
        t_batch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        single = one_at_a_time(ar, texts)
        t_loop.append(time.perf_counter() - t0)
    err = float((batched - single).abs().max() / single.abs().max())
    mb, ml = statistics.median(t_batch), statistics.median(t_loop)
    ratio = statistics.median(lo / b for lo, b in zip(t_loop, t_batch, strict=True))  # per repeat
    print(f"bench_ar: toy AR (d={ar.d_model}), {args.n} explanations of 1-7 words, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'path':<36} {'ms':>8} {'texts/s':>9}")
    print(f"{'one at a time':<36} {ml * 1e3:8.1f} {args.n / ml:9.0f}")
    print(f"{'Reconstructor.reconstruct (batched)':<36} {mb * 1e3:8.1f} {args.n / mb:9.0f}")
    print(f"max relative difference batched vs single: {err:.2e}; ratio of medians {ml / mb:.2f}")
    print(f"ratio={ratio:.2f} name=ar_batched_vs_one_at_a_time goal>={GOAL}")
    return 0 if ratio >= GOAL and err < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
