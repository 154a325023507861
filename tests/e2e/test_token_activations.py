"""TokenActivations in a real JupyterLab, driven by headless chromium.

One notebook (one kernel) for the module: cell 0 builds the view on the embedded model, the
tests append cells to it. DOM hooks: docs/widget_protocol.md and js/src/token_activations.ts.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from _browser import HOSTILE_TOKENS, display_token, report
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

TEXT = "The Eiffel Tower is in Paris"

HOSTILE = (
    "Hi <script>window.__pwned=1</script> and "
    '<img src=x onerror="window.__pwned=2"> &amp; &lt;b&gt; '
    "\u202eevil\u202c \x00 nul \t tab \U0001f980 crab\nline two\n\nend"
)


LONG_TOKENS = 2000


def flat(texts: list[list[str]]) -> list[str]:
    return [t for text in texts for t in text]


def fmt4(x: float) -> float:
    """The value as the tooltip shows it (JS ``toPrecision(4)``), as a float."""
    return float(f"{x:.4g}")


@pytest.fixture(scope="module")
def nb(lab, model_expr):
    cell0 = (
        "import mi_widgets as mw\n"
        f"m = {model_expr}\n"
        f'w = mw.TokenActivations(m, "{TEXT}", site="mlp_post", layer=0)\n'
        "w"
    )
    t0 = time.perf_counter()
    book = lab.open_notebook("token_activations.ipynb", [cell0])
    t1 = time.perf_counter()
    book.run_all()
    book.timings = {"open_s": t1 - t0, "run_all_s": time.perf_counter() - t1}
    return book



# --------------------------------------------------------------------------------------------


def test_live_roundtrip(nb, capsys):
    page = nb.page
    report(capsys, f"notebook open {nb.timings['open_s']:.1f}s, run all (import + load + trace) {nb.timings['run_all_s']:.1f}s")
    root = nb.widget(0)
    spans = root.locator(".mw-token")
    toks = flat(nb.py_json("w.texts"))
    expect(spans).to_have_count(len(toks))
    assert spans.all_text_contents() == [display_token(t) for t in toks]
    assert spans.evaluate_all("ss => ss.map(s => s.dataset.index)") == [str(i) for i in range(len(toks))]
    site_select = root.locator("select.mw-site")
    expect(site_select).to_have_value("mlp_post")
    assert site_select.locator("option").evaluate_all("os => os.map(o => o.value)") == nb.py_json("w.sites")
    n_units = nb.py_json("w.n_units")
    k = min(nb.py_json("w.k"), n_units)
    unit = nb.py_json("w.selected_unit")
    label = root.locator(".mw-unit-label")
    expect(label).to_have_text(f"neuron {unit}")

    # -- hover: tooltip with the exact value ------------------------------------------------
    i = len(toks) - 1  # " Paris"
    span = root.locator(f'.mw-token[data-index="{i}"]')
    py_value = nb.py_json(f"float(w.result.unit_values(w.selected_unit)[{i}])")
    span.hover()
    tip = root.locator(".mw-tooltip")
    expect(tip).to_be_visible()
    expect(tip.locator(".mw-tt-meta")).to_contain_text(f"token {i}")
    expect(tip.locator(".mw-tt-token")).to_have_text(json.dumps(toks[i], ensure_ascii=False))
    value_text = tip.locator(".mw-tt-value").text_content()
    assert value_text.startswith(f"neuron {unit}: "), value_text
    shown = float(value_text.rsplit(": ", 1)[1])
    assert shown == fmt4(py_value), (value_text, py_value)

    # -- click a token: selection, top-k, and Python sees it --------------------------------
    span.click()
    expect(span).to_have_class(re.compile(r"(^|\s)mw-selected(\s|$)"))
    assert root.locator(".mw-token.mw-selected").count() == 1
    rows = root.locator(".mw-topk .mw-topk-row")
    expect(rows).to_have_count(k)
    assert nb.wait_py("w.selected_token", i) == i
    out = nb.py("print(w.selected_token)")
    assert out.strip() == str(i)
    row_units = [int(u) for u in rows.evaluate_all("rs => rs.map(r => r.dataset.unit)")]
    assert row_units == nb.py_json(f"w.result.topk(w.k)[0][{i}].tolist()")

    # -- click a top-k row: recolour through Python -----------------------------------------
    j = next(j for j, u in enumerate(row_units) if u != unit)
    new_unit = row_units[j]
    before = spans.evaluate_all("ss => ss.map(s => s.style.backgroundColor)")
    rows.nth(j).click()
    expect(label).to_have_text(f"neuron {new_unit}")
    assert nb.wait_py("w.selected_unit", new_unit) == new_unit
    expect(root.locator(f'.mw-topk-row.mw-active[data-unit="{new_unit}"]')).to_have_count(1)
    page.wait_for_function(
        "([el, before]) => Array.from(el.querySelectorAll('.mw-token')).some((s, i) => s.style.backgroundColor !== before[i])",
        arg=[root.element_handle(), before],
    )

    # -- another layer: the "fetch" request, Python's layer, new colours --------------------
    nb.py(
        "_fetch_calls = []\n"
        "_fetch_orig = w._handlers['fetch']\n"
        "def _fetch_spy(self, msg, progress):\n"
        "    _fetch_calls.append(dict(msg))\n"
        "    return _fetch_orig(self, msg, progress)\n"
        "w._handlers['fetch'] = _fetch_spy"
    )
    n_layers = nb.py_json("w.n_layers")
    assert n_layers >= 2
    layer_select = root.locator("select.mw-layer")
    expect(layer_select).to_be_enabled()
    expect(layer_select).to_have_value("0")
    assert layer_select.locator("option").count() == n_layers
    before = spans.evaluate_all("ss => ss.map(s => s.style.backgroundColor)")
    t0 = time.perf_counter()
    layer_select.select_option("1")
    assert nb.wait_py("w.layer", 1) == 1
    status = root.locator(".mw-status")
    expect(status).to_have_attribute("data-status", "ready")
    fetch_s = time.perf_counter() - t0
    assert nb.py_json("_fetch_calls") == [{"site": "mlp_post", "layer": 1}]
    expect(layer_select).to_have_value("1")
    page.wait_for_function(
        "([el, before]) => Array.from(el.querySelectorAll('.mw-token')).some((s, i) => s.style.backgroundColor !== before[i])",
        arg=[root.element_handle(), before],
    )
    unit = nb.py_json("w.selected_unit")
    expect(label).to_have_text(f"neuron {unit}")
    assert nb.py_json("[w.status, w.error]") == ["ready", ""]
    report(capsys, f"layer change via fetch: {fetch_s:.2f}s until Python and the view agree")

    # -- Python sets the unit, the token, the layer: the view follows ------------------------
    target = (unit + 7) % n_units
    nb.py(f"w.selected_unit = {target}")
    expect(label).to_have_text(f"neuron {target}")
    nb.py("w.selected_token = 1")
    expect(root.locator('.mw-token[data-index="1"]')).to_have_class(re.compile(r"(^|\s)mw-selected(\s|$)"))
    assert root.locator(".mw-token.mw-selected").count() == 1
    expect(root.locator(".mw-topk-title")).to_contain_text("token 1")
    nb.py("w.layer = 0")
    expect(layer_select).to_have_value("0")
    expect(label).to_have_text(f"neuron {nb.py_json('w.selected_unit')}")
    assert nb.py_json("_fetch_calls") == [{"site": "mlp_post", "layer": 1}]  # Python-side change: no request
    assert page.evaluate("() => typeof window.__pwned") == "undefined"


def test_hostile_tokens(nb):
    page = nb.page
    index, _ = nb.run(f"hostile = {HOSTILE!r}\nwh = mw.TokenActivations(m, hostile)\nwh")
    root = nb.widget(index)
    toks = flat(nb.py_json("wh.texts"))
    spans = root.locator(".mw-token")
    expect(spans).to_have_count(len(toks))
    shown = spans.all_text_contents()
    expected = [display_token(t) for t in toks]
    assert shown == expected
    joined = "".join(shown)
    assert "<script>window.__pwned=1</script>" in joined
    assert '<img src=x onerror="window.__pwned=2">' in joined
    assert "&amp;" in joined and "&lt;b&gt;" in joined
    assert "\\x00" in joined and "⇥" in joined and "↵" in joined
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert root.locator("script, img, iframe, object, embed, svg image").count() == 0
    # hover / click on the tag-looking tokens keep them literal too
    lt = next(i for i, t in enumerate(toks) if i > 0 and "<" in t)  # not the BOS
    spans.nth(lt).hover()
    expect(root.locator(".mw-tooltip .mw-tt-token")).to_have_text(json.dumps(toks[lt], ensure_ascii=False))
    spans.nth(lt).click()
    expect(spans.nth(lt)).to_have_class(re.compile(r"(^|\s)mw-selected(\s|$)"))
    expect(root.locator(".mw-topk-title .mw-tt-token")).to_have_text(json.dumps(toks[lt], ensure_ascii=False))
    assert nb.wait_py("wh.selected_token", lt) == lt
    assert root.locator("script, img, iframe, object, embed").count() == 0
    assert page.evaluate("() => typeof window.__pwned") == "undefined"

    # whole hostile strings as single tokens, from a custom result
    index, _ = nb.run(
        "import torch\n"
        f"_ht = {HOSTILE_TOKENS!r}\n"
        "wt = mw.TokenActivations(result=mw.TokenActivationsResult(\n"
        "    model_name='hostile', site='mlp_post', layer=0, texts=[''.join(_ht)], str_tokens=[_ht],\n"
        "    token_ids=[list(range(len(_ht)))], acts=torch.linspace(-1, 1, len(_ht) * 16).reshape(len(_ht), 16)))\n"
        "wt"
    )
    root = nb.widget(index)
    spans = root.locator(".mw-token")
    expect(spans).to_have_count(len(HOSTILE_TOKENS))
    assert spans.all_text_contents() == [display_token(t) for t in HOSTILE_TOKENS]
    for i, tok in enumerate(HOSTILE_TOKENS):
        spans.nth(i).hover()
        if tok.isascii() and tok.isprintable():
            expect(root.locator(".mw-tooltip .mw-tt-token")).to_have_text(json.dumps(tok))
    spans.nth(1).click()
    expect(root.locator(".mw-topk .mw-topk-row")).to_have_count(10)
    assert nb.wait_py("wt.selected_token", 1) == 1
    assert root.locator("script, img, iframe, object, embed, b").count() == 0
    assert page.evaluate("() => typeof window.__pwned") == "undefined"


def test_long_view(nb, capsys, artifacts_dir):
    page = nb.page
    out = nb.py(
        "import time as _time\n"
        "_words = ('the Eiffel Tower is in Paris and the Colosseum is in Rome while Mary gave John '\n"
        "          'a drink at the store because the food was wonderful and the staff were kind').split()\n"
        f"_target, long_texts, _n, _w = {LONG_TOKENS}, [], 0, 0\n"
        "while _n < _target:\n"
        "    _want, _t = min(m.n_ctx - 8, _target - _n), []\n"
        "    while True:\n"
        "        _t.append(_words[_w % len(_words)]); _w += 1\n"
        "        _len = m.to_tokens(' '.join(_t)).shape[1]\n"
        "        if _len >= _want:\n"
        "            break\n"
        "    long_texts.append(' '.join(_t)); _n += _len\n"
        "_t0 = _time.perf_counter()\n"
        "wl = mw.TokenActivations(m, long_texts, site='mlp_post', layer=0)\n"
        "_build = _time.perf_counter() - _t0\n"
        "_t0 = _time.perf_counter()\n"
        "_bundle = wl._repr_mimebundle_()\n"
        "_bundle = _bundle[0] if isinstance(_bundle, tuple) else _bundle\n"
        "_repr = _time.perf_counter() - _t0\n"
        "print('@@' + __import__('json').dumps({'n': sum(len(t) for t in wl.texts), 'texts': len(long_texts),\n"
        "      'build_s': _build, 'repr_s': _repr, 'html_bytes': len(_bundle.get('text/html', '').encode())}))"
    )
    info = json.loads([ln for ln in out.splitlines() if ln.startswith("@@")][-1][2:])
    n = info["n"]
    assert n >= LONG_TOKENS

    # time from running the cell that displays `wl` to its first token spans being painted (the
    # view renders the blocks of tokens in and near its viewport, not all 2,000)
    index = nb.add_cell("wl")
    page.evaluate("() => { window.__mwT0 = performance.now(); }")
    nb.start_cell(index)
    page.wait_for_function(
        "([i]) => { const c = document.querySelector(`.jp-NotebookPanel [data-mw-cell=\"${i}\"]`);"
        " return !!c && c.querySelectorAll('.jp-OutputArea .mw-token-activations .mw-token').length > 0; }",
        arg=[index], polling="raf", timeout=180_000,
    )
    paint_ms = page.evaluate(
        "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now() - window.__mwT0))))"
    )
    nb.finish_cell(index)
    root = nb.widget(index)
    spans = root.locator(".mw-token")
    toks = flat(nb.py_json("wl.texts"))
    rendered = spans.evaluate_all("ss => ss.map(s => [Number(s.dataset.index), s.textContent])")
    assert 0 < len(rendered) < n  # virtualised: placeholders stand for the blocks out of view
    assert [i for i, _ in rendered] == list(range(len(rendered)))
    assert [text for _, text in rendered] == [display_token(toks[i]) for i, _ in rendered]

    # the page stays responsive: scrolled to the end, a click on a late token selects it promptly
    late = n - 3
    late_span = root.locator(f'.mw-token[data-index="{late}"]')
    root.locator(".mw-texts").evaluate(
        "t => new Promise(r => { const go = (k) => { t.scrollTop = t.scrollHeight;"
        " if (k > 0) requestAnimationFrame(() => go(k - 1)); else r(); }; go(20); })"
    )
    expect(late_span).to_have_text(display_token(toks[late]))
    t0 = time.perf_counter()
    late_span.click(timeout=10_000)
    expect(late_span).to_have_class(re.compile(r"(^|\s)mw-selected(\s|$)"), timeout=5_000)
    click_ms = (time.perf_counter() - t0) * 1000
    expect(root.locator(".mw-topk .mw-topk-row")).to_have_count(min(10, nb.py_json("wl.n_units")), timeout=5_000)
    assert nb.wait_py("wl.selected_token", late) == late

    # Python (or a linked view) selects a token out of view: the view renders and shows it
    nb.py("wl.selected_token = 5")
    first = root.locator('.mw-token[data-index="5"]')
    expect(first).to_have_class(re.compile(r"(^|\s)mw-selected(\s|$)"))
    expect(first).to_have_text(display_token(toks[5]))
    # scrolled into the texts' own view (the view scrolls only its texts, never the notebook)
    page.wait_for_function(
        "s => { const t = s.closest('.mw-texts').getBoundingClientRect(), r = s.getBoundingClientRect();"
        " return r.height > 0 && r.top >= t.top - 1 && r.bottom <= t.bottom + 1; }",
        arg=first.element_handle(), timeout=5_000,
    )

    timings = {
        "tokens": n,
        "texts": info["texts"],
        "python_build_s": round(info["build_s"], 3),
        "python_repr_mimebundle_s": round(info["repr_s"], 3),
        "repr_text_html_bytes": info["html_bytes"],
        "display_to_painted_ms": round(paint_ms),
        "late_click_to_selected_ms": round(click_ms),
    }
    (artifacts_dir / "long_view_timings.json").write_text(json.dumps(timings, indent=1), encoding="utf-8")
    report(
        capsys,
        f"{n} tokens ({info['texts']} texts): built in Python {info['build_s']:.2f}s; "
        f"display cell -> painted {paint_ms:.0f} ms (incl. _repr_mimebundle_ {info['repr_s'] * 1000:.0f} ms, "
        f"text/html {info['html_bytes'] / 1e6:.2f} MB); late-token click -> selected {click_ms:.0f} ms",
    )
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
