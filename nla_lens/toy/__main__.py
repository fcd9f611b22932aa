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
    print(
        f"next token named where the subject is confident (n={quality.next_n}): "
        f"{quality.next_named:.3f}; at the task's answer: {quality.task_next_named:.3f}"
    )
    print(
        f"task (n={quality.task_n}): accuracy {quality.task_accuracy:.3f}, patching after "
        f"block {quality.patch_layer} recovers {quality.patch_recovery:.3f} at the place word, "
        f"{quality.patch_recovery_control:.3f} elsewhere; steering at alpha "
        f"{quality.steer_alpha:g}: 'next : X' {quality.steer_success:.3f}, "
        f"'token : T ; next : X' {quality.steer_full_success:.3f}, "
        f"edited explanation {quality.steer_edit_success:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
