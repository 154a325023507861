"""LogitLens in a real JupyterLab, driven by headless chromium.

One notebook (one kernel): cell 0 trains a small tuned lens on zoo:tiny and shows the logit lens
of the planted fact "The Eiffel Tower is in" (ground truth, figures.facts: the answer is
" Paris", top-1 from after block 0) with ``.widget(tuned=...)``. DOM hooks:
docs/widget_protocol.md ("LogitLens").
"""

from __future__ import annotations

import time

import pytest
from _browser import HOSTILE_TOKENS, display_token, hover_tooltip, report, static_view
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CELL_S = 120

nb = view_notebook("logit_lens.ipynb", """
import mi_widgets as mw
from mi_widgets.core.description.lens import logit_lens, train_tuned_lens, tuned_lens
m = {model}
tl = train_tuned_lens(m, steps=40, n_texts=48, batch_tokens=128, progress=False)
r = logit_lens(m, "The Eiffel Tower is in", k=5)
w = r.widget(tuned=tl)
w
""")


def test_hover_click_switch_and_target(nb, capsys):
    root = nb.view(".mw-logit-lens", ready=".mw-cell")
    n_rows = nb.py_json("len(w.layer_names)")
    expect(root.locator(".mw-cell")).to_have_count(n_rows * 6)
    assert root.locator(".mw-col-label").all_text_contents()[2:] == [" Eiffel", " Tower", " is", " in"]
    # the planted answer is top-1 from after block 0 at the last position
    last_col = root.locator('.mw-cell[data-pos="5"]').all_text_contents()
    assert last_col[1:] == [" Paris"] * (n_rows - 1), last_col

    # hover: the cell's top-k equals Python's
    cell = root.locator('.mw-cell[data-row="1"][data-pos="5"]')
    tip = hover_tooltip(root, cell, 'resid_post 0, position 5 " in"')
    py_top = nb.py_json("[[r.vocab[int(i)], float(p)] for i, p in zip(r.top_ids[1, 5], r.top_probs[1, 5])]")
    assert tip.locator(".mw-tt-row .mw-tok").all_text_contents() == [t for t, _ in py_top]
    shown = [float(x) for x in tip.locator(".mw-tt-row .mw-prob").all_text_contents()]
    assert shown == pytest.approx([p for _, p in py_top], rel=2e-3, abs=1e-3)

    # click the position: the final top-1 (" Paris") across layers, as in Python
    cell.click()
    expect(root.locator(".mw-target-token")).to_have_text(" Paris")
    assert nb.wait_py("w.selected_position", 5) == 5
    line = nb.py_json("w.target_line(5)")
    values = [float(x) for x in root.locator(".mw-line-row .mw-prob").all_text_contents()]
    assert values == pytest.approx(line, rel=2e-3, abs=1e-3)
    expect(root.locator("svg.mw-line circle.mw-point")).to_have_count(n_rows)

    # switch to the tuned lens (request "lens"): cells and line follow Python's tuned result
    t0 = time.perf_counter()
    root.locator("select.mw-lens").select_option("tuned")
    assert nb.wait_py("w.lens", "tuned", timeout_s=60) == "tuned"
    expect(root.locator(".mw-title")).to_contain_text("tuned lens")
    report(capsys, f"lens switch → tuned shown in {time.perf_counter() - t0:.2f}s")
    top1 = nb.py_json("tuned_lens(m, r.text, tl).top1()")
    expect(root.locator('.mw-cell[data-pos="5"]')).to_have_text([row[5] for row in top1])
    tuned_line = nb.py_json("w.target_line(5)")
    values = [float(x) for x in root.locator(".mw-line-row .mw-prob").all_text_contents()]
    assert values == pytest.approx(tuned_line, rel=2e-3, abs=1e-3)

    # a chosen target (request "target")
    box = root.locator("input.mw-target")
    box.fill(" Rome")
    root.locator("button.mw-target-set").click()
    expect(root.locator(".mw-target-token")).to_have_text(" Rome", timeout=CELL_S * 1000)
    assert nb.wait_py("w.target", " Rome") == " Rome"
    rome = nb.py_json("tuned_lens(m, r.text, tl, target=' Rome').target_prob[:, 5].tolist()")
    values = [float(x) for x in root.locator(".mw-line-row .mw-prob").all_text_contents()]
    assert values == pytest.approx(rome, rel=2e-3, abs=1e-3)
    nb.assert_no_markup_ran()


def test_static_export_with_hostile_tokens(lab, tmp_path):
    """``to_html()`` of a hand-made result whose tokens and predictions are whole hostile
    strings, opened from file:// (no kernel): every token shows literally, nothing runs."""
    import torch

    from mi_widgets.core.description.lens import LensResult

    n = len(HOSTILE_TOKENS)
    probs = torch.linspace(0.1, 1.0, 2 * n).reshape(2, n, 1)
    res = LensResult(
        model_name="<img src=x onerror=\"window.__pwned=6\">",
        text="".join(HOSTILE_TOKENS),
        str_tokens=list(HOSTILE_TOKENS),
        token_ids=list(range(n)),
        layer_names=["embed", "resid_post 0"],
        top_ids=torch.arange(n).repeat(2, 1)[..., None],
        top_probs=probs,
        kl=torch.zeros(2, n),
        vocab=dict(enumerate(HOSTILE_TOKENS)),
        final_prob=probs[..., 0],
        final_ids=list(range(n)),
    )
    path = tmp_path / "lens.html"
    res.widget().to_html(path)
    with static_view(lab.page.context, path, ".mw-logit-lens") as root:
        shown = [display_token(t) if t else "∅" for t in HOSTILE_TOKENS]
        expect(root.locator(".mw-col-label")).to_have_text(shown)
        expect(root.locator('.mw-cell[data-row="1"]')).to_have_text(shown)
        expect(root.locator("select.mw-lens")).to_be_disabled()
        expect(root.locator("input.mw-target")).to_be_disabled()
        root.locator('.mw-cell[data-row="1"][data-pos="0"]').hover()
        expect(root.locator(".mw-tooltip .mw-tt-row .mw-tok")).to_have_text([shown[0]])
        root.locator('.mw-cell[data-row="1"][data-pos="2"]').click()
        expect(root.locator(".mw-target-token")).to_have_text(shown[2])
        expect(root.locator(".mw-line-row .mw-prob")).to_have_count(2)
