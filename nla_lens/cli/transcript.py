"""``nla-lens transcript``: a per-token transcript of a prompt (and a generated reply)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._sampling import add_sampling_args, sampling_from


def register(sub: Any) -> None:
    p = sub.add_parser(
        "transcript",
        help="explain every token of a prompt",
        description=__doc__,
        epilog="Defaults to the shipped toy pair and subject (offline).",
    )
    p.add_argument("text", help="the user message (or plain text with --plain)")
    p.add_argument("--subject", help="subject model dir or hub id (default: the toy subject)")
    p.add_argument("--av", help="AV dir or hub id (default: the toy AV)")
    p.add_argument("--ar", help="AR dir or hub id (default: the toy AR)")
    p.add_argument(
        "--plain", action="store_true", help="read the text as-is instead of as a chat message"
    )
    p.add_argument(
        "--reply-tokens", type=int, default=0, help="also generate and read N reply tokens"
    )
    add_sampling_args(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--html", type=Path, help="also write notebook HTML here")
    p.add_argument(
        "--csv", type=Path, help="also write the table (one row per position and sample) here"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..errors import NLAError
    from ..lens import NLA
    from ..toy import checkpoints

    if args.av or args.ar or args.subject:
        if not (args.av and args.subject):
            raise NLAError(
                "pass --subject and --av (and --ar for scores) together, or none of them for the toy pair."
            )
        subject, av, ar = args.subject, args.av, args.ar
    else:
        toy = checkpoints()
        subject, av, ar = str(toy.subject), toy.av, toy.ar
    nla = NLA.from_pretrained(av, ar, device=args.device)
    tok = AutoTokenizer.from_pretrained(subject)
    model = AutoModelForCausalLM.from_pretrained(
        subject, dtype=torch.float32 if args.device in (None, "cpu") else None
    )
    if args.device:
        model = model.to(args.device)
    inputs = args.text if args.plain else [{"role": "user", "content": args.text}]
    t = nla.transcript(
        model.eval(),
        inputs,
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
