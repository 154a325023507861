"""CircuitGraph in a real JupyterLab, driven by headless chromium.

One notebook (one kernel). Cell 0 builds a Circuit by hand on zoo:ioi's node names (3 layers ×
4 heads, every residual edge, seeded synthetic scores) with zoo:ioi attached and an IOI prompt as
its task; its ``faithfulness(n)`` is the known function ``n / n_edges``, so the readout can be
checked. Cell 1 shows a gpt2-small-sized synthetic graph (12 × 12, 32,491 edges) to time the
slider's redraw. DOM hooks: docs/widget_protocol.md ("CircuitGraph").
"""

from __future__ import annotations

import time

import pytest
from _browser import has_class, report, static_view
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

CELL_S = 120
PROMPT = "When Nora and Daniel went to the store, Daniel gave a drink to"

CELL0 = f"""
import torch
import mi_widgets as mw
from mi_widgets.core.circuits.circuit import Circuit, node_layer
from mi_widgets.widgets.circuit_graph import CircuitGraph
m = {{model}}
PROMPT = {PROMPT!r}

def all_edges(L, H):
    nodes = ["input", *[f"a{{i}}.h{{h}}" for i in range(L) for h in range(H)], *[f"m{{i}}" for i in range(L)], "logits"]
    S, R, K = [], [], []
    for a in nodes:
        for b in nodes:
            if a == "logits" or b == "input" or not node_layer(b, L) > node_layer(a, L):
                continue
            for k in (("q", "k", "v") if b.startswith("a") else ("",)):
                S.append(a); R.append(b); K.append(k)
    return nodes, S, R, K

class Faithful(Circuit):
    def faithfulness(self, n):
        return n / self.n_edges

nodes, S, R, K = all_edges(3, 4)
scores = torch.randn(len(S), generator=torch.Generator().manual_seed(0))
c = Faithful(model_name="zoo:ioi", n_layers=3, n_heads=4, method="eap", metric_name="logit_diff",
             senders=S, receivers=R, kinds=K, scores=scores, in_circuit=scores.abs() > 1.5,
             nodes=nodes, model=m, task=[PROMPT])
w = c.widget()
w
"""

CELL1 = """
nodes2, S2, R2, K2 = all_edges(12, 12)
s2 = torch.randn(len(S2), generator=torch.Generator().manual_seed(1))
big = CircuitGraph(Circuit(model_name="synthetic", n_layers=12, n_heads=12, method="eap", metric_name="m",
                           senders=S2, receivers=R2, kinds=K2, scores=s2, in_circuit=s2.abs() > 2.5,
                           nodes=nodes2), n_edges_shown=len(S2))
big
"""


nb = view_notebook("circuit_graph.ipynb", CELL0.replace("{model}", 'mw.load("zoo:ioi")'), CELL1)


def graph_root(nb, cell: int = 0):
    return nb.view(".mw-circuit-graph", ready=".mw-node", cell=cell)


def test_slider_prunes_in_the_browser_and_faithfulness_comes_back(nb, capsys):
    root = graph_root(nb)
    E, shown = nb.py_json("[w.n_edges, w.n_edges_shown]")
    assert shown == nb.py_json("int(c.in_circuit.sum())")
    expect(root).to_have_attribute("data-drawn-edges", str(shown))
    expect(root.locator(".mw-node")).to_have_count(17)
    expect(root.locator(".mw-topn-total")).to_have_text(f"/ {E}")

    slider = root.locator("input.mw-topn")
    slider.fill("10")  # input + change: prune here, then ask the kernel
    expect(root).to_have_attribute("data-drawn-edges", "10")
    expect(root).to_have_attribute("data-kept-edges", "10")
    assert nb.wait_py("w.n_edges_shown", 10) == 10
    faith = root.locator(".mw-faith")
    expect(faith).to_have_attribute("data-state", "ok", timeout=CELL_S * 1000)
    assert float(faith.get_attribute("data-value")) == pytest.approx(10 / E)
    assert nb.py_json("w.faithfulness") == {"n": 10, "value": pytest.approx(10 / E), "source": "computed"}
    # the nodes left visible are exactly the endpoints of the top-10 edges
    ends = sorted(nb.py_json("sorted({e for i in w.shown_edges() for e in (c.senders[i], c.receivers[i])})"))
    visible = sorted(root.locator(".mw-node:not([hidden])").evaluate_all("els => els.map(e => e.dataset.node)"))
    assert visible == ends

    # Python sets the size; the view re-prunes
    nb.py("w.n_edges_shown = 3")
    expect(root).to_have_attribute("data-drawn-edges", "3")


def test_click_a_head_opens_its_panel_with_attention(nb, capsys):
    root = graph_root(nb)
    nb.py("w.n_edges_shown = 40")
    expect(root).to_have_attribute("data-drawn-edges", "40")
    head = nb.py_json("next(c.receivers[i] for i in w.shown_edges() if c.receivers[i].startswith('a'))")
    t0 = time.perf_counter()
    root.locator(f'.mw-node[data-node="{head}"]').click()
    expect(root.locator(".mw-node-panel .mw-panel-title")).to_have_text(head)
    assert nb.wait_py("w.selected_node", head) == head
    tokens = nb.py_json(f"mw.attention(m, {PROMPT!r}).str_tokens")
    attn = root.locator(".mw-attn")
    expect(attn).to_have_attribute("data-tokens", str(len(tokens)), timeout=CELL_S * 1000)
    report(capsys, f"head click → attention pattern shown in {time.perf_counter() - t0:.2f}s")
    assert root.locator(".mw-attn-tok").all_text_contents() == tokens
    # its incoming edges, top by |score|, as Python lists them
    want = nb.py_json(f"[e for e, _ in w.node_edges({head!r})['in']]")
    got = root.locator('.mw-edge-list[data-dir="in"] .mw-edge-row').evaluate_all("els => els.map(e => Number(e.dataset.edge))")
    assert got == want
    expect(root.locator(f'.mw-node[data-node="{head}"]')).to_have_class(has_class("mw-selected"))

    # Python moves the selection; the view follows
    nb.py("w.selected_node = 'm1'")
    expect(root.locator(".mw-node-panel .mw-panel-title")).to_have_text("m1")
    expect(root.locator(".mw-node-panel .mw-attn")).to_have_count(0)

    # a supernode named with markup, set from Python, is shown literally
    nb.py("w.groups = [{'name': '<img src=x onerror=window.__pwned=1>', 'nodes': ['a0.h0', 'a0.h1', 'a0.h2']}]")
    sup = root.locator(".mw-node.mw-group")
    expect(sup).to_have_text("<img src=x onerror=window.__pwned=1> (3)")
    assert root.locator(".mw-graph img").count() == 0
    nb.assert_no_markup_ran()
    nb.py("w.groups = []")
    expect(sup).to_have_count(0)


def test_drag_pins_a_node_and_shift_click_groups(nb):
    root = graph_root(nb)
    nb.py("w.n_edges_shown = 40; w.pinned = {}; w.groups = []; w.selected_node = ''")
    expect(root).to_have_attribute("data-drawn-edges", "40")
    name = root.locator(".mw-node:not([hidden])").first.get_attribute("data-node")
    node = root.locator(f'.mw-node[data-node="{name}"]')
    node.scroll_into_view_if_needed()
    box = node.bounding_box()
    graph = root.locator(".mw-graph").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    dx = 80 if x < graph["x"] + graph["width"] / 2 else -80  # towards the middle: no clamping at the edge
    dy = 50 if y < graph["y"] + graph["height"] / 2 else -50
    nb.page.mouse.move(x, y)
    nb.page.mouse.down()
    nb.page.mouse.move(x + dx / 2, y + dy / 2, steps=5)
    nb.page.mouse.move(x + dx, y + dy, steps=5)
    nb.page.mouse.up()
    assert nb.wait_py(f"w.pinned.get({name!r}) is not None", True) is True
    fx, fy = nb.py_json(f"w.pinned[{name!r}]")
    # the node's centre follows the pointer; pinned is a fraction of the graph (inside its 1px border)
    assert fx * (graph["width"] - 2) == pytest.approx(x + dx - graph["x"] - 1, abs=3)
    assert fy * (graph["height"] - 2) == pytest.approx(y + dy - graph["y"] - 1, abs=3)
    expect(node).to_have_class(has_class("mw-pinned"))
    assert nb.py_json("w.selected_node") == ""  # a drag is not a click

    visible = root.locator(".mw-node:not([hidden]):not(.mw-group)").evaluate_all("els => els.map(e => e.dataset.node)")
    picks = [n for n in visible if n.startswith("a")][:2]
    for n in picks:
        root.locator(f'.mw-node[data-node="{n}"]').click(modifiers=["Shift"])
    root.locator("button.mw-group-btn").click()
    assert nb.wait_py("w.groups", [{"name": "G1", "nodes": picks}]) == [{"name": "G1", "nodes": picks}]
    expect(root.locator('.mw-node.mw-group[data-group="G1"]')).to_have_text("G1 (2)")
    root.locator('.mw-node.mw-group[data-group="G1"]').click()
    assert nb.wait_py("w.selected_node", "G1") == "G1"
    root.locator("button.mw-ungroup").click()
    assert nb.wait_py("w.groups", []) == []
    nb.py("w.pinned = {}")


def test_32k_edges_redraw_in_chromium(nb, capsys):
    root = graph_root(nb, 1)
    E = nb.py_json("big.n_edges")
    assert E == 32491
    expect(root).to_have_attribute("data-drawn-edges", str(E))
    ms = root.evaluate(
        """el => { const s = el.querySelector('input.mw-topn'); const t0 = performance.now(); let k = 0;
        for (let v = s.max; v > 0; v -= 1000) { s.value = String(v); s.dispatchEvent(new Event('input', {bubbles: true})); k++; }
        return (performance.now() - t0) / k; }"""
    )
    report(capsys, f"{E} edges: {ms:.1f} ms per slider redraw in chromium")
    assert ms < 250
    assert root.locator("canvas").count() == 1  # one canvas for every edge, no element per edge


def test_static_export_in_the_browser(nb, tmp_path, capsys):
    path = tmp_path / "circuit.html"
    nb.py(f"w.n_edges_shown = 25; w.selected_node = ''; w.to_html({str(path)!r})")
    cached = nb.py_json("sorted(w._static_extra(512)['node_cache'])")
    with static_view(nb.page.context, path, ".mw-circuit-graph") as root:
        expect(root).to_have_attribute("data-drawn-edges", "25")
        expect(root.locator(".mw-static-note")).to_be_visible()
        expect(root.locator(".mw-faith")).to_have_attribute("data-state", "static")
        root.locator("input.mw-topn").fill("20")  # prunes without a kernel
        expect(root).to_have_attribute("data-drawn-edges", "20")
        expect(root.locator(".mw-faith")).to_have_text("faithfulness: needs the kernel")
        root.locator(".mw-show-all").check()
        root.locator(f'.mw-node[data-node="{cached[0]}"]').click()
        expect(root.locator(".mw-attn")).to_have_attribute("data-tokens", str(len(nb.py_json(f"mw.attention(m, {PROMPT!r}).str_tokens"))))
        miss = next(n for n in nb.py_json("w.nodes") if n.startswith("a") and n not in cached)
        root.locator(f'.mw-node[data-node="{miss}"]').click()
        expect(root.locator(".mw-attn .mw-note")).to_contain_text("not precomputed")
