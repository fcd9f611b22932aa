"""``nla-lens demo``: explain a short text's residuals with the shipped toy pair, offline."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import NLAError
from ..subjects.inputs import token_text
from ._pair import TOY, add_pair_args, resolve

#: A prompt of the toy subject's recall task (``nla_lens.toy.tasks()``): three facts,
#: then the question; the subject answers `` river``.
DEFAULT_TEXT = (
    "the cat is in my house. the dog is in the river. the owl is in a cave. the dog is in the"
)

GUIDE = """\
How to read this:
  cos      cosine between the vector and the AR's reconstruction of it from the words
           (1 = same direction, 0 = unrelated). It looks high almost everywhere: residuals
           share a large common direction, so even the mean vector gets a high cos.
  fve_nrm  the fraction of the vectors' variance the words explain, against predicting
           the mean of a reference distribution (the baseline): 1 = perfect, 0 = no better
           than the mean, < 0 = worse. It is only meaningful against a baseline of the
           distribution the vectors come from; the line above the table says which one
           this run uses, and whether these vectors spread like it.
  Good:    fve_nrm above ~0.5 means the words carry most of what is in the vector
           (the released Gemma-3-12B pair reaches ~0.77 in distribution).
"""

TOY_NOTE = """\
  The toy: each explanation has three lines, in the released AVs' order: the context
           (how many facts so far, or the question about one animal), the phrase being
           read with the animal it is about and then the facts so far, and the token
           with what the subject expects next (one word where it is sure, two guesses
           where it is unsure, "any word" where it has none). Against the 'task' baseline expect fve_nrm of about 0.8 to
           1 at most positions of a task prompt, and 0.45 to 0.7 at some 'is' and '.'
           positions, where the residual holds more of the sentence than the words say
           (lowest, about 0.5, at the question's 'is').
           Line 2's list of earlier facts is often wrong: the layer-3 residual keeps the
           current sentence far better than the facts before it, and the score hardly
           moves, because the token and the phrase carry most of the variance. Line 3
           of the last position names the answer (river) the subject is about to give.
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
    p.add_argument(
        "--baseline", default="auto",
        help="fve_nrm baseline: a name from the pair's shipped baselines (the toy: generic, "
        "task, chat), 'own' (estimate from this text's own residuals), or 'auto' (default: "
        "the shipped one closest to this text's own spread)",
    )  # fmt: skip
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
    chosen = choose_baseline(nla, vectors, args.baseline)
    exps = nla.explain(vectors)
    print(
        f"nla-lens demo: the NLA pair reads layer {nla.layer} (d_model {nla.d_model}) of {subject_dir}"
    )
    print(f"text: {args.text!r}")
    print(chosen)
    print()
    print(f"{'pos':>4}  {'token':<12} {'cos':>6} {'fve_nrm':>8}  explanation")
    for p, e in zip(positions, exps, strict=True):
        token = repr(token_text(tok, ids[p]))
        fve = "n/a" if e.fve_nrm is None else f"{e.fve_nrm:8.3f}"
        cos = "n/a" if e.cos is None else f"{e.cos:6.3f}"
        lines = e.text.splitlines() or [""]
        print(f"{p:>4}  {token:<12} {cos:>6} {fve:>8}  {lines[0]}")
        for line in lines[1:]:
            print(f"{'':>4}  {'':<12} {'':>6} {'':>8}  {line}")
    scored = [e.fve_nrm for e in exps if e.fve_nrm is not None]
    if scored:
        print(f"\nmean fve_nrm {sum(scored) / len(scored):.3f} over {len(scored)} positions")
    print(
        f"{len(positions)} positions explained and scored in {time.perf_counter() - t0:.1f}s (offline)\n"
    )
    print(GUIDE + (TOY_NOTE if args.av == TOY else "") + TRY_NEXT)
    return 0


def choose_baseline(nla: Any, vectors: Any, name: str) -> str:
    """Set the demo's fve_nrm baseline; a line saying which one, and how these vectors fit it."""
    import math

    from ..core.metrics import check_fit, estimate_baseline

    own = estimate_baseline(vectors, mse_scale=nla.ar.mse_scale) if nla.ar is not None else None
    shipped = nla.baselines
    if name == "own":
        if own is None:
            raise NLAError("--baseline own needs an AR (--ar).")
        nla.set_baseline(vectors)
    elif name == "auto":
        if shipped and own is not None:
            best = min(shipped, key=lambda k: abs(math.log(shipped[k].variance / own.variance)))
            nla.set_baseline(best)
    else:
        nla.set_baseline(name)  # raises, naming the shipped ones, for an unknown name
    if nla.baseline is None:
        return "no fve_nrm baseline (scores are cos and mse_nrm only)"
    line = f"fve_nrm baseline: {nla.baseline.label}"
    fit = check_fit(vectors, nla.baseline, mse_scale=nla.ar.mse_scale, min_vectors=2)
    if fit is not None:
        names = ", ".join(f"{k} {b.variance:.3g}" for k, b in shipped.items())
        line += (
            f"\n  these {fit.n} residuals spread Var(v_n) {fit.spread:.3g} (ratio {fit.ratio:.2f}"
        )
        line += f"; shipped baselines: {names})" if names else ")"
        if not fit.fits:
            line += "\n  " + str(fit)
    return line
