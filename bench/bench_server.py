"""Server client: concurrent requests vs one request at a time, against the loopback server.

The loopback server (tests/serving/loopback.py) decodes the toy AV (or a tiny
random Gemma-3 when the toy is not built) in-process and batches requests that
arrive together, as SGLang/vLLM's continuous batchers do. Both clients send
the same prompts; the ratio is measured in this run, against the sequential
baseline measured in this run.

    python bench/bench_server.py [--n 64] [--max-new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from nla_lens.backends.sglang import SGLangBackend
from nla_lens.backends.vllm import VLLMServerBackend
from nla_lens.core.backend import Sampling
from tests.serving.loopback import LoopbackServer

GOAL = 4.0  # concurrent / sequential throughput, on the decode-bound model


def models(tmp: Path) -> list[tuple[str, Path, bool]]:
    """(label, checkpoint, goal applies). The tiny random Gemma-3 decodes every one of
    max_new_tokens, as real explanations run to 50-200 tokens; the toy AV stops after
    ~6 tokens, where HTTP and JSON overhead dominate (reported, no goal)."""
    from tests.helpers import build_tiny_gemma3

    out = [("tiny Gemma-3, full decode", build_tiny_gemma3(tmp / "tiny"), True)]
    try:
        from nla_lens import toy

        out.append(("toy AV, ~6-token decode", toy.checkpoints().av, False))
    except Exception:
        pass
    return out


def bench(
    model_dir: Path, n: int, max_new_tokens: int, repeats: int
) -> list[tuple[str, float, float, bool]]:
    torch.manual_seed(0)
    with LoopbackServer(model_dir) as srv:
        emb = srv.decoder.model.get_input_embeddings()
        with torch.no_grad():
            prompts = emb(torch.randint(9, emb.weight.shape[0], (n, 100))).clone()
        prompts[:, 50] = torch.randn(n, prompts.shape[-1]) * 8.0
        params = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)
        rows = []
        for name, make in (
            ("sglang", lambda k: SGLangBackend(srv.url, max_in_flight=k)),
            ("vllm", lambda k: VLLMServerBackend(srv.url, "m", max_in_flight=k)),
        ):
            make(1).generate(prompts[:2], params)  # warm-up
            times, outs = {}, {}
            for k in (1, n):
                ts = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    outs[k] = make(k).generate(prompts, params)
                    ts.append(time.perf_counter() - t0)
                times[k] = statistics.median(ts)
            same = [o.text for o in outs[1]] == [o.text for o in outs[n]]
            rows.append((name, times[1], times[n], same))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model_dir, goal in models(Path(tmp)):
            for client, seq, conc, same in bench(
                model_dir, args.n, args.max_new_tokens, args.repeats
            ):
                table.append((label, client, seq, conc, seq / conc, same, goal))
    print(
        f"bench_server: {args.n} prompts x 100 embedding rows, max_new_tokens={args.max_new_tokens}, greedy, "
        f"median of {args.repeats}; sequential = max_in_flight 1, concurrent = max_in_flight {args.n}; "
        "the loopback server batches concurrent requests"
    )
    print(
        f"{'model':<26} {'client':<7} {'sequential s':>13} {'concurrent s':>13} {'speedup':>8} {'same out':>9}"
    )
    for label, client, seq, conc, ratio, same, _ in table:
        print(f"{label:<26} {client:<7} {seq:13.3f} {conc:13.3f} {ratio:7.1f}x {same!s:>9}")
    ok = True
    for label, client, _, _, ratio, same, goal in table:
        tag = label.split(",")[0].split()[0]
        print(
            f"ratio={ratio:.2f} name=server_{client}_{tag}_concurrent_vs_sequential "
            + (f"goal>={GOAL}" if goal else "(no goal)")
        )
        ok &= same and (ratio >= GOAL or not goal)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
