"""PatchingGrid in a real JupyterLab, driven by headless chromium.

One notebook (one kernel): cell 0 patches "The Eiffel Tower is in" / "The Senso Temple is in"
(zoo:tiny's ground truth, figures.patching: the answers are " Paris" / " Tokyo") per position
and shows ``.widget()``. DOM hooks: docs/widget_protocol.md ("PatchingGrid").
"""

from __future__ import annotations

import re
import time

import pytest
from _browser import has_class, hover_tooltip, report, static_view
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CELL_S = 120

nb = view_notebook("patching_grid.ipynb", """
import mi_widgets as mw
m = {model}
r = mw.activation_patching(m, "The Eiffel Tower is in", "The Senso Temple is in",
                           mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)
w = r.widget()
w
""")


def grid_root(nb):
    return nb.view(".mw-patching-grid", ready=".mw-cell")


def test_click_cell_shows_patched_clean_corrupt_topk(nb, capsys):
    root = grid_root(nb)
    n_layers = nb.py_json("len(w.layers)")
    k = nb.py_json("w.k")
    expect(root.locator(".mw-cell")).to_have_count(n_layers * 6)
    labels = root.locator(".mw-col-label").all_text_contents()
    assert labels[2] == " Eiffel/ Senso" and labels[5] == " in", labels

    # hover: label and exact value
    cell = root.locator('.mw-cell[data-row="1"][data-col="5"]')
    tip = hover_tooltip(root, cell, 'layer 1, position 5 " in"')
    value = nb.py_json("float(r.values[1, 5])")
    assert float(tip.locator(".mw-tt-value").text_content()) == float(f"{value:.4g}")

    # click: the "cell" request runs one patched forward in the kernel
    t0 = time.perf_counter()
    cell.click()
    patched = root.locator('.mw-topk-list[data-run="patched"] .mw-topk-row')
    expect(patched).to_have_count(k, timeout=CELL_S * 1000)
    report(capsys, f"cell click → patched top-k shown in {time.perf_counter() - t0:.2f}s")
    expect(root.locator('.mw-topk-list[data-run="clean"] .mw-topk-row')).to_have_count(k)
    expect(root.locator('.mw-topk-list[data-run="corrupt"] .mw-topk-row')).to_have_count(k)
    expect(cell).to_have_class(has_class("mw-selected"))
    toks = lambda run: root.locator(f'.mw-topk-list[data-run="{run}"] .mw-topk-row .mw-tok').all_text_contents()  # noqa: E731
    assert toks("clean")[0] == " Paris"
    assert toks("corrupt")[0] == " Tokyo"
    assert toks("patched") == [t["token"] for t in nb.py_json('w.cell_topk(1, position=5)')]
    assert toks("patched")[0] == " Paris"


def test_sweep_from_the_view_progress_and_cancel(nb, capsys):
    root = grid_root(nb)
    status = root.locator(".mw-status")
    site = root.locator("select.mw-site")
    expect(site).to_be_enabled()
    # slow each batch down in the sweep thread so that progress can be seen and cancelled
    nb.py(
        "import time as _time\n"
        "def _slow(change):\n"
        "    _time.sleep(0.6)\n"
        "w.observe(_slow, 'n_filled')"
    )
    before = nb.py_json("[w.site, w.values['shape'], w.n_filled]")
    site.select_option("attn_out")
    expect(status).to_have_attribute("data-status", "running", timeout=30_000)
    expect(status).to_contain_text(re.compile(r"running \d+/24"))
    expect(root.locator(".mw-cell.mw-empty").first).to_be_attached()
    root.locator("button.mw-cancel").click()
    expect(status).to_have_attribute("data-status", "cancelled", timeout=30_000)
    assert nb.wait_py("w.status", "cancelled") == "cancelled"
    assert nb.py_json("[w.site, w.values['shape'], w.n_filled]") == before
    expect(site).to_have_value("resid_pre")
    expect(root.locator(".mw-cell.mw-empty")).to_have_count(0)

    # a full sweep, filled cell by layer, equal to activation_patching's grid
    nb.py("w.unobserve(_slow, 'n_filled')")
    t0 = time.perf_counter()
    root.locator("select.mw-mode").select_option("attribution")
    expect(status).to_have_attribute("data-status", "ready", timeout=CELL_S * 1000)
    assert nb.wait_py("w.mode", "attribution") == "attribution"
    report(capsys, f"attribution sweep from the view: {time.perf_counter() - t0:.2f}s")
    site.select_option("attn_out")
    assert nb.wait_py("[w.site, w.status]", ["attn_out", "ready"], timeout_s=60) == ["attn_out", "ready"]
    expect(status).to_have_attribute("data-status", "ready")
    ok = nb.py_json(
        "bool(__import__('torch').allclose(w.result.values, mw.attribution_patching(m, r.clean, r.corrupt,"
        " mw.logit_diff(' Paris', ' Tokyo'), site='attn_out', positions='each').values, atol=1e-5))"
    )
    assert ok
    nb.assert_no_markup_ran()


def test_static_export_in_the_browser(nb, tmp_path, capsys):
    """``to_html()`` opened from file:// (no kernel): grid, hover, clean/corrupt top-k, and the
    patched top-k of precomputed cells; kernel controls disabled."""
    path = tmp_path / "grid.html"
    t0 = time.perf_counter()
    nb.py(f"w.sweep('resid_pre', 'exact'); w.to_html({str(path)!r})")
    report(capsys, f"sweep + to_html in the kernel: {time.perf_counter() - t0:.2f}s, {path.stat().st_size} bytes")
    cached = nb.py_json("sorted(w._static_extra(512)['cell_cache'])")
    k = nb.py_json("w.k")
    with static_view(nb.page.context, path, ".mw-patching-grid") as root:
        expect(root.locator(".mw-cell")).to_have_count(nb.py_json("w.n_cells"))
        expect(root.locator("select.mw-site")).to_be_disabled()
        expect(root.locator("select.mw-mode")).to_be_disabled()
        expect(root.locator('.mw-topk-list[data-run="clean"] .mw-topk-row')).to_have_count(k)
        r, c = cached[0].split(",")
        cell = root.locator(f'.mw-cell[data-row="{r}"][data-col="{c}"]')
        cell.hover()
        expect(root.locator(".mw-tooltip .mw-tt-label")).to_contain_text(f"layer {r}")
        cell.click()
        expect(root.locator('.mw-topk-list[data-run="patched"] .mw-topk-row')).to_have_count(k)
        miss = next(f"{i},{j}" for i in range(4) for j in range(6) if f"{i},{j}" not in cached)
        i, j = miss.split(",")
        root.locator(f'.mw-cell[data-row="{i}"][data-col="{j}"]').click()
        expect(root.locator('.mw-topk-list[data-run="patched"] .mw-note')).to_contain_text("not precomputed")
