"""The tour as a marimo app (notebooks/00_tour_marimo.py), run headless with `marimo run`: every
view of the tour draws its root element and its content, a token click reaches Python (a cell
that reads the view's value re-runs) and a patching-grid click gets its answer from Python.

And what `marimo export html` of the same app carries offline (docs/platforms.md): the page is
marimo's frontend, loaded from marimo's CDN (cdn.jsdelivr.net/npm/@marimo-team/frontend); with
the network blocked nothing of the notebook is drawn, although the file holds every view's
state and our bundle (as a data: URL)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ._server import _free_port, _pythonpath

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[2] / "notebooks" / "00_tour_marimo.py"
VIEWS = {".mw-token-activations": 3, ".mw-patching-grid": 1}  # the tour's four views


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=_pythonpath(), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
                MARIMO_SKIP_UPDATE_CHECK="1", HOME=str(home))


@pytest.fixture(scope="module")
def tour(tmp_path_factory, browser):
    base = tmp_path_factory.mktemp("marimo-tour")
    port = _free_port()
    log = open(base / "marimo.log", "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "marimo", "run", str(APP), "--headless", "--host", "127.0.0.1",
         "--port", str(port), "--no-token", "--no-check", "--no-sandbox"],
        cwd=base, env=_env(base), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError((base / "marimo.log").read_text())
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("marimo did not start:\n" + (base / "marimo.log").read_text()) from None
                time.sleep(0.3)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        # the last view of the tour (the patching grid) is drawn once every cell above it ran
        page.locator(".mw-patching-grid .mw-cell").first.wait_for(state="attached", timeout=400_000)
        yield page
        context.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()


def test_every_view_of_the_tour_draws(tour):
    page = tour
    for root, n in VIEWS.items():
        expect(page.locator(root)).to_have_count(n, timeout=120_000)
    ta = page.locator(".mw-token-activations")
    # three texts, three sentences, one repeated random sequence: tokens drawn in each
    for i in range(3):
        assert ta.nth(i).locator(".mw-token").count() > 5
    # 4 layers x 6 positions of "<bos>The Eiffel Tower is in"
    assert page.locator(".mw-patching-grid .mw-cell").count() == 4 * 6


def test_a_token_click_reaches_python(tour):
    page = tour
    token = page.locator(".mw-token-activations").first.locator(".mw-token").nth(3)
    token.click()
    expect(token).to_have_class(re.compile(r"(^|\s)mw-selected(\s|$)"))
    # the cell that reads `view.value` re-ran in the kernel with the clicked index
    expect(page.locator("#mw-tour-selected")).to_have_text("3", timeout=60_000)


def test_a_grid_click_gets_its_answer_from_python(tour):
    page = tour
    cell = page.locator('.mw-patching-grid .mw-cell[data-row="1"][data-col="5"]')
    cell.click()
    patched = page.locator('.mw-patching-grid .mw-topk-list[data-run="patched"] .mw-topk-row .mw-tok')
    expect(patched.first).to_be_visible(timeout=120_000)
    assert patched.first.text_content() == " Paris"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("marimo-export")
    out = base / "tour.html"
    proc = subprocess.run(
        [sys.executable, "-m", "marimo", "export", "html", str(APP), "-o", str(out), "--no-sandbox"],
        cwd=base, env=_env(base), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_marimo_export_carries_the_views_state_and_bundles(exported):
    text = exported.read_text(encoding="utf-8")
    # each view's output (its HTML sits JSON-escaped in the page's data)
    assert text.count("marimo-anywidget data-initial-value") == sum(VIEWS.values())
    # our ES modules travel inline as data: URLs (no file of ours to fetch) ...
    esms = [base64.b64decode(m).decode("utf-8", "replace")
            for m in set(re.findall(r"data:text/javascript;base64,([A-Za-z0-9+/=]+)", text))]
    assert any("mw-token-activations" in e for e in esms) and any("mw-patching-grid" in e for e in esms)
    # ... with each view's traits (the token strings of the first text among them)
    assert json.dumps(" Eiffel")[1:-1] in text
    # ... and the page itself is marimo's frontend, from marimo's CDN
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', text)
    assert scripts and all(s.startswith("https://cdn.jsdelivr.net/npm/@marimo-team/frontend@") for s in scripts)


def test_marimo_export_offline_draws_nothing_of_the_notebook(exported, browser):
    context = browser.new_context()
    page = context.new_page()
    blocked: list[str] = []

    def route(r):
        if r.request.url == exported.as_uri():
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(exported.as_uri(), wait_until="load")
    page.wait_for_timeout(3000)
    # what was asked of the network: marimo's frontend only, nothing of ours
    assert blocked and all("cdn.jsdelivr.net/npm/@marimo-team/frontend@" in u for u in blocked), blocked
    # nothing drawn: no view, no cell output, not even the markdown
    assert page.locator(".mw-token-activations, .mw-patching-grid").count() == 0
    body = page.locator("body").inner_text() or ""
    assert "One vocabulary for every architecture" not in body and "Clicked token" not in body
    context.close()
