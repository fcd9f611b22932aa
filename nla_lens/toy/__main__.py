"""``python -m nla_lens.toy build [--out DIR]``: build the toy NLA pair."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from . import DEFAULT_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nla_lens.toy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_p = sub.add_parser("build", help="build the toy subject, AV and AR checkpoints")
    build_p.add_argument(
        "--out", type=Path, default=DEFAULT_DIR, help=f"output directory (default: {DEFAULT_DIR})"
    )
    build_p.add_argument(
        "--seed", type=int, default=0, help="base seed (default 0: the shipped toy)"
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .build import BuildConfig, build  # heavy imports only when building

    start = time.perf_counter()
    quality = build(args.out, BuildConfig(seed=args.seed))
    elapsed = time.perf_counter() - start
    print(f"built the toy NLA pair in {args.out} in {elapsed:.0f} s")
    print(
        f"held-out round trip (n={quality.n}): AV accuracy {quality.accuracy:.3f}, "
        f"fve_nrm {quality.fve_nrm:.3f}, mse_nrm {quality.mse_nrm:.4f}, cos {quality.cos:.4f}, "
        f"baseline Var(v_n) {quality.baseline_var:.4f}"
    )
    print(
        f"chat-formatted, every position (n={quality.chat_n}): "
        f"closes </explanation> within {quality.chat_max_new_tokens} new tokens "
        f"{quality.chat_terminated:.3f}, AV accuracy {quality.chat_accuracy:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
