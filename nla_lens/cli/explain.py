"""``nla-lens explain``: explain every vector of a dataset file into a parquet file.

Resumable: if it is interrupted (even killed), run the same command again.

    nla-lens explain vectors.parquet --av kitft/nla-gemma3-12b-L32-av \\
        --ar kitft/nla-gemma3-12b-L32-ar --output explained.parquet
    nla-lens explain vectors.npy --av AV --output out.parquet --backend sglang --url http://127.0.0.1:30000
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
        default=None,
        help="server url for --backend sglang/vllm, e.g. http://127.0.0.1:30000",
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
    p.set_defaults(func=run)


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

    backend = make_backend(
        args.backend, args.url, model=args.model, max_in_flight=args.max_in_flight
    )
    result = explain_dataset(
        args.input, args.output, av=resolve(args.av, "av") or args.av, ar=resolve(args.ar, "ar"), backend=backend, sampling=sampling_from(args),
        device=args.device, dtype=args.dtype, progress=not args.no_progress, overwrite=args.overwrite,
    )  # fmt: skip
    resumed = f", {result.resumed_rows} resumed from a partial run" if result.resumed_rows else ""
    print(
        f"nla-lens explain: {result.rows} rows -> {result.results} explanations in {result.output_path} "
        f"({result.computed_rows} computed{resumed}; {result.seconds:.1f}s)"
    )
    return 0
