"""The command line: ``nla-lens demo`` and ``nla-lens transcript`` on the toy pair."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nla_lens.cli import main

pytestmark = pytest.mark.integration


def test_demo_prints_a_table(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "pos" in out and "explanation" in out and "fve_nrm" in out
    rows = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert len(rows) >= 10
    # The toy AV names the token at each position.
    named = [line.split()[1] in line.split()[4:] for line in rows]
    assert sum(named) >= 0.8 * len(rows)


def test_transcript_command(capsys, tmp_path):
    html = tmp_path / "t.html"
    assert (
        main(
            [
                "transcript",
                "the cat went to the old house",
                "--html",
                str(html),
                "--csv",
                str(tmp_path / "t.csv"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "token='cat'" in out and "fve_nrm=" in out
    assert "hsl(" in html.read_text() and (tmp_path / "t.csv").read_text().startswith("position,")


def test_cli_errors_are_clean(capsys, tmp_path):
    assert (
        main(["transcript", "x", "--subject", str(tmp_path), "--av", str(tmp_path / "missing")])
        == 2
    )
    assert "error:" in capsys.readouterr().err


def test_console_script_offline():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "nla_lens.cli", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "demo" in out.stdout and "transcript" in out.stdout
