"""MIWidget (mi_widgets/widgets/_base.py): every browser message is checked in one place and gets
exactly one reply, short and without a traceback; a refused or failed request changes no state;
closing a view closes what it owns; ``to_html(path)`` returns the path. Views on zoo:tiny;
needs the built JS bundles."""

from __future__ import annotations

import gc
import json
import math
import random
import time
import tracemalloc
import warnings

import ipywidgets
import pytest
import torch

import mi_widgets as mw
from mi_widgets.widgets._base import MAX_ERROR, Field, MIWidget, request_handler

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"
N_FUZZ = 1000


# -- the views, built cheaply on zoo:tiny --------------------------------------------------


def _patching(tiny):
    r = mw.activation_patching(tiny, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)
    return r.widget()


def _tokens(tiny):
    return mw.TokenActivations(tiny, ["The cat sat on the mat", "A dog ran"], site="mlp_post", layer=0)


def _attention(tiny):
    return mw.attention(tiny, "The cat sat on the mat").widget()


def _lens(tiny):
    return mw.logit_lens(tiny, "The Eiffel Tower is in", k=5).widget()


def _patchscope(tiny):
    from mi_widgets.widgets.patchscope import Patchscope

    return Patchscope(tiny, "The cat sat", n_tokens=1)


def _ablation(tiny):
    heads = [f"{layer}.{h}" for layer in range(tiny.n_layers) for h in range(tiny.n_heads)][:4]
    r = mw.ablate(tiny, [CLEAN], mw.logit_diff(" Paris", " Tokyo"), heads, kind="zero", separately=True, progress=False)
    return r.widget()


def _steering(tiny):
    from mi_widgets.widgets.steering import Steering

    vec = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0))
    return Steering(tiny, "The food was", {"random": vec}, layer=0, coef=1.0, max_new_tokens=2)


VIEWS = {
    "PatchingGrid": _patching,
    "TokenActivations": _tokens,
    "AttentionPatterns": _attention,
    "LogitLens": _lens,
    "Patchscope": _patchscope,
    "Ablation": _ablation,
    "Steering": _steering,
}


# -- a random malformed message ----------------------------------------------------------

_BIG = "x" * (1 << 20)
_POOL = [
    None, True, False, 0, 1, -1, 2, 3, 7, 10**30, -(10**30), 1.5, float("nan"), float("inf"), -0.0,
    "", "a", "resid_pre", "mlp_post", "exact", "zero", "0.0", "0.0|0", "<script>", "\u202e", _BIG,
    [], [1, 2], [[[]]], {}, {"a": 1}, {"layer": 0}, list(range(5000)), {str(i): i for i in range(200)},
]


def _deep(n: int) -> object:
    out: object = 0
    for _ in range(n):
        out = [out]
    return out


def _value(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.75:
        return rng.choice(_POOL)
    if r < 0.85:
        return rng.randint(-3, 12)
    if r < 0.95:
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 40)))
    return _deep(rng.randint(10, 60))


def _message(rng: random.Random, names: list[str], fields: list[str]) -> tuple[object, list]:
    """A request with one or more parts wrong (or, now and then, right)."""
    content: dict = {
        "kind": "mw-request",
        "id": f"id-{rng.randrange(10**9)}",
        "name": rng.choice(names),
        "msg": {k: _value(rng) for k in rng.sample(fields, rng.randint(1, min(3, len(fields))))},
    }
    r = rng.random()
    if r < 0.05:
        return rng.choice([None, [], "mw-request", 3, [content]]), []
    if r < 0.12:
        content["kind"] = rng.choice([None, "mw-response", "x", ["mw-request"], {"k": 1}])
    elif r < 0.2:
        content["id"] = rng.choice([None, 1, ["id"], {"id": 1}, "", "i" * 101, _BIG])
    elif r < 0.32:
        content["name"] = rng.choice([None, 1, ["cell"], {"name": "cell"}, "", "nope", _BIG, "__init__", "_cell"])
    elif r < 0.4:
        content["msg"] = rng.choice([[], "msg", 1, _BIG, [content["msg"]]])
    elif r < 0.45:
        content["msg"] = {**content["msg"], "big": _BIG}
    elif r < 0.5:
        content["msg"] = {rng.choice(["layer", "extra", "__class__"]): _deep(40)}
    elif r < 0.53:
        del content[rng.choice(["kind", "id", "name", "msg"])]
    buffers = [b"\0" * rng.choice([1, 1 << 25])] if rng.random() < 0.03 else []
    return content, buffers


def _state(w: MIWidget) -> dict:
    skip = w._report_traits
    return {n: v for n, v in w.state().items() if n not in skip}


def _wait_idle(w: MIWidget) -> None:
    t = getattr(w, "_thread", None)
    if t is not None:
        t.join(60)


@pytest.mark.parametrize("view", list(VIEWS))
def test_fuzzed_messages_each_get_one_short_reply_and_leave_state_alone(tiny, view):
    w = VIEWS[view](tiny)
    sent: list[dict] = []
    w.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    names = sorted(w._handlers)
    fields = sorted({"layer", "position", "head", "row", "col", "site", "mode", "component", "prompt", "coef",
                     "coefs", "lens", "token", "rank_class", "unit", "vector", "max_new_tokens", "seed"})
    rng = random.Random(hash(view) % 1000)
    n_ok = n_err = 0
    t0 = time.monotonic()
    for i in range(N_FUZZ):
        content, buffers = _message(rng, names, fields)
        before = _state(w)
        sent.clear()
        w._on_custom_msg(w, content, buffers)  # must not raise
        replies = [m for m in sent if m.get("kind") == "mw-response"]
        assert len(replies) == 1, (i, content if len(repr(content)) < 300 else "<big>", sent)
        reply = replies[0]
        rid = content.get("id") if isinstance(content, dict) else None
        assert reply["id"] == (rid if isinstance(rid, str) and 0 < len(rid) <= 100 else None)
        if reply["ok"]:
            n_ok += 1
            _wait_idle(w)
            json.dumps(reply["response"], default=lambda o: None)  # JSON-able
            continue
        n_err += 1
        err = reply["error"]
        assert isinstance(err, str) and 0 < len(err) <= MAX_ERROR, err
        assert "Traceback" not in err and "x" * 80 not in err  # big inputs are not echoed
        after = _state(w)
        changed = [n for n in before if not _same(before[n], after[n])]
        assert not changed, (i, view, changed, err)
    assert n_err >= N_FUZZ // 2
    assert time.monotonic() - t0 < 60
    print(f"\n[fuzz] {view}: {N_FUZZ} messages, {n_ok} answered ok, {n_err} refused, "
          f"{time.monotonic() - t0:.1f} s", flush=True)


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - e.g. arrays
        return False


# -- the schema and the envelope, directly --------------------------------------------------


class _Probe(MIWidget):
    _stem = "patching_grid"
    value = __import__("traitlets").Int(0).tag(sync=True)
    status = __import__("traitlets").Unicode("ready").tag(sync=True)

    @request_handler("set", value=Field(int, required=True, min=0, max=9), note=Field(str, max=5, nullable=True))
    def _set(self, msg: dict, progress: object) -> dict:
        self.value = msg["value"]
        if msg.get("note") == "fail":
            raise RuntimeError("x" * 5000)
        return {"value": self.value, "keys": sorted(msg)}

    @request_handler("stop", strict=True)
    def _stop(self, msg: dict, progress: object) -> dict:
        return {}


def _ask(w: MIWidget, content: object) -> dict:
    sent: list[dict] = []
    w.send = lambda c, buffers=None: sent.append(c)  # type: ignore[method-assign]
    w._on_custom_msg(w, content, [])
    assert len(sent) == 1
    return sent[0]


def test_declared_fields_are_checked_before_the_handler_runs():
    w = _Probe()
    req = {"kind": "mw-request", "id": "a"}
    assert _ask(w, {**req, "name": "set", "msg": {"value": 3}})["response"] == {"value": 3, "keys": ["value"]}
    for msg, words in [
        ({}, "needs the field 'value'"),
        ({"value": 10}, "must be an int in 0..9, got 10"),
        ({"value": -1}, "must be an int in 0..9, got -1"),
        ({"value": True}, "must be an int"),
        ({"value": 1.5}, "must be an int"),
        ({"value": [1]}, "must be an int"),
        ({"value": 1, "note": "toolong"}, "at most 5"),
        ({"value": 1, "other": 1}, "unknown field 'other'"),
    ]:
        r = _ask(w, {**req, "name": "set", "msg": msg})
        assert r["ok"] is False and words in r["error"], (msg, r)
        assert w.value == 3
    assert _ask(w, {**req, "name": "stop", "msg": {"x": 1}})["ok"] is False
    assert _ask(w, {**req, "name": "stop"})["ok"] is True


def test_a_failing_handler_puts_the_state_back_and_replies_briefly():
    w = _Probe()
    r = _ask(w, {"kind": "mw-request", "id": "a", "name": "set", "msg": {"value": 5, "note": "fail"}})
    assert r["ok"] is False and len(r["error"]) <= MAX_ERROR and r["error"].startswith("RuntimeError: xxx")
    assert "Traceback" not in r["error"]
    assert w.value == 0  # the handler set 5, then failed


def test_unhashable_names_and_bad_envelopes_get_a_reply():
    w = _Probe()
    for content in [
        {"kind": "mw-request", "id": "a", "name": ["set"], "msg": {}},
        {"kind": "mw-request", "id": "a", "name": {"n": 1}, "msg": {}},
        {"kind": "mw-request", "id": "a", "name": "set", "msg": [1]},
        {"kind": "mw-request", "id": "a", "name": "set", "msg": {"value": "y" * (1 << 20)}},
        {"kind": "mw-request", "id": "i" * 5000, "name": "set", "msg": {"value": 1}},
        {"kind": "mw-request", "id": "a", "name": "set", "msg": {"value": _deep(100)}},
        "a string",
    ]:
        r = _ask(w, content)
        assert r["kind"] == "mw-response" and r["ok"] is False, content if len(str(content)) < 100 else "<big>"
        assert len(r["error"]) <= MAX_ERROR and len(json.dumps(r)) < 600
    assert w.value == 0


def test_request_from_python_applies_the_same_checks():
    w = _Probe()
    with pytest.raises(ValueError, match=r"must be an int in 0\.\.9, got 12"):
        w.request("set", {"value": 12})
    assert w.request("set", {"value": 2})["value"] == 2


def test_error_messages_are_short_for_every_exception():
    from mi_widgets.widgets._base import _message

    for exc in [ValueError("v" * 10_000), KeyError("k" * 10_000), TypeError("t" * 10_000), KeyboardInterrupt()]:
        m = _message(exc)
        assert 0 < len(m) <= MAX_ERROR and "Traceback" not in m


# -- closing --------------------------------------------------------------------------------


def _n_widgets() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return len(ipywidgets.Widget.widgets)


def test_closing_views_returns_the_widget_registry_to_its_baseline(tiny):
    import dataclasses

    r = mw.activation_patching(tiny, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)
    bare = dataclasses.replace(r, model=None)  # no model: building a view runs nothing
    gc.collect()
    base = _n_widgets()
    w = bare.widget()
    assert _n_widgets() == base + 2  # the view and its Layout
    w.close()
    assert _n_widgets() == base
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for _ in range(1000):
        bare.widget().close()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    assert _n_widgets() == base
    print(f"\n[close] 1000 views created and closed: registry {base} -> {_n_widgets()}, "
          f"traced memory +{grown / 1024:.0f} KiB", flush=True)
    assert grown < 20 * 2**20


# -- to_html ---------------------------------------------------------------------------------


def test_to_html_with_a_path_returns_the_path_not_the_page(tiny, tmp_path):
    w = _tokens(tiny)
    out = tmp_path / "v.html"
    got = w.to_html(out)
    assert got == out and len(repr(got)) < 300
    page = w.to_html()
    assert isinstance(page, str) and page.startswith("<!doctype html>")
    assert math.isclose(len(out.read_text(encoding="utf-8")), len(page), rel_tol=0.01)
    assert w.to_html(str(out)) == out


# -- themes: text stays readable on the host's background (headless chromium) -----------------

_MEASURE = """() => {
  const parse = (s) => { const m = s.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  let cs = getComputedStyle(document.documentElement).colorScheme;
  if (!cs || cs === 'normal') cs = (document.querySelector('meta[name=color-scheme]') || {content: ''}).content;
  const canvasDark = /dark/.test(cs) && (!/light/.test(cs) || matchMedia('(prefers-color-scheme: dark)').matches);
  const behind = (el) => { for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor); if (c && c[3] >= 0.5) return c; }
    return canvasDark ? [18, 18, 18, 1] : [255, 255, 255, 1]; };
  const out = [];
  for (const el of document.querySelectorAll(SELECTORS)) {
    if (!el.textContent.trim() || el.closest('[hidden]') || el.offsetParent === null) continue;
    out.push({cls: el.className, text: el.textContent.slice(0, 20),
              fg: parse(getComputedStyle(el).color), bg: behind(el)});
  }
  return {items: out, scheme: getComputedStyle(document.querySelector('.mw-patching-grid')).colorScheme};
}"""
_TEXT = ".mw-title, .mw-status, .mw-col-label, .mw-row-label, .mw-cell-title, .mw-note, .mw-topk-head, .mw-tok, .mw-legend-hi, label.mw-control"


def _lum(rgb) -> float:
    def lin(c: float) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(rgb[0]) + 0.7152 * lin(rgb[1]) + 0.0722 * lin(rgb[2])


def _contrast(fg, bg) -> float:
    a = fg[3]
    fg = [fg[i] * a + bg[i] * (1 - a) for i in range(3)]  # text with alpha, over its background
    hi, lo = sorted([_lum(fg), _lum(bg)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


_HOSTS = {
    # name: (OS preference, <html> attributes, <body> attributes, body CSS)
    "static page, OS light": ("light", "", "", ""),
    "static page, OS dark": ("dark", "", "", ""),
    "marimo dark (no theme variables), OS light": ("light", 'class="dark"', "", "background:#181c1a;color:#e6e6e6"),
    "marimo light, OS dark": ("dark", 'class="light"', "", "background:#ffffff"),
    "unknown dark host (no markers), OS light": ("light", "", "", "background:#202124"),
    "VS Code dark": ("light", "", 'class="vscode-dark"',
                     "--vscode-foreground:#cccccc;--vscode-descriptionForeground:#9d9d9d;"
                     "--vscode-editor-background:#1e1e1e;--vscode-editorWidget-background:#252526;"
                     "--vscode-textLink-foreground:#3794ff;background:#1e1e1e"),
    "JupyterLab light, OS dark": ("dark", "", 'data-jp-theme-light="true"',
                                  "--jp-ui-font-color1:rgba(0,0,0,.87);--jp-ui-font-color2:rgba(0,0,0,.54);"
                                  "--jp-layout-color0:#fff;--jp-layout-color1:#fff;--jp-layout-color2:#eee;background:#fff"),
}


def test_text_is_readable_in_light_and_dark_hosts(tiny, tmp_path, pytestconfig):
    from _browser import launch

    r = mw.activation_patching(tiny, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)
    w = r.widget()
    w.selected_cell = {"layer": 1, "position": 2}
    fragment = w.html_fragment()
    browser = launch(pytestconfig)
    worst: dict[str, float] = {}
    try:
        for name, (os_scheme, html_attrs, body_attrs, body_css) in _HOSTS.items():
            path = tmp_path / "host.html"
            path.write_text(
                f'<!doctype html><html {html_attrs}><head><meta charset="utf-8"></head>'
                f'<body {body_attrs} style="{body_css}">{fragment}</body></html>',
                encoding="utf-8",
            ) if name.startswith(("marimo", "unknown", "VS", "Jupyter")) else w.to_html(path)
            page = browser.new_page(color_scheme=os_scheme)
            page.goto(path.resolve().as_uri())
            page.wait_for_selector(".mw-patching-grid .mw-cell")
            page.wait_for_timeout(100)  # followHostTheme runs once the view is in the page
            got = page.evaluate(_MEASURE.replace("SELECTORS", json.dumps(_TEXT)))
            page.close()
            assert len(got["items"]) >= 10, (name, got)
            ratios = [(_contrast(i["fg"], i["bg"]), i["cls"], i["text"]) for i in got["items"]]
            low = min(ratios)
            worst[name] = low[0]
            assert low[0] >= 4.5, (name, got["scheme"], low, [i for i in got["items"] if "cell-title" in i["cls"]])
    finally:
        browser.close()
    print("\n[theme] lowest text contrast per host: "
          + "; ".join(f"{k}: {v:.1f}" for k, v in worst.items()), flush=True)


def test_numpy_ints_from_python_callers_are_ints():
    import numpy as np

    w = _Probe()
    assert w.request("set", {"value": np.int64(4)})["value"] == 4 and type(w.value) is int
    with pytest.raises(ValueError, match="must be an int"):
        w.request("set", {"value": np.float64(4.0)})
