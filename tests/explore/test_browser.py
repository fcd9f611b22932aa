"""The explorer in a real browser: Selenium driving Debian's chromium and chromium-driver
against ``nla-lens explore --subject toy --av toy --ar toy`` started as a user would.

Click a token, see its first segment and then the whole explanation with a score; see a
request without the token refused; open the patching view and a cell's explanations;
save a screenshot and check the strip and the explanation are drawn (DOM + pixels)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from nla_lens.toy import read_explanation

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
WAIT_S = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory, patching_frame):
    """The CLI's explorer on the toy; yields its URL (with the token)."""
    table = tmp_path_factory.mktemp("browser") / "grid.csv"
    patching_frame.to_csv(table, index=False)
    cmd = [sys.executable, "-m", "nla_lens.cli", "explore", "--subject", "toy", "--av", "toy",
           "--ar", "toy", "--reply-tokens", "4", "--table", str(table)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = table.parent / "explore.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    url, deadline = None, time.monotonic() + 300  # a loaded 2-core machine is slow to start it
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        found = [ln for ln in log.read_text().splitlines() if ln.startswith("http://127.0.0.1:")]
        url = found[0].strip() if found and "?token=" in found[0] else None
    if url is None:
        proc.kill()
        pytest.fail(
            f"nla-lens explore did not print its URL (exit {proc.poll()}):\n{log.read_text()}"
        )
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def driver():
    if BROWSER is None or DRIVER is None:
        pytest.fail("chromium / chromedriver missing: run scripts/setup_browser.sh (CI does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--hide-scrollbars", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield d
    d.quit()


def wait_for(driver, css: str, *, text: str | None = None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    w = WebDriverWait(driver, WAIT_S)
    if text is None:
        return w.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    w.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return driver.find_element(By.CSS_SELECTOR, css)


def region(img: np.ndarray, el) -> np.ndarray:
    r = el.rect
    x, y, w, h = (int(r[k]) for k in ("x", "y", "width", "height"))
    return img[y : y + h, x : x + w]


def test_click_a_token_and_watch_its_explanation_arrive(served, driver, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    driver.get(served)
    strip = wait_for(driver, "[data-testid=strip] .nla-tok")
    tokens = driver.find_elements(By.CSS_SELECTOR, "[data-testid=strip] .nla-tok")
    assert len(tokens) > 10 and any("nla-reply" in t.get_attribute("class") for t in tokens)
    assert "fve_nrm against" in driver.find_element(By.CSS_SELECTOR, ".nla-baseline").text
    assert driver.find_element(By.CSS_SELECTOR, "[data-testid=fit]").text  # the fit flag
    target = tokens[5]
    word = target.text
    target.click()
    first = wait_for(driver, "[data-testid=segments] li")  # the first segment, with its score
    assert "cos" in first.text and "fve_nrm" in first.text
    final = wait_for(driver, "[data-testid=final]", text="cos")
    assert "fve_nrm" in final.text
    wait_for(driver, "[data-testid=status]", text="done")
    text = driver.find_element(By.CSS_SELECTOR, "[data-testid=live]").text
    reading = read_explanation(text)
    assert reading.token is not None and reading.token.strip() == word.strip()

    shot = tmp_path / "explorer.png"
    driver.save_screenshot(str(shot))
    out = os.environ.get("NLA_LENS_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / "explorer.png")
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    strip = driver.find_element(By.CSS_SELECTOR, "[data-testid=strip]")
    panel = driver.find_element(By.CSS_SELECTOR, "[data-testid=explanation]")
    s, p = region(img, strip), region(img, panel)
    assert s.size and p.size
    assert ((s.max(axis=2) - s.min(axis=2)) > 10).sum() > 500, (
        "the token strip has no coloured tokens"
    )
    assert (s.max(axis=2) < 90).sum() > 300, "the token strip has no text"
    assert (p.max(axis=2) < 90).sum() > 300, "the explanation panel has no text"


def test_a_request_without_the_token_is_refused(served, driver):
    base = served.split("/?token=")[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/state", timeout=10)
    assert refused.value.code == 401
    driver.delete_all_cookies()
    driver.get(base + "/")
    assert "session token" in driver.page_source
    assert not driver.find_elements("css selector", ".nla-tok")


def test_the_patching_view_opens_a_cells_explanations(served, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(served)
    wait_for(driver, "[data-testid=strip] .nla-tok")
    Select(driver.find_element(By.CSS_SELECTOR, "select.nla-views")).select_by_value("grid.csv")
    cell = wait_for(driver, "[data-testid=patching] td.nla-cell")
    cell.click()
    box = wait_for(driver, "[data-testid=cell] [data-column=readout_explanation]")
    assert "readout 0/" in box.text
    assert "cell 0/" in driver.find_element(By.CSS_SELECTOR, "[data-column=explanation]").text
