"""Fixtures for the explorer tests: one toy explorer (a task prompt and a short reply)."""

from __future__ import annotations

import pytest

TOKEN = "test-token-0123456789"
BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="session")
def task():
    from nla_lens.toy import tasks

    return tasks(1)[0]


@pytest.fixture(scope="session")
def patching_frame(task):
    """A small patching frame in activation_patching's layout, with a readout column."""
    import pandas as pd

    rows = []
    for layer in (0, 1):
        for position, token in ((task.position, "house"), (3, "is")):
            rows.append({
                "batch": 0, "layer": layer, "position": position, "token": token,
                "metric": 0.9 if position == task.position else float("nan"),
                "downstream_of_k": False, "explanation": f"cell {layer}/{position}",
                "readout_explanation": f"readout {layer}/{position}", "cos": 0.5, "fve_nrm": None,
                "clean_explanation": "clean", "corrupt_explanation": "corrupt",
            })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def explorer(nla, subject, task, patching_frame, tmp_path_factory):
    from nla_lens.explore import make_explorer

    model, tok = subject
    table = tmp_path_factory.mktemp("tables") / "grid.csv"
    patching_frame.to_csv(table, index=False)
    return make_explorer(nla, model, task.clean, tokenizer=tok, reply_tokens=4, files=[table])


@pytest.fixture(scope="session")
def client(explorer):
    from starlette.testclient import TestClient

    from nla_lens.explore.app import build_app

    app = build_app(explorer, token=TOKEN)
    return TestClient(app, base_url=BASE, raise_server_exceptions=False)
