"""Package hygiene: the public API, lazy optional imports, no import side effects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nla_lens

REPO = Path(__file__).resolve().parents[1]


def test_public_names():
    for name in nla_lens.__all__:
        assert hasattr(nla_lens, name), name
    for name in ("NLA", "NLAError", "Explanation", "Verbalizer", "Reconstructor"):
        assert name in nla_lens.__all__
    from nla_lens import errors

    assert issubclass(errors.VectorError, nla_lens.NLAError)
    assert all(issubclass(getattr(errors, n), nla_lens.NLAError) for n in errors.__all__)
    assert all(
        issubclass(getattr(nla_lens, n), nla_lens.NLAError)
        for n in nla_lens.__all__
        if n.endswith("Error")
    )


def test_import_is_light_and_side_effect_free():
    code = (
        "import sys, json; hook = sys.excepthook; import nla_lens, nla_lens.subjects, nla_lens.backends; "
        "print(json.dumps({'mods': sorted(m for m in ('nnsight', 'transformer_lens', 'aiohttp', 'vllm', "
        "'pandas', 'matplotlib') if m in sys.modules), 'hook': sys.excepthook is hook}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"mods": [], "hook": True}


def test_public_tensor_signatures_are_typed():
    import inspect

    from nla_lens.core.metrics import score_vectors

    for fn in (
        nla_lens.Verbalizer.prompt_embeds,
        nla_lens.Reconstructor.reconstruct,
        nla_lens.NLA.capture,
        score_vectors,
    ):
        ret = inspect.signature(fn).return_annotation
        assert "d_model" in str(ret) or "Scores" in str(ret), (fn, ret)


def import_cycles(package: str = "nla_lens") -> list[list[str]]:
    """Strongly connected groups of modules (size > 1) in the package's import graph, counting
    every import: module level, inside functions and under TYPE_CHECKING."""
    import grimp

    graph = grimp.build_graph(package, include_external_packages=False)
    mods = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & set(mods)) for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan, recursive (the graph is small)
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for m in mods:
        if m not in index:
            visit(m)
    return out


def test_no_import_circle():
    assert import_cycles() == []


def test_layer_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_every_public_name_is_in_the_readme_api_section():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    api = readme.split("## API", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in nla_lens.__all__ if n != "__version__" and f"`{n}`" not in api]
    assert missing == []


def test_no_deprecation_warnings_in_a_normal_run():
    """The pinned transformers, nnsight (TransformersModel) and TransformerLens raise no
    deprecation warning during a normal load / explain_run / transcript."""
    script = Path(__file__).parent / "scripts" / "normal_run.py"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600,
        cwd=Path(__file__).parents[1], env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("done"), out.stdout[-2000:]
    warned = [line for line in out.stdout.splitlines() if line.startswith("WARNING")]
    deprecations = [w for w in warned if "Deprecation" in w or "FutureWarning" in w]
    assert deprecations == [], deprecations


def test_licence_files_ship_and_agree():
    """The package says Apache-2.0: the full text ships, and NOTICE (Gemma terms) with it."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert set(project["license-files"]) == {"LICENSE", "NOTICE"}
    assert (
        "Apache License\n                           Version 2.0" in (REPO / "LICENSE").read_text()
    )
    notice = (REPO / "NOTICE").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in notice and "Gemma Terms of Use" in notice
