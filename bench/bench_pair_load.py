"""Loading a released-format pair vs parsing its tokenizer once (goal: at most 1.5x).

The pair is the Gemma-3-12B skeleton of tests/released (the real 33 MB Gemma-3 tokenizer,
the released sidecars, tiny random weights), so the time is the tokenizer's and the
checks', not the weights'. The baseline, timed in the same run, is one
``AutoTokenizer.from_pretrained`` of the same files. Before nla_lens shared one parse per
content hash, the AV and the AR each parsed it (about 2-3x).

    python bench/bench_pair_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import warnings
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch
from transformers import AutoTokenizer

from nla_lens import NLA
from nla_lens.core import loading
from tests.released.skeleton import build_skeleton

GOAL = 1.5  # pair load / one tokenizer load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        sk = build_skeleton("gemma3-12b-L32", Path(tmp))
        one, pair = [], []
        for _ in range(args.repeats):
            gc.collect()
            t = time.perf_counter()
            AutoTokenizer.from_pretrained(str(sk.av))
            one.append(time.perf_counter() - t)
            loading._TOKENIZERS = weakref.WeakValueDictionary()  # a cold load each time
            gc.collect()
            t = time.perf_counter()
            nla = NLA.from_pretrained(sk.av, sk.ar, device="cpu")
            pair.append(time.perf_counter() - t)
            shared = nla.av.tokenizer is nla.ar.tokenizer
            del nla
    a, b = statistics.median(one), statistics.median(pair)
    ratio = b / a
    print(f"one tokenizer load: {a:.2f}s   AV+AR pair load: {b:.2f}s   (median of {args.repeats})")
    print(
        f"ratio pair / tokenizer = {ratio:.2f}x (goal <= {GOAL}x); AV and AR share one tokenizer: {shared}"
    )
    return 0 if ratio <= GOAL and shared else 1


if __name__ == "__main__":
    sys.exit(main())
