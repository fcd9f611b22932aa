"""The Ray engine's worker: one actor holds one NLA and explains whole blocks.

Ray Data calls :class:`BlockExplainer` with batches of block indices. For each
block the actor reads the block's rows from the input, explains them in chunks
of ``batch_size`` rows exactly as the local engine does (same seeds, same AV
decode batches, same AR scoring batches, so the same results), and commits the
block as one parquet file. With server backends the AV decodes of a block's
chunks run concurrently (``chunks_in_flight`` chunks at a time, each with the
client's own ``max_in_flight`` requests and retry rules) while the AR scores
finished chunks; chunk ``k`` goes to server ``k mod len(backends)``, so every
actor spreads its requests over all the servers.

Nothing here imports Ray: the class is a plain callable.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.sampling import Sampling
from ...core.vectors import as_vector_batch
from ...errors import NLAError
from ..jobs.output import append_results, record
from ..jobs.sources import pyarrow
from .plan import InputSet, WorkDir, write_block

__all__ = ["FAULT_ENV", "BlockExplainer", "WorkerConfig"]

log = logging.getLogger("nla_lens.jobs.ray")

#: Fault injection for tests: when set to a path that does not exist yet, the first
#: worker to reach the middle of a block creates it and exits the process at once
#: (``os._exit``), as a crashed or preempted worker would. Ray restarts the actor and
#: retries the block.
FAULT_ENV = "NLA_LENS_RAY_EXIT_ONCE"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything an actor needs, picklable."""

    av: str
    ar: str | None
    backends: tuple[Any, ...]  # HTTP backends (picklable), or () for the in-process AV
    device: str
    dtype: str
    sampling: Sampling  # with the job's base seed set
    inputs: InputSet
    output: str
    block_rows: int
    identity: dict[str, Any]
    torch_threads: int
    chunks_in_flight: int


class BlockExplainer:
    """A Ray Data actor: ``__call__({"block": [i, ...]})`` explains and commits those blocks."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.work = WorkDir(Path(config.output))
        self.error: BaseException | None = None
        try:
            import torch
            from transformers.utils import logging as hf_logging

            torch.set_num_threads(max(1, config.torch_threads))
            hf_logging.disable_progress_bar()
            self.nla = self._load()
        except Exception as exc:  # raised on the first call, so the job fails with it
            self.error = exc

    def _load(self) -> Any:
        import torch

        from ...core.pair import NLAPair

        c = self.config
        nla = NLAPair.from_pretrained(
            c.av, c.ar, device=c.device, dtype=getattr(torch, c.dtype),
            backend=c.backends[0] if c.backends else None,
        )  # fmt: skip
        got = nla.provenance(c.sampling).identity()
        if got != c.identity:
            from ...errors import JobMismatchError
            from ..jobs.progress import params_diff

            raise JobMismatchError(
                f"a worker on {os.uname().nodename} loaded a pair that differs from the driver's "
                f"({params_diff(c.identity, got)}): every node must see the same checkpoints."
            )
        # One verbalizer per server, sharing the tokenizer and embedding table.
        self.avs = [nla.av]
        for b in c.backends[1:]:
            av = copy.copy(nla.av)
            av.backend = b
            self.avs.append(av)
        return nla

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        blocks = [int(i) for i in batch["block"]]
        rows, computed, seconds = [], [], []
        for b in blocks:
            t0 = time.perf_counter()
            n, did = self._block(b)
            rows.append(n)
            computed.append(did)
            seconds.append(time.perf_counter() - t0)
        return {
            "block": np.array(blocks, np.int64),
            "rows": np.array(rows, np.int64),
            "computed": np.array(computed, np.bool_),
            "seconds": np.array(seconds, np.float64),
            "worker": np.array([f"{os.uname().nodename}:{os.getpid()}"] * len(blocks)),
            "finished": np.array([time.time()] * len(blocks), np.float64),
        }

    # ---- one block -------------------------------------------------------------------
    def _block(self, index: int) -> tuple[int, bool]:
        c = self.config
        lo = index * c.block_rows
        hi = min(lo + c.block_rows, c.inputs.n_rows)
        path = self.work.block_path(index)
        if path.is_file():  # committed by an earlier attempt of this block
            return hi - lo, False
        table, vectors = c.inputs.read(lo, hi)
        records = self._explain(lo, vectors)
        pa, _ = pyarrow()
        write_block(path, append_results(table, records, c.sampling.samples, pa))
        return hi - lo, True

    def _explain(self, lo: int, vectors: np.ndarray) -> list[tuple[Any, ...]]:
        c = self.config
        s = c.sampling
        seed0 = s.seed or 0
        B = s.batch_size
        starts = list(range(lo, lo + len(vectors), B))
        rows = {}
        for start in starts:
            rows[start] = as_vector_batch(
                vectors[start - lo : start - lo + B],
                self.nla.d_model,
                what=f"{c.inputs.path}: vectors",
                first_row=start,
            )

        def decode(start: int) -> list[Any]:
            av = self.avs[(start // B) % len(self.avs)]
            return list(av.explain_rows(rows[start], s.replace(seed=seed0 + start * s.samples)))

        records: list[tuple[Any, ...]] = []
        fault = os.environ.get(FAULT_ENV)
        pool = ThreadPoolExecutor(max(1, c.chunks_in_flight)) if c.backends else None
        try:
            pending: dict[int, Future[list[Any]]] = {}
            if pool is not None:
                pending = {start: pool.submit(decode, start) for start in starts}
            for k, start in enumerate(starts):
                exps = pending[start].result() if pool is not None else decode(start)
                if self.nla.ar is not None:  # scored per chunk, as the local engine does
                    exps = self.nla._scored(exps, rows[start], B, False)
                records += [record(start, e) for e in exps]
                if k == 0 and fault and _claim(fault):
                    log.warning("%s: exiting in the middle of block at row %d", FAULT_ENV, lo)
                    os._exit(17)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return records


def _claim(marker: str) -> bool:
    """True for exactly one caller over all processes: the one that creates ``marker``."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    except OSError as exc:
        raise NLAError(f"{FAULT_ENV}={marker}: cannot create the marker file: {exc}") from exc
    os.close(fd)
    return True
