"""Bytes to the browser for a TokenActivations view versus CircuitsVis' colored tokens.

Baseline: CircuitsVis (`pip install circuitsvis`), the view people know. Its offline output
(`local_src`) inlines its React bundle and every value as JSON text; ours sends token
strings, one unit's float32 values and the top-k units (int32 + float16) as binary buffers,
and fetches other units lazily. We also compare the self-contained offline HTML files
(`to_html` vs CircuitsVis `local_src`), and time our first computation.

Run: `python benchmarks/token_activations.py` (or `make bench`).
"""

from __future__ import annotations

import json
import sys
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


if __name__ == "__main__":
    main()
