"""The Ray engine of explain_dataset: equal to the local engine, nothing lost and nothing twice
when the driver is killed (-9) or a worker dies, reruns against other settings refused, and
the real vLLM CPU server as the AV under Ray.

The fast tests need no Ray cluster. The slow ones start a local 2-CPU cluster (one for the
module, shared; the kill -9 test's CLI runs start their own) and always shut it down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nla_lens.errors import JobMismatchError, MissingExtraError, NLAError, VectorError
from nla_lens.serving.jobs import explain_dataset
from nla_lens.serving.ray_engine import WORK_SUFFIX
from nla_lens.serving.ray_engine.plan import InputSet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
B = 4  # rows per AV batch
FAST = {"max_new_tokens": 24, "batch_size": B, "progress": False}


def need_ray():
    return pytest.importorskip(
        "ray", reason="the 'ray' extra is not installed (pip install 'nla-lens[ray]')"
    )


@pytest.fixture(scope="module")
def vectors(toy_residuals) -> np.ndarray:
    return toy_residuals[0][:20].numpy()


@pytest.fixture(scope="module")
def ray_cluster(request: pytest.FixtureRequest):
    """One local Ray cluster (2 CPUs) for the module's in-process tests. When the real-vLLM
    test (last in the module) is selected, its server starts booting first, in the
    background, while the other tests run."""
    ray = need_ray()
    if VLLM_PY.exists() and any("real_vllm" in item.name for item in request.session.items):
        request.getfixturevalue("vllm_process")
    from nla_lens.serving.ray_engine.engine import init_ray

    assert init_ray(None, num_cpus=2)
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def torch_threads(n: int):
    """The Ray actors run torch on 1 thread; local references do too, for bitwise equality."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def write_parquet(path: Path, vectors: np.ndarray, first: int = 0) -> Path:
    n = len(vectors)
    table = pa.table({
        "doc_id": pa.array([f"doc{first + i}" for i in range(n)]),
        "activation_vector": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32())),
        "explanation": pa.array([f"reference {first + i}" for i in range(n)]),  # clashes
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=7)  # row groups that do not line up with blocks
    return path


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[b"nla_lens"])


# ---- no cluster ------------------------------------------------------------------------
def test_input_set_reads_fixed_blocks_across_files(tmp_path, vectors) -> None:
    d = tmp_path / "shards"
    d.mkdir()
    write_parquet(d / "a.parquet", vectors[:9])
    write_parquet(d / "b.parquet", vectors[9:], first=9)
    inputs = InputSet.open(d)
    assert inputs.n_rows == 20 and [f.name for f in inputs.files] == ["a.parquet", "b.parquet"]
    table, got = inputs.read(6, 14)  # spans both files and several row groups
    np.testing.assert_array_equal(got, vectors[6:14])
    assert table.column("doc_id").to_pylist() == [f"doc{i}" for i in range(6, 14)]
    assert "input_explanation" in table.column_names
    fp = inputs.fingerprint()
    assert [f["rows"] for f in fp["files"]] == [9, 11] and all(f["sha256"] for f in fp["files"])
    np.save(tmp_path / "v.npy", vectors)
    table, got = InputSet.open(tmp_path / "v.npy").read(16, 20)
    np.testing.assert_array_equal(got, vectors[16:20])
    assert table.column("row").to_pylist() == [16, 17, 18, 19]


def test_worker_names_a_bad_row_by_its_row_in_the_input(tmp_path, toy, nla, vectors) -> None:
    """The actor's own code, called in this process (no Ray needed): NaN at input row 13."""
    from nla_lens.core.sampling import Sampling
    from nla_lens.serving.ray_engine.worker import BlockExplainer, WorkerConfig

    bad = vectors.copy()
    bad[13, 0] = np.nan
    np.save(tmp_path / "v.npy", bad)
    s = Sampling(max_new_tokens=8, batch_size=4, seed=0)
    config = WorkerConfig(
        av=str(toy.av), ar=str(toy.ar), backends=(), device="cpu", dtype="float32", sampling=s,
        inputs=InputSet.open(tmp_path / "v.npy"), output=str(tmp_path / "out.parquet"),
        block_rows=8, identity=nla.provenance(s).identity(), torch_threads=1, chunks_in_flight=1,
    )  # fmt: skip
    worker = BlockExplainer(config)
    assert worker.error is None, worker.error
    with pytest.raises(VectorError, match=r"v\.npy: vectors rows \[13\] contain NaN"):
        worker._explain(8, bad[8:16])
    assert len(worker._explain(0, bad[:8])) == 8


def test_import_does_not_pull_ray() -> None:
    code = (
        "import sys, nla_lens, nla_lens.serving.jobs, nla_lens.serving.ray_engine, nla_lens.cli; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_missing_ray_names_the_extra(tmp_path, toy, vectors, monkeypatch) -> None:
    np.save(tmp_path / "v.npy", vectors[:4])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingExtraError, match=r"nla-lens\[ray\]"):
        explain_dataset(tmp_path / "v.npy", tmp_path / "o.parquet", av=toy.av, engine="ray", **FAST)


def test_bad_options(tmp_path, toy, nla, vectors) -> None:
    src = tmp_path / "v.npy"
    np.save(src, vectors[:4])
    out = tmp_path / "o.parquet"
    with pytest.raises(NLAError, match="multiple of batch_size"):
        explain_dataset(src, out, av=toy.av, engine="ray", block_rows=6, **FAST)
    with pytest.raises(NLAError, match="not a loaded NLA"):
        explain_dataset(src, out, av=nla, engine="ray", **FAST)
    with pytest.raises(NLAError, match="workers: options of engine='ray'"):
        explain_dataset(src, out, av=nla, workers=2, **FAST)
    with pytest.raises(NLAError, match="engine must be"):
        explain_dataset(src, out, av=nla, engine="spark", **FAST)
    Path(str(out) + WORK_SUFFIX).mkdir()  # a partial Ray run is not continued by the local engine
    with pytest.raises(NLAError, match="partial run of the Ray engine"):
        explain_dataset(src, out, av=nla, **FAST)


# ---- on a local Ray cluster --------------------------------------------------------------
@pytest.mark.slow
def test_ray_equals_local_engine(tmp_path, toy, nla, vectors, ray_cluster) -> None:
    """Greedy, a parquet file whose row groups do not line up with the blocks, 2 actors:
    the same columns, rows, order and provenance as the local engine."""
    src = write_parquet(tmp_path / "in.parquet", vectors)
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    with torch_threads(1):
        explain_dataset(src, local, av=nla, **FAST)
    t0 = time.perf_counter()
    res = explain_dataset(
        src, remote, av=toy.av, ar=toy.ar, engine="ray", workers=2, block_rows=2 * B, **FAST
    )
    sys.stderr.write(f"[ray] 20 rows, 3 blocks, 2 actors: {time.perf_counter() - t0:.1f}s\n")
    assert (res.rows, res.computed_rows, res.resumed_rows) == (20, 20, 0)
    assert pq.read_schema(remote).names == pq.read_schema(local).names
    assert rows(remote) == rows(local)
    a, b = meta(local), meta(remote)
    assert b["job"].pop("engine") == "ray" and b["job"].pop("block_rows") == 2 * B
    assert a == b
    assert not Path(str(remote) + WORK_SUFFIX).exists()
    with pytest.raises(NLAError, match="already exists"):
        explain_dataset(src, remote, av=toy.av, ar=toy.ar, engine="ray", **FAST)


@pytest.mark.slow
def test_killed_worker_is_retried(tmp_path, toy, nla, vectors, ray_cluster) -> None:
    """An actor exits (os._exit) in the middle of its first block, once: Ray restarts it and
    retries the block; the output equals the local engine's. Input: a directory of shards."""
    from nla_lens.serving.ray_engine.worker import FAULT_ENV

    d = tmp_path / "shards"
    d.mkdir()
    write_parquet(d / "part-0.parquet", vectors[:11])
    write_parquet(d / "part-1.parquet", vectors[11:], first=11)
    whole = write_parquet(tmp_path / "whole.parquet", vectors)
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    kw = {**FAST, "temperature": 1.0, "samples": 2, "seed": 7}
    with torch_threads(1):
        explain_dataset(whole, local, av=nla, **kw)
    marker = tmp_path / "crashed"
    res = explain_dataset(
        d, remote, av=toy.av, ar=toy.ar, engine="ray", workers=1, block_rows=2 * B,
        runtime_env={"env_vars": {FAULT_ENV: str(marker)}}, **kw,
    )  # fmt: skip
    assert marker.exists(), "the worker did not crash"
    assert res.computed_rows == 20 and res.results == 40
    got = rows(remote)
    assert [(r["doc_id"], r["sample"]) for r in got] == [
        (f"doc{i}", s) for i in range(20) for s in range(2)
    ]
    assert got == rows(local)


@pytest.mark.slow
def test_kill_9_driver_then_rerun(tmp_path, toy, nla, toy_residuals, ray_cluster) -> None:
    """SIGKILL the `nla-lens explain --engine ray --address ...` driver once blocks are
    committed (the cluster lives on, as a real one does; Ray ends the dead driver's actors),
    check that a rerun with other settings is refused, run the same command again: every row
    exactly once, equal to an uninterrupted run (the local engine, shown equal above)."""
    vectors = toy_residuals[0].numpy()  # 48 rows
    vectors = np.concatenate([vectors, vectors[::-1] * 0.9, vectors * 1.1])[:120]
    src = tmp_path / "in.npy"
    np.save(src, vectors)
    out = tmp_path / "out.parquet"
    work = Path(str(out) + WORK_SUFFIX)
    address = ray_cluster.get_runtime_context().gcs_address
    args = ["--av", str(toy.av), "--ar", str(toy.ar), "--batch-size", "8", "--max-new-tokens", "24",
            "--temperature", "1.0", "--seed", "3", "--no-progress", "--device", "cpu",
            "--engine", "ray", "--address", address, "--workers", "2", "--block-rows", "8"]  # fmt: skip
    cmd = [sys.executable, "-m", "nla_lens.cli", "explain", str(src), "--output", str(out), *args]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if work.exists() and len(list(work.glob("block-*.parquet"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished (or failed) before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    committed = len(list(work.glob("block-*.parquet")))
    assert 3 <= committed < 15 and not out.exists()

    with pytest.raises(JobMismatchError, match="temperature: was 1.0, now 0.7"):
        explain_dataset(
            src, out, av=toy.av, ar=toy.ar, engine="ray", device="cpu", gpus_per_worker=0.0,
            block_rows=8, batch_size=8, max_new_tokens=24, temperature=0.7, seed=3, progress=False,
        )  # fmt: skip

    rerun = subprocess.run(cmd, env=env, cwd=REPO, timeout=300, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from a partial run" in rerun.stdout, rerun.stdout
    resumed = int(rerun.stdout.split(" computed, ")[1].split(" resumed")[0])
    assert resumed >= 8 * committed
    full = tmp_path / "full.parquet"
    with torch_threads(1):
        explain_dataset(
            src, full, av=nla, batch_size=8, max_new_tokens=24, temperature=1.0, seed=3,
            progress=False,
        )  # fmt: skip
    a, b = rows(out), rows(full)
    assert [r["row"] for r in a] == list(range(120))  # every row exactly once, in order
    assert a == b
    assert not work.exists()


# ---- the real vLLM CPU server as the AV under Ray ---------------------------------------------
# The server fixtures of test_real_vllm (module-scoped: a server of this module's own).
from . import test_real_vllm as _real  # noqa: E402

served_dir, vllm_process, vllm_server = _real.served_dir, _real.vllm_process, _real.vllm_server
VLLM_PY, INSTALL = _real.VLLM_PY, _real.INSTALL


@pytest.mark.slow
@pytest.mark.skipif(
    not VLLM_PY.exists(), reason=f"real vLLM not installed (.venv-vllm missing); to run: {INSTALL}"
)
def test_real_vllm_server_under_ray(
    tmp_path, toy, vectors, vllm_server, served_dir, ray_cluster
) -> None:
    """Two actors, each a client of the real vLLM server (listed twice, so chunks alternate
    between two clients), AR in the actors: the local engine's greedy explanations."""
    from nla_lens import NLA
    from nla_lens.backends import VLLMServerBackend

    url, model = vllm_server
    src = tmp_path / "in.npy"
    np.save(src, vectors[:12])
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    with torch_threads(1):
        pair = NLA.from_pretrained(served_dir, toy.ar, device="cpu")
        explain_dataset(src, local, av=pair, **FAST)
    backends = [VLLMServerBackend(url, model, timeout=120.0) for _ in range(2)]
    res = explain_dataset(
        src, remote, av=served_dir, ar=toy.ar, backend=backends, engine="ray", workers=2,
        block_rows=2 * B, **FAST,
    )  # fmt: skip
    assert res.provenance["backend"] == "vllm"
    a, b = rows(local), rows(remote)
    assert [r["row"] for r in b] == list(range(12))
    assert [r["raw"] for r in b] == [r["raw"] for r in a]
    assert [r["cos"] for r in b] == pytest.approx([r["cos"] for r in a], rel=1e-5)
