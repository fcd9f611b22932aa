"""Explaining a whole dataset of vectors: batched, resumable, with provenance.

:func:`explain_dataset` reads vectors from a parquet file (an
``activation_vector`` list column, the NLA datasets' convention), a ``.npy``
``[n, d]`` array or a ``.pt`` ``[n, d]`` tensor, explains them in fixed chunks
of ``batch_size`` rows, and writes a parquet file with every input column plus
``explanation``, ``raw``, ``truncated``, ``mse_nrm``, ``cos``, ``fve_nrm``
(and ``sample`` when ``samples > 1``). Provenance goes in the parquet schema
metadata under the key ``nla_lens``.

Resuming: each chunk's results are committed in one SQLite transaction (WAL)
to ``OUTPUT.partial.sqlite`` with the job's parameters. Kill the job at any
moment (even ``kill -9``), run it again with the same arguments, and it skips
the committed chunks and finishes with every row exactly once. The final
parquet is written to a temporary file and renamed into place, then the
partial database is removed. Resuming with different parameters is refused.

Seeds: the chunk starting at row ``r0`` is explained with seed
``seed + r0 * samples``, and every backend offsets that seed by the decode's
index in the chunk, so sample ``s`` of row ``r`` is drawn with seed
``seed + r * samples + s`` on the vLLM/SGLang servers (one seed per request);
the in-process backend seeds once per chunk. Either way a row's result depends
only on (seed, its chunk), and chunks are fixed by ``batch_size``, so a resumed
run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.backend import GenerationBackend
from ...core.pair import NLAPair
from ...core.progress import bar_options
from ...core.sampling import Sampling
from ...core.vectors import as_vector_batch
from ...errors import NLAError, VectorError
from .fit import dataset_fit, fit_record
from .output import record, write_output
from .progress import PARTIAL_SUFFIX, RAY_WORK_SUFFIX, Progress
from .result import _SCHEMA_VERSION, JobResult
from .sources import VECTOR_COLUMN, Source, pyarrow

__all__ = ["JobResult", "explain_dataset"]

log = logging.getLogger("nla_lens.jobs")
LOCK_SUFFIX = ".lock"
_LOCK_TRIES = 20


def _load_nla(
    av: Any, ar: Any, backend: GenerationBackend | None, device: Any, dtype: Any
) -> NLAPair:
    if isinstance(av, NLAPair):
        if ar is not None or backend is not None:
            raise NLAError(
                "pass either a loaded NLA as av=, or checkpoint ids/paths with ar=/backend=, not both."
            )
        return av
    return NLAPair.from_pretrained(av, ar, device=device, dtype=dtype, backend=backend)


def _is_frame(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "columns")


def _stage_frame(df: Any, out: Path) -> Path:
    """Write a DataFrame input to parquet beside the output (deterministic bytes)."""
    if VECTOR_COLUMN not in df.columns:
        raise VectorError(
            f"the DataFrame has no {VECTOR_COLUMN!r} column (columns: {list(df.columns)}); "
            f"rename the vector column to {VECTOR_COLUMN!r}."
        )
    pa, pq = pyarrow()
    staged = Path(str(out) + ".input.parquet")
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise VectorError(f"the DataFrame cannot be stored as parquet ({exc}).") from exc
    pq.write_table(table, str(staged))
    return staged


def explain_dataset(
    input_path: str | os.PathLike[str] | Any,
    output_path: str | os.PathLike[str],
    *,
    av: str | os.PathLike[str] | NLAPair,
    ar: str | os.PathLike[str] | None = None,
    backend: GenerationBackend | Sequence[GenerationBackend] | None = None,
    sampling: Sampling | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    samples: int | None = None,
    max_new_tokens: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    block_rows: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> JobResult:
    """Explain every vector of ``input_path`` into the parquet file ``output_path``.

    ``input_path`` is a parquet / ``.npy`` / ``.pt`` file, or a pandas DataFrame with an
    ``activation_vector`` column (staged as ``OUTPUT.input.parquet`` while the job runs,
    so an interrupted job resumes from the same DataFrame).

    ``av``/``ar`` are checkpoint directories or hub ids (or ``av`` is an already
    loaded NLA); ``backend`` decodes on a server instead of in-process. The
    settings form one :class:`~nla_lens.Sampling` (``seed`` defaults to 0 here,
    so sampled jobs are reproducible). Resumable (see the module docs); an
    existing ``output_path`` without a partial run is refused unless
    ``overwrite=True``.
    """
    t0 = time.perf_counter()
    pa, pq = pyarrow()
    s = Sampling.of(
        sampling, batch_size=batch_size, temperature=temperature, samples=samples,
        max_new_tokens=max_new_tokens, top_p=top_p, seed=seed,
    )  # fmt: skip
    seed0 = 0 if s.seed is None else s.seed
    s = s.replace(seed=seed0)
    ray_options: dict[str, Any] = {
        "address": address, "workers": workers, "cpus_per_worker": cpus_per_worker,
        "gpus_per_worker": gpus_per_worker, "block_rows": block_rows, "runtime_env": runtime_env,
    }  # fmt: skip
    out = Path(output_path).expanduser()
    staged = None
    if engine == "ray":
        from ..ray_engine.engine import explain_dataset_ray

        staged = _stage_frame(input_path, out) if _is_frame(input_path) else None
        try:
            return explain_dataset_ray(
                staged or input_path, output_path, av=av, ar=ar, backend=backend, sampling=s,
                device=device, dtype=dtype, progress=progress, overwrite=overwrite, **ray_options,
            )  # fmt: skip
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
    if engine != "local":
        raise NLAError(f"engine must be 'local' or 'ray', got {engine!r}.")
    given = sorted(k for k, v in ray_options.items() if v is not None)
    if given:
        raise NLAError(f"{', '.join(given)}: options of engine='ray', not of the local engine.")
    one: Any = backend
    if isinstance(backend, (list, tuple)):
        if len(backend) != 1:
            raise NLAError(
                f"the local engine decodes on one server; got {len(backend)} backends "
                "(engine='ray' spreads chunks over several)."
            )
        one = backend[0]
    _check_output(out)
    with _JobLock(out):
        staged = _stage_frame(input_path, out) if _is_frame(input_path) else None
        src_path = staged or Path(input_path)
        if not src_path.is_file():
            raise NLAError(f"input {src_path} does not exist (or is not a file).")
        result = _run(
            src_path, out, s, seed0, av=av, ar=ar, backend=one, device=device, dtype=dtype,
            progress=progress, overwrite=overwrite, t0=t0, pa=pa, pq=pq,
        )  # fmt: skip
        if staged is not None:
            staged.unlink(missing_ok=True)
        return result


def _check_output(out: Path) -> None:
    """Refuse an output path that cannot be written, before any compute."""
    if out.is_dir():
        raise NLAError(
            f"output {out} is a directory; pass a file path for the parquet output "
            f"(e.g. {out / 'explanations.parquet'})."
        )
    if not out.parent.is_dir():
        raise NLAError(
            f"output {out}: the folder {out.parent} does not exist. Create it first "
            f"(mkdir -p {out.parent}) or choose another output path."
        )
    if not os.access(out.parent, os.W_OK):
        raise NLAError(
            f"output {out}: the folder {out.parent} is not writable; choose another output path."
        )


class _JobLock:
    """An exclusive lock on ``OUTPUT.lock`` for the job's life, so a second job on the
    same output is refused instead of interleaving its rows with this one's."""

    def __init__(self, out: Path) -> None:
        self.path = Path(str(out) + LOCK_SUFFIX)
        self._fh: Any = None

    def __enter__(self) -> _JobLock:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): SQLite's own locking still guards the progress
            return self
        for _ in range(_LOCK_TRIES):
            fh = self._open()
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                fh.close()
                raise NLAError(
                    f"another explain_dataset job is writing {self.path.name.removesuffix(LOCK_SUFFIX)} "
                    f"(it holds the lock {self.path}). Wait for it to finish, or give this job another "
                    "output path; if no job is running, the lock is released and you can run again."
                ) from exc
            # The holder unlinks the file as it releases it: a lock taken on a file that
            # is no longer at the path guards nothing (a third job would lock a new file).
            if self._still_at_path(fh):
                self._fh = fh
                return self
            fh.close()
        raise NLAError(
            f"could not take the job lock {self.path}: it kept being replaced; run again."
        )

    def _open(self) -> Any:
        try:
            return open(self.path, "a+")  # held for the job's life
        except OSError as exc:
            raise NLAError(f"cannot create the job lock {self.path}: {exc}.") from exc

    def _still_at_path(self, fh: Any) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fh.fileno())
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)
            self._fh.close()  # closing releases the lock
            self._fh = None


def _run(
    src_path: Path,
    out: Path,
    s: Sampling,
    seed0: int,
    *,
    av: Any,
    ar: Any,
    backend: GenerationBackend | None,
    device: Any,
    dtype: Any,
    progress: bool | None,
    overwrite: bool,
    t0: float,
    pa: Any,
    pq: Any,
) -> JobResult:
    partial_path = Path(str(out) + PARTIAL_SUFFIX)
    if out.exists() and not partial_path.exists() and not overwrite:
        raise NLAError(
            f"{out} already exists (a finished job?). Pass overwrite=True (--overwrite) to redo it."
        )
    if Path(str(out) + RAY_WORK_SUFFIX).exists():
        raise NLAError(
            f"{out}{RAY_WORK_SUFFIX} holds a partial run of the Ray engine: finish it with "
            "engine='ray', or delete it to start over with the local engine."
        )
    Path(str(out) + ".tmp").unlink(missing_ok=True)  # a final write that was killed half-way

    src = Source(src_path)
    nla = _load_nla(av, ar, backend, device, dtype)
    prov = nla.provenance(s)
    params = {
        "schema": _SCHEMA_VERSION, "input": src.fingerprint(), **prov.identity(),
        **s.key(), "seed": s.seed, "samples": s.samples, "batch_size": s.batch_size,
    }  # fmt: skip
    partial = Progress(partial_path)
    try:
        partial.check_params(params)
        done = partial.done_chunks()
        n = src.n_rows
        resumed = sum(done.values())
        computed = 0
        from tqdm.auto import tqdm

        with tqdm(
            total=n, initial=resumed, desc="explaining", unit="vector", **bar_options(progress)
        ) as bar:
            for start, vectors in src.chunks(s.batch_size):
                if done.get(start) == len(vectors):
                    continue
                rows = as_vector_batch(
                    vectors, nla.d_model, what=f"{src_path}: vectors", first_row=start
                )
                exps = nla.explain(
                    rows, sampling=s.replace(seed=seed0 + start * s.samples), progress=False
                )
                partial.commit_chunk(start, len(vectors), [record(start, e) for e in exps])
                computed += len(vectors)
                bar.update(len(vectors))
        job = {
            "input": str(src_path), "rows": n, "batch_size": s.batch_size, "samples": s.samples,
            "row_seed": "seed + row * samples + sample (per request on servers; per chunk in-process)",
        }  # fmt: skip
        mse_scale = None if nla.ar is None else nla.ar.mse_scale
        fit = dataset_fit([src_path], nla.d_model, nla.baseline, mse_scale)
        meta = {**prov.to_dict(), "baseline_fit": fit_record(fit), "job": job}
        write_output(src, partial, out, s.samples, meta, pa, pq)
    except BaseException:
        partial.close()
        raise
    partial.remove()
    return JobResult(out, n, n * s.samples, computed, resumed, time.perf_counter() - t0, meta, fit)
