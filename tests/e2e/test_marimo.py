"""The views in marimo: `mo.ui.anywidget(view)` in an app run headless (`marimo run`), a click on
a token and on a patching-grid cell reaches Python, and a cell that depends on the widget's value
re-runs reactively with the selection.

marimo renders anywidgets with its own loader (no ipywidgets, no JupyterLab), so this checks the
bundles' `export default {render}` contract and the `model.send` request path there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from ._server import _free_port, _pythonpath

pytestmark = pytest.mark.e2e

APP = '''
import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo

    import mi_widgets as mw

    m = MODEL
    tokens = mo.ui.anywidget(mw.TokenActivations(m, "The Eiffel Tower is in Paris", site="mlp_post", layer=0))
    r = mw.activation_patching(m, "The Eiffel Tower is in", "The Senso Temple is in",
                               mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)
    grid = mo.ui.anywidget(r.widget())
    return grid, mo, tokens


@app.cell
def _(tokens):
    tokens
    return


@app.cell
def _(mo, tokens):
    mo.md(f"selected token: <span id='mw-selected-token'>{tokens.value.get('selected_token')}</span>")
    return


@app.cell
def _(grid):
    grid
    return


if __name__ == "__main__":
    app.run()
'''


@pytest.fixture(scope="module")
def marimo_page(tmp_path_factory, browser, model_expr):
    base = tmp_path_factory.mktemp("marimo")
    app = base / "app.py"
    app.write_text(APP.replace("MODEL", model_expr), encoding="utf-8")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=_pythonpath(), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               MARIMO_SKIP_UPDATE_CHECK="1", HOME=str(base))
    log = open(base / "marimo.log", "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "marimo", "run", str(app), "--headless", "--host", "127.0.0.1",
         "--port", str(port), "--no-token", "--no-check", "--no-sandbox"],
        cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
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
        yield page
        context.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()


def test_token_click_updates_the_reactive_value(marimo_page):
    page = marimo_page
    # marimo mounts each anywidget in a shadow root; Playwright's CSS locators pierce it
    token = page.locator(".mw-token-activations .mw-token").last
    token.wait_for(state="attached", timeout=240_000)
    n = page.locator(".mw-token-activations .mw-token").count()
    assert n == 7  # <bos> The Eiffel Tower is in Paris
    token.click()
    expect(token).to_have_class(re.compile(r"(^|\s)mw-selected(\s|$)"))
    # the dependent cell re-ran in the kernel with the new value
    expect(page.locator("#mw-selected-token")).to_have_text(str(n - 1), timeout=60_000)


def test_grid_cell_click_gets_its_answer_from_python(marimo_page):
    page = marimo_page
    cell = page.locator('.mw-patching-grid .mw-cell[data-row="1"][data-col="5"]')
    cell.wait_for(state="attached", timeout=240_000)
    cell.click()
    patched = page.locator('.mw-patching-grid .mw-topk-list[data-run="patched"] .mw-topk-row .mw-tok')
    expect(patched.first).to_be_visible(timeout=120_000)
    assert patched.first.text_content() == " Paris"
