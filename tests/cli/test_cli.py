"""The command line: ``nla-lens demo`` and ``nla-lens transcript`` on the toy pair."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from nla_lens import toy
from nla_lens.cli import main
from nla_lens.cli.demo import DEFAULT_TEXT

pytestmark = pytest.mark.integration


_ROW = re.compile(r"^\s*(\d+)  ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\s+(\S+)\s+(\S+)  (.*)$")


def demo_rows(out: str) -> list[tuple[str, float, str]]:
    """(token, fve_nrm, explanation) per table row; an explanation's lines 2-3 are the
    indented lines under its row."""
    lines = out.splitlines()
    col = next(line for line in lines if line.strip().startswith("pos")).index("explanation")
    rows: list[tuple[str, float, list[str]]] = []
    for line in lines:
        found = _ROW.match(line)
        if found:
            rows.append((ast.literal_eval(found[2]), float(found[4]), [found[5]]))
        elif rows and line[:col].strip() == "" and line[col:].strip():
            rows[-1][2].append(line[col:])
        elif rows and not line.strip():
            break
    return [(tok, fve, "\n".join(text)) for tok, fve, text in rows]


def test_demo_prints_a_table(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "pos" in out and "explanation" in out and "fve_nrm" in out
    rows = demo_rows(out)
    assert len(rows) >= 10
    readings = [toy.read_explanation(text) for _, _, text in rows]
    # Each explanation is the toy's three lines, and line 3 names the token at its position.
    assert all(len(r.lines) == 3 for r in readings)
    named = [r.token == tok for (tok, _, _), r in zip(rows, readings, strict=True)]
    assert sum(named) >= 0.8 * len(rows)
    # What the demo's guide promises: fve_nrm about 0.8 to 1 at most positions (the task
    # baseline), and the last position's line 3 names the answer the subject gives.
    assert sum(fve >= 0.8 for _, fve, _ in rows) >= 0.6 * len(rows)
    assert min(fve for _, fve, _ in rows) >= 0.45, "the guide's floor (the question's 'is')"
    *facts, question = DEFAULT_TEXT.split(". ")
    animal = question.split()[1]
    answer = next(f.split()[-1] for f in facts if f.split()[1] == animal)  # river
    assert readings[-1].names_next(answer)


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
    assert "token=' cat'" in out and "fve_nrm=" in out
    # the block under the ' cat' line is the toy's explanation, naming that token
    block = out.split("token=' cat'", 1)[1].split("\n\n", 1)[0].split("\n", 1)[1]
    assert toy.read_explanation(block).token == " cat"
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


def test_every_option_has_plain_help():
    import argparse

    from nla_lens.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("nla-lens", parser), *subs.choices.items()]:
        text = (sub.description or "") + (sub.epilog or "")
        assert "``" not in text and ":func:" not in text, name
        for action in sub._actions:
            if action.dest in ("help", "version") or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (name, action.dest)
            assert "``" not in action.help and ":class:" not in action.help, (name, action.dest)


def test_version_and_toy_keywords(capsys, tmp_path):
    import numpy as np

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("nla-lens ")

    src = tmp_path / "v.npy"
    np.save(src, np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32))
    out = tmp_path / "o.parquet"
    assert main(["explain", str(src), "--av", "toy", "--ar", "toy", "-o", str(out),
                 "--max-new-tokens", "12", "--no-progress"]) == 0  # fmt: skip
    assert out.is_file()
    assert main(["transcript", "the cat", "--av", "toy", "--ar", "toy", "--subject", "toy",
                 "--max-new-tokens", "12"]) == 0  # fmt: skip
    assert "token=' cat'" in capsys.readouterr().out  # pieces decode with their space
    assert toy.checkpoints().av.is_dir()


def test_unknown_words_are_reported(capsys):
    assert main(["demo", "--text", "the cat saw a zzyzx"]) == 2
    err = capsys.readouterr().err
    assert "'zzyzx'" in err and "<unk>" in err


def test_demo_says_how_to_read_the_scores(capsys):
    assert main(["demo", "--text", "the cat"]) == 0
    out = capsys.readouterr().out
    assert "fve_nrm  the fraction of the vectors' variance the words explain" in out
    assert "The toy: each explanation has three lines" in out and "Try next:" in out


def test_cli_and_api_share_the_chat_template_default(capsys, nla, subject):
    """`nla-lens transcript "..."` and `nla.transcript(model, "...")` read a string the same
    way (one default, CHAT_DEFAULT); --chat and --plain override it."""
    import inspect

    from nla_lens.cli import build_parser
    from nla_lens.experiments.reading import CHAT_DEFAULT, build_transcript

    parse = build_parser().parse_args
    assert parse(["transcript", "x"]).chat is CHAT_DEFAULT
    assert inspect.signature(build_transcript).parameters["chat"].default is CHAT_DEFAULT
    assert parse(["transcript", "x", "--chat"]).chat is True
    assert parse(["transcript", "x", "--plain"]).chat is False
    model, tok = subject
    text = "the cat is in the house"
    api = nla.transcript(model, text, tokenizer=tok, max_new_tokens=12)
    args = ["transcript", text, "--av", "toy", "--ar", "toy", "--subject", "toy"]
    assert main([*args, "--max-new-tokens", "12", "--device", "cpu"]) == 0
    assert api.to_text() in capsys.readouterr().out
    chat = nla.transcript(model, text, tokenizer=tok, chat=True, max_new_tokens=12)
    assert len(chat.entries) > len(api.entries)  # the template's turn markers
