"""``nla-lens demo``: explain a short text's residuals with the shipped toy pair, offline."""

from __future__ import annotations

import argparse
import time
from typing import Any

DEFAULT_TEXT = "the cat went to the old house near the river in the city"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="explain a short text with the offline toy pair", description=__doc__
    )
    p.add_argument(
        "--text", default=DEFAULT_TEXT, help="text for the toy subject to read (toy vocabulary)"
    )
    p.add_argument(
        "--positions",
        type=int,
        nargs="*",
        default=None,
        help="token positions (default: every token after BOS)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..lens import NLA
    from ..toy import checkpoints

    t0 = time.perf_counter()
    ck = checkpoints()
    nla = NLA.from_pretrained(ck.av, ck.ar, device="cpu")
    tok = AutoTokenizer.from_pretrained(str(ck.subject))
    subject = AutoModelForCausalLM.from_pretrained(str(ck.subject), dtype=torch.float32).eval()
    ids = tok(args.text, add_special_tokens=True)["input_ids"]
    positions = args.positions if args.positions else list(range(1, len(ids)))
    vectors = nla.capture(subject, args.text, positions=positions, tokenizer=tok)[0]
    exps = nla.explain(vectors)
    base = nla.baseline
    print(
        f"nla-lens demo: the toy NLA pair reads layer {nla.layer} (d_model {nla.d_model}) of the toy subject"
    )
    print(f"text: {args.text!r}")
    print(
        f"fve_nrm baseline Var(v_n) = {base.variance:.4f} ({base.source})"
        if base
        else "no fve baseline"
    )
    print()
    print(f"{'pos':>4}  {'token':<12} {'cos':>6} {'fve_nrm':>8}  explanation")
    for p, e in zip(positions, exps, strict=True):
        token = tok.convert_ids_to_tokens(ids[p])
        fve = "n/a" if e.fve_nrm is None else f"{e.fve_nrm:8.3f}"
        cos = "n/a" if e.cos is None else f"{e.cos:6.3f}"
        print(f"{p:>4}  {token:<12} {cos:>6} {fve:>8}  {e.text}")
    print(
        f"\n{len(positions)} positions explained and scored in {time.perf_counter() - t0:.1f}s (offline, CPU)"
    )
    return 0
