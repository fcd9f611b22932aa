"""Best-of-k cost: k sampled explanations per vector, decoded in one batch and all scored
by the AR, against one greedy (scored) explanation per vector, on the toy pair.

Both paths are timed back to back in this run on the same vectors; the printed
ratio is best-of-k time / greedy time (goal: at most 2x for k=4).

    python bench/bench_best_of_k.py [--n 32] [--k 4] [--max-new-tokens 32] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch
from bench_av import toy_vectors

from nla_lens import NLA, toy

GOAL = 2.0  # best-of-k time / greedy time, at most


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    ck = toy.checkpoints()
    nla = NLA.from_pretrained(ck.av, ck.ar, device="cpu", dtype=torch.float32)
    vectors = toy_vectors(ck, nla.layer, args.n)
    common = {
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.n * args.k,
        "progress": False,
    }
    nla.explain(vectors[:2], **common)  # warm-up
    nla.explain(vectors[:2], samples=args.k, seed=0, select="best", **common)
    t_greedy, t_best = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        greedy = nla.explain(vectors, **common)
        t_greedy.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        best = nla.explain(vectors, samples=args.k, seed=r, select="best", **common)
        t_best.append(time.perf_counter() - t0)
    ratio = statistics.median(b / g for b, g in zip(t_best, t_greedy, strict=True))
    mean = statistics.fmean
    print(f"bench_best_of_k: toy pair (d={nla.d_model}), {args.n} vectors, k={args.k}, "
          f"max_new_tokens={args.max_new_tokens}, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'path':<44} {'seconds':>8} {'mean fve_nrm':>13}")
    print(f"{'greedy, one explanation per vector (scored)':<44} {statistics.median(t_greedy):8.2f} "
          f"{mean(e.fve_nrm or 0.0 for e in greedy):13.3f}")  # fmt: skip
    print(f"{f'best-of-{args.k} (one batch, all {args.k} scored)':<44} {statistics.median(t_best):8.2f} "
          f"{mean(e.fve_nrm or 0.0 for e in best):13.3f}")  # fmt: skip
    print(f"ratio best-of-{args.k} / greedy: {ratio:.2f}x (goal <= {GOAL:.1f}x)")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
