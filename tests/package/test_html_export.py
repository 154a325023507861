"""Static HTML export of TokenActivations, opened from file:// in headless chromium (no kernel).

Needs Debian's /usr/bin/chromium (a missing chromium fails the tests); not e2e-marked: no
JupyterLab involved. ``MW_TEST_MODEL=<dir>`` swaps the embedded model for a local one
(development aid); by default the embedded ``mw.load()`` model is used.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from _browser import HOSTILE_TOKENS, display_token
from _notebooks import chromium_page

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
POS = "rgb(230, 97, 1)"  # ends of the default (blue_orange) diverging scale (js/src/lib/colour.ts)
NEG = "rgb(33, 102, 172)"

HOSTILE_TEXT = (
    "Hi <script>window.__pwned=1</script> and "
    '<img src=x onerror="window.__pwned=2"> &amp; '
    "\u202eevil\u202c \x00 nul \U0001f980 crab\nline two\n\nend"
)


def flat(texts: list[list[str]]) -> list[str]:
    return [t for text in texts for t in text]


@pytest.fixture(scope="module")
def model(request):
    import mi_widgets as mw

    path = os.environ.get("MW_TEST_MODEL")
    return mw.load(path) if path else request.getfixturevalue("tiny")


@pytest.fixture(scope="module")
def page(pytestconfig):
    with chromium_page(pytestconfig) as pg:
        pg.mw_requests = []
        pg.mw_errors = []
        pg.on("request", lambda r: pg.mw_requests.append(r.url))
        pg.on("pageerror", lambda e: pg.mw_errors.append(str(e)))
        yield pg


def texts_of_about(model, n_tokens: int) -> list[str]:
    """Texts of ordinary words totalling about ``n_tokens`` tokens (each within the context)."""
    words = (
        "the Eiffel Tower is in Paris and the Colosseum is in Rome while Mary gave John a drink "
        "at the store because the food was wonderful and the staff were kind"
    ).split()
    texts, total, w = [], 0, 0
    while total < n_tokens:
        want, cur = min(model.n_ctx - 8, n_tokens - total), []
        while True:
            cur.append(words[w % len(words)])
            w += 1
            length = model.to_tokens(" ".join(cur)).shape[1]
            if length >= want:
                break
        texts.append(" ".join(cur))
        total += length
    return texts


def open_file(page, path: Path) -> None:
    page.mw_requests.clear()
    page.mw_errors.clear()
    page.goto(path.resolve().as_uri())
    page.locator(".mw-token-activations .mw-token").first.wait_for(state="attached")


def assert_offline(page, path: Path) -> None:
    own = path.resolve().as_uri()
    others = [u for u in page.mw_requests if u != own and not u.startswith(("data:", "about:"))]
    assert others == [], f"the export fetched {others}"


def assert_nothing_ran(page) -> None:
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    root = page.locator(".mw-token-activations")
    assert root.locator("script, img, iframe, object, embed, b, link").count() == 0
    # only our own three <script> tags exist in the document
    assert page.locator("script").count() == 3
    assert page.mw_errors == [], page.mw_errors


# --------------------------------------------------------------------------------------------


def test_repr_mimebundle(model):
    import mi_widgets as mw

    w = mw.TokenActivations(model, "The Eiffel Tower is in Paris", site="mlp_post", layer=0)
    bundle = w._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert WIDGET_MIME in data
    assert data[WIDGET_MIME]["model_id"] == w.model_id
    assert "text/html" in data
    html = data["text/html"]
    assert 'class="mw-static-root"' in html and "MIWidgets" in html
    assert "text/plain" in data


def test_static_export(model, page, tmp_path, capsys):
    import mi_widgets as mw

    texts = texts_of_about(model, 200)
    w = mw.TokenActivations(model, texts, site="mlp_post", layer=0)
    toks = flat(w.texts)
    out = tmp_path / "view.html"
    html = w.to_html(out).read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["view.html"]
    assert out.read_text(encoding="utf-8") == html
    size = out.stat().st_size
    with capsys.disabled():
        print(f"\n[html] {len(toks)} tokens ({len(texts)} texts): {size / 1024:.0f} KiB "
              f"({len(w._static_extra(w._static_budget['export'])['unit_cache'])} cached units)", flush=True)

    # no external resources: no src/href to http(s) or protocol-relative URLs, no CDN, no imports
    low = html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", low)
    assert not re.search(r"""url\(\s*["']?\s*(https?:)?//""", low)
    assert "@import" not in low and "<link" not in low
    for cdn in ("cdn.", "unpkg", "jsdelivr", "googleapis", "esm.sh", "skypack"):
        assert cdn not in low, cdn
    assert not re.search(r"""<script[^>]*\bsrc\s*=""", low)

    open_file(page, out)
    root = page.locator(".mw-token-activations")
    spans = root.locator(".mw-token")
    assert spans.count() == len(toks)
    assert spans.all_text_contents() == [display_token(t) for t in toks]
    assert root.locator(".mw-status").text_content() == "static"
    for sel in ("select.mw-site", "select.mw-layer"):
        assert root.locator(sel).is_disabled(), sel
    label = root.locator(".mw-unit-label")
    assert label.text_content() == f"neuron {w.selected_unit}"

    # click a token: its top-k rows (the Python top-k)
    i = len(toks) // 2
    spans.nth(i).click()
    assert "mw-selected" in (spans.nth(i).get_attribute("class") or "").split()
    rows = root.locator(".mw-topk .mw-topk-row")
    k = min(w.k, w.n_units)
    assert rows.count() == k
    units = [int(u) for u in rows.evaluate_all("rs => rs.map(r => r.dataset.unit)")]
    assert units == w.result.topk(w.k)[0][i].tolist()

    # click a row: recolour from the embedded unit cache
    j = next(j for j, u in enumerate(units) if u != w.selected_unit)
    unit = units[j]
    assert not rows.nth(j).is_disabled()
    before = spans.evaluate_all("ss => ss.map(s => s.style.backgroundColor)")
    rows.nth(j).click()
    assert label.text_content() == f"neuron {unit}"
    after = spans.evaluate_all("ss => ss.map(s => s.style.backgroundColor)")
    assert after != before
    values = w.result.unit_values(unit).to(torch.float16).float()
    top = int(values.abs().argmax())
    assert after[top] == (POS if values[top] > 0 else NEG)
    assert root.locator(f'.mw-topk-row.mw-active[data-unit="{unit}"]').count() == 1
    # hover: the tooltip shows the cached unit's value
    spans.nth(top).hover()
    tip = root.locator(".mw-tooltip")
    assert tip.is_visible()
    shown = float(tip.locator(".mw-tt-value").text_content().rsplit(": ", 1)[1])
    assert shown == float(f"{float(values[top]):.4g}")
    assert_offline(page, out)
    assert page.mw_errors == []


def test_static_export_hostile(model, page, tmp_path):
    import mi_widgets as mw

    # 1) real tokens of a hostile text
    w = mw.TokenActivations(model, HOSTILE_TEXT)
    out = tmp_path / "hostile.html"
    w.to_html(out, title="<script>window.__pwned=4</script>")
    open_file(page, out)
    toks = flat(w.texts)
    spans = page.locator(".mw-token-activations .mw-token")
    shown = spans.all_text_contents()
    assert shown == [display_token(t) for t in toks]
    joined = "".join(shown)
    assert "<script>window.__pwned=1</script>" in joined
    assert '<img src=x onerror="window.__pwned=2">' in joined and "&amp;" in joined
    assert page.title() == "<script>window.__pwned=4</script>"
    spans.nth(next(i for i, t in enumerate(toks) if i > 0 and "<" in t)).click()
    assert page.locator(".mw-topk .mw-topk-row").count() > 0
    assert_nothing_ran(page)
    assert_offline(page, out)

    # 2) whole hostile strings as single tokens (a custom result), incl. </script> breakouts
    n = len(HOSTILE_TOKENS)
    result = mw.TokenActivationsResult(
        model_name="<img src=x onerror=\"window.__pwned=5\">",
        site="mlp_post",
        layer=0,
        texts=["".join(HOSTILE_TOKENS)],
        str_tokens=[list(HOSTILE_TOKENS)],
        token_ids=[list(range(n))],
        acts=torch.linspace(-1, 1, n * 16).reshape(n, 16),
    )
    w = mw.TokenActivations(result=result)
    out = tmp_path / "hostile_tokens.html"
    w.to_html(out)
    open_file(page, out)
    root = page.locator(".mw-token-activations")
    spans = root.locator(".mw-token")
    assert spans.all_text_contents() == [display_token(t) for t in HOSTILE_TOKENS]
    for i, tok in enumerate(HOSTILE_TOKENS):
        spans.nth(i).hover()
        tt = root.locator(".mw-tooltip .mw-tt-token").text_content()
        assert tt.startswith('"') and tt.endswith('"')
        if tok.isascii() and tok.isprintable():
            assert tt == json.dumps(tok)
    spans.nth(2).click()
    assert root.locator(".mw-topk .mw-topk-row").count() == min(w.k, 16)
    assert_nothing_ran(page)
    assert_offline(page, out)
