"""Steering in a real JupyterLab, driven by headless chromium.

One notebook (one kernel): cell 0 builds zoo:tiny's sentiment direction (mean difference of
positive minus negative reviews after block 0) plus a random direction, and shows the panel.
DOM hooks: mi_widgets/widgets/steering.py (class docstring).
"""

from __future__ import annotations

import time

import pytest
from _browser import has_class, report, static_view
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CELL_S = 120

nb = view_notebook("steering.ipynb", """
import mi_widgets as mw, torch
from mi_widgets.core.description import steering as S
from mi_widgets.widgets.steering import Steering
from mi_widgets.zoo import corpus
m = {model}
ex = corpus.sentiment_examples('id', n=20)
vec = S.steering_vector(m, [e['text'] for e in ex if e['label']], [e['text'] for e in ex if not e['label']], layer=0)
rnd = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
w = Steering(m, 'The food was', {'sentiment': vec, 'random': rnd}, layer=0, coef=0.0, max_new_tokens=12)
w
""")


def panel(nb):
    return nb.view(".mw-steering", ready="button.mw-generate")


def test_generate_streams_both_columns_equal_to_python(nb, capsys):
    root = panel(nb)
    root.locator("input.mw-coef").fill("-4")
    expect(root.locator(".mw-coef-value")).to_have_text("-4")
    assert nb.wait_py("w.coef", -4.0) == -4.0
    t0 = time.perf_counter()
    root.locator("button.mw-generate").click()
    status = root.locator(".mw-status")
    expect(status).to_have_attribute("data-status", "ready", timeout=CELL_S * 1000)
    expect(root.locator('.mw-column[data-run="steered"].mw-done')).to_be_attached()
    expect(root.locator('.mw-column[data-run="baseline"].mw-done')).to_be_attached()
    report(capsys, f"generate (12 tokens × 2 rows) → both columns filled in {time.perf_counter() - t0:.2f}s")
    ref = nb.py_json(
        "(lambda g: [g.baseline_tokens, g.steered_tokens])("
        "S.steer_generate(m, 'The food was', vec, layer=0, coef=-4.0, max_new_tokens=12))"
    )
    base = root.locator('.mw-column[data-run="baseline"] .mw-token').all_text_contents()
    steered = root.locator('.mw-column[data-run="steered"] .mw-token').all_text_contents()
    assert base == ref[0] and steered == ref[1], (base, steered, ref)
    assert base != steered
    expect(root.locator('.mw-column[data-run="steered"] .mw-prompt-text')).to_have_text("The food was")
    nb.assert_no_markup_ran()


def test_cancel_during_a_long_generation(nb):
    root = panel(nb)
    # slow each streamed step in the generation thread so the stream can be watched and cancelled
    nb.py(
        "import time as _time\n"
        "def _slow(change):\n"
        "    _time.sleep(0.3)\n"
        "w.observe(_slow, 'steered_tokens')"
    )
    root.locator("select.mw-vector").select_option("random")
    root.locator("input.mw-coef").fill("9")
    root.locator("input.mw-max-tokens").fill("100")
    root.locator("button.mw-generate").click()
    status = root.locator(".mw-status")
    expect(status).to_have_attribute("data-status", "running", timeout=30_000)
    steered = root.locator('.mw-column[data-run="steered"] .mw-token')
    expect(steered.nth(2)).to_be_attached(timeout=30_000)  # tokens arrive while it runs
    expect(root.locator('.mw-column[data-run="steered"]')).not_to_have_class(has_class("mw-done"))
    expect(root.locator("button.mw-generate")).to_be_disabled()
    root.locator("button.mw-cancel").click()
    expect(status).to_have_attribute("data-status", "cancelled", timeout=30_000)
    assert nb.wait_py("w.status", "cancelled") == "cancelled"
    n = nb.py_json("len(w.steered_tokens)")
    assert 3 <= n < 100
    expect(steered).to_have_count(n)
    expect(root.locator("button.mw-cancel")).to_be_disabled()
    expect(root.locator("button.mw-generate")).to_be_enabled()
    nb.py("w.unobserve(_slow, 'steered_tokens')")
    # the model is left unsteered: a coefficient-0 generation equals the plain baseline
    clean = nb.py_json(
        "all(not h._forward_hooks and not h._forward_pre_hooks for h in m.hf.modules())"
        " and (lambda g: g.steered_ids == g.baseline_ids)(S.steer_generate(m, 'The food was', vec, layer=0, coef=0.0, max_new_tokens=8))"
    )
    assert clean is True


def test_sweep_mode_plots_the_metric(nb):
    root = panel(nb)
    root.locator("select.mw-vector").select_option("sentiment")
    root.locator("textarea.mw-prompt").fill("Overall the review is")
    root.locator("button.mw-sweep").click()
    pts = root.locator("svg.mw-sweep-plot circle.mw-point")
    expect(pts).to_have_count(21, timeout=CELL_S * 1000)
    vals = [float(pts.nth(i).get_attribute("data-value")) for i in range(21)]
    ref = nb.py_json("w.sweep_result.mean.tolist()")
    assert vals == pytest.approx(ref, abs=1e-3)
    assert vals[0] < 0 < vals[-1]  # the planted sentiment direction flips the verdict


def test_static_export_shows_hostile_tokens_literally(nb, tmp_path):
    path = tmp_path / "steering.html"
    nb.py(
        "_g = S.steer_generate(m, 'The food was', vec, layer=0, coef=2.0, max_new_tokens=3)\n"
        "_g.steered_tokens = ['<script>window.__pwned=1</script>', '<img src=x onerror=\"window.__pwned=2\">', '&amp;', '\\u202eevil']\n"
        "w.show_generation(_g)\n"
        "w.sweep(prompt='Overall the review is')\n"
        f"w.to_html({str(path)!r})"
    )
    with static_view(nb.page.context, path, ".mw-steering") as root:
        toks = root.locator('.mw-column[data-run="steered"] .mw-token')
        expect(toks).to_have_count(4)
        assert toks.all_text_contents() == ["<script>window.__pwned=1</script>", '<img src=x onerror="window.__pwned=2">', "&amp;", "\u202eevil"]
        expect(root.locator("button.mw-generate")).to_be_disabled()
        expect(root.locator(".mw-status")).to_have_text("static")
        expect(root.locator("svg.mw-sweep-plot circle.mw-point")).to_have_count(21)
