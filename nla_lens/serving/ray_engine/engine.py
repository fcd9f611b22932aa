"""The Ray driver: plan the blocks, run the missing ones on an actor pool, assemble.

See :mod:`nla_lens.serving.ray_engine` for the guarantees.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ...core.checkpoint import open_checkpoint
from ...core.loading import default_dtype
from ...core.metrics import Baseline
from ...core.pair import NLAPair, _record, default_baseline
from ...core.progress import bar_options
from ...core.provenance import Provenance, baseline_fields
from ...core.sampling import Sampling
from ...errors import MissingExtraError, NLAError
from ..jobs.fit import dataset_fit, fit_record
from ..jobs.progress import PARTIAL_SUFFIX
from ..jobs.result import _SCHEMA_VERSION, JobResult
from .plan import InputSet, WorkDir, assemble, job_params
from .worker import BlockExplainer, WorkerConfig

__all__ = ["explain_dataset_ray", "import_ray", "init_ray"]

log = logging.getLogger("nla_lens.jobs.ray")

#: Blocks of this many AV batches when ``block_rows`` is not given.
DEFAULT_BLOCK_BATCHES = 4


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingExtraError("ray", "ray", "explain_dataset(engine='ray')") from exc
    return ray


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[3])


def init_ray(address: str | None = None, *, num_cpus: int | None = None, **kwargs: Any) -> bool:
    """Connect to the Ray cluster at ``address`` ("auto", "ray://host:10001", "host:6379"),
    or start a local one (``num_cpus`` defaults to this machine's). Returns True when this
    call started or connected it (and so the caller should shut it down), False when Ray
    was already initialised in this process (it is left as it is)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    env = dict(kwargs.pop("runtime_env", None) or {})
    if address is None:
        # Workers of a local cluster import nla_lens from where this driver does.
        env_vars = dict(env.get("env_vars") or {})
        path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        env_vars.setdefault("PYTHONPATH", path)
        env["env_vars"] = env_vars
        kwargs.setdefault("num_cpus", num_cpus)
        kwargs.setdefault("include_dashboard", False)
    ray.init(address=address, runtime_env=env or None, logging_level=logging.WARNING, **kwargs)
    return True


class PairFacts(NamedTuple):
    """What the driver reads from the sidecars: provenance, baseline, AR mse_scale, d_model."""

    provenance: Provenance
    baseline: Baseline | None
    mse_scale: float | None
    d_model: int


def describe_pair(
    av: str | os.PathLike[str],
    ar: str | os.PathLike[str] | None,
    backend_name: str,
    device: str,
    dtype: torch.dtype | None,
    sampling: Sampling,
) -> PairFacts:
    """The provenance the workers' pair will report, from the checkpoints' files and
    sidecars only (no weights are loaded on the driver), with what the driver's baseline
    fit check needs. Each worker checks the provenance."""
    av_ck = open_checkpoint(
        av, "av", "Verbalizer", device=device, dtype=dtype, revision=None, token=None,
        cache_dir=None, strict_sidecar=False,
    )  # fmt: skip
    ar_rec = None
    mse_scale = None
    if ar is not None:
        ar_ck = open_checkpoint(
            ar, "ar", "Reconstructor", device=device, dtype=dtype, revision=None, token=None,
            cache_dir=None, strict_sidecar=False,
        )  # fmt: skip
        ar_rec = _record(ar_ck.source, ar_ck.meta.sha256)
        mse_scale = ar_ck.meta.mse_scale
    baseline = default_baseline(av_ck.source, av_ck.meta.base_model)
    settings = sampling.to_dict()
    settings.pop("seed")
    prov = Provenance(
        av=_record(av_ck.source, av_ck.meta.sha256),
        ar=ar_rec,
        dtype=str(av_ck.dtype).removeprefix("torch."),
        backend=backend_name,
        sampling=settings,
        seed=sampling.seed,
        **baseline_fields(baseline),
    )
    return PairFacts(prov, baseline, mse_scale, av_ck.meta.d_model)


def _backends(backend: Any) -> tuple[Any, ...]:
    if backend is None:
        return ()
    items = tuple(backend) if isinstance(backend, (list, tuple)) else (backend,)
    from ...backends._http import HTTPBackend

    for b in items:
        if not isinstance(b, HTTPBackend):
            raise NLAError(
                f"engine='ray' decodes the AV in each worker or on servers: backend= must be None or "
                f"SGLangBackend/VLLMServerBackend client(s), not {type(b).__name__}."
            )
    names = {b.name for b in items}
    if len(names) > 1:
        raise NLAError(f"all AV servers of one job must be of one kind, got {sorted(names)}.")
    return items


def _unwrap(exc: BaseException) -> BaseException | None:
    """The library error a worker raised, out of Ray's wrappers."""
    seen = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NLAError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def explain_dataset_ray(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    av: str | os.PathLike[str] | NLAPair,
    ar: str | os.PathLike[str] | None,
    backend: Any,
    sampling: Sampling,
    device: str | torch.device | None,
    dtype: torch.dtype | str | None,
    progress: bool | None,
    overwrite: bool,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    block_rows: int | None = None,
    chunks_in_flight: int = 2,
    runtime_env: dict[str, Any] | None = None,
) -> JobResult:
    t0 = time.perf_counter()
    if isinstance(av, NLAPair):
        raise NLAError(
            "engine='ray' loads the pair in every worker: pass checkpoint directories or hub ids "
            "as av= and ar=, not a loaded NLA."
        )
    s = sampling
    B = s.batch_size
    block_rows = block_rows if block_rows is not None else DEFAULT_BLOCK_BATCHES * B
    if block_rows < 1 or block_rows % B:
        raise NLAError(
            f"block_rows={block_rows} must be a positive multiple of batch_size={B}, so that blocks "
            "hold whole AV batches (the seeds and batches of the local engine)."
        )
    backends = _backends(backend)
    cpus = 1.0 if cpus_per_worker is None else float(cpus_per_worker)
    if cpus <= 0 or (gpus_per_worker is not None and gpus_per_worker < 0):
        raise NLAError(
            f"cpus_per_worker={cpus_per_worker} must be > 0 and gpus_per_worker={gpus_per_worker} >= 0."
        )
    if workers is not None and workers < 1:
        raise NLAError(f"workers={workers} must be >= 1.")

    out = Path(output_path)
    work = WorkDir(out)
    if out.exists() and not work.exists() and not overwrite:
        raise NLAError(
            f"{out} already exists (a finished job?). Pass overwrite=True (--overwrite) to redo it."
        )
    if Path(str(out) + PARTIAL_SUFFIX).exists():
        raise NLAError(
            f"{out}{PARTIAL_SUFFIX} holds a partial run of the local engine: finish it with "
            "engine='local', or delete it to start over with engine='ray'."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = InputSet.open(input_path)
    n = inputs.n_rows
    if n == 0:
        raise NLAError(f"{inputs.path}: the input has no rows.")
    n_blocks = -(-n // block_rows)

    ray = None
    started = False
    try:
        # Where workers decode: GPUs if the cluster has them (the default shares them out).
        gpus = gpus_per_worker
        if gpus is None or device is None:
            ray = import_ray()
            started = init_ray(address, runtime_env=runtime_env)
            total_gpus = float(ray.cluster_resources().get("GPU", 0))
            if gpus is None:
                gpus = 0.0 if total_gpus == 0 else min(1.0, total_gpus / (workers or total_gpus))
        dev = str(device) if device is not None else ("cuda" if gpus > 0 else "cpu")
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        dt = dt or default_dtype(torch.device(dev))
        facts = describe_pair(av, ar, backends[0].name if backends else "local", dev, dt, s)
        prov = facts.provenance
        params = job_params(_SCHEMA_VERSION, inputs, prov.identity(), s, block_rows)
        work.check_params(params)
        done = work.done(n_blocks)
        todo = [i for i in range(n_blocks) if i not in done]
        rows_of = {i: min(block_rows, n - i * block_rows) for i in range(n_blocks)}
        resumed = sum(rows_of[i] for i in done)
        computed = 0
        if todo:
            if ray is None:
                ray = import_ray()
                started = init_ray(address, runtime_env=runtime_env)
            computed = _run_blocks(
                ray, todo, rows_of, resumed, n, progress,
                WorkerConfig(
                    av=str(av), ar=None if ar is None else str(ar), backends=backends, device=dev,
                    dtype=str(dt).removeprefix("torch."), sampling=s, inputs=inputs,
                    output=str(out), block_rows=block_rows, identity=prov.identity(),
                    torch_threads=max(1, int(cpus)), chunks_in_flight=chunks_in_flight,
                ),
                workers=workers, cpus=cpus, gpus=gpus,
                runtime_env=None if started else runtime_env,
            )  # fmt: skip
    finally:
        if started and ray is not None:
            ray.shutdown()
    missing = [i for i in range(n_blocks) if not work.block_path(i).is_file()]
    if missing:
        raise NLAError(
            f"internal: blocks {missing[:10]} were not committed; run the same command again."
        )
    job = {
        "input": str(inputs.path), "rows": n, "batch_size": B, "samples": s.samples,
        "row_seed": "seed + row * samples + sample (per request on servers; per chunk in-process)",
        "engine": "ray", "block_rows": block_rows,
    }  # fmt: skip
    fit = dataset_fit(inputs.files, facts.d_model, facts.baseline, facts.mse_scale)
    meta = {**prov.to_dict(), "baseline_fit": fit_record(fit), "job": job}
    assemble(work, n_blocks, n, s.samples, meta)
    work.remove()
    return JobResult(out, n, n * s.samples, computed, resumed, time.perf_counter() - t0, meta, fit)


def _run_blocks(
    ray: Any,
    todo: Sequence[int],
    rows_of: dict[int, int],
    resumed: int,
    n: int,
    progress: bool | None,
    config: WorkerConfig,
    *,
    workers: int | None,
    cpus: float,
    gpus: float,
    runtime_env: dict[str, Any] | None,
) -> int:
    """Explain the blocks ``todo`` on an actor pool; returns the rows computed."""
    from tqdm.auto import tqdm

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if workers is None:
        by_cpu = int(float(ray.cluster_resources().get("CPU", 1)) // cpus)
        by_gpu = int(float(ray.cluster_resources().get("GPU", 0)) // gpus) if gpus else by_cpu
        workers = max(1, min(len(todo), by_cpu, by_gpu))
    workers = min(workers, len(todo))
    ds = ray.data.from_items([{"block": i} for i in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(
        BlockExplainer,
        fn_constructor_kwargs={"config": config},
        batch_size=1,
        batch_format="numpy",
        # Two blocks per actor: the next is queued while one runs, so no actor waits on dispatch.
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
        num_cpus=cpus,
        num_gpus=gpus or None,
        runtime_env=runtime_env or None,
        # Ray Data's actor fault tolerance: a dead actor is restarted and its block retried.
    )
    computed = 0
    stats: dict[str, list[float]] = {}
    with tqdm(
        total=n, initial=resumed, desc="explaining", unit="vector", **bar_options(progress)
    ) as bar:
        try:
            for row in ds.iter_rows():
                rows = int(row["rows"])
                computed += rows if bool(row["computed"]) else 0
                worker, secs = str(row["worker"]), float(row["seconds"])
                w = stats.setdefault(worker, [0.0, 0.0, 0.0])
                w[0], w[1], w[2] = w[0] + 1, w[1] + rows, w[2] + secs
                block = {"block": int(row["block"]), "rows": rows, "worker": worker,
                         "seconds": secs, "finished": float(row["finished"])}  # fmt: skip
                log.debug("block %(block)d: %(rows)d rows by %(worker)s in %(seconds).2fs", block,
                          extra={"nla_block": block})  # fmt: skip
                bar.update(rows)
        except Exception as exc:
            inner = _unwrap(exc)
            if inner is not None and inner is not exc:
                raise inner from exc
            raise
    for name, (nb, nrows, busy) in sorted(stats.items()):
        log.info(
            "worker %s: %d blocks, %d rows in %.1fs of block time (%.1f rows/s)",
            name, nb, nrows, busy, nrows / busy if busy else float("nan"),
        )  # fmt: skip
    return computed
