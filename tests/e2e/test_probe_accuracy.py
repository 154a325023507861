"""ProbeAccuracy in a real JupyterLab, driven by headless chromium.

One notebook (one kernel): cell 0 fits a small sentiment probe on zoo:tiny (120 reviews, 40 OOD,
seeds 0 and 1; the planted sentiment is readable at every block, not from the embedding of the
read token " is") and shows ``r.widget(model=m)``. Click a layer, read the confusion panel's
numbers and check them against counts made in the kernel from ``r.test_scores`` and ``r.labels``.
DOM hooks: docs/widget_protocol.md ("ProbeAccuracy").
"""

from __future__ import annotations

import time

import pytest
from _browser import hover_tooltip, report, static_view
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CELL_S = 120

# counts by loops in the kernel, independent of the widget: [[true lo→lo, lo→hi], [hi→lo, hi→hi]]
HAND_CONFUSION = (
    "[[sum(1 for j, i in enumerate(r.test_index) if r.labels[i] == t and (1 if float(r.test_scores[{key}][j]) > 0 else 0) == p)"
    " for p in (0, 1)] for t in (0, 1)]"
)

nb = view_notebook("probe_accuracy.ipynb", """
import mi_widgets as mw
from mi_widgets.core.concepts.probes import ProbeDataset, probe
m = {model}
r = probe(m, ProbeDataset.from_zoo("sentiment", n=120, n_ood=40), seeds=(0, 1), progress=False)
r.add_overlay("after erasure", {1: 0.5})
w = r.widget(model=m)
w
""")


def view_root(nb):
    return nb.view(".mw-probe-accuracy", ready=".mw-x-label")


def confusion(root) -> list[list[int]]:
    cells = root.locator(".mw-layer-panel .mw-conf-cell")
    expect(cells).to_have_count(4)
    out = [[0, 0], [0, 0]]
    for k in range(4):
        c = cells.nth(k)
        out[int(c.get_attribute("data-true"))][int(c.get_attribute("data-pred"))] = int(c.text_content())
    return out



def test_click_a_layer_shows_its_confusion_matrix_and_coloured_examples(nb, capsys):
    root = view_root(nb)
    expect(root.locator(".mw-x-label")).to_have_count(5)
    expect(root.locator('.mw-point[data-curve="test"]')).to_have_count(5)

    # hover: exact values (the overlay point is drawn last, so the pointer reaches it; the test
    # point may sit under others of equal accuracy, so it gets the event directly)
    point = root.locator('.mw-point[data-curve="after erasure"][data-index="2"]')
    tip = hover_tooltip(root, point, "after erasure · resid_post 1")
    expect(tip.locator(".mw-tt-value")).to_have_text("accuracy 0.5000")
    root.locator('.mw-point[data-curve="test"][data-index="0"]').dispatch_event("mouseover")
    expect(tip.locator(".mw-tt-label")).to_have_text("test · embed")
    acc = nb.py_json("r.accuracy('embed', 'test')")
    expect(tip.locator(".mw-tt-value")).to_contain_text(f"accuracy {acc:#.4g} (mean of 2 seeds")

    # click the embedding: a "layer" request computes the panel (one trace per example) in the kernel
    t0 = time.perf_counter()
    root.locator('.mw-x-label[data-index="0"]').click()
    expect(root.locator(".mw-layer-panel .mw-panel-title")).to_contain_text("embed", timeout=CELL_S * 1000)
    expect(root.locator(".mw-layer-panel .mw-token").first).to_be_attached(timeout=CELL_S * 1000)
    report(capsys, f"layer click → panel with coloured tokens in {time.perf_counter() - t0:.2f}s")
    got = confusion(root)
    assert got == nb.py_json(HAND_CONFUSION.format(key="('resid_pre', -1)"))
    assert nb.wait_py("[w.selected_site, w.selected_layer]", ["resid_pre", -1]) == ["resid_pre", -1]
    n_tokens = nb.py_json("sum(len(t) for t in w.panel['str_tokens'])")
    expect(root.locator(".mw-layer-panel .mw-token")).to_have_count(n_tokens)
    expect(root.locator(".mw-layer-panel .mw-example")).to_have_count(nb.py_json("len(r.test_index)"))

    # a block where the planted sentiment is read: the confusion matrix is the kernel's, all correct
    root.locator('.mw-x-label[data-index="2"]').click()
    expect(root.locator(".mw-layer-panel .mw-panel-title")).to_contain_text("resid_post 1", timeout=CELL_S * 1000)
    got = confusion(root)
    assert got == nb.py_json(HAND_CONFUSION.format(key="('resid_post', 1)"))
    assert got[0][1] == got[1][0] == 0 and got[0][0] + got[1][1] == nb.py_json("len(r.test_index)")
    first = root.locator(".mw-layer-panel .mw-example").first
    assert int(first.get_attribute("data-index")) == nb.py_json(
        "r.test_index[int(r.test_scores[('resid_post', 1)].argmax())]"
    )
    nb.assert_no_markup_ran()


def test_legend_toggle_and_selection_from_python(nb):
    root = view_root(nb)
    toggle = root.locator('.mw-curve-toggle[data-curve="after erasure"]')
    expect(root.locator('path.mw-line[data-curve="after erasure"]')).to_have_count(1)
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(root.locator('path.mw-line[data-curve="after erasure"]')).to_have_count(0)
    assert "after erasure" in nb.wait_py("w.hidden_curves", ["validation", "after erasure"])

    nb.py("w.selected_layer = 3")
    expect(root.locator(".mw-layer-panel .mw-panel-title")).to_contain_text("resid_post 3", timeout=CELL_S * 1000)
    expect(root.locator('.mw-layer-hit[data-index="4"]')).to_have_class("mw-layer-hit mw-selected")
    assert confusion(root) == nb.py_json(HAND_CONFUSION.format(key="('resid_post', 3)"))


def test_static_export_in_the_browser(nb, tmp_path, capsys):
    """``to_html()`` opened from file:// (no kernel): the best layer's panel with coloured tokens,
    confusion matrices of every layer from the export, hostile example text shown literally."""
    path = tmp_path / "probe.html"
    t0 = time.perf_counter()
    nb.py(
        "from mi_widgets.core.concepts.probes import ProbeResult\n"
        "_hostile = ['</script><script>window.__pwned=3</script>', '<img src=x onerror=\"window.__pwned=2\">']\n"
        "_texts = list(r.texts)\n"
        "for _j, _i in enumerate(r.test_index[:2]):\n"
        "    _texts[_i] = _hostile[_j] + ' ' + _texts[_i]\n"
        "w2 = ProbeResult(**{**r.__dict__, 'texts': _texts}).widget(model=m)\n"
        f"w2.to_html({str(path)!r})"
    )
    report(capsys, f"to_html in the kernel: {time.perf_counter() - t0:.2f}s, {path.stat().st_size} bytes")
    best = nb.py_json("list(w2.best_layer())")
    with static_view(nb.page.context, path, ".mw-probe-accuracy") as root:
        expect(root.locator(".mw-status")).to_have_text("static")
        name = "embed" if best[1] < 0 else f"{best[0]} {best[1]}"
        expect(root.locator(".mw-panel-title")).to_contain_text(name)
        assert confusion(root) == nb.py_json(HAND_CONFUSION.format(key=tuple(best)))
        expect(root.locator(".mw-token").first).to_be_attached()
        shown = root.locator(".mw-example .mw-ex-text").all_text_contents()
        assert any("</script><script>window.__pwned=3</script> The" in t for t in shown), shown[:3]
        assert any('<img src=x onerror="window.__pwned=2"> The' in t for t in shown)
        root.locator('.mw-x-label[data-index="0"]').click()
        expect(root.locator(".mw-panel-title")).to_contain_text("embed")
        assert confusion(root) == nb.py_json(HAND_CONFUSION.format(key="('resid_pre', -1)"))
        expect(root.locator(".mw-no-tokens")).to_contain_text("not precomputed")
