"""Streaming explanations: how soon the first segment of every row arrives, and what
streaming to the end costs, against one ``nla.explain`` call, on the toy pair.

Both paths run back to back in this run on the same vectors (greedy), as pairs whose order
alternates (explain first in even repeats, streaming first in odd ones), so a machine that
speeds up or slows down during a pair biases neither side. Printed ratios, medians over
the pairs:

* first segment: the time at which the LAST row's first ``SegmentScored`` arrived,
  over the whole ``explain`` call's time (goal: at most 0.40);
* total: the time to drain ``explain_stream`` to its last ``RowFinished``, over the
  ``explain`` call's time (goal: at most 1.2x).

A row's first segment is its first line; a one-line explanation's first segment is
also its last, and waits for the end (so the first ratio needs multi-line explanations).

The default vectors are the toy's random-text residuals (as bench_av's); ``--vectors task``
takes one position of each of ``toy.tasks()``'s clean prompts instead, whose explanations
differ far more from row to row (line 1 names the kind of sentence and how many facts so
far, or the animal asked about; the facts themselves close line 2).

    python bench/bench_stream.py [--n 32] [--max-new-tokens 200] [--repeats 9] [--vectors task]
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

from nla_lens import NLA, RowFinished, SegmentScored, toy

FIRST_GOAL = 0.40  # last row's first segment / whole explain, at most
TOTAL_GOAL = 1.2  # streaming to the end / explain, at most


def task_vectors(ck: toy.ToyCheckpoints, layer: int, n: int) -> torch.Tensor:
    """Layer-K residuals at one seeded position (>= 1) of each of n toy.tasks() prompts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ck.subject))
    subject = AutoModelForCausalLM.from_pretrained(str(ck.subject), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    out = []
    with torch.inference_mode():
        for pair in toy.tasks(n):
            ids = tok(pair.clean, return_tensors="pt")["input_ids"]
            hs = subject(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
            out.append(hs[0, int(torch.randint(1, ids.shape[1], (1,), generator=g))])
    return torch.stack(out)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--vectors", choices=("random", "task"), default="random")
    args = ap.parse_args()
    ck = toy.checkpoints()
    nla = NLA.from_pretrained(ck.av, ck.ar, device="cpu", dtype=torch.float32)
    make = toy_vectors if args.vectors == "random" else task_vectors
    vectors = make(ck, nla.layer, args.n)
    common = {"max_new_tokens": args.max_new_tokens, "batch_size": args.n}
    nla.explain(vectors[:2], progress=False, **common)  # warm-up
    list(nla.explain_stream(vectors[:2], **common))
    t_explain, t_first, t_total = [], [], []
    segments = []

    def run_explain() -> list:
        t0 = time.perf_counter()
        whole = nla.explain(vectors, progress=False, **common)
        t_explain.append(time.perf_counter() - t0)
        return list(whole)

    def run_stream() -> dict:
        first: dict[int, float] = {}
        done = {}
        t0 = time.perf_counter()
        for e in nla.explain_stream(vectors, **common):
            if isinstance(e, SegmentScored) and e.row not in first:
                first[e.row] = time.perf_counter() - t0
            elif isinstance(e, RowFinished):
                done[e.row] = e.explanation
        t_total.append(time.perf_counter() - t0)
        t_first.append(max(first.values()) if len(first) == args.n else float("inf"))
        return done

    for r in range(args.repeats):
        if r % 2 == 0:
            whole, done = run_explain(), run_stream()
        else:
            done, whole = run_stream(), run_explain()
        assert [done[i] for i in range(args.n)] == whole, "streaming must equal explain"
        segments = [len(e.text.splitlines()) for e in whole]
    first_ratio = statistics.median(f / w for f, w in zip(t_first, t_explain, strict=True))
    total_ratio = statistics.median(t / w for t, w in zip(t_total, t_explain, strict=True))
    med = statistics.median
    print(f"bench_stream: toy pair (d={nla.d_model}), {args.n} {args.vectors} vectors, greedy, "
          f"max_new_tokens={args.max_new_tokens}, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads, {statistics.fmean(segments):.1f} lines per explanation")  # fmt: skip
    # each distinct text runs through the AR once (Reconstructor.reconstruct): say how much
    # of each prefix call that leaves, since it is part of what the ratios measure
    lines = [e.text.splitlines() for e in whole]
    distinct = [len({"\n".join(ls[:j]) for ls in lines}) for j in (1, 2)]
    print(f"distinct AR prefixes among the {args.n} rows: line 1 {distinct[0]}, lines 1-2 "
          f"{distinct[1]}, whole {len({e.text for e in whole})} (each scored once)")  # fmt: skip
    print(f"{'path':<52} {'seconds':>8}")
    print(f"{'explain (whole call)':<52} {med(t_explain):8.3f}")
    print(f"{'explain_stream: first segment of every row':<52} {med(t_first):8.3f}")
    print(f"{'explain_stream: to the last RowFinished':<52} {med(t_total):8.3f}")
    verdict = {True: "met", False: "MISSED"}
    print(f"ratio first segment / explain: {first_ratio:.3f} "
          f"(goal <= {FIRST_GOAL:.2f}: {verdict[first_ratio <= FIRST_GOAL]})")  # fmt: skip
    print(f"ratio streaming total / explain: {total_ratio:.3f}x "
          f"(goal <= {TOTAL_GOAL:.1f}x: {verdict[total_ratio <= TOTAL_GOAL]})")  # fmt: skip
    return 0 if first_ratio <= FIRST_GOAL and total_ratio <= TOTAL_GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
