"""``nla-lens demo``: explain a short text's residuals with the shipped toy pair, offline."""

from __future__ import annotations

import argparse
import time
from typing import Any

DEFAULT_TEXT = "the cat sat on the mat near the old red house"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="explain a short text with the offline toy pair", description=__doc__)
    p.add_argument("--text", default=DEFAULT_TEXT, help="text for the toy subject to read")
    p.add_argument("--positions", type=int, nargs="*", default=None, help="token positions (default: all from 2 on)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..pair import NLA
    from ..toy import checkpoints

    t0 = time.perf_counter()
    ck = checkpoints()
    nla = NLA.from_pretrained(ck.av, ck.ar, device="cpu")
    tok = AutoTokenizer.from_pretrained(str(ck.subject))
    subject = AutoModelForCausalLM.from_pretrained(str(ck.subject), dtype=torch.float32).eval()
    enc = tok(args.text, return_tensors="pt", add_special_tokens=True)
    with torch.inference_mode():
        hs = subject(**enc, output_hidden_states=True).hidden_states[nla.layer + 1][0]
    ids = enc["input_ids"][0].tolist()
    positions = args.positions if args.positions else list(range(2, len(ids)))
    exps = nla.explain(hs[positions])
    print(f"nla-lens demo: toy pair, layer {nla.layer}, d_model {nla.d_model}, text {args.text!r}")
    print(f"{'pos':>4}  {'token':<12} {'cos':>6} {'fve_nrm':>8}  explanation")
    for p, e in zip(positions, exps, strict=True):
        token = tok.convert_ids_to_tokens(ids[p])
        fve = "n/a" if e.fve_nrm is None else f"{e.fve_nrm:8.3f}"
        print(f"{p:>4}  {token:<12} {e.cos:6.3f} {fve:>8}  {e.text}")
    print(f"({len(positions)} positions in {time.perf_counter() - t0:.1f}s)")
    return 0
