"""The transcript, ExplainedRun and patching pages, rendered in a real headless Chromium:
the screenshot must show the coloured cells and the text, not an empty page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nla_lens import activation_patching, explain_run
from nla_lens.experiments import patching_html

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, out: Path) -> np.ndarray:
    """Render ``page`` headless and return the screenshot as an RGB array."""
    from PIL import Image

    if BROWSER is None:
        pytest.fail("chromium is not installed: run scripts/setup_browser.sh (CI does)")
    cmd = [
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--window-size=1200,800", f"--screenshot={out}", page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def coloured(img: np.ndarray) -> int:
    """Pixels with a clear hue (the cells' backgrounds), not white, grey or black."""
    return int(((img.max(axis=2) - img.min(axis=2)) > 30).sum())


def dark(img: np.ndarray) -> int:
    """Near-black pixels: rendered text."""
    return int((img.max(axis=2) < 90).sum())


@pytest.fixture(scope="module")
def pages(nla, subjects, prompts, tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    model, tok = subjects["hf"], subjects["tokenizer"]
    clean, corrupt = prompts
    t = nla.transcript(model, clean, tokenizer=tok, max_new_tokens=16)
    run = explain_run(nla, model, clean, positions=[1, 2, 3, -1], tokenizer=tok, max_new_tokens=16)
    df = activation_patching(
        nla, subjects["transformer_lens"], clean, corrupt, layers=[0, 1],
        positions=[1, -1], max_new_tokens=16,
    )  # fmt: skip
    return {
        "transcript": (t.to_html().save(out / "transcript.html"), t.entries[1].explanation.text),
        "run": (run.to_html().save(out / "run.html"), run.texts[0]),
        "patching": (patching_html(df).save(out / "patching.html"), df["explanation"].iloc[0]),
    }


@pytest.mark.parametrize("name", ["transcript", "run", "patching"])
def test_page_renders_coloured_cells_and_text(pages, name, tmp_path):
    page, text = pages[name]
    assert text and text[:10] in page.read_text(encoding="utf-8")
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body></body></html>")
    empty = screenshot(blank, tmp_path / "blank.png")
    img = screenshot(page, tmp_path / f"{name}.png")
    assert coloured(empty) == 0 and dark(empty) == 0  # the measure sees nothing on a blank page
    assert coloured(img) > 2000, f"{name}: no coloured cells in the screenshot"
    assert dark(img) > 1500, f"{name}: no text in the screenshot"


def test_patching_page_shows_the_legend_and_the_prompts(nla, subjects, tmp_path):
    """The legend and the prompts are on screen: the page without them renders with
    clearly less text and colour, and the DOM Chromium builds holds both."""
    tok = subjects["tokenizer"]
    # words of the toy task (random pieces need not re-tokenize to the same length)
    from nla_lens.toy import tasks

    pair = tasks(1)[0]
    text = [pair.clean, pair.corrupted]
    df = activation_patching(
        nla, subjects["hf"], text[0], text[1], layers=[0, 1], positions=[1, -1],
        answer_tokens=(pair.clean_answer_id, pair.corrupted_answer_id), tokenizer=tok,
        max_new_tokens=16,
    )  # fmt: skip
    page = patching_html(df)
    full = page.save(tmp_path / "full.html")
    head, table = str(page).split("<table><thead>", 1)
    assert 'class="nla-legend"' in head and 'class="nla-prompts"' in head
    bare = type(page)("<table><thead>" + table).save(tmp_path / "bare.html")
    with_head = screenshot(full, tmp_path / "full.png")
    without = screenshot(bare, tmp_path / "bare.png")
    assert dark(with_head) > dark(without) + 500, "the prompts and legend add no visible text"
    assert coloured(with_head) > coloured(without) + 200, "the legend's swatches are not visible"
    dom = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", full.resolve().as_uri()],
        check=True, capture_output=True, timeout=120, text=True,
    ).stdout  # fmt: skip
    assert text[0][:30] in dom and text[1][:30] in dom and "behaves like the corrupted run" in dom
