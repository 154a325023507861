"""The views in marimo: `mo.ui.anywidget(view)` in an app run headless (`marimo run`), a click on
a token and on a patching-grid cell reaches Python, a cell that depends on the widget's value
re-runs reactively with the selection, and `mw.link` (kernel-side) carries a click in one view
to the other's highlight (issue 17, as tests/e2e/test_linked_views.py does in JupyterLab).

marimo renders anywidgets with its own loader (no ipywidgets, no JupyterLab), so this checks the
bundles' `export default {render}` contract and the `model.send` request path there."""

from __future__ import annotations

import pytest
from _browser import has_class
from playwright.sync_api import expect

from ._marimo import marimo_app

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
    lens = mo.ui.anywidget(mw.logit_lens(m, "The Eiffel Tower is in Paris", k=3).widget())
    shared = mw.link(tokens.widget, lens.widget, on="position")
    r = mw.activation_patching(m, "The Eiffel Tower is in", "The Senso Temple is in",
                               mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)
    grid = mo.ui.anywidget(r.widget())
    return grid, lens, mo, shared, tokens


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


@app.cell
def _(lens):
    lens
    return


@app.cell
def _(lens, mo, shared, tokens):
    # re-runs when either view changes: the kernel's traits after the link propagated
    mo.md(
        f"<span id='mw-linked-token'>{tokens.value.get('selected_token')}</span> "
        f"<span id='mw-linked-lens'>{lens.value.get('selected_position')}</span> "
        f"<span id='mw-link-value'>{shared.value}</span>"
    )
    return


if __name__ == "__main__":
    app.run()
'''


@pytest.fixture(scope="module")
def marimo_page(tmp_path_factory, browser, model_expr):
    with marimo_app(tmp_path_factory.mktemp("marimo"), APP.replace("MODEL", model_expr), browser) as page:
        yield page


def test_token_click_updates_the_reactive_value(marimo_page):
    page = marimo_page
    # marimo mounts each anywidget in a shadow root; Playwright's CSS locators pierce it
    token = page.locator(".mw-token-activations .mw-token").last
    token.wait_for(state="attached", timeout=240_000)
    n = page.locator(".mw-token-activations .mw-token").count()
    assert n == 7  # <bos> The Eiffel Tower is in Paris
    token.click()
    expect(token).to_have_class(has_class("mw-selected"))
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


def test_linked_token_and_lens_follow_each_other(marimo_page):
    """mw.link(tokens, lens) in marimo: a token click highlights that column in the lens (DOM) and
    sets the lens's trait in the kernel; a lens click moves the token selection back."""
    page = marimo_page
    lens = page.locator(".mw-logit-lens")
    lens.locator(".mw-cell").first.wait_for(state="attached", timeout=240_000)
    tokens = page.locator(".mw-token-activations")
    n_rows = lens.locator('.mw-cell[data-pos="0"]').count()
    assert n_rows >= 2

    tokens.locator('.mw-token[data-index="3"]').click()
    expect(lens.locator('.mw-cell.mw-linked[data-pos="3"]')).to_have_count(n_rows, timeout=60_000)
    expect(lens.locator(".mw-cell.mw-linked")).to_have_count(n_rows)
    expect(page.locator("#mw-linked-token")).to_have_text("3", timeout=60_000)
    expect(page.locator("#mw-linked-lens")).to_have_text("3")
    expect(page.locator("#mw-link-value")).to_have_text("3")

    # the other way: a lens column moves the token selection
    lens.locator('.mw-cell[data-row="1"][data-pos="5"]').click()
    expect(tokens.locator('.mw-token[data-index="5"]')).to_have_class(has_class("mw-selected"), timeout=60_000)
    expect(tokens.locator(".mw-token.mw-selected")).to_have_count(1)
    expect(lens.locator('.mw-cell.mw-linked[data-pos="5"]')).to_have_count(n_rows)
    expect(page.locator("#mw-linked-token")).to_have_text("5", timeout=60_000)
    expect(page.locator("#mw-linked-lens")).to_have_text("5")
