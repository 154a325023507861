"""Bytes to the browser for a TokenActivations view versus CircuitsVis' colored tokens.

Baseline: CircuitsVis (`pip install circuitsvis`), the view people know. Its offline output
(`local_src`) inlines its React bundle and every value as JSON text; ours sends token
strings, one unit's float32 values and the top-k units (int32 + float16) as binary buffers,
and fetches other units lazily. We also compare the self-contained offline HTML files
(`to_html` vs CircuitsVis `local_src`), and time our first computation.

Scale (section "token_activations scale"): one text of 10,000+ tokens on zoo:tiny (run with
``window=``), before and after virtualised rendering, both measured in this run: the view as of
BEFORE (its Python class and its bundle rebuilt from git with the same esbuild) against the
working tree. Bytes: the live widget state (binary buffers + JSON), ``to_html()``, and the
outputs a kernel writes into the .ipynb for a cell showing the view (its ``text/html`` copy plus
the saved-view output, as nbformat writes them). First paint in headless chromium: a fresh page
per repeat holds the state and the bundle; from the ``render`` call to the second animation
frame after it (the frame that drew the tokens has been painted), interleaved, 5 repeats each.

Run: `python benchmarks/token_activations.py` (or `make bench`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _results import write_section  # noqa: E402

import mi_widgets as mw  # noqa: E402
from mi_widgets import wire  # noqa: E402


def live_bytes(w) -> int:
    state = w.state()
    buffers = wire.nbytes(state)
    scrubbed = json.dumps(wire.to_static(state))  # JSON part without buffers
    for key in ("values", "topk_indices", "topk_values"):
        scrubbed = scrubbed.replace(json.dumps(wire.to_static(state[key])), "{}")
    return buffers + len(scrubbed.encode())


def main() -> None:
    import circuitsvis.tokens as cv
    from _harness import Run

    model = mw.load()
    rows = []
    run = Run("token_activations payload").__enter__()
    sentence = "The Eiffel Tower is in Paris. The food was wonderful and the staff were kind."
    per_text = model.to_tokens(sentence * 4).shape[1]  # zoo:tiny reads at most 128 tokens a text
    for n_tokens in (200, 1000):
        texts = [sentence * 4] * max(1, round(n_tokens / per_text))
        t0 = time.perf_counter()
        w = mw.TokenActivations(model, texts, site="mlp_post", layer=1)
        seconds = time.perf_counter() - t0
        r = w.result
        ours_live = live_bytes(w)
        ours_html = len(w.to_html().encode())
        tokens = [t for toks in r.str_tokens for t in toks]
        cv_all = cv.colored_tokens_multi(tokens, r.acts, labels=[f"neuron {i}" for i in range(r.n_units)])
        cv_one = cv.colored_tokens(tokens, r.acts[:, w.selected_unit].tolist())
        rows.append(
            (len(tokens), r.n_units, ours_live, ours_html, len(cv_one.local_src.encode()),
             len(cv_all.local_src.encode()), seconds)
        )
    run.__exit__()
    lines = [
        run.header() + " Bytes do not depend on load; the compute column does.",
        "",
        f"Model: zoo:tiny ({model.d_mlp} neurons), site mlp_post, layer 1, texts of {per_text} tokens. Bytes are what reaches the browser for the first paint. Run: `python benchmarks/token_activations.py`.",
        "",
        "| tokens | units | ours live (buffers + JSON) | ours `to_html` | CircuitsVis 1 unit (`local_src`) | CircuitsVis all units (`local_src`) | ours / CV all units | ours html / CV 1 unit | compute (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t, u, live, html, one, allu, s in rows:
        lines.append(
            f"| {t} | {u} | {live:,} | {html:,} | {one:,} | {allu:,} | {live / allu:.3f} | {html / one:.3f} | {s:.2f} |"
        )
    lines.append("")
    lines.append(
        "Live bytes exclude the 21.6 KB ES module, which anywidget sends once per widget class. "
        "CircuitsVis' `cdn_src` is smaller but needs the network."
    )
    write_section("token_activations payload", "\n".join(lines))
    print("\n".join(lines))


#: the last commit before virtualised rendering and the notebook copy's byte budget (issue 16)
BEFORE = "c496f98"
ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "the Eiffel Tower is in Paris and the Colosseum is in Rome while Mary gave John a drink "
    "at the store because the food was wonderful and the staff were kind"
).split()

PAINT = """async () => {
  const state = JSON.parse(document.getElementById('state').textContent);
  const w = globalThis.MIWidgets.token_activations;
  const el = document.createElement('div');
  document.body.appendChild(el);
  await new Promise((r) => setTimeout(r, 50));
  const t0 = performance.now();
  w.render({ model: w.staticModel(state), el });
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return { ms: performance.now() - t0, spans: el.querySelectorAll('.mw-token').length };
}"""


def long_text(model, n_tokens: int) -> str:
    per = model.tokenizer(" ".join(WORDS), return_tensors="pt")["input_ids"].shape[1]
    reps = max(1, (n_tokens - 1) // max(per - 1, 1))
    while True:
        text = " ".join(WORDS * reps)
        if model.tokenizer(text, return_tensors="pt")["input_ids"].shape[1] >= n_tokens:
            return text
        reps += 1


def before_version(tmp: Path):
    """The widget class and its IIFE bundle as of BEFORE, rebuilt from git."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "js/src",
                              "mi_widgets/widgets/token_activations.py"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    entry = tmp / "entry.ts"
    entry.write_text(
        'import widget from "./js/src/token_activations";\n'
        'import { staticModel } from "./js/src/lib/static_model";\n'
        "(globalThis as any).MIWidgets = { token_activations: { render: widget.render, staticModel } };\n",
        encoding="utf-8",
    )
    out = tmp / "before.iife.js"
    subprocess.run([str(ROOT / "js/node_modules/.bin/esbuild"), str(entry), "--bundle", "--format=iife",
                    "--minify", f"--outfile={out}", "--log-level=warning"], check=True)
    spec = importlib.util.spec_from_file_location(
        "mi_widgets.widgets._token_activations_before", tmp / "mi_widgets/widgets/token_activations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TokenActivations, out.read_text(encoding="utf-8")


def notebook_bytes(w) -> int:
    """Bytes of the outputs a kernel writes into the .ipynb for a cell ending in ``w``."""
    import IPython
    import IPython.display
    import nbformat

    published: list = []

    class Shell:
        kernel = object()

    saved = IPython.get_ipython, IPython.display.publish_display_data
    IPython.get_ipython = lambda: Shell()
    IPython.display.publish_display_data = lambda data, metadata=None: published.append((data, metadata or {}))
    try:
        bundle_ = w._repr_mimebundle_()
    finally:
        IPython.get_ipython, IPython.display.publish_display_data = saved
    data, meta = bundle_ if isinstance(bundle_, tuple) else (bundle_, {})
    outs = [nbformat.v4.new_output("display_data", data=d, metadata=m) for d, m in [*published, (data, meta)]]
    empty = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("w")])
    full = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("w", outputs=outs)])
    return len(nbformat.writes(full).encode()) - len(nbformat.writes(empty).encode())


def scale() -> None:
    from _harness import Measured, Run, compare, setup
    from playwright.sync_api import sync_playwright

    setup(1)  # one torch thread, as every other benchmark: both versions compute under the same setup

    from mi_widgets.widgets._base import bundle, script_json, script_text

    model = mw.load()
    text = long_text(model, 10_000)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        Before, before_js = before_version(tmp)
        with Run("token_activations scale") as run:
            t0 = time.perf_counter()
            r = mw.token_activations(model, text, "mlp_post", 1, window=model.n_ctx, progress=lambda d, t: None)
            compute_s = time.perf_counter() - t0
            n = r.acts.shape[0]
            views = {"before": (Before(result=r), before_js),
                     "after": (mw.TokenActivations(result=r), bundle("token_activations", "iife").read_text("utf-8"))}
            rows = {}
            for name, (w, js) in views.items():
                host = tmp / f"{name}.html"
                host.write_text(
                    "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>"
                    f"<script type=\"application/json\" id=\"state\">{script_json(w.static_state())}</script>"
                    f"<script>{script_text(js)}</script></body></html>", encoding="utf-8")
                page = w.to_html()
                # the before class inlines today's bundle: count its own instead
                page_bytes = len(page.encode()) - len(script_text(bundle("token_activations", "iife").read_text("utf-8")).encode()) \
                    + len(script_text(js).encode())
                rows[name] = {"host": host, "live": live_bytes(w), "html": page_bytes, "nb": notebook_bytes(w)}
            with sync_playwright() as pw:
                chromium = "/usr/bin/chromium"
                browser = pw.chromium.launch(executable_path=chromium if os.path.exists(chromium) else None, headless=True)

                def paint(name: str):
                    def go() -> Measured:
                        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
                        try:
                            pg.goto(rows[name]["host"].as_uri())
                            out = pg.evaluate(PAINT)
                        finally:
                            pg.close()
                        return Measured(out["ms"] / 1e3, out["spans"])
                    return go

                timings = compare({name: paint(name) for name in rows}, repeats=5, warmup=1)
                browser.close()
    b, a = rows["before"], rows["after"]
    tb, ta = timings["before"], timings["after"]
    lines = [
        run.header(),
        "",
        f"One text of {n:,} tokens on zoo:tiny (context {model.n_ctx}: `window={model.n_ctx}`, "
        f"{compute_s:.1f} s to compute), mlp_post layer 1. Before: commit {BEFORE}, rebuilt from git in this run. "
        "First paint: from `render` to the second animation frame after it, a fresh headless-chromium page per "
        "repeat (median, min–max of 5, interleaved). Run: `python benchmarks/token_activations.py`.",
        "",
        "| | live state (buffers + JSON) | `to_html()` | notebook outputs (.ipynb) | first paint (ms) | token spans at first paint |",
        "|---|---|---|---|---|---|",
        f"| before | {b['live']:,} | {b['html']:,} | {b['nb']:,} | {tb.cell('ms')} | {tb.output:,} |",
        f"| after | {a['live']:,} | {a['html']:,} | {a['nb']:,} | {ta.cell('ms')} | {ta.output:,} |",
        f"| after / before | {a['live'] / b['live']:.2f} | {a['html'] / b['html']:.2f} | {a['nb'] / b['nb']:.3f} | "
        f"{ta.median / tb.median:.2f} | {ta.output / max(tb.output, 1):.3f} |",
        "",
        "Targets (issue 16): first paint of 10,000 tokens ≤ 300 ms, notebook outputs ≤ 200 kB.",
    ]
    write_section("token_activations scale", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if "--scale" not in sys.argv:
        main()
    scale()
