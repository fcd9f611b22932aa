"""The ``nla-lens`` command line: ``demo``, ``transcript``, ``explain``, ``explore``, ``plan``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..core.provenance import package_version
from ..errors import NLAError

_COMMANDS = ("demo", "transcript", "explain", "explore", "plan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nla-lens",
        description="Read residual-stream activations with Natural Language Autoencoders.",
    )
    parser.add_argument(
        "--version", action="version", version=f"nla-lens {package_version('nla-lens')}",
        help="print the installed version and exit",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"nla_lens.cli.{name}")
        except ModuleNotFoundError:  # a command whose module is not in this build
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except NLAError as exc:
        print(f"nla-lens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
