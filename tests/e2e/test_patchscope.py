"""Patchscope in a real JupyterLab, driven by headless chromium.

One notebook (one kernel): cell 0 builds a Patchscope over "The Eiffel Tower is in" (zoo:tiny;
ground truth: the final position decodes " Paris" from layer 1 on). Clicking a cell runs the
"decode" request in the kernel; the texts shown must equal the core's ``patchscope``. DOM hooks:
container ``.mw-patchscope``, cells ``.mw-cell[data-layer][data-position]``, source tokens
``.mw-src-token``, rows ``.mw-decoded-row[data-target-layer]`` with ``.mw-text``.
"""

from __future__ import annotations

import time

import pytest
from _browser import display_token, has_class, report, static_view
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CELL_S = 120

nb = view_notebook("patchscope.ipynb", """
import mi_widgets as mw
from mi_widgets.widgets.patchscope import Patchscope
from mi_widgets.core.description.patchscopes import patchscope
m = {model}
w = Patchscope(m, "The Eiffel Tower is in <b>x</b>", n_tokens=2)
w
""")


def test_click_a_cell_decodes_as_in_python(nb, capsys):
    root = nb.view(".mw-patchscope", ready=".mw-cell")
    toks = nb.py_json("w.source_tokens")
    n_layers = nb.py_json("m.n_layers")
    expect(root.locator(".mw-cell")).to_have_count((n_layers + 1) * len(toks))
    assert root.locator(".mw-src-token").all_text_contents() == [display_token(t) for t in toks]
    assert root.locator("b").count() == 0

    pos = 5  # " in", the final position of the fact
    assert toks[pos] == " in"
    cell = root.locator(f'.mw-cell[data-layer="2"][data-position="{pos}"]')
    t0 = time.perf_counter()
    cell.click()
    rows = root.locator(".mw-decoded-row .mw-text")
    expect(rows).to_have_count(n_layers + 1, timeout=CELL_S * 1000)
    report(capsys, f"cell click → decoded texts shown in {time.perf_counter() - t0:.2f}s")
    expect(cell).to_have_class(has_class("mw-selected"))
    expect(cell).to_have_class(has_class("mw-done"))
    shown = rows.all_text_contents()
    want = nb.py_json(
        f"patchscope(m, w.source_prompt, [2], {pos}, target_layers='all', n_tokens=2).texts[0]"
    )
    assert shown == [display_token(t) for t in want]
    assert all(t.startswith(" Paris") for t in want), want  # ground truth: layer >= 1
    assert nb.py_json("[w.selected_layer, w.selected_position]") == [2, pos]
    expect(root.locator(".mw-panel-title")).to_have_text(f'source layer 2, position {pos} " in"')

    # layer 0 at the same position holds only " in" + position: no " Paris"
    root.locator(f'.mw-cell[data-layer="0"][data-position="{pos}"]').click()
    expect(root.locator(".mw-panel-title")).to_have_text(f'source layer 0, position {pos} " in"', timeout=CELL_S * 1000)
    nb.wait_py("[w.selected_layer, w.status]", [0, "ready"], timeout_s=60)
    want0 = nb.py_json("w.decoded")
    expect(rows).to_have_count(n_layers + 1)
    assert rows.all_text_contents() == [display_token(t) for t in want0]
    assert not any(t.startswith(" Paris") for t in want0), want0
    nb.assert_no_markup_ran()


def test_static_export_in_the_browser(nb, tmp_path):
    path = tmp_path / "patchscope.html"
    nb.py(f"w.to_html({str(path)!r})")
    cached = nb.py_json("w._static_extra(512)['decoded_cache']")
    with static_view(nb.page.context, path, ".mw-patchscope") as root:
        expect(root.locator(".mw-status")).to_have_text("static")
        key = "2,5"
        root.locator('.mw-cell[data-layer="2"][data-position="5"]').click()
        expect(root.locator(".mw-decoded-row .mw-text")).to_have_text([display_token(t) for t in cached[key]["texts"]])
        root.locator('.mw-cell[data-layer="3"][data-position="1"]').click()
        expect(root.locator(".mw-decoded .mw-note")).to_contain_text("not precomputed")
        assert root.locator("b").count() == 0
