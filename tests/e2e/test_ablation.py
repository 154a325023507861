"""Ablation view in a real JupyterLab, driven by headless chromium.

One notebook (one kernel): cell 0 zero-ablates every head of zoo:ioi separately on one IOI
prompt with ``logit_diff(" Mary", " John")`` and shows the view. Ground truth
(``mw.zoo.ground_truth("ioi")``, docs/zoo_compiled.md): 0.1 (duplicate token), 1.2 (S-inhibition)
and 2.3 (name mover) are the circuit; ablating 0.1 or 1.2 splits the name mover's attention, so
the logit diff turns negative (about -10/3: the largest drops), ablating 2.3 sets it to 0, and
the nine decoys do nothing. DOM hooks: docs/widget_protocol.md ("Ablation").
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
SELECTED = has_class("mw-selected")

nb = view_notebook("ablation.ipynb", """
import mi_widgets as mw
from mi_widgets.widgets.ablation import Ablation
ioi = mw.load("zoo:ioi")
gt = mw.zoo.ground_truth("ioi")["components"]
prompt = "When Mary and John went to the store, John gave a drink to"
heads = [f'{l}.{h}' for l in range(ioi.n_layers) for h in range(ioi.n_heads)]
r = mw.ablate(ioi, [prompt], mw.logit_diff(" Mary", " John"), heads, kind="zero",
              separately=True, progress=False)
w = Ablation.from_result(r, k=5)
w
""")


def view(nb):
    return nb.view(".mw-ablation", ready=".mw-cell")


def effect_of(root, layer: int, head: int) -> float:
    cell = root.locator(f'.mw-cell[data-layer="{layer}"][data-head="{head}"]')
    tip = hover_tooltip(root, cell, f"{layer}.{head}")
    m = re.search(r"effect (\S+)", tip.locator(".mw-tt-value").text_content() or "")
    assert m, tip.text_content()
    return float(m.group(1))


def test_heatmap_shows_the_planted_circuit_and_clicking_the_name_mover_shows_its_topk(nb, capsys):
    root = view(nb)
    gt = nb.py_json("gt")
    expect(root.locator(".mw-cell")).to_have_count(12)
    expect(root.locator(".mw-row-label")).to_have_text(["L0", "L1", "L2"])

    # hover every cell: the exact effects, as the view shows them, against the result's
    effects = {f"{layer}.{h}": effect_of(root, layer, h) for layer in range(3) for h in range(4)}
    want = nb.py_json("dict(zip(r.components, r.effect.mean(-1).tolist()))")
    for c, v in effects.items():
        assert v == pytest.approx(want[c], rel=1e-3, abs=1e-6), c
    ranked = sorted(effects, key=lambda c: -abs(effects[c]))
    circuit = {gt["duplicate_token"], gt["s_inhibition"], gt["name_mover"]}
    assert set(ranked[:3]) == circuit, ranked
    # the largest drop is upstream of the name mover (0.1 / 1.2: logit diff ~ -10/3); ablating
    # the name mover itself removes exactly the clean logit diff
    assert ranked[0] in {gt["duplicate_token"], gt["s_inhibition"]}
    clean = nb.py_json("float(r.clean[0])")
    assert effects[gt["name_mover"]] == pytest.approx(-clean, abs=0.05)
    assert all(abs(effects[c]) < 0.1 for c in gt["decoys"])
    report(capsys, "effects " + ", ".join(f"{c}: {effects[c]:.3f}" for c in ranked[:4]))

    # click the name mover: the panel's top tokens come from the kernel's re-run
    layer, head = map(int, gt["name_mover"].split("."))
    cell = root.locator(f'.mw-cell[data-layer="{layer}"][data-head="{head}"]')
    t0 = time.perf_counter()
    cell.click()
    ablated = root.locator('.mw-topk-list[data-run="ablated"] .mw-topk-row .mw-tok')
    expect(ablated).to_have_count(5, timeout=CELL_S * 1000)
    report(capsys, f"click 2.3 → ablated top-k shown in {time.perf_counter() - t0:.2f}s")
    expect(cell).to_have_class(SELECTED)
    assert nb.wait_py("w.selected_component", "2.3") == "2.3"
    py = nb.py_json('w.component_panel("2.3", 0)')
    assert ablated.all_text_contents() == [t["token"] for t in py["ablated_topk"]]
    clean_toks = root.locator('.mw-topk-list[data-run="clean"] .mw-topk-row .mw-tok').all_text_contents()
    assert clean_toks == [t["token"] for t in py["clean_topk"]]
    assert clean_toks[0] == " Mary"
    assert " Mary" not in ablated.all_text_contents()[:1]  # the name mover carried the answer
    probs = root.locator('.mw-topk-list[data-run="ablated"] .mw-prob').all_text_contents()
    assert [float(p) for p in probs] == pytest.approx([t["prob"] for t in py["ablated_topk"]], abs=6e-3)
    eff = float(root.locator('.mw-metric[data-kind="effect"]').get_attribute("data-value"))
    assert eff == pytest.approx(effects["2.3"], rel=1e-3)


def test_selection_set_from_python_updates_the_view(nb):
    root = view(nb)
    nb.py('w.selected_component = "1.2"')
    expect(root.locator('.mw-cell[data-layer="1"][data-head="2"]')).to_have_class(SELECTED, timeout=30_000)
    expect(root.locator(".mw-panel-title")).to_have_text("zero ablation of 1.2")
    rows = root.locator('.mw-topk-list[data-run="ablated"] .mw-topk-row .mw-tok')
    expect(rows).to_have_count(5, timeout=30_000)
    assert rows.all_text_contents() == [t["token"] for t in nb.py_json('w.panel["ablated_topk"]')]
    # an invalid selection from Python is refused (TraitError naming the trait); the view keeps 1.2
    nb.py('try:\n    w.selected_component = "7.7"\n    err = ""\nexcept Exception as e:\n    err = f"{type(e).__name__}: {e}"')
    err = nb.py_json("err")
    assert err.startswith("TraitError") and "selected_component" in err and "7.7" in err, err
    assert nb.py_json("w.selected_component") == "1.2"
    expect(root.locator(".mw-panel-title")).to_have_text("zero ablation of 1.2")
    assert not nb.lab.page_errors, nb.lab.page_errors


HOSTILE_PROMPTS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2"> &amp;',
]


def test_static_export_bars_with_hostile_prompts(nb, tmp_path, capsys):
    """``to_html()`` of a bars view (non-head components, two hostile prompts, zoo:tiny) opened
    from file://: bars sorted by |effect|, prompts literal, the cached panels, no markup run."""
    path = tmp_path / "ablation.html"
    nb.py(
        "tiny = mw.load()\n"
        f"hp = {HOSTILE_PROMPTS!r}\n"
        "rb = mw.ablate(tiny, hp, mw.kl_to_clean(), ['mlp.0', ('mlp_post', 1, [3, 4]), '0.1'],"
        " separately=True, progress=False)\n"
        "wb = Ablation.from_result(rb, k=4)\n"
        f"wb.to_html({str(path)!r})"
    )
    order = nb.py_json("[wb.components[i] for i in wb.effects().abs().argsort(descending=True).tolist()]")
    py = nb.py_json(f"wb.component_panel({order[0]!r}, 0)")
    report(capsys, f"static export {path.stat().st_size} bytes; bars {order}")
    with static_view(nb.page.context, path, ".mw-ablation") as root:
        expect(root.locator(".mw-bar-row .mw-bar-label")).to_have_text(order)
        expect(root.locator(".mw-status")).to_have_text("static")
        expect(root.locator("select.mw-prompt option")).to_have_text([f"{i}: {p}" for i, p in enumerate(HOSTILE_PROMPTS)])
        expect(root.locator(".mw-bar-row").first.locator(".mw-dot")).to_have_count(2)
        root.locator(".mw-bar-row .mw-bar-track").first.click()
        rows = root.locator('.mw-topk-list[data-run="ablated"] .mw-topk-row .mw-tok')
        expect(rows).to_have_count(4)
        assert rows.all_text_contents() == [t["token"] for t in py["ablated_topk"]]
        expect(root.locator(".mw-panel-prompt")).to_contain_text(HOSTILE_PROMPTS[0].replace('"', '\\"'))
        root.locator("select.mw-prompt").select_option("1")
        expect(root.locator('.mw-topk-list[data-run="ablated"] .mw-note')).to_contain_text("not precomputed")
        assert root.page.locator("img").count() == 0
