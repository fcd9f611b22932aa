"""Every tutorial runs top to bottom offline on the toy pair, is valid jupytext, and is linked.

Each ``tutorials/[0-9]*.py`` runs as a plain ``python`` subprocess (as a reader
would run it), with ``HF_HUB_OFFLINE=1``, ``MPLBACKEND=Agg`` and
``NLA_LENS_TUTORIAL_OUT`` pointing at a temporary directory, and must exit 0
and write the plots / HTML it promises.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS_DIR = ROOT / "tutorials"
TUTORIALS = sorted(TUTORIALS_DIR.glob("[0-9]*.py"))
IDS = [p.name for p in TUTORIALS]

#: Files each tutorial writes under NLA_LENS_TUTORIAL_OUT.
ARTEFACTS: dict[str, list[str]] = {
    "01_quickstart.py": ["01_injection_scale.png"],
    "02_nnsight_tracer.py": ["02_donor_sweep.html"],
    "03_activation_patching.py": [
        "03_patching_metric.png",
        "03_patching.html",
    ],
    "04_transcripts_and_steering.py": ["04_transcript.html", "04_steering.png"],
    "05_real_gemma.py": [],
    "06_uncertainty_and_faithfulness.py": [
        "06_samples.html",
        "06_diff.html",
        "06_faithfulness.html",
    ],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: A tutorial on the toy pair should take about a minute on 2 CPU cores; this only catches hangs.
TIMEOUT_S = 600


def _env(out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NLA_LENS_")}
    env.update(
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
        TOKENIZERS_PARALLELISM="false",
        NLA_LENS_TUTORIAL_OUT=str(out),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.update(extra)
    return env


def test_tutorials_exist():
    assert len(TUTORIALS) >= 5, [p.name for p in TUTORIALS]
    assert set(IDS) == set(ARTEFACTS), "keep ARTEFACTS in step with tutorials/"


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_is_jupytext_percent(path: Path):
    jupytext = pytest.importorskip("jupytext")
    text = path.read_text(encoding="utf-8")
    assert "format_name: percent" in text
    nb = jupytext.reads(text, fmt="py:percent")
    code = [c for c in nb.cells if c.cell_type == "code"]
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert len(code) >= 3, f"{path.name}: {len(code)} code cells"
    assert markdown and markdown[0].source.lstrip().startswith("# "), (
        f"{path.name}: start with a titled markdown cell"
    )
    assert all(c.source.strip() for c in code), f"{path.name}: empty code cell"


def test_readme_links_every_tutorial():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Tutorials, in reading order", 1)
    assert len(section) == 2, "README.md needs a '## Tutorials, in reading order' section"
    body = section[1].split("\n## ", 1)[0]
    linked = re.findall(r"\]\((tutorials/[^)]+\.py)\)", body)
    assert linked == [f"tutorials/{name}" for name in IDS], linked


def test_real_switch_is_one_environment_variable(tmp_path: Path):
    """NLA_LENS_REAL=1 flips _setup to the released Gemma-3-12B pair (no model is loaded here)."""
    probe = "import _setup as s; print(s.REAL, s.REAL_PAIR.av, s.REAL_PAIR.ar, s.REAL_PAIR.subject, s.device(), s.dtype())"
    outs = {}
    for value in ("0", "1"):
        proc = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=TUTORIALS_DIR,
            env=_env(tmp_path, NLA_LENS_REAL=value),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[value] = proc.stdout.split()
    assert outs["0"][0] == "False" and outs["0"][-2:] == ["cpu", "torch.float32"]
    assert outs["1"][:4] == [
        "True",
        "kitft/nla-gemma3-12b-L32-av",
        "kitft/nla-gemma3-12b-L32-ar",
        "google/gemma-3-12b-it",
    ]
    assert outs["1"][-2:] == ["cuda", "torch.bfloat16"]


#: How many stated expectations (``[expect] ...: met`` lines, from ``_setup.expect``) a
#: tutorial must print on the toy pair; every one printed must be met.
EXPECTATIONS = {"03_activation_patching.py": 7, "04_transcripts_and_steering.py": 4}

#: Tutorials whose executed notebook must hold rich outputs: an HTML table and a figure.
RICH = {"03_activation_patching.py", "04_transcripts_and_steering.py"}


def run_as_notebook(path: Path, env: dict[str, str]) -> tuple[Any, str]:
    """Execute a jupytext tutorial as a notebook in a fresh kernel; (notebook, all stdout)."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        NotebookClient(
            nb, timeout=TIMEOUT_S, kernel_name="python3",
            resources={"metadata": {"path": str(TUTORIALS_DIR)}},
        ).execute()  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(old)
    stdout = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )  # fmt: skip
    return nb, stdout


def rich_outputs(nb: Any) -> set[str]:
    """The MIME types of every displayed value in an executed notebook."""
    kinds: set[str] = set()
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            kinds |= set(o.get("data", {}))
    return kinds


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_runs_as_a_notebook_on_the_toy_pair(path: Path, tmp_path: Path, toy):
    """Each tutorial executes top to bottom as a notebook (jupytext -> nbclient, a real
    kernel), offline on the toy pair, writes its files, and shows rich outputs."""
    from nbclient.exceptions import CellExecutionError

    out = tmp_path / "out"
    start = time.perf_counter()
    try:
        nb, stdout = run_as_notebook(path, _env(out))
    except CellExecutionError as exc:
        pytest.fail(
            f"{path.name} failed after {time.perf_counter() - start:.0f}s:\n{str(exc)[-6000:]}"
        )
    assert "toy pair" in stdout, stdout[-3000:]  # it ran on the toy pair, not the real one
    for name in ARTEFACTS[path.name]:
        f = out / name
        assert f.is_file() and f.stat().st_size > 0, f"{path.name} did not write {name}"
        head = f.read_bytes()[:8]
        if name.endswith(".png"):
            assert head == PNG_MAGIC, f"{name} is not a PNG"
        elif name.endswith(".html"):
            assert "<table" in f.read_text(encoding="utf-8"), f"{name} has no table"
    expects = [line for line in stdout.splitlines() if line.startswith("[expect]")]
    unmet = [line for line in expects if not line.endswith(": met")]
    assert not unmet, f"{path.name}: stated expectations not met: {unmet}"
    assert len(expects) >= EXPECTATIONS.get(path.name, 0), f"{path.name}: {expects}"
    if path.name in RICH:
        kinds = rich_outputs(nb)
        assert {"text/html", "image/png"} <= kinds, f"{path.name} shows only {sorted(kinds)}"
