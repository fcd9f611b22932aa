"""``nla-lens plan``: will subject, AV and AR fit this GPU, and at what precision? (configs only)"""

from __future__ import annotations

import argparse

from ..errors import NLAError
from ._pair import resolve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="memory plan of a pair (and a subject) at bf16 / int8 / 4-bit, from configs only",
        description="Read the configs (directories or hub ids), build the models on the meta "
        "device (no weights) and print the bytes of subject, AV and AR at bf16, int8 and 4-bit, "
        "the AV's KV cache, and which combinations fit the given GPU memory.",
    )
    p.add_argument("--av", required=True, help="AV checkpoint: a directory, a hub id, or 'toy'")
    p.add_argument("--ar", default=None, help="AR checkpoint: a directory, a hub id, or 'toy'")
    p.add_argument("--subject", default=None, help="subject model: a directory or a hub id")
    p.add_argument("--gpu-memory", default="80GB", help="memory of one GPU (default: 80GB)")
    p.add_argument(
        "--batch", type=int, default=64, help="explanations decoded at once (default: 64)"
    )
    p.add_argument(
        "--explanation-tokens", type=int, default=200,
        help="new tokens per explanation (default: 200, the training default)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.plan import plan

    av, ar = resolve(args.av, "av"), resolve(args.ar, "ar")
    subject = resolve(args.subject, "subject")
    if av is None:
        raise NLAError("plan needs --av (a directory, a hub id, or 'toy').")
    result = plan(
        av, ar, subject=subject, gpu_memory=args.gpu_memory, batch=args.batch,
        explanation_tokens=args.explanation_tokens,
    )  # fmt: skip
    print(result.to_text())
    return 0 if result.best() is not None else 1
