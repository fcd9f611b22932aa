"""``python -m nla_lens.toy build [--out DIR] [--parts subject,av,ar] [--compare-to DIR]``:
build the toy NLA pair (and check its bytes against another build, e.g. the shipped one)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from . import DEFAULT_DIR

_PARTS = ("subject", "av", "ar")


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
    build_p.add_argument(
        "--compare-to",
        type=Path,
        default=None,
        metavar="DIR",
        help="after building, compare every file with the same file under DIR (e.g. the shipped "
        f"{DEFAULT_DIR}); exit 1 if any differs",
    )
    build_p.add_argument(
        "--parts",
        default=",".join(_PARTS),
        help="what to (re)build: subject,av,ar (default all; av/ar alone reuse the saved subject)",
    )
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = sorted(set(parts) - set(_PARTS))
    if unknown:
        parser.error(f"unknown --parts {', '.join(unknown)}: choose from {', '.join(_PARTS)}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .build import BuildConfig, build_base, measure, train_parallel

    start = time.perf_counter()
    cfg = BuildConfig(seed=args.seed)
    if "subject" in parts:
        build_base(args.out, cfg.seed, cfg)
    pair = tuple(p for p in parts if p in ("av", "ar"))
    if pair:
        train_parallel(args.out, cfg, pair)
    if not all((args.out / p / "config.json").is_file() for p in ("av", "ar")):
        print(f"built {', '.join(parts)} in {args.out} in {time.perf_counter() - start:.0f} s")
        return _compare(args.out, args.compare_to)
    q = measure(args.out, cfg)
    print(
        f"built {', '.join(parts)} of the toy NLA pair in {args.out} in {time.perf_counter() - start:.0f} s"
    )
    print(
        f"generic (n={q.n}): token named {q.accuracy:.3f}, fve_nrm {q.fve_nrm:.3f} "
        f"(baseline {q.baseline_var:.4f}), cos {q.cos:.4f}"
    )
    print(f"chat (n={q.chat_n}): closed {q.chat_terminated:.3f}, token named {q.chat_accuracy:.3f}")
    print(
        f"task prompts (n={q.task_positions}): fve_nrm by position "
        + ", ".join(f"{k} {v:.2f}" for k, v in q.task_fve_nrm.items())
        + f"; token named {q.task_token_named:.3f}; animal named at 'is' {q.task_entity_named:.3f}"
    )
    print(
        f"confident next named (n={q.next_n}): {q.next_named:.3f}; at the answer {q.task_next_named:.3f}; "
        f"prefix rise {q.prefix_rise:.3f}, swap lowers {q.swap_lowers:.3f}"
    )
    print(
        f"task (n={q.task_n}): accuracy {q.task_accuracy:.3f}, patching after block "
        f"{q.patch_layer} recovers {q.patch_recovery:.3f} (control {q.patch_recovery_control:.3f}); "
        f"steering {q.steer_success:.3f} (next only), {q.steer_full_success:.3f} (edited "
        f"explanation), {q.steer_edit_success:.3f} (edit difference)"
    )
    return _compare(args.out, args.compare_to)


def _compare(out: Path, reference: Path | None) -> int:
    """Print how many built files equal the same files under ``reference`` (0: all do)."""
    if reference is None:
        return 0
    if not reference.is_dir():
        print(f"--compare-to {reference}: not a directory")
        return 2
    built = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    differ = [
        r
        for r in built
        if not (reference / r).is_file() or (reference / r).read_bytes() != (out / r).read_bytes()
    ]
    print(f"{len(built) - len(differ)} of {len(built)} built files equal those in {reference}")
    for r in differ:
        print(f"  differs: {r}")
    if differ:
        print(
            "  (the build gives the same bytes run to run on one kind of CPU; another kind of "
            "CPU rounds differently and training amplifies it: see the README, 'Building')"
        )
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
