import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget, { components, edgeStyle } from "../src/circuit_graph";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, f32, flush, i32, liveModel, mountView, texts, wireB64, wireDV } from "./helpers";

// ------------------------------------------------------------------ a canvas that counts strokes
// happy-dom has no 2D context: a recording stub shows what the view draws (and that it draws
// thousands of edges in a few strokes, without a DOM element per edge).
interface Rec {
  curves: number;
  strokes: number;
  rects: number;
  /** every strokeStyle set, in order */
  styles: string[];
}
const rec: Rec = { curves: 0, strokes: 0, rects: 0, styles: [] };
const proto = HTMLCanvasElement.prototype as unknown as { getContext: unknown };
const original = proto.getContext;
beforeEach(() => {
  rec.curves = rec.strokes = rec.rects = 0;
  rec.styles = [];
  proto.getContext = function () {
    return {
      setTransform() {},
      clearRect() {},
      beginPath() {},
      moveTo() {},
      bezierCurveTo() {
        rec.curves++;
      },
      stroke() {
        rec.strokes++;
      },
      fillRect() {
        rec.rects++;
      },
      set strokeStyle(v: string) {
        rec.styles.push(v);
      },
      set lineWidth(_v: number) {},
      set fillStyle(_v: string) {},
    };
  };
});
afterEach(() => {
  proto.getContext = original;
});

// ------------------------------------------------------------------ a synthetic graph
const HOSTILE = "<img src=x onerror=alert(1)>";

function layerOf(name: string, L: number): number {
  if (name === "input") return -1;
  if (name === "logits") return L;
  if (name.startsWith("a")) return Number(name.slice(1).split(".")[0]);
  if (name.startsWith("m")) return Number(name.slice(1)) + 0.5;
  return 0; // hostile labels sit in row 0
}

/** All edges of an n_layers × n_heads graph (q/k/v into heads), scores from a fixed sequence. */
function graphState(L: number, Hn: number, extraNodes: string[] = [], extra: Record<string, unknown> = {}) {
  const nodes = ["input", ...Array.from({ length: L }, (_, l) => [...Array.from({ length: Hn }, (_, h) => `a${l}.h${h}`), `m${l}`]).flat(), "logits", ...extraNodes];
  const ny = nodes.map((n) => layerOf(n, L));
  const S: number[] = [];
  const R: number[] = [];
  const K: number[] = [];
  nodes.forEach((s, i) => {
    nodes.forEach((r, j) => {
      if (s === "logits" || r === "input" || !(ny[j] > ny[i])) return;
      if (r.startsWith("a")) for (const k of [1, 2, 3]) (S.push(i), R.push(j), K.push(k));
      else (S.push(i), R.push(j), K.push(0));
    });
  });
  const E = S.length;
  const scores = Array.from({ length: E }, (_, e) => Math.sin(e * 12.9898) * ((e % 7) + 1) * 0.1);
  const rank = Array.from({ length: E }, (_, e) => e).sort((a, b) => Math.abs(scores[b]) - Math.abs(scores[a]) || a - b);
  return {
    model_name: "zoo:ioi",
    method: "eap",
    metric_name: "logit_diff",
    n_layers: L,
    n_heads: Hn,
    nodes,
    node_layers: f32(ny),
    senders: i32(S),
    receivers: i32(R),
    kinds: wireB64("uint8", [E], new Uint8Array(K)),
    kind_names: ["", "q", "k", "v"],
    scores: f32(scores),
    in_circuit: wireB64("uint8", [E], new Uint8Array(E)),
    rank: i32(rank),
    n_edges: E,
    n_in_circuit: 0,
    curve: f32([10, 0.5, 20, 0.75], [2, 2]),
    n_edges_shown: 20,
    selected_node: "",
    pinned: {},
    groups: [],
    faithfulness: {},
    can_compute: true,
    can_attend: true,
    prompt: "When Mary and John went to the store, John gave a drink to",
    status: "ready",
    error: "",
    node_cache: {},
    _scores: scores,
    _rank: rank,
    _S: S,
    _R: R,
    ...extra,
  };
}

function mount(model: AnyModel) {
  const { root } = mountView(render, model, ".mw-circuit-graph");
  const node = (name: string) => root.querySelector<HTMLButtonElement>(`.mw-node[data-node="${CSS.escape(name)}"]`)!;
  const slider = root.querySelector<HTMLInputElement>("input.mw-topn")!;
  const slide = (v: number, commit = false) => {
    slider.value = String(v);
    slider.dispatchEvent(new Event("input", { bubbles: true }));
    if (commit) slider.dispatchEvent(new Event("change", { bubbles: true }));
  };
  return { root, node, slider, slide };
}

const drawnEdges = (root: HTMLElement) => Number(root.dataset.drawnEdges);

describe("CircuitGraph: static model", () => {
  it("draws the top-n edges on the canvas, one node button per node; the slider re-prunes at once", () => {
    const st = graphState(3, 4);
    const { root, node, slide } = mount(staticModel(st));
    expect(root.querySelectorAll(".mw-node")).toHaveLength(17);
    expect(root.dataset.keptEdges).toBe("20");
    expect(drawnEdges(root)).toBe(20);
    expect(rec.curves).toBe(20);
    // the kept edges are the top 20 by |score|: their endpoints are the visible nodes
    const ends = new Set<string>();
    for (const e of st._rank.slice(0, 20)) (ends.add(st.nodes[st._S[e]]), ends.add(st.nodes[st._R[e]]));
    const shown = Array.from(root.querySelectorAll<HTMLElement>(".mw-node:not([hidden])")).map((b) => b.dataset.node);
    expect(new Set(shown)).toEqual(ends);
    expect(node("input").textContent).toBe("input");
    slide(5);
    expect(root.dataset.keptEdges).toBe("5");
    expect(drawnEdges(root)).toBe(5);
    expect(root.querySelector(".mw-topn-num")!.getAttribute("type")).toBe("number");
    expect((root.querySelector(".mw-topn-num") as HTMLInputElement).value).toBe("5");
    const thr = Math.abs(st._scores[st._rank[4]]);
    expect(root.querySelector(".mw-threshold")!.textContent).toBe(`|score| ≥ ${thr.toPrecision(3)}`);
    slide(0);
    expect(drawnEdges(root)).toBe(0);
    expect(root.querySelectorAll(".mw-node:not([hidden])")).toHaveLength(0);
    root.querySelector<HTMLInputElement>(".mw-show-all")!.click();
    expect(root.querySelectorAll(".mw-node:not([hidden])")).toHaveLength(17);
  });

  it("faithfulness comes from the recorded curve in a static copy; other sizes say the kernel is needed", () => {
    const { root, slide } = mount(staticModel({ ...graphState(3, 4), n_edges_shown: 15 }));
    const faith = root.querySelector<HTMLElement>(".mw-faith")!;
    expect(root.querySelector<HTMLElement>(".mw-static-note")!.hidden).toBe(false);
    expect(faith.dataset.state).toBe("static");
    slide(10, true);
    expect(faith.dataset.state).toBe("ok");
    expect(faith.dataset.value).toBe("0.5");
    expect(faith.textContent).toContain("recorded curve");
    slide(11, true);
    expect(faith.textContent).toBe("faithfulness: needs the kernel");
  });

  it("click a node selects it and opens its panel with its top edges; an edge row selects the other end", () => {
    const st = graphState(3, 4);
    const model = staticModel({ ...st, n_edges_shown: 262 });
    const { root, node } = mount(model);
    click(node("m1"));
    expect(model.get("selected_node")).toBe("m1");
    expect(node("m1").classList.contains("mw-selected")).toBe(true);
    expect(root.querySelector(".mw-panel-title")!.textContent).toBe("m1");
    const m1 = st.nodes.indexOf("m1");
    const ins = st._rank.filter((e) => st._R[e] === m1).slice(0, 12);
    const rows = Array.from(root.querySelectorAll<HTMLElement>('.mw-edge-list[data-dir="in"] .mw-edge-row'));
    expect(rows.map((r) => Number(r.dataset.edge))).toEqual(ins);
    expect(rows[0].querySelector(".mw-edge-score")!.textContent).toBe(st._scores[ins[0]].toPrecision(4).replace(/\.?0+$/, (m) => (m.startsWith(".") ? m : m)));
    expect(rows[0].querySelector(".mw-edge-name")!.textContent).toContain("→ m1");
    click(rows[0]);
    expect(model.get("selected_node")).toBe(st.nodes[st._S[ins[0]]]);
    // the selected node's edges are drawn last, on top (one stroke each)
    expect(root.querySelectorAll(".mw-node.mw-selected")).toHaveLength(1);
  });

  it("node labels from Python are shown literally", () => {
    const st = graphState(1, 2, [HOSTILE, "<script>window.__pwned=1</script>"]);
    const { root, node } = mount(staticModel({ ...st, n_edges_shown: 0 }));
    root.querySelector<HTMLInputElement>(".mw-show-all")!.click();
    expect(node(HOSTILE).textContent).toBe(HOSTILE);
    click(node("<script>window.__pwned=1</script>"));
    expect(root.querySelector(".mw-panel-title")!.textContent).toBe("<script>window.__pwned=1</script>");
    expect(root.querySelector(".mw-graph script, .mw-graph img, .mw-node-panel script")).toBeNull();
    expect((window as unknown as Record<string, unknown>).__pwned).toBeUndefined();
  });

  it("a head's attention comes from node_cache; others say not precomputed", () => {
    const pattern = wireB64("uint8", [2, 2], new Uint8Array([255, 0, 128, 127]));
    const st = graphState(3, 4, [], { node_cache: { "a1.h2": { tokens: ["<b>", " Mary"], pattern: { ...pattern, scale: 1 / 255, offset: 0 } } } });
    const { root, node } = mount(staticModel({ ...st, n_edges_shown: 262 }));
    click(node("a1.h2"));
    expect(root.querySelector<HTMLElement>(".mw-attn")!.dataset.tokens).toBe("2");
    expect(texts(root, ".mw-attn-tok")).toEqual(["<b>", " Mary"]);
    expect(rec.rects).toBe(4);
    click(node("a0.h0"));
    expect(root.querySelector(".mw-attn .mw-note")!.textContent).toContain("not precomputed");
  });

  it("shift-click several nodes, group them: one supernode, members hidden, edges merged; ungroup", () => {
    const st = graphState(3, 4);
    const model = staticModel({ ...st, n_edges_shown: 262 });
    const { root, node } = mount(model);
    const groupBtn = root.querySelector<HTMLButtonElement>(".mw-group-btn")!;
    expect(groupBtn.disabled).toBe(true);
    const before = drawnEdges(root);
    for (const n of ["a1.h0", "a1.h1", "a1.h2"]) node(n).dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    expect(root.querySelectorAll(".mw-node.mw-multi")).toHaveLength(3);
    expect(groupBtn.disabled).toBe(false);
    click(groupBtn);
    expect(model.get("groups")).toEqual([{ name: "G1", nodes: ["a1.h0", "a1.h1", "a1.h2"] }]);
    const sup = root.querySelector<HTMLElement>('.mw-node.mw-group[data-group="G1"]')!;
    expect(sup.hidden).toBe(false);
    expect(sup.textContent).toBe("G1 (3)");
    expect(node("a1.h0").hidden).toBe(true);
    expect(drawnEdges(root)).toBeLessThan(before);
    click(sup);
    expect(model.get("selected_node")).toBe("G1");
    expect(root.querySelector(".mw-panel-kind")!.textContent).toContain("supernode of 3");
    click(root.querySelector(".mw-ungroup")!);
    expect(model.get("groups")).toEqual([]);
    expect(drawnEdges(root)).toBe(before);
    // a selection from Python starts a new multi-selection
    click(node("a0.h0"));
    node("a0.h1").dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    expect(root.querySelectorAll(".mw-node.mw-multi")).toHaveLength(2);
    model.set("selected_node", "m2");
    expect(Array.from(root.querySelectorAll<HTMLElement>(".mw-node.mw-multi")).map((b) => b.dataset.node)).toEqual(["m2"]);
    expect(groupBtn.disabled).toBe(true);
  });

  it("suggested groupings: heads by layer, and connected components of the kept graph", () => {
    const model = staticModel({ ...graphState(3, 4), n_edges_shown: 262 });
    const { root } = mount(model);
    const sug = root.querySelector<HTMLSelectElement>(".mw-suggest")!;
    sug.value = "layer";
    sug.dispatchEvent(new Event("change", { bubbles: true }));
    expect((model.get("groups") as { name: string }[]).map((x) => x.name)).toEqual(["L0 heads", "L1 heads", "L2 heads"]);
    expect(root.querySelectorAll(".mw-node.mw-group:not([hidden])")).toHaveLength(3);
    expect(sug.value).toBe("");
    expect(components(5, [[0, 1], [1, 2], [3, 4], [0, 4]], new Set([0]))).toEqual([[1, 2], [3, 4]]);
  });

  it("pin: the panel's pin button stores the node's position as fractions in `pinned`", () => {
    const model = staticModel({ ...graphState(3, 4), n_edges_shown: 262 });
    const { root, node } = mount(model);
    click(node("a2.h3"));
    click(root.querySelector(".mw-pin")!);
    const p = (model.get("pinned") as Record<string, number[]>)["a2.h3"];
    expect(p).toHaveLength(2);
    expect(p[0]).toBeGreaterThan(0);
    expect(p[0]).toBeLessThanOrEqual(1);
    expect(node("a2.h3").classList.contains("mw-pinned")).toBe(true);
    model.set("pinned", { "a2.h3": [0.25, 0.5] });
    expect(node("a2.h3").style.left).toBe(`${0.25 * 720}px`);
    expect(root.querySelector(".mw-pin")!.textContent).toBe("unpin");
  });

  it("full-screen toggle", () => {
    const { root } = mount(staticModel(graphState(2, 2)));
    const b = root.querySelector<HTMLButtonElement>(".mw-fullscreen")!;
    click(b);
    expect(root.classList.contains("mw-full")).toBe(true);
    expect(b.getAttribute("aria-pressed")).toBe("true");
    root.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(root.classList.contains("mw-full")).toBe(false);
  });

  it("~5,000 edges: a redraw is a few strokes (no DOM per edge) and takes milliseconds", () => {
    const st = graphState(8, 8);
    expect(st.n_edges).toBeGreaterThan(5000);
    const { root, slide } = mount(staticModel({ ...st, n_edges_shown: st.n_edges }));
    expect(drawnEdges(root)).toBe(st.n_edges);
    expect(root.querySelectorAll("*").length).toBeLessThan(400);
    rec.strokes = 0;
    const t0 = performance.now();
    for (let v = st.n_edges; v > 0; v -= 500) slide(v);
    const per = (performance.now() - t0) / Math.ceil(st.n_edges / 500);
    expect(rec.strokes).toBeLessThan(15 * Math.ceil(st.n_edges / 500));
    console.log(`CircuitGraph: ${st.n_edges} edges, ${per.toFixed(1)} ms per slider redraw (happy-dom, stub canvas)`);
    expect(per).toBeLessThan(250);
  });

  it("edges and legend follow the view's palette trait: blue–orange by default, greys for greyscale", () => {
    const model = staticModel(graphState(3, 4));
    const { root } = mount(model);
    const bar = () => root.querySelector<HTMLElement>(".mw-legend-bar")!.style.background;
    const rgbs = () => rec.styles.map((st) => st.match(/\d+/g)!.slice(0, 3).map(Number));
    expect(bar()).toContain("rgb(33, 102, 172)");
    expect(bar()).toContain("rgb(230, 97, 1)");
    expect(root.querySelector<HTMLElement>(".mw-legend")!.title).toContain("blue = negative");
    expect(rgbs().some(([r, g, b]) => r !== g || g !== b)).toBe(true);
    rec.styles = [];
    model.set("palette", "greyscale");
    expect(rec.styles.length).toBeGreaterThan(0); // redrawn
    expect(rgbs().every(([r, g, b]) => r === g && g === b)).toBe(true);
    expect(bar()).not.toContain("230, 97, 1");
    model.set("palette", "classic");
    expect(bar()).toContain("rgb(94, 60, 153)");
  });

  it("edge colours: sign picks the end, |score| the weight; the mid grey is not white", () => {
    expect(edgeStyle(1, 1).rgb).toEqual([230, 97, 1]);
    expect(edgeStyle(-1, 1).rgb).toEqual([94, 60, 153]);
    expect(edgeStyle(-1, 1, [[33, 102, 172], [230, 97, 1]]).rgb).toEqual([33, 102, 172]);
    expect(edgeStyle(0, 1).rgb).toEqual([150, 150, 150]);
    expect(edgeStyle(0.5, 1).width).toBeLessThan(edgeStyle(1, 1).width);
  });
});

describe("CircuitGraph: circuit only", () => {
  it("draws exactly in_circuit (not the top n), saves circuit_only and asks for the circuit's faithfulness", async () => {
    const st = graphState(3, 4);
    // the method's circuit: 5 edges that are NOT the top 5 by |score|
    const inCirc = new Uint8Array(st.n_edges);
    const chosen = st._rank.slice(40, 45);
    for (const e of chosen) inCirc[e] = 1;
    const { model, sent, reply } = liveModel({ ...st, in_circuit: wireB64("uint8", [st.n_edges], inCirc), n_in_circuit: 5 });
    const { root } = mount(model);
    const box = root.querySelector<HTMLInputElement>(".mw-circuit-only")!;
    expect(root.querySelector(".mw-circuit-count")!.textContent).toBe("circuit only (5)");
    expect(box.disabled).toBe(false);
    box.checked = true;
    box.dispatchEvent(new Event("change", { bubbles: true }));
    expect(model.get("circuit_only")).toBe(true);
    expect(root.dataset.keptEdges).toBe("5");
    expect(drawnEdges(root)).toBe(5);
    expect(root.querySelector<HTMLInputElement>("input.mw-topn")!.disabled).toBe(true);
    const ends = new Set<string>();
    for (const e of chosen) (ends.add(st.nodes[st._S[e]]), ends.add(st.nodes[st._R[e]]));
    const shown = Array.from(root.querySelectorAll<HTMLElement>(".mw-node:not([hidden])")).map((b) => b.dataset.node);
    expect(new Set(shown)).toEqual(ends);
    expect(sent[0]).toMatchObject({ name: "faithfulness", msg: { circuit: true } });
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: { n: null, circuit: true, value: 0.93, source: "computed" } });
    await flush();
    expect(root.querySelector(".mw-faith")!.textContent).toBe("faithfulness(circuit) = 0.9300");
    // Python turns it off: back to the top n
    model.set("circuit_only", false);
    expect(box.checked).toBe(false);
    expect(drawnEdges(root)).toBe(20);
  });
});

describe("CircuitGraph: live kernel", () => {
  it("releasing the slider saves n_edges_shown and requests faithfulness {n}; dragging does not", async () => {
    const { model, sent, reply, saves } = liveModel(graphState(3, 4));
    const { root, slide } = mount(model);
    slide(7);
    expect(sent).toHaveLength(0);
    slide(8, true);
    expect(model.get("n_edges_shown")).toBe(8);
    expect(saves()).toBeGreaterThan(0);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "faithfulness", msg: { n: 8 } });
    const faith = root.querySelector<HTMLElement>(".mw-faith")!;
    expect(faith.dataset.state).toBe("running");
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: { n: 8, value: 0.625, source: "computed" } });
    await flush();
    expect(faith.dataset.state).toBe("ok");
    expect(faith.dataset.value).toBe("0.625");
    slide(9, true);
    reply({ kind: "mw-response", id: sent[1].id, ok: false, error: "no model attached" });
    await flush();
    expect(faith.dataset.state).toBe("error");
    expect(faith.textContent).toContain("no model attached");
  });

  it("click a head: request 'node' and draw the pattern from the reply's buffer", async () => {
    const { model, sent, reply } = liveModel(graphState(3, 4, [], { n_edges_shown: 262 }));
    const { root, node } = mount(model);
    await flush(); // the page's theme is measured once the view is attached: one repaint
    click(node("a2.h1"));
    expect(model.get("selected_node")).toBe("a2.h1");
    expect(sent[0]).toMatchObject({ name: "node", msg: { node: "a2.h1" } });
    expect(root.querySelector(".mw-attn .mw-note")!.textContent).toContain("loading");
    const buf = wireDV("uint8", [3, 3], new Uint8Array([255, 0, 0, 128, 127, 0, 85, 85, 85])).buffer as DataView;
    reply(
      { kind: "mw-response", id: sent[0].id, ok: true, response: { node: "a2.h1", tokens: ["When", " Mary", "<i>"], pattern: { dtype: "uint8", shape: [3, 3], scale: 1 / 255, offset: 0 } } },
      [buf],
    );
    await flush();
    expect(texts(root, ".mw-attn-tok")).toEqual(["When", " Mary", "<i>"]);
    expect(rec.rects).toBe(9);
    // an MLP asks nothing of the kernel
    click(node("m0"));
    expect(sent).toHaveLength(1);
    // Python sets the selection
    model.set("selected_node", "m2");
    expect(root.querySelector(".mw-panel-title")!.textContent).toBe("m2");
    model.set("n_edges_shown", 3);
    expect(drawnEdges(root)).toBe(3);
  });
});
