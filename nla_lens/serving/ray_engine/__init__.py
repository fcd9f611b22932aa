"""The Ray engine of :func:`~nla_lens.serving.jobs.explain_dataset` (``engine="ray"``).

Ray is imported only when a Ray job runs (extra ``ray``): ``import nla_lens`` and the
local engine never import it.

How it works:

- The input (a .parquet file, a directory of .parquet files read as one table in
  name order, a .npy or a .pt) is cut into fixed row blocks of ``block_rows`` rows
  (a multiple of ``batch_size``; default 4 batches). Block ``i`` is always rows
  ``[i * block_rows, (i + 1) * block_rows)``.
- A Ray Data pipeline of the missing block indices feeds an actor pool
  (``workers`` actors, each with ``cpus_per_worker`` CPUs, ``gpus_per_worker`` GPUs
  and as many torch threads as CPUs). Each actor loads the pair once: the AR and
  (without servers) the AV in-process, or AV clients of one or more SGLang/vLLM
  servers, whose requests run concurrently with the clients' retry rules.
- An actor reads its block's rows from the input, explains them in chunks of
  ``batch_size`` rows with the local engine's seeds (``seed + row * samples``
  per chunk), batches and scoring, and commits the block as one parquet file,
  ``OUTPUT.ray-work/block-<index>.parquet``, written under a temporary name and
  renamed. The driver then concatenates the blocks in order into ``OUTPUT``
  (same columns, order and provenance metadata as the local engine; ``job``
  also records ``engine`` and ``block_rows``) and removes the work directory.

Nothing lost, nothing twice: a block file is whole or absent, and named by its
row range, so a rerun of the same command after the driver was killed (even
``kill -9``) computes only the missing blocks, and a retried or duplicated block
rewrites identical content. A worker that dies is restarted by Ray and its block
retried (Ray Data's actor fault tolerance, which restarts without limit: a worker
that dies on every attempt, say out of memory, keeps being restarted; watch the
Ray dashboard or logs). A rerun whose input content, checkpoints, dtype,
backend kind, sampling settings, batch size or block size differ is refused
(:class:`~nla_lens.errors.JobMismatchError`; ``OUTPUT.ray-work/job.json`` holds
the fingerprint).
"""

from __future__ import annotations

from .plan import WORK_SUFFIX

__all__ = ["WORK_SUFFIX"]
