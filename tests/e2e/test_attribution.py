"""Attribution's token saliency view (TokenActivations rendering) in a real JupyterLab.

Cell 0 runs integrated gradients of " Paris" on "The Eiffel Tower is in" (zoo:tiny) and shows
``.widget()``. Hovering a token must show the attribution Python computed; the subject token
" Eiffel" is the most attributed one (ground truth: the fact is read from the subject).
"""

from __future__ import annotations

import json

import pytest
from _browser import display_token, hover_tooltip
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

nb = view_notebook("attribution.ipynb", """
import mi_widgets as mw
from mi_widgets.core.description.attribution import attribute
m = {model}
r = attribute(m, "The Eiffel Tower is in", " Paris", baseline=m.tokenizer.bos_token_id)
w = r.widget()
w
""")


def test_saliency_tokens_and_values(nb):
    root = nb.widget(0)
    toks = nb.py_json("r.str_tokens")
    values = nb.py_json("r.values.tolist()")
    expect(root.locator(".mw-token")).to_have_count(len(toks))
    assert root.locator(".mw-token").all_text_contents() == [display_token(t) for t in toks]
    expect(root.locator(".mw-unit-label")).to_contain_text("integrated_gradients")
    top = max(range(len(values)), key=lambda i: abs(values[i]))
    assert toks[top] == " Eiffel"
    span = root.locator(f'.mw-token[data-index="{top}"]')
    tip = hover_tooltip(root, span)
    expect(tip.locator(".mw-tt-token")).to_have_text(json.dumps(toks[top], ensure_ascii=False))
    shown = float(tip.locator(".mw-tt-value").text_content().rsplit(": ", 1)[1])
    assert shown == float(f"{values[top]:.4g}")
    # the view's site/layer selectors hold only the attribution (nothing to recompute)
    assert root.locator("select.mw-site option").all_text_contents() == ["attribution"]
