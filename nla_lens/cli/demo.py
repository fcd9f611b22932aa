"""``nla-lens demo``: explain a short text's residuals with the shipped toy pair, offline."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import NLAError
from ..subjects.inputs import token_text
from ._pair import TOY, add_pair_args, resolve

DEFAULT_TEXT = "the cat went to the old house near the river in the city"

GUIDE = """\
How to read this:
  cos      cosine between the vector and the AR's reconstruction of it from the words
           (1 = same direction, 0 = unrelated).
  fve_nrm  the fraction of variance explained, against predicting the mean vector:
           1 = perfect, 0 = no better than the mean, < 0 = worse. On real models cos is
           close to 1 almost everywhere (deep residuals cluster around their mean), so
           fve_nrm is the number to watch: the released Gemma-3-12B pair reaches ~0.77.
  Good:    fve_nrm above ~0.5 means the words carry most of what is in the vector.
"""

TOY_NOTE = """\
  The toy: its explanations name only the token and the token the subject expects next.
           Where a residual holds more of its context than that (place words in a
           sentence, for one), fve_nrm falls below 0 even when the words are right:
           the score says that the words miss something, as it should.
"""

TRY_NEXT = """
Try next:
  nla-lens transcript "the cat is in the house" --html t.html   (every token, as a page)
  nla-lens explain vectors.npy --av toy --ar toy --output out.parquet   (a dataset, resumable)
  python tutorials/01_quickstart.py   (the tutorials, in order, run offline)
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="explain a short text with the offline toy pair",
        description="Explain a short text's residuals with the shipped toy pair, offline, "
        "and say how to read the scores.",
    )
    p.add_argument(
        "--text",
        default=DEFAULT_TEXT,
        help="text for the subject to read (the toy knows a small vocabulary)",
    )
    p.add_argument(
        "--positions", type=int, nargs="*", default=None,
        help="token positions, counted over the text's tokens with 0 = BOS (default: every token after BOS)",
    )  # fmt: skip
    add_pair_args(p, subject=True)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from ..core.loading import shared_tokenizer
    from ..lens import NLA

    t0 = time.perf_counter()
    av, ar, subject_dir = (
        resolve(args.av, "av"),
        resolve(args.ar, "ar"),
        resolve(args.subject, "subject"),
    )
    if av is None or subject_dir is None:
        raise NLAError("demo needs --av and --subject (or 'toy').")
    nla = NLA.from_pretrained(av, ar, device=args.device)
    tok = shared_tokenizer(subject_dir)
    subject = (
        AutoModelForCausalLM.from_pretrained(subject_dir, dtype=torch.float32)
        .to(args.device)
        .eval()
    )
    ids = tok(args.text, add_special_tokens=True)["input_ids"]
    positions = args.positions if args.positions else list(range(1, len(ids)))
    vectors = nla.capture(subject, args.text, positions=positions, tokenizer=tok)[0]
    exps = nla.explain(vectors)
    base = nla.baseline
    print(
        f"nla-lens demo: the NLA pair reads layer {nla.layer} (d_model {nla.d_model}) of {subject_dir}"
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
        token = token_text(tok, ids[p])
        fve = "n/a" if e.fve_nrm is None else f"{e.fve_nrm:8.3f}"
        cos = "n/a" if e.cos is None else f"{e.cos:6.3f}"
        print(f"{p:>4}  {token:<12} {cos:>6} {fve:>8}  {e.text}")
    scored = [e.fve_nrm for e in exps if e.fve_nrm is not None]
    if scored:
        print(f"\nmean fve_nrm {sum(scored) / len(scored):.3f} over {len(scored)} positions")
    print(
        f"{len(positions)} positions explained and scored in {time.perf_counter() - t0:.1f}s (offline)\n"
    )
    print(GUIDE + (TOY_NOTE if args.av == TOY else "") + TRY_NEXT)
    return 0
