"""The views in Notebook 7 (the classic-notebook successor, its own server and page): a
TokenActivations click and a PatchingGrid click reach Python, as in JupyterLab.

Notebook 7 is built from JupyterLab's components, but its shell, page and URL are its own; this
checks the views render there and that the comm round trip (traits and requests) works."""

from __future__ import annotations

import pytest
from _browser import display_token, has_class
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

TEXT = "The Eiffel Tower is in Paris"

nb = view_notebook(
    "notebook7.ipynb",
    "import mi_widgets as mw\nm = {model}\n" f'w = mw.TokenActivations(m, "{TEXT}", site="mlp_post", layer=0)\nw',
    """
r = mw.activation_patching(m, "The Eiffel Tower is in", "The Senso Temple is in",
                           mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)
g = r.widget()
g""",
    app="notebook7",
)


def test_page_is_notebook7_not_lab(nb):
    assert "/notebooks/" in nb.page.url
    assert nb.page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"


def test_token_click_reaches_python(nb):
    root = nb.widget(0)
    spans = root.locator(".mw-token")
    toks = [t for text in nb.py_json("w.texts") for t in text]
    expect(spans).to_have_count(len(toks))
    assert spans.all_text_contents() == [display_token(t) for t in toks]
    i = len(toks) - 1
    span = root.locator(f'.mw-token[data-index="{i}"]')
    span.click()
    expect(span).to_have_class(has_class("mw-selected"))
    assert nb.wait_py("w.selected_token", i) == i


def test_grid_cell_click_runs_a_request_in_the_kernel(nb):
    root = nb.view(".mw-patching-grid", ready=".mw-cell", cell=1)
    n_layers = nb.py_json("len(g.layers)")
    expect(root.locator(".mw-cell")).to_have_count(n_layers * 6)
    cell = root.locator('.mw-cell[data-row="1"][data-col="5"]')
    cell.click()
    # the "cell" request ran a patched forward in the kernel and the panel shows its top-k
    rows = root.locator('.mw-topk-list[data-run="patched"] .mw-topk-row .mw-tok')
    expect(rows.first).to_be_visible(timeout=240_000)
    assert rows.all_text_contents() == [t["token"] for t in nb.py_json("g.cell_topk(1, position=5)")]
