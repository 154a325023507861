"""Linked views in a real JupyterLab: a click on a token in TokenActivations highlights that
position in LogitLens and PatchingGrid (mi_widgets/widgets/link.py keeps the selection in the
kernel; the views mark the linked column ``mw-linked``)."""

from __future__ import annotations

import pytest
from _browser import has_class
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"

nb = view_notebook(
    "linked_views.ipynb",
    f"""
import mi_widgets as mw
from mi_widgets.widgets.link import link
m = {{model}}
toks = mw.TokenActivations(m, "{CLEAN}", site="mlp_post", layer=0)
toks""",
    f'lens = mw.logit_lens(m, "{CLEAN}", k=3).widget()\nlens',
    f'grid = mw.activation_patching(m, "{CLEAN}", "{CORRUPT}", mw.logit_diff(" Paris", " Tokyo"), '
    'positions="each", layers=[0, 1], progress=False).widget()\ngrid',
    'ln = link(toks, lens, grid, on="position")\nln',
)


def test_click_a_token_highlights_its_column_in_the_lens_and_the_grid(nb):
    toks = nb.widget(0)
    lens = nb.view(".mw-logit-lens", ready=".mw-cell", cell=1)
    grid = nb.view(".mw-patching-grid", ready=".mw-cell", cell=2)
    assert lens.locator(".mw-linked").count() == 0

    toks.locator('.mw-token[data-index="3"]').click()
    assert nb.wait_py("toks.selected_token", 3) == 3
    assert nb.wait_py("lens.selected_position", 3) == 3
    n_rows = nb.py_json("len(lens.layer_names)")
    # the lens: every row's cell at position 3, and its label
    expect(lens.locator('.mw-cell.mw-linked[data-pos="3"]')).to_have_count(n_rows)
    expect(lens.locator(".mw-cell.mw-linked")).to_have_count(n_rows)
    # the grid: the column of position 3 (positions="each": column index = position) in both layers
    expect(grid.locator('.mw-cell.mw-linked[data-col="3"]')).to_have_count(2)
    expect(grid.locator(".mw-cell.mw-linked")).to_have_count(2)
    assert nb.py_json("grid.selected_cell") == {"layer": 0, "position": 3}

    # the other way: a click on a lens column moves the token selection and the grid's column
    lens.locator('.mw-cell[data-row="1"][data-pos="5"]').click()
    assert nb.wait_py("toks.selected_token", 5) == 5
    expect(grid.locator('.mw-cell.mw-linked[data-col="5"]')).to_have_count(2)
    expect(toks.locator('.mw-token[data-index="5"]')).to_have_class(has_class("mw-selected"))


def test_code_toggle_and_predict_then_reveal(nb):
    lens = nb.view(".mw-logit-lens", ready=".mw-cell", cell=1)
    grid = nb.view(".mw-patching-grid", ready=".mw-cell", cell=2)
    # show the code: the toggle fetches w.code() and shows it as text
    lens.locator(".mw-code-toggle").click()
    code = lens.locator("pre.mw-code")
    expect(code).to_be_visible()
    expect(code).to_contain_text("with torch.no_grad(), nn.trace(ids):")
    assert code.text_content() == nb.py_json("lens.code()")
    # predict, then reveal: a question hides the colours; the clicked cell is the guess
    nb.py('grid.predict = "Which cell carries the fact?"')
    expect(grid.locator(".mw-predict")).to_contain_text("Which cell carries the fact?")
    assert grid.evaluate("el => Array.from(el.querySelectorAll('.mw-cell')).every(c => !c.style.background)")
    grid.locator('.mw-cell[data-row="1"][data-col="5"]').click()
    assert nb.wait_py("len(grid.guesses)", 1) == 1
    assert nb.py_json("[grid.guesses[0]['layer'], grid.guesses[0]['position']]") == [1, 5]
    expect(grid.locator(".mw-cell.mw-guess")).to_have_count(1)
    expect(grid.locator(".mw-predict")).to_contain_text("Your guess: layer 1, position 5")
    assert grid.evaluate("el => Array.from(el.querySelectorAll('.mw-cell')).some(c => !!c.style.background)")
