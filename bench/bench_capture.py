"""Capture overhead: ``capture_residual`` (forward hook on block K) vs a plain forward.

A Gemma-3 somewhat larger than the toy (so timings are not noise-dominated)
is built on the fly with random weights. Both paths run the same token batch;
runs are interleaved (A B A B ...) and the median of the repeats is compared.

    python bench/bench_capture.py [--repeats 15] [--batch 8] [--seq 256]
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
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from nla_lens.subjects import capture_residual

GOAL = 1.10  # capture time / plain forward time, at most


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: least sensitive to other load)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, sliding_window=128, max_position_embeddings=1024,
    )  # fmt: skip
    model = Gemma3ForCausalLM(cfg).eval()
    ids = torch.randint(10, cfg.vocab_size, (args.batch, args.seq))
    ids[:, 0] = 2  # one BOS per row
    mask = torch.ones_like(ids)
    inputs = {"input_ids": ids, "attention_mask": mask}

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    def capture() -> torch.Tensor:
        return capture_residual(model, inputs, args.layer).residual

    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[
            args.layer + 1
        ]
    if not torch.allclose(capture(), want, atol=1e-5, rtol=1e-5):
        print("capture_residual disagrees with hidden_states[K + 1]")
        return 1
    for _ in range(2):  # warm-up
        plain(), capture()
    t_plain, t_cap = [], []
    for _ in range(args.repeats):
        for fn, ts in ((plain, t_plain), (capture, t_cap)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    mp, mc = statistics.median(t_plain), statistics.median(t_cap)
    # Each capture run is compared with the plain run just before it, so slow drift
    # in machine load cancels; the median of those per-pair ratios is the figure.
    ratio = statistics.median(c / p for c, p in zip(t_cap, t_plain, strict=True))
    print(f"bench_capture: Gemma-3 d=256, 8 layers, vocab 4096, batch {args.batch} x {args.seq} tokens, "
          f"layer {args.layer}, {args.repeats} interleaved pairs, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'path':<28} {'median ms':>10} {'min ms':>8}")
    print(f"{'plain forward':<28} {mp * 1e3:10.1f} {min(t_plain) * 1e3:8.1f}")
    print(f"{'capture_residual (hook)':<28} {mc * 1e3:10.1f} {min(t_cap) * 1e3:8.1f}")
    print(f"ratio of medians {mc / mp:.3f}; median of per-pair ratios below")
    print(f"ratio={ratio:.3f} name=capture_vs_plain_forward goal<={GOAL}")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
