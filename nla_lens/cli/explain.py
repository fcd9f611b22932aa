"""``nla-lens explain``: explain every vector of a dataset file into a parquet file.

Resumable: if it is interrupted (even killed), run the same command again.

    nla-lens explain vectors.parquet --av kitft/nla-gemma3-12b-L32-av \\
        --ar kitft/nla-gemma3-12b-L32-ar --output explained.parquet
    nla-lens explain vectors.npy --av AV --output out.parquet --backend sglang --url http://127.0.0.1:30000

On a Ray cluster (extra ``ray``; docs/scale.md), with the AV on two vLLM servers:

    nla-lens explain shards/ --av AV --ar AR --output out.parquet --engine ray --address auto \
        --workers 8 --backend vllm --url http://av-0:8000 --url http://av-1:8000
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import NLAError
from ._pair import add_pair_args, resolve
from ._sampling import add_sampling_args, sampling_from

DESCRIPTION = """Explain every vector of a dataset file into a parquet file.

Resumable: if it is interrupted (even killed), run the same command again.

  nla-lens explain vectors.parquet --av kitft/nla-gemma3-12b-L32-av \\
      --ar kitft/nla-gemma3-12b-L32-ar --output explained.parquet
  nla-lens explain vectors.npy --av toy --ar toy --output out.parquet
  nla-lens explain vectors.npy --av AV --output out.parquet --backend sglang --url http://127.0.0.1:30000
"""

_DTYPES = ("float32", "bfloat16", "float16")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="explain a dataset of vectors (parquet/npy/pt) into a parquet file (resumable)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        help="parquet with an 'activation_vector' list<float> column, or .npy / .pt [n, d_model]",
    )
    add_pair_args(p, subject=False, av_required=True)
    p.add_argument("--output", "-o", required=True, help="output parquet file")
    p.add_argument(
        "--backend",
        choices=("local", "sglang", "vllm"),
        default="local",
        help="where the AV decodes (default: local, in-process)",
    )
    p.add_argument(
        "--url",
        action="append",
        default=None,
        help="server url for --backend sglang/vllm, e.g. http://127.0.0.1:30000; with --engine ray, "
        "repeat it (or separate urls by commas) to spread the AV over several servers",
    )
    p.add_argument(
        "--model", default=None, help="vLLM served model name (default: the server's only model)"
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=32,
        help="concurrent requests to the server (default 32)",
    )
    add_sampling_args(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument(
        "--dtype", choices=_DTYPES, default=None, help="default: bfloat16 on GPU, float32 on CPU"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="redo a finished job whose output exists"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("engine")
    g.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process (default); ray: an actor pool on a Ray cluster (extra 'ray')",
    )  # fmt: skip
    g.add_argument(
        "--address", default=None,
        help="Ray cluster address ('auto', 'ray://head:10001'); default: start a local cluster",
    )  # fmt: skip
    g.add_argument(
        "--workers", type=int, default=None,
        help="Ray actors, each holding one pair (default: as many as the cluster's CPUs/GPUs allow)",
    )  # fmt: skip
    g.add_argument(
        "--cpus-per-worker", type=float, default=None,
        help="CPUs per actor, also its torch threads (default 1)",
    )  # fmt: skip
    g.add_argument(
        "--gpus-per-worker", type=float, default=None,
        help="GPUs per actor (default: the cluster's GPUs shared out among the actors, else 0)",
    )  # fmt: skip
    g.add_argument(
        "--block-rows", type=int, default=None,
        help="rows per committed block, a multiple of --batch-size (default 4 batches)",
    )  # fmt: skip
    p.set_defaults(func=run)


def make_backends(
    kind: str, urls: list[str] | None, *, model: str | None = None, max_in_flight: int = 32
) -> Any:
    """The backend(s) for ``--backend`` and ``--url`` (repeated or comma-separated): None for
    local, one client for one url, a list for several."""
    flat = [u.strip() for url in urls or [] for u in url.split(",") if u.strip()]
    if len(flat) <= 1:
        return make_backend(
            kind, flat[0] if flat else None, model=model, max_in_flight=max_in_flight
        )
    if kind == "local":
        raise NLAError("--url is for --backend sglang/vllm; the local backend decodes in-process.")
    return [make_backend(kind, u, model=model, max_in_flight=max_in_flight) for u in flat]


def make_backend(
    kind: str, url: str | None, *, model: str | None = None, max_in_flight: int = 32
) -> Any:
    """The generation backend for ``--backend``: None for local (in-process)."""
    if kind == "local":
        if url is not None:
            raise NLAError(
                "--url is for --backend sglang/vllm; the local backend decodes in-process."
            )
        return None
    if url is None:
        raise NLAError(
            f"--backend {kind} needs --url (the server's root, e.g. http://127.0.0.1:30000)."
        )
    if kind == "sglang":
        from ..backends.sglang import SGLangBackend

        return SGLangBackend(url, max_in_flight=max_in_flight)
    from ..backends.vllm import VLLMServerBackend

    return VLLMServerBackend(url, model, max_in_flight=max_in_flight)


def run(args: argparse.Namespace) -> int:
    from ..serving.jobs import explain_dataset

    backend = make_backends(
        args.backend, args.url, model=args.model, max_in_flight=args.max_in_flight
    )
    ray_options: dict[str, Any] = {}
    if args.engine == "ray":
        ray_options = {
            "address": args.address, "workers": args.workers, "block_rows": args.block_rows,
            "cpus_per_worker": args.cpus_per_worker, "gpus_per_worker": args.gpus_per_worker,
        }  # fmt: skip
    else:
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("address", "workers", "cpus_per_worker", "gpus_per_worker", "block_rows")
            if getattr(args, k) is not None
        ]
        if given:
            raise NLAError(f"{', '.join(given)}: options of --engine ray.")
    result = explain_dataset(
        args.input, args.output, av=resolve(args.av, "av") or args.av, ar=resolve(args.ar, "ar"), backend=backend, sampling=sampling_from(args),
        device=args.device, dtype=args.dtype, progress=not args.no_progress, overwrite=args.overwrite,
        engine=args.engine, **ray_options,
    )  # fmt: skip
    resumed = f", {result.resumed_rows} resumed from a partial run" if result.resumed_rows else ""
    print(
        f"nla-lens explain: {result.rows} rows -> {result.results} explanations in {result.output_path} "
        f"({result.computed_rows} computed{resumed}; {result.seconds:.1f}s)"
    )
    prov = result.provenance
    if prov.get("baseline") is not None:
        from ..core.metrics import Baseline

        base = Baseline(
            prov["baseline"],
            prov["baseline_source"],
            prov.get("baseline_n"),
            prov.get("baseline_kind") or "user",
        )
        print(f"fve_nrm against {base.label}")
    if result.baseline_fit is not None:
        print(str(result.baseline_fit))
    return 0
