"""Ray engine throughput: 1 vs 2 actors, and against the local engine, on one input.

The input is real layer-K residuals of the toy subject (tiled with small noise to
``--rows`` rows); the toy pair explains them in-process (greedy), AV and AR in each
actor, one torch thread per actor (``cpus_per_worker=1``). All three runs happen in
this process, against the baselines measured in this run, on one local Ray cluster
(``num_cpus`` = the machine's cores).

Rates: "steady" is rows per second once every actor is up (from the moment the last actor
to start finished its first block to the last block; the engine logs each block's finish
time), i.e. without the actors' start-up (loading torch and the
pair, ~10-20 s here), which a long job pays once; "end-to-end" is rows over the whole
call, start-up included. The local engine runs in this process (the pair loaded before),
its rate over the whole call: with 1 torch thread (the actors' setting), and with torch's
default threads on the first ``--local-default-rows`` rows only (on a small, busy machine
the default threads can be many times slower).

    python bench/bench_ray.py [--rows 7680] [--batch-size 64] [--block-rows 512]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PYTHONPATH", str(REPO))

import numpy as np
import torch

from nla_lens import NLA, toy
from nla_lens.serving.jobs import explain_dataset

GOAL = 1.5  # 2 actors / 1 actor, steady rows/s


def residuals(n: int) -> np.ndarray:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ck = toy.checkpoints()
    tok = AutoTokenizer.from_pretrained(str(ck.subject))
    subject = AutoModelForCausalLM.from_pretrained(str(ck.subject), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(300)
    ids = torch.randint(20, len(tok), (25, 13), generator=g)
    ids[:, 0] = tok.bos_token_id
    with torch.inference_mode():
        hs = subject(input_ids=ids, output_hidden_states=True).hidden_states[3]
    base = hs[:, 1:].reshape(300, -1).numpy()
    reps = -(-n // len(base))
    tiled = np.concatenate([base] * reps)[:n]
    noise = np.random.default_rng(0).normal(0, 0.05, tiled.shape).astype(np.float32)
    return (tiled * (1 + noise)).astype(np.float32)


class BlockLog(logging.Handler):
    """Collects the engine's per-block records (logger ``nla_lens.jobs.ray``, DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.blocks: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        block = getattr(record, "nla_block", None)
        if block is not None:
            self.blocks.append(block)

    def __enter__(self) -> BlockLog:
        logger = logging.getLogger("nla_lens.jobs.ray")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("nla_lens.jobs.ray").removeHandler(self)

    def steady_rate(self) -> float:
        """Rows per second once every actor is up: from the moment the last actor to start
        finished its first block to the last block, counting the blocks finished in between."""
        firsts: dict[str, float] = {}
        for b in self.blocks:
            firsts[b["worker"]] = min(firsts.get(b["worker"], b["finished"]), b["finished"])
        t0 = max(firsts.values())
        later = [b for b in self.blocks if b["finished"] > t0]
        if len(later) < 2:
            return float("nan")
        return sum(b["rows"] for b in later) / (max(b["finished"] for b in later) - t0)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=7680)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--block-rows", type=int, default=512)
    ap.add_argument("--local-default-rows", type=int, default=320)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    args = ap.parse_args()
    ck = toy.checkpoints()
    kw = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "progress": False}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        src = tmp / "in.npy"
        np.save(src, residuals(args.rows))

        nla = NLA.from_pretrained(ck.av, ck.ar, device="cpu")
        threads = torch.get_num_threads()
        head = tmp / "head.npy"
        np.save(head, np.load(src)[: args.local_default_rows])
        t0 = time.perf_counter()
        explain_dataset(head, tmp / "local-default.parquet", av=nla, **kw)
        local_default = args.local_default_rows / (time.perf_counter() - t0)
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        explain_dataset(src, tmp / "local.parquet", av=nla, **kw)
        local_rate = args.rows / (time.perf_counter() - t0)
        torch.set_num_threads(threads)
        del nla

        from nla_lens.serving.ray_engine.engine import init_ray

        cores = os.cpu_count() or 2
        init_ray(None, num_cpus=cores)
        import ray

        results = {}
        try:
            for workers in (1, 2):
                out = tmp / f"ray{workers}.parquet"
                with BlockLog() as watch:
                    t0 = time.perf_counter()
                    explain_dataset(
                        src, out, av=ck.av, ar=ck.ar, engine="ray", workers=workers,
                        cpus_per_worker=1.0, block_rows=args.block_rows, **kw,
                    )  # fmt: skip
                    wall = time.perf_counter() - t0
                actors = len({b["worker"] for b in watch.blocks})
                per_block = sum(b["seconds"] for b in watch.blocks) / max(1, len(watch.blocks))
                results[workers] = (watch.steady_rate(), args.rows / wall, wall, actors, per_block)
        finally:
            ray.shutdown()
        import pyarrow.parquet as pq

        same = [
            pq.read_table(tmp / f, columns=["raw"]).column(0).to_pylist()
            for f in ("local.parquet", "ray1.parquet", "ray2.parquet")
        ]
        identical = same[0] == same[1] == same[2]

    print(
        f"bench_ray: {args.rows} toy residuals, batch_size={args.batch_size}, block_rows={args.block_rows}, "
        f"max_new_tokens={args.max_new_tokens}, greedy; {cores} cores; toy pair in-process in each actor "
        f"(1 torch thread per actor); load average now {os.getloadavg()[0]:.1f} (other processes share the cores)"
    )
    print(
        f"{'engine':<22} {'steady rows/s':>14} {'end-to-end rows/s':>18} {'wall s':>8}  (s per block in an actor)"
    )
    print(
        f"{'local, 1 thread':<22} {local_rate:14.1f} {local_rate:18.1f} {args.rows / local_rate:8.1f}"
    )
    print(
        f"{f'local, {threads} threads':<22} {local_default:14.1f} {local_default:18.1f} "
        f"{args.local_default_rows / local_default:8.1f}  (first {args.local_default_rows} rows)"
    )
    for w, (steady, e2e, wall, actors, per_block) in results.items():
        print(
            f"{f'ray, {w} actor(s)':<22} {steady:14.1f} {e2e:18.1f} {wall:8.1f}  ({actors} did blocks; "
            f"{per_block:.2f} s per block)"
        )
    print(f"same explanations in all three: {identical}")
    r21 = results[2][0] / results[1][0]
    print(f"ratio={r21:.2f} name=ray_2_actors_vs_1_steady goal>={GOAL}")
    print(
        f"ratio={results[1][0] / local_rate:.2f} name=ray_1_actor_steady_vs_local_1_thread (no goal)"
    )
    print(
        f"ratio={results[2][0] / local_rate:.2f} name=ray_2_actors_steady_vs_local_1_thread (no goal)"
    )
    print(
        f"ratio={results[2][1] / local_rate:.2f} name=ray_2_actors_end_to_end_vs_local_1_thread (no goal)"
    )
    print(
        f"ratio={results[2][0] / local_default:.2f} name=ray_2_actors_steady_vs_local_default_threads (no goal)"
    )
    return 0 if identical and r21 >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
