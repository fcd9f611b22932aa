"""``nla-lens transcript``: a per-token transcript of a prompt (and a generated reply)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import NLAError
from ..experiments.reading import CHAT_DEFAULT
from ._pair import add_pair_args, resolve
from ._sampling import add_sampling_args, sampling_from


def register(sub: Any) -> None:
    p = sub.add_parser(
        "transcript",
        help="explain every token of a prompt",
        description="A per-token transcript of a prompt (and of a generated reply): each position's token, explanation and scores, with noisy positions flagged.",
        epilog="Defaults to the shipped toy pair and subject (offline). Example: "
        'nla-lens transcript "the cat is in the house" --av toy --ar toy --subject toy',
    )
    p.add_argument("text", help="the text to read (a user message with --chat)")
    add_pair_args(p, subject=True)
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--chat",
        dest="chat",
        action="store_true",
        default=CHAT_DEFAULT,
        help="read the text as one user message under the chat template"
        + (" (the default, as nla.transcript)" if CHAT_DEFAULT else ""),
    )
    how.add_argument(
        "--plain",
        dest="chat",
        action="store_false",
        help="read the text as-is" + ("" if CHAT_DEFAULT else " (the default, as nla.transcript)"),
    )
    p.add_argument(
        "--reply-tokens", type=int, default=0, help="also generate and read N reply tokens"
    )
    add_sampling_args(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    q = p.add_argument_group("quantized loading (extra 'quant'; see `nla-lens plan`)")
    q.add_argument(
        "--quantization", default=None,
        help="AV and AR: int8 | 4bit | nf4 | torchao-int8 (default: none, full precision)",
    )  # fmt: skip
    q.add_argument("--ar-quantization", default=None, help="the AR's, if not --quantization's")
    q.add_argument("--subject-quantization", default=None, help="the subject's (default: none)")
    p.add_argument("--html", type=Path, help="also write notebook HTML here")
    p.add_argument(
        "--csv", type=Path, help="also write the table (one row per position and sample) here"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.loading import shared_tokenizer
    from ..lens import NLA
    from ..subjects import load_subject

    subject = resolve(args.subject, "subject")
    av, ar = resolve(args.av, "av"), resolve(args.ar, "ar")
    if av is None or subject is None:
        raise NLAError("transcript needs --av and --subject (or 'toy' for the shipped pair).")
    nla = NLA.from_pretrained(
        av, ar, device=args.device, quantization=args.quantization,
        ar_quantization=args.ar_quantization,
    )  # fmt: skip
    tok = shared_tokenizer(subject)
    model = load_subject(subject, device=args.device, quantization=args.subject_quantization)
    t = nla.transcript(
        model,
        args.text,
        chat=args.chat,
        tokenizer=tok,
        sampling=sampling_from(args),
        reply_tokens=args.reply_tokens,
    )
    print(t.to_text())
    if args.html:
        args.html.write_text(t.to_html())
    if args.csv:
        t.to_frame().to_csv(args.csv, index=False)
    return 0
