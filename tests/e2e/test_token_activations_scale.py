"""TokenActivations at 10,000 tokens in headless chromium, from static pages (no JupyterLab).

One text of 10,000+ tokens on the embedded model (zoo:tiny, context 128, so run with
``window=``). The view renders only the blocks of tokens in and near its viewport: the first
frame comes within FIRST_PAINT_MS (median of 5 fresh pages, timed from the ``render`` call to
the frame after the one that drew the tokens), the DOM starts with far fewer spans than tokens,
and scrolling, clicking and the keyboard reach the last token.
"""

from __future__ import annotations

import json
import os
import re
import statistics

import pytest
from _browser import assert_no_markup_ran, display_token, has_class, report, static_view
from playwright.sync_api import expect

import mi_widgets as mw
from mi_widgets.widgets._base import bundle, script_json, script_text

pytestmark = pytest.mark.e2e

N = 10_000
#: the target for the first paint of 10,000 tokens, on an idle machine
FIRST_PAINT_MS = 300
#: on a machine whose 1-minute load average exceeds its CPU count (a shared CI runner, other
#: jobs), timings stretch: measured there at load 12 on 2 cores, medians of 180-670 ms for this
#: view against 1.4-3.4 s for the view before virtualisation (every span rendered); the bound
#: is then this many times the target, and the test prints the median and the load either way
LOADED_MARGIN = 3

WORDS = (
    "the Eiffel Tower is in Paris and the Colosseum is in Rome while Mary gave John a drink "
    "at the store because the food was wonderful and the staff were kind"
).split()


def long_text(model, n_tokens: int) -> str:
    per = model.tokenizer(" ".join(WORDS), return_tensors="pt")["input_ids"].shape[1]
    reps = max(1, (n_tokens - 1) // max(per - 1, 1))
    while True:
        text = " ".join(WORDS * reps)
        if model.tokenizer(text, return_tensors="pt")["input_ids"].shape[1] >= n_tokens:
            return text
        reps += 1


@pytest.fixture(scope="module")
def view(tiny):
    return mw.TokenActivations(tiny, long_text(tiny, N), site="mlp_post", layer=1, window=tiny.n_ctx)


@pytest.fixture(scope="module")
def export(view, tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "view.html"
    view.to_html(path)
    return path


# Render the view into a fresh div from the state in the page; resolve with the milliseconds from
# the render call to the second animation frame after it (the first frame that shows the tokens
# has then been painted) and what the DOM holds by then.
TIME_RENDER = """async () => {
  const state = JSON.parse(document.getElementById('state').textContent);
  const w = globalThis.MIWidgets.token_activations;
  const el = document.createElement('div');
  document.body.appendChild(el);
  await new Promise((r) => setTimeout(r, 50));
  const t0 = performance.now();
  w.render({ model: w.staticModel(state), el });
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const ms = performance.now() - t0;
  const first = el.querySelector('.mw-token');
  const box = first ? first.getBoundingClientRect() : null;
  return { ms, spans: el.querySelectorAll('.mw-token').length, visible: !!box && box.height > 0 && box.top < innerHeight };
}"""


def test_first_paint_of_10k_tokens(view, browser, tmp_path, capsys):
    n = sum(len(t) for t in view.texts)
    assert n >= N
    host = tmp_path / "host.html"
    host.write_text(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>"
        f"<script type=\"application/json\" id=\"state\">{script_json(view.static_state())}</script>"
        f"<script>{script_text(bundle('token_activations', 'iife').read_text(encoding='utf-8'))}</script>"
        "</body></html>",
        encoding="utf-8",
    )
    runs = []
    for _ in range(5):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(host.as_uri())
            runs.append(page.evaluate(TIME_RENDER))
        finally:
            page.close()
    median = statistics.median(r["ms"] for r in runs)
    each = ", ".join(f"{r['ms']:.0f}" for r in runs)
    load = os.getloadavg()[0]
    loaded = load > (os.cpu_count() or 1)
    report(capsys, f"{n:,} tokens: render -> first painted frame, median of 5 fresh pages {median:.0f} ms "
                   f"({each}); {runs[0]['spans']} token spans in the DOM; load average {load:.1f} on "
                   f"{os.cpu_count()} CPUs{' (loaded: bound x' + str(LOADED_MARGIN) + ')' if loaded else ''}")
    assert all(r["visible"] for r in runs)
    assert all(0 < r["spans"] <= n // 8 for r in runs)  # far fewer than the 10,000 tokens
    assert median <= FIRST_PAINT_MS * (LOADED_MARGIN if loaded else 1)


def test_scroll_select_and_keys_reach_the_last_token(view, export, browser, capsys):
    toks = [t for text in view.texts for t in text]
    n = len(toks)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        with static_view(context, export, ".mw-token-activations") as root:
            page = root.page
            spans = root.locator(".mw-token")
            expect(spans.first).to_be_visible()
            initial = spans.count()
            assert 0 < initial <= n // 8  # far fewer than the tokens: the viewport and half a screen around it
            # every rendered span shows the token at its index
            shown = spans.evaluate_all("ss => ss.map(s => [Number(s.dataset.index), s.textContent])")
            assert all(text == display_token(toks[i]) for i, text in shown)
            assert [i for i, _ in shown] == list(range(len(shown)))

            # scroll to the end (blocks render as they come near; heights settle as they do)
            page.wait_for_function(
                "([n]) => { const t = document.querySelector('.mw-texts'); t.scrollTop = t.scrollHeight;"
                " return !!document.querySelector(`.mw-token[data-index=\"${n - 1}\"]`); }",
                arg=[n], polling=100, timeout=15_000,
            )
            last = root.locator(f'.mw-token[data-index="{n - 1}"]')
            expect(last).to_have_text(display_token(toks[-1]))
            expect(last).to_be_in_viewport()
            assert last.get_attribute("role") == "option"
            assert last.get_attribute("aria-label") == f'position {n - 1}: "{toks[-1]}"'
            assert last.get_attribute("aria-setsize") == str(n)
            after_scroll = spans.count()
            assert after_scroll < n // 4  # blocks far from the viewport went back to placeholders

            # hover and click the last token: tooltip, selection, top-k
            last.hover()
            expect(root.locator(".mw-tooltip .mw-tt-meta")).to_contain_text(f"token {n - 1}")
            last.click()
            expect(last).to_have_class(has_class("mw-selected"))
            expect(last).to_have_attribute("aria-selected", "true")
            expect(root.locator(".mw-topk-title")).to_contain_text(f"token {n - 1}")
            expect(root.locator(".mw-topk .mw-topk-row")).to_have_count(min(view.k, view.n_units))
            assert root.locator(".mw-token.mw-selected").count() == 1

            # keyboard: Home brings token 0 back into view and selects it; End goes back down
            texts = root.locator(".mw-texts")
            texts.focus()
            page.keyboard.press("Home")
            first = root.locator('.mw-token[data-index="0"]')
            expect(first).to_have_class(has_class("mw-selected"))
            expect(first).to_be_in_viewport()
            page.keyboard.press("End")
            expect(last).to_have_class(has_class("mw-selected"))
            expect(last).to_be_in_viewport()
            page.keyboard.press("ArrowLeft")
            expect(root.locator(f'.mw-token[data-index="{n - 2}"]')).to_have_class(has_class("mw-selected"))
            expect(root.locator(".mw-status")).to_have_text("static")
            report(capsys, f"to_html of {n:,} tokens: {export.stat().st_size / 1e6:.2f} MB; {initial} spans at first, "
                           f"{after_scroll} after scrolling to the end")
            assert_no_markup_ran(page)
    finally:
        context.close()


def test_the_notebook_copy_shows_its_first_tokens_and_says_so(view, browser, tmp_path):
    data = view._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    html = data["text/html"]
    state = json.loads(html.split('-state">', 1)[1].split("</script>", 1)[0])
    keep = sum(len(t) for t in state["texts"])
    page_path = tmp_path / "copy.html"
    page_path.write_text(f"<!doctype html><html><head><meta charset=\"utf-8\"></head><body>{html}</body></html>",
                         encoding="utf-8")
    with static_view(browser, page_path, ".mw-token-activations") as root:
        note = root.locator(".mw-static-note")
        expect(note).to_be_visible()
        expect(note).to_have_text(re.compile(rf"first {keep:,} of {sum(len(t) for t in view.texts):,} tokens"))
        expect(root.locator(".mw-token").first).to_be_visible()
