"""FeatureDashboard in a real JupyterLab, driven by headless chromium.

One notebook (one kernel): cell 0 builds a dictionary on zoo:tiny whose feature 0 is the
planted city class (mean difference of resid_pre 0 on city tokens, features.py
``LinearDictionary.from_token_classes``) plus four random directions, and opens the dashboard
over 64 corpus rows (the pass runs in the background). The test selects feature 0, checks its
top example against Python, presses steer and reads the before/after panel.
"""

from __future__ import annotations

import re
import time

import pytest
from _browser import report
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CELL_S = 120

nb = view_notebook("feature_dashboard.ipynb", """
import torch
import mi_widgets as mw
from mi_widgets.core.decomposition.features import LinearDictionary, default_texts
from mi_widgets.widgets.feature_dashboard import FeatureDashboard
from mi_widgets.zoo.corpus import CITIES
m = {model}
texts = default_texts(64)
city = LinearDictionary.from_token_classes(m, texts[:32], {'city': {' ' + c for c in CITIES}},
                                           site='resid_pre', layer=0)
g = torch.Generator().manual_seed(0)
rand = torch.nn.functional.normalize(torch.randn(4, m.d_model, generator=g), dim=1)
sae = LinearDictionary(torch.cat([city.W_enc, rand.T], 1), torch.cat([city.b_enc, torch.zeros(4)]),
                       torch.cat([city.W_dec, rand]), site='resid_pre', layer=0)
w = FeatureDashboard(m, sae, texts, explanations={0: 'city names'}, batch_size=8, k=5)
w
""")


def test_select_feature_see_examples_press_steer(nb, capsys):
    root = nb.view(".mw-feature-dashboard")
    status = root.locator(".mw-status")
    expect(status).to_have_attribute("data-status", "ready", timeout=CELL_S * 1000)
    expect(status).to_contain_text("64/64 texts")
    expect(root.locator(".mw-feature-row[data-feature]")).to_have_count(5)

    # search by explanation, then select feature 0 in the list
    root.locator("input.mw-search").fill("city")
    expect(root.locator(".mw-feature-row[data-feature]")).to_have_count(1)
    root.locator('.mw-feature-row[data-feature="0"]').click()
    assert nb.wait_py("w.selected", 0) == 0
    expect(root.locator(".mw-feature-title")).to_have_text("Feature 0 · city names", timeout=30_000)

    # the top example: its tokens and activation are Python's
    top = nb.py_json("w.feature['top'][0]")
    ex = root.locator('.mw-examples[data-group="top"] .mw-example').first
    shown = ex.locator(".mw-token").all_text_contents()
    assert shown == [t.replace("\n", "↵") for t in top["tokens"]]
    center = ex.locator(".mw-token.mw-center")
    assert center.text_content() == top["tokens"][top["center"]]
    assert nb.py_json(f"{center.text_content()!r} in {{' ' + c for c in CITIES}}")  # the planted class
    meta = ex.locator(".mw-ex-meta").text_content()
    assert float(meta.split(" · ")[0]) == float(f"{top['activation']:.4g}")
    assert meta.endswith(f"#{top['text']}:{top['position']}")
    assert float(center.get_attribute("data-act")) == pytest.approx(top["activation"], rel=1e-6)
    expect(root.locator('.mw-examples[data-group="band"]').first).to_be_attached()
    expect(root.locator('.mw-logits-list[data-sign="pos"] .mw-logit-row')).to_have_count(10)

    # steer: before/after next-token distributions from the kernel
    root.locator("input.mw-coef").fill("6")
    t0 = time.perf_counter()
    root.locator("button.mw-steer-btn").click()
    after = root.locator('.mw-topk-list[data-run="after"] .mw-topk-row .mw-tok')
    expect(after).to_have_count(5, timeout=CELL_S * 1000)
    report(capsys, f"steer click → before/after shown in {time.perf_counter() - t0:.2f}s")
    res = nb.py_json("w.steer_result")
    assert res["mode"] == "steer" and res["coef"] == 6.0 and res["feature"] == 0
    assert after.all_text_contents() == [r["token"] for r in res["after"]]
    before = root.locator('.mw-topk-list[data-run="before"] .mw-topk-row .mw-tok').all_text_contents()
    assert before == [r["token"] for r in res["before"]] and before[0] == " Paris"
    expect(root.locator(".mw-steer-note")).to_have_text(re.compile(r"^steer feature 0 × 6.000 on"))
    root.locator("button.mw-ablate-btn").click()
    expect(root.locator(".mw-steer-note")).to_have_text(re.compile(r"^ablate feature 0 on"), timeout=CELL_S * 1000)
    assert nb.py_json("w.steer_result['mode']") == "ablate"
    nb.assert_no_markup_ran()
