/**
 * CircuitGraph view (docs/widget_protocol.md, "CircuitGraph").
 *
 * A circuit's edge graph as a layered DAG: input at the bottom, logits on top, heads and MLPs in
 * rows by layer. Nodes are DOM buttons (focusable, labels via textContent); edges are drawn on
 * one canvas, batched into a few paths by colour bucket, so thousands stay interactive. The
 * top-n slider prunes here at once; on release the view asks Python for the faithfulness of
 * that many edges (request "faithfulness"). Click a node: its top edges in and out, and for a
 * head its attention pattern (request "node"; static copies: `node_cache`). Drag a node to pin
 * it; shift/ctrl-click several and "group" them into a supernode, or take a suggested grouping.
 */

import { addCodePanel } from "./lib/code_panel";
import { css, fmt, paletteOf, WHITE, type RGB } from "./lib/colour";
import { CSS } from "./lib/circuit_graph.css";
import { button, clear, closest, control, escapeToken, h, setOptions, setText, style } from "./lib/dom";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { errorBox, errorText, statusPill } from "./lib/status";
import { showTok, str, strs } from "./lib/values";
import { decode, decodeTrait, isWire, type WireArray } from "./lib/wire";

const STATIC_NOTE =
  "Static HTML export: there is no Python kernel, so faithfulness cannot be computed and only the precomputed heads show attention.";

/** Edges fade to mid grey, which reads on dark and light pages; their ends come from the view's
 * palette (`Palette.edges`; the classic palette's PuOr ends by default). */
export const EDGE_MID: RGB = [150, 150, 150];
/** Intensity buckets per sign: edges of one bucket are stroked as one path. */
const BUCKETS = 6;
const ROW_H = 30;
const PAD = 18;
const LEFT = 34;
const MAX_LIST = 12;

export interface Graph {
  nodes: string[];
  ny: Float32Array | Int32Array;
  send: Int32Array | Float32Array;
  recv: Int32Array | Float32Array;
  kind: Int32Array | Float32Array;
  score: Float32Array | Int32Array;
  inCirc: Int32Array | Float32Array;
  rank: Int32Array | Float32Array;
  E: number;
  N: number;
}

export interface DisplayEdge {
  a: number;
  b: number;
  kind: number;
  score: number;
  count: number;
}

interface Group {
  name: string;
  members: number[];
}

/** Edge colour and width for a score `s` scaled by `m` (the largest |score| kept), fading from
 * grey to `ends` (negative, positive). */
export function edgeStyle(s: number, m: number, ends: readonly [RGB, RGB] = paletteOf("classic").edges): { rgb: RGB; alpha: number; width: number; t: number } {
  const t = m > 0 && Number.isFinite(s) ? Math.min(1, Math.abs(s) / m) : 0;
  const end = s < 0 ? ends[0] : ends[1];
  const rgb: RGB = [0, 1, 2].map((i) => Math.round(EDGE_MID[i] + (end[i] - EDGE_MID[i]) * t)) as RGB;
  return { rgb, alpha: 0.25 + 0.75 * t, width: 0.6 + 3.4 * t, t };
}

/** Weakly connected components (≥ 2 nodes) among `nodes` joined by `edges`, input/logits left out. */
export function components(N: number, edges: [number, number][], skip: Set<number>): number[][] {
  const parent = Array.from({ length: N }, (_, i) => i);
  const find = (x: number): number => (parent[x] === x ? x : (parent[x] = find(parent[x])));
  const touched = new Set<number>();
  for (const [a, b] of edges) {
    if (skip.has(a) || skip.has(b)) continue;
    touched.add(a);
    touched.add(b);
    parent[find(a)] = find(b);
  }
  const by = new Map<number, number[]>();
  for (const i of Array.from(touched).sort((x, y) => x - y)) {
    const r = find(i);
    if (!by.has(r)) by.set(r, []);
    (by.get(r) as number[]).push(i);
  }
  return Array.from(by.values()).filter((c) => c.length >= 2);
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title");
  const slider = control("input", "mw-topn", "edges shown (top n by |score|)", { type: "range" });
  const num = control("input", "mw-topn-num", "edges shown", { type: "number" });
  const nTotal = h("span", "mw-topn-total");
  const threshold = h("span", "mw-threshold");
  const faith = h("span", "mw-faith");
  faith.setAttribute("aria-live", "polite");
  const suggest = control("select", "mw-suggest", "suggested groupings");
  setOptions(suggest, ["", "layer", "component"], ["suggest groups…", "group heads by layer", "group by connected component"]);
  const groupBtn = button("mw-group-btn", "group", "shift- or ctrl-click nodes to select several, then group them into a supernode");
  const clearGroups = button("mw-clear-groups", "ungroup all");
  const circuitOnly = h("input", "mw-circuit-only");
  circuitOnly.type = "checkbox";
  const circuitLabel = h("span", "mw-circuit-count");
  const showAll = h("input", "mw-show-all");
  showAll.type = "checkbox";
  const fullBtn = button("mw-fullscreen", "full screen");
  fullBtn.setAttribute("aria-pressed", "false");
  const legendBar = h("span", "mw-legend-bar");
  const legendLo = h("span", "mw-legend-lo");
  const legendHi = h("span", "mw-legend-hi");
  const legendEl = h("span", "mw-legend", [legendLo, legendBar, legendHi]);
  const pill = statusPill();
  const header = h("div", "mw-header", [
    title,
    h("label", "mw-control", ["edges", slider, num, nTotal]),
    h("label", "mw-control", [circuitOnly, circuitLabel]),
    threshold,
    faith,
    suggest,
    groupBtn,
    clearGroups,
    h("label", "mw-control", [showAll, "all nodes"]),
    fullBtn,
    legendEl,
    h("span", "mw-status-wrap", [pill.el]),
  ]);
  const staticNote = h("div", "mw-static-note", STATIC_NOTE);
  const errBox = errorBox();
  const canvas = h("canvas", "mw-edges");
  const nodesLayer = h("div", "mw-nodes");
  const graphEl = h("div", "mw-graph", [canvas, nodesLayer]);
  graphEl.setAttribute("role", "group");
  graphEl.setAttribute("aria-label", "circuit graph");
  const panel = h("div", "mw-node-panel");
  const root = h("div", "mw-circuit-graph", [style(CSS), header, staticNote, errBox.el, h("div", "mw-body", [graphEl, panel])]);
  el.appendChild(root);
  const code = addCodePanel(model, header, root);

  // ---------------------------------------------------------------- state
  let g: Graph | null = null;
  let n = 0;
  let kept = new Uint8Array(0);
  let inLists: number[][] = [];
  let outLists: number[][] = [];
  let groups: Group[] = [];
  let memberOf = new Int32Array(0);
  let dedges: DisplayEdge[] = [];
  let active = new Set<number>();
  let pos = new Map<number, [number, number]>();
  let W = 720;
  let H = 300;
  let rows: number[] = [];
  let nodeEls: HTMLButtonElement[] = [];
  let groupEls: HTMLButtonElement[] = [];
  let rowLabels: HTMLElement[] = [];
  let multi = new Set<number>();
  let localError = "";
  let faithSeq = 0;
  let nodeSeq = 0;
  let drawn = 0;
  let nKept = 0;
  let suppressClick = false;
  const patterns = new Map<string, { tokens: string[]; pattern: WireArray | null; note?: string }>();

  const isStatic = () => model.get("static") === true;
  const dec = (name: string) => decodeTrait(model.get(name), name, (msg) => (localError = msg));
  const nodeName = (d: number) => (g && d < g.N ? g.nodes[d] : groups[d - (g ? g.N : 0)]?.name ?? "");
  const pinKey = (d: number) => (g && d < g.N ? g.nodes[d] : `group:${nodeName(d)}`);
  const pinned = (): Record<string, unknown> => {
    const p = model.get("pinned");
    return p && typeof p === "object" ? (p as Record<string, unknown>) : {};
  };

  // ---------------------------------------------------------------- data
  function decodeGraph(): void {
    const nodes = strs(model.get("nodes"));
    const parts = ["node_layers", "senders", "receivers", "kinds", "scores", "in_circuit", "rank"].map(dec);
    if (parts.some((p) => p == null)) {
      g = null;
      return;
    }
    const [ny, send, recv, kind, score, inCirc, rank] = parts.map((p) => (p as { data: Float32Array | Int32Array }).data);
    const E = score.length;
    if ([send, recv, kind, inCirc, rank].some((a) => a.length !== E) || ny.length !== nodes.length) {
      localError = "circuit arrays disagree in length";
      g = null;
      return;
    }
    g = { nodes, ny, send, recv, kind, score, inCirc, rank, E, N: nodes.length };
    inLists = nodes.map(() => []);
    outLists = nodes.map(() => []);
    for (let r = 0; r < E; r++) {
      const e = rank[r];
      inLists[recv[e]]?.push(e);
      outLists[send[e]]?.push(e);
    }
    rows = Array.from(new Set(Array.from(ny))).sort((a, b) => a - b);
    buildNodes();
  }

  function buildNodes(): void {
    for (const b of nodeEls) b.remove();
    for (const l of rowLabels) l.remove();
    nodeEls = [];
    rowLabels = [];
    if (!g) return;
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const label = Number.isInteger(r) && r >= 0 && r < Number(model.get("n_layers")) ? `L${r}` : "";
      const lab = h("div", "mw-row-label", label);
      lab.dataset.row = String(r);
      rowLabels.push(lab);
      frag.appendChild(lab);
    }
    g.nodes.forEach((name, i) => {
      const b = h("button", "mw-node", showTok(name));
      b.type = "button";
      b.dataset.node = name;
      b.dataset.index = String(i);
      b.title = escapeToken(name);
      nodeEls.push(b);
      frag.appendChild(b);
    });
    nodesLayer.appendChild(frag);
  }

  function applyGroups(): void {
    for (const b of groupEls) b.remove();
    groupEls = [];
    groups = [];
    if (!g) return;
    memberOf = new Int32Array(g.N).fill(-1);
    const index = new Map(g.nodes.map((name, i) => [name, i]));
    const raw = model.get("groups");
    for (const item of Array.isArray(raw) ? raw : []) {
      if (item == null || typeof item !== "object") continue;
      const it = item as { name?: unknown; nodes?: unknown };
      const members = strs(it.nodes)
        .map((s) => index.get(s))
        .filter((i): i is number => i != null && memberOf[i] === -1);
      if (members.length < 1) continue;
      const gi = groups.length;
      for (const m of members) memberOf[m] = gi;
      groups.push({ name: str(it.name, `G${gi + 1}`), members });
      const b = h("button", ["mw-node", "mw-group"], `${showTok(str(it.name, `G${gi + 1}`))} (${members.length})`);
      b.type = "button";
      b.dataset.group = str(it.name, `G${gi + 1}`);
      b.dataset.index = String(g.N + gi);
      b.title = `${escapeToken(str(it.name))}: ${members.map((m) => (g as Graph).nodes[m]).join(", ")}`;
      groupEls.push(b);
      nodesLayer.appendChild(b);
    }
    const valid = new Set<number>();
    for (const d of multi) if (d < g.N ? memberOf[d] === -1 : d - g.N < groups.length) valid.add(d);
    multi = valid;
  }

  const disp = (i: number) => (memberOf[i] >= 0 ? (g as Graph).N + memberOf[i] : i);

  /** Keep the top-n edges; aggregate them between display nodes (groups merge their members). */
  function prune(): void {
    if (!g) return;
    n = Math.max(0, Math.min(g.E, n));
    kept = new Uint8Array(g.E);
    nKept = 0;
    active = new Set<number>();
    const grouped = groups.length > 0;
    const M = g.N + groups.length;
    const agg = new Map<number, DisplayEdge>();
    const list: DisplayEdge[] = [];
    const only = circuitOnly.checked;
    for (let r = 0; r < (only ? g.E : n); r++) {
      const e = g.rank[r];
      if (only && !g.inCirc[e]) continue;
      kept[e] = 1;
      nKept++;
      const a = grouped ? disp(g.send[e]) : g.send[e];
      const b = grouped ? disp(g.recv[e]) : g.recv[e];
      if (a === b) continue;
      const kind = b < g.N ? g.kind[e] : 0;
      const s = g.score[e];
      active.add(a);
      active.add(b);
      if (!grouped) {
        list.push({ a, b, kind, score: s, count: 1 }); // every edge is its own (sender, receiver, kind)
        continue;
      }
      const key = (a * M + b) * 4 + kind;
      const cur = agg.get(key);
      if (cur) {
        cur.score += s;
        cur.count++;
      } else agg.set(key, { a, b, kind, score: s, count: 1 });
    }
    dedges = grouped ? Array.from(agg.values()) : list;
  }

  function visible(d: number): boolean {
    if (!g) return false;
    if (d < g.N) return memberOf[d] === -1 && (showAll.checked || active.has(d) || multi.has(d) || str(model.get("selected_node")) === g.nodes[d]);
    return d - g.N < groups.length;
  }

  function layout(): void {
    if (!g) return;
    const full = root.classList.contains("mw-full");
    W = Math.max(320, graphEl.clientWidth || 720);
    H = Math.max(160, rows.length * ROW_H + 2 * PAD);
    if (full) H = Math.max(H, (window.innerHeight || 800) - 120);
    const rowGap = rows.length > 1 ? (H - 2 * PAD) / (rows.length - 1) : 0;
    const rowIndex = new Map(rows.map((r, i) => [r, i]));
    const yOf = (i: number) => H - PAD - (rowIndex.get(g!.ny[i]) ?? 0) * rowGap;
    const byRow: number[][] = rows.map(() => []);
    const natural: number[][] = rows.map(() => []);
    for (let i = 0; i < g.N; i++) {
      const r = rowIndex.get(g.ny[i]) ?? 0;
      natural[r].push(i);
      if (visible(i)) byRow[r].push(i);
    }
    const span = W - LEFT - 10;
    const natX = new Float64Array(g.N);
    natural.forEach((list) => list.forEach((i, k) => (natX[i] = LEFT + (span * (k + 0.5)) / list.length)));
    pos = new Map();
    byRow.forEach((list) => list.forEach((i, k) => pos.set(i, [LEFT + (span * (k + 0.5)) / list.length, yOf(i)])));
    groups.forEach((grp, gi) => {
      let x = 0;
      let y = 0;
      for (const m of grp.members) {
        x += natX[m];
        y += yOf(m);
      }
      pos.set(g!.N + gi, [x / grp.members.length, y / grp.members.length]);
    });
    const pins = pinned();
    for (const d of Array.from(pos.keys())) {
      const p = pins[pinKey(d)];
      if (Array.isArray(p) && p.length === 2 && p.every((v) => Number.isFinite(Number(v)))) {
        pos.set(d, [Math.min(1, Math.max(0, Number(p[0]))) * W, Math.min(1, Math.max(0, Number(p[1]))) * H]);
      }
    }
    graphEl.style.height = `${H}px`;
    rows.forEach((_, i) => (rowLabels[i].style.top = `${H - PAD - i * rowGap}px`));
  }

  function place(): void {
    if (!g) return;
    const sel = str(model.get("selected_node"));
    const pins = pinned();
    const all = [...nodeEls, ...groupEls];
    let nVisible = 0;
    all.forEach((b, d) => {
      const p = pos.get(d);
      const show = p != null && visible(d);
      b.hidden = !show;
      if (!show || !p) return;
      nVisible++;
      b.style.left = `${p[0]}px`;
      b.style.top = `${p[1]}px`;
      b.classList.toggle("mw-inactive", !active.has(d));
      b.classList.toggle("mw-selected", nodeName(d) === sel && sel !== "");
      b.classList.toggle("mw-multi", multi.has(d));
      b.classList.toggle("mw-pinned", pinKey(d) in pins);
      b.setAttribute("aria-pressed", String(nodeName(d) === sel));
    });
    root.dataset.visibleNodes = String(nVisible);
  }

  function draw(): void {
    const dpr = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.width = `${W}px`;
    canvas.style.height = `${H}px`;
    let m = 0;
    for (const e of dedges) m = Math.max(m, Math.abs(e.score) || 0);
    setText(legendLo, m ? fmt(-m, 3) : "0");
    setText(legendHi, m ? fmt(m, 3) : "0");
    const pal = paletteOf(model.get("palette"));
    const ends = pal.edges;
    legendBar.style.background = `linear-gradient(to right, ${css(ends[0])}, ${css(EDGE_MID)}, ${css(ends[1])})`;
    legendEl.dataset.palette = pal.name;
    legendEl.title = `edge score: ${pal.words[5]} = negative, grey = near 0, ${pal.words[6]} = positive; width and opacity grow with |score|`;
    // 2 signs × BUCKETS intensities (+ the selected node's edges on top): a few strokes in all
    const buckets: DisplayEdge[][] = Array.from({ length: 2 * BUCKETS }, () => []);
    const hot: DisplayEdge[] = [];
    const sel = selectedDisplay();
    drawn = 0;
    for (const e of dedges) {
      if (!pos.has(e.a) || !pos.has(e.b)) continue;
      drawn++;
      if (sel >= 0 && (e.a === sel || e.b === sel)) hot.push(e);
      else {
        const t = m > 0 ? Math.min(1, Math.abs(e.score) / m) || 0 : 0;
        buckets[(e.score < 0 ? BUCKETS : 0) + Math.min(BUCKETS - 1, Math.floor(t * BUCKETS))].push(e);
      }
    }
    root.dataset.drawnEdges = String(drawn);
    root.dataset.keptEdges = String(nKept);
    const ctx = canvas.getContext ? canvas.getContext("2d") : null;
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const path = (list: DisplayEdge[]) => {
      ctx.beginPath();
      for (const e of list) {
        const [x1, y1] = pos.get(e.a) as [number, number];
        const [x2r, y2] = pos.get(e.b) as [number, number];
        const x2 = x2r + (e.kind ? (e.kind - 2) * 6 : 0); // q, k, v enter left, centre, right
        const my = (y1 + y2) / 2;
        ctx.moveTo(x1, y1 - 7);
        ctx.bezierCurveTo(x1, my, x2, my, x2, y2 + 7);
      }
    };
    buckets.forEach((list, bi) => {
      if (!list.length) return;
      const neg = bi >= BUCKETS;
      const t = ((bi % BUCKETS) + 0.5) / BUCKETS;
      const st = edgeStyle(neg ? -t * m : t * m, m, ends);
      ctx.strokeStyle = `rgba(${st.rgb[0]}, ${st.rgb[1]}, ${st.rgb[2]}, ${st.alpha.toFixed(3)})`;
      ctx.lineWidth = st.width;
      path(list);
      ctx.stroke();
    });
    for (const e of hot) {
      const st = edgeStyle(e.score, m, ends);
      ctx.strokeStyle = `rgba(${st.rgb[0]}, ${st.rgb[1]}, ${st.rgb[2]}, 1)`;
      ctx.lineWidth = st.width + 1;
      path([e]);
      ctx.stroke();
    }
  }

  function selectedDisplay(): number {
    if (!g) return -1;
    const sel = str(model.get("selected_node"));
    if (!sel) return -1;
    const gi = groups.findIndex((x) => x.name === sel);
    if (gi >= 0) return g.N + gi;
    const i = g.nodes.indexOf(sel);
    return i >= 0 ? disp(i) : -1;
  }

  function redraw(): void {
    prune();
    layout();
    place();
    draw();
    renderControls();
  }

  // ---------------------------------------------------------------- header
  function renderControls(): void {
    const E = g ? g.E : 0;
    slider.min = "0";
    slider.max = String(E);
    slider.step = "1";
    if (Number(slider.value) !== n) slider.value = String(n);
    num.min = "0";
    num.max = String(E);
    if (Number(num.value) !== n || num.value === "") num.value = String(n);
    setText(nTotal, `/ ${E}`);
    root.dataset.n = String(n);
    const only = circuitOnly.checked;
    if (g && !only && n > 0) setText(threshold, `|score| ≥ ${fmt(Math.abs(g.score[g.rank[n - 1]]), 3)}`);
    else setText(threshold, only ? `the ${str(model.get("method"))} circuit's edges` : "");
    slider.disabled = num.disabled = only;
    setText(circuitLabel, `circuit only (${Number(model.get("n_in_circuit")) || 0})`);
    circuitOnly.disabled = !(Number(model.get("n_in_circuit")) > 0);
    const st = isStatic();
    staticNote.hidden = !st;
    const nm = [str(model.get("model_name")), str(model.get("method")), str(model.get("metric_name"))].filter(Boolean);
    setText(title, nm.join(" · "));
    groupBtn.disabled = multi.size < 2;
    clearGroups.disabled = groups.length === 0;
  }

  function renderStatus(): void {
    const status = str(model.get("status"), "ready");
    pill.set(status, isStatic() ? "static" : status);
    root.classList.toggle("mw-busy", status === "running");
    errBox.set(str(model.get("error")), localError);
  }

  // ---------------------------------------------------------------- faithfulness
  function curveAt(k: number): number | null {
    const c = dec("curve");
    if (!c || c.shape.length !== 2) return null;
    for (let i = 0; i < c.shape[0]; i++) if (c.data[2 * i] === k) return c.data[2 * i + 1];
    return null;
  }

  function showFaith(state: string, k: number, value: number | null, text: string): void {
    faith.dataset.state = state;
    faith.dataset.n = String(k);
    if (value != null && Number.isFinite(value)) faith.dataset.value = String(value);
    else delete faith.dataset.value;
    setText(faith, text);
  }

  function faithFromTrait(): boolean {
    const f = model.get("faithfulness") as { n?: unknown; value?: unknown; source?: unknown; circuit?: unknown } | null;
    if (!f || typeof f !== "object") return false;
    const only = circuitOnly.checked;
    if (only ? f.circuit !== true : f.circuit === true || f.n == null || Number(f.n) !== n) return false;
    const v = f.value == null ? NaN : Number(f.value);
    const what = only ? "circuit" : String(n);
    showFaith("ok", only ? -1 : n, v, `faithfulness(${what}) = ${fmt(v, 4)}${f.source === "curve" ? " (recorded curve)" : ""}`);
    return true;
  }

  function idleFaith(): void {
    if (faithFromTrait()) return;
    if (circuitOnly.checked) {
      showFaith(isStatic() ? "static" : "none", -1, null, isStatic() ? "faithfulness: needs the kernel" : "faithfulness(circuit): –");
      return;
    }
    const c = curveAt(n);
    if (c != null) showFaith("ok", n, c, `faithfulness(${n}) = ${fmt(c, 4)} (recorded curve)`);
    else if (isStatic()) showFaith("static", n, null, "faithfulness: needs the kernel");
    else showFaith("none", n, null, "faithfulness: release the slider");
  }

  /** `k` edges, or -1: the circuit's own edges. */
  async function requestFaith(k: number): Promise<void> {
    const seq = ++faithSeq;
    if (isStatic()) {
      idleFaith();
      return;
    }
    const what = k < 0 ? "circuit" : String(k);
    showFaith("running", k, null, `faithfulness(${what}): computing…`);
    pill.set("running", k < 0 ? "faithfulness of the circuit…" : `faithfulness of ${k} edges…`);
    try {
      const msg = k < 0 ? { circuit: true } : { n: k };
      const { response } = await request<{ n: number; value: number | null; source: string }>(model, "faithfulness", msg);
      if (seq !== faithSeq) return;
      const v = response.value == null ? NaN : Number(response.value);
      showFaith("ok", k, v, `faithfulness(${what}) = ${fmt(v, 4)}${response.source === "curve" ? " (recorded curve)" : ""}`);
    } catch (e) {
      if (seq !== faithSeq) return;
      showFaith("error", k, null, `faithfulness(${what}): ${errorText(e)}`);
    }
    renderStatus();
  }

  // ---------------------------------------------------------------- panel
  function edgeLabel(e: number): string {
    const G = g as Graph;
    const k = str(strs(model.get("kind_names"))[G.kind[e]]);
    return `${G.nodes[G.send[e]]} → ${G.nodes[G.recv[e]]}${k ? `<${k}>` : ""}`;
  }

  function edgeList(dir: "in" | "out", list: number[], other: (e: number) => string): HTMLElement {
    const G = g as Graph;
    const box = h("div", "mw-edge-list", [h("div", "mw-edge-head", dir === "in" ? `top incoming edges (${list.length})` : `top outgoing edges (${list.length})`)]);
    box.dataset.dir = dir;
    if (!list.length) box.appendChild(h("div", "mw-note", "none"));
    for (const e of list.slice(0, MAX_LIST)) {
      const row = h("div", "mw-edge-row", [h("span", "mw-edge-name", showTok(edgeLabel(e))), h("span", "mw-edge-score", fmt(G.score[e], 4))]);
      row.dataset.edge = String(e);
      row.dataset.node = other(e);
      row.classList.toggle("mw-kept", kept[e] === 1);
      row.title = `${kept[e] ? "shown" : "pruned"}; click to select ${escapeToken(other(e))}`;
      box.appendChild(row);
    }
    return box;
  }

  function renderPanel(): void {
    clear(panel);
    const sel = str(model.get("selected_node"));
    if (!g || !sel) {
      panel.appendChild(h("div", "mw-note", "click a node for its edges (shift/ctrl-click to select several)"));
      return;
    }
    const G = g;
    const gi = groups.findIndex((x) => x.name === sel);
    const d = gi >= 0 ? G.N + gi : G.nodes.indexOf(sel);
    const pinBtn = button("mw-pin", pinKey(d) in pinned() ? "unpin" : "pin");
    const buttons = h("div", "mw-panel-buttons", [pinBtn]);
    panel.appendChild(h("div", "mw-panel-title", showTok(sel)));
    if (gi >= 0) {
      const members = groups[gi].members;
      const ungroup = button("mw-ungroup", "ungroup");
      buttons.appendChild(ungroup);
      panel.appendChild(h("div", "mw-panel-kind", `supernode of ${members.length}: ${members.map((m) => G.nodes[m]).join(", ")}`));
      panel.appendChild(buttons);
      const set = new Set(members);
      const ins: number[] = [];
      const outs: number[] = [];
      for (let r = 0; r < G.E; r++) {
        const e = G.rank[r];
        const a = set.has(G.send[e]);
        const b = set.has(G.recv[e]);
        if (b && !a) ins.push(e);
        if (a && !b) outs.push(e);
      }
      panel.appendChild(edgeList("in", ins, (e) => G.nodes[G.send[e]]));
      panel.appendChild(edgeList("out", outs, (e) => G.nodes[G.recv[e]]));
      return;
    }
    if (d < 0) return;
    const kind = /^a\d+\.h\d+$/.test(sel) ? "attention head" : /^m\d+$/.test(sel) ? "MLP" : sel === "input" ? "embeddings" : sel === "logits" ? "output" : "node";
    const nk = inLists[d].filter((e) => kept[e]).length + outLists[d].filter((e) => kept[e]).length;
    panel.appendChild(h("div", "mw-panel-kind", `${kind} · ${nk} shown edges`));
    panel.appendChild(buttons);
    if (kind === "attention head") panel.appendChild(attentionBox(sel));
    panel.appendChild(edgeList("in", inLists[d], (e) => G.nodes[G.send[e]]));
    panel.appendChild(edgeList("out", outLists[d], (e) => G.nodes[G.recv[e]]));
  }

  function attentionBox(node: string): HTMLElement {
    const box = h("div", "mw-attn", [h("div", "mw-edge-head", `attention on ${escapeToken(str(model.get("prompt")))}`)]);
    const got = patterns.get(node);
    if (!got || !got.pattern) {
      box.appendChild(h("div", "mw-note", got?.note ?? "loading attention…"));
      return box;
    }
    let dm;
    try {
      dm = decode(got.pattern);
    } catch (e) {
      box.appendChild(h("div", "mw-note", errorText(e)));
      return box;
    }
    const T = dm.shape[0] ?? 0;
    box.dataset.tokens = String(T);
    const cell = Math.max(3, Math.min(14, Math.floor(240 / Math.max(1, T))));
    const cv = h("canvas", "mw-attn-canvas");
    cv.width = cv.height = T * cell;
    const ctx = cv.getContext ? cv.getContext("2d") : null;
    const pal = paletteOf(model.get("palette"));
    if (ctx) {
      for (let q = 0; q < T; q++)
        for (let k = 0; k < T; k++) {
          const v = Math.max(0, Math.min(1, dm.data[q * T + k]));
          ctx.fillStyle = css(pal.sequentialRGB(v, 1, WHITE));
          ctx.fillRect(k * cell, q * cell, cell, cell);
        }
    }
    cv.addEventListener("mousemove", (ev) => {
      const r = cv.getBoundingClientRect();
      const k = Math.floor((ev.clientX - r.left) / cell);
      const q = Math.floor((ev.clientY - r.top) / cell);
      if (q >= 0 && k >= 0 && q < T && k < T)
        cv.title = `query ${q} ${escapeToken(got.tokens[q] ?? "")} → key ${k} ${escapeToken(got.tokens[k] ?? "")}: ${fmt(dm.data[q * T + k], 3)}`;
    });
    box.appendChild(cv);
    box.appendChild(h("div", "mw-attn-tokens", got.tokens.map((t, i) => {
      const s = h("span", "mw-attn-tok", showTok(t));
      s.dataset.pos = String(i);
      return s;
    })));
    return box;
  }

  async function loadNode(node: string): Promise<void> {
    if (!/^a\d+\.h\d+$/.test(node) || patterns.has(node)) return;
    if (isStatic()) {
      const cache = model.get("node_cache") as Record<string, { tokens?: unknown; pattern?: unknown }> | undefined;
      const hit = cache && cache[node];
      if (hit && isWire(hit.pattern)) patterns.set(node, { tokens: strs(hit.tokens), pattern: hit.pattern });
      else patterns.set(node, { tokens: [], pattern: null, note: "not precomputed in this static copy" });
      return;
    }
    if (model.get("can_attend") !== true) {
      patterns.set(node, { tokens: [], pattern: null, note: "no model or prompt attached: attention is unavailable" });
      return;
    }
    const seq = ++nodeSeq;
    patterns.set(node, { tokens: [], pattern: null, note: "loading attention…" });
    try {
      const { response, buffers } = await request<{ tokens?: unknown; pattern?: WireArray }>(model, "node", { node }, { timeoutMs: 60_000 });
      const pat = response.pattern && buffers[0] ? { ...response.pattern, buffer: buffers[0] } : null;
      patterns.set(node, { tokens: strs(response.tokens), pattern: pat, note: pat ? undefined : "no attention pattern" });
    } catch (e) {
      patterns.delete(node); // a later click retries
      if (seq === nodeSeq && str(model.get("selected_node")) === node) {
        const box = panel.querySelector(".mw-attn .mw-note");
        if (box) setText(box, errorText(e));
      }
      return;
    }
    if (seq === nodeSeq && str(model.get("selected_node")) === node) renderPanel();
  }

  function select(name: string): void {
    model.set("selected_node", name); // the change:selected_node listener redraws
    model.save_changes();
  }

  function onSelected(): void {
    // a selection made elsewhere (Python, an edge row) starts a new multi-selection
    const sd = selectedDisplay();
    if (sd < 0) multi = new Set();
    else if (!multi.has(sd)) multi = new Set([sd]);
    renderControls();
    place();
    draw();
    const sel = str(model.get("selected_node"));
    const pending = sel ? loadNode(sel) : null; // static copies fill `patterns` synchronously
    renderPanel();
    void pending;
  }

  // ---------------------------------------------------------------- groups and pins
  function setGroups(list: { name: string; nodes: string[] }[]): void {
    model.set("groups", list);
    model.save_changes();
    applyGroups();
    redraw();
    renderPanel();
  }

  const currentGroups = () => groups.map((x) => ({ name: x.name, nodes: x.members.map((m) => (g as Graph).nodes[m]) }));

  function groupSelected(): void {
    if (!g || multi.size < 2) return;
    const members = new Set<number>();
    for (const d of multi) {
      if (d < g.N) members.add(d);
      else for (const m of groups[d - g.N]?.members ?? []) members.add(m);
    }
    const rest = currentGroups()
      .map((x) => ({ name: x.name, nodes: x.nodes.filter((s) => !members.has((g as Graph).nodes.indexOf(s))) }))
      .filter((x) => x.nodes.length >= 2);
    const taken = new Set([...g.nodes, ...rest.map((x) => x.name)]);
    let k = 1;
    while (taken.has(`G${k}`)) k++;
    multi = new Set();
    setGroups([...rest, { name: `G${k}`, nodes: Array.from(members).sort((a, b) => a - b).map((m) => (g as Graph).nodes[m]) }]);
  }

  function suggestGroups(kind: string): void {
    if (!g) return;
    const G = g;
    const out: { name: string; nodes: string[] }[] = [];
    if (kind === "layer") {
      const by = new Map<number, number[]>();
      for (let i = 0; i < G.N; i++) {
        const m = /^a(\d+)\.h\d+$/.exec(G.nodes[i]);
        if (!m || !(showAll.checked || nodeActive(i))) continue;
        const L = Number(m[1]);
        if (!by.has(L)) by.set(L, []);
        (by.get(L) as number[]).push(i);
      }
      for (const [L, list] of Array.from(by.entries()).sort((a, b) => a[0] - b[0]))
        if (list.length >= 2) out.push({ name: `L${L} heads`, nodes: list.map((i) => G.nodes[i]) });
    } else if (kind === "component") {
      const pairs: [number, number][] = [];
      for (let e = 0; e < G.E; e++) if (kept[e]) pairs.push([G.send[e], G.recv[e]]);
      const skip = new Set([G.nodes.indexOf("input"), G.nodes.indexOf("logits")].filter((i) => i >= 0));
      components(G.N, pairs, skip).forEach((c, i) => out.push({ name: `C${i + 1}`, nodes: c.map((j) => G.nodes[j]) }));
    } else return;
    multi = new Set();
    setGroups(out);
  }

  function nodeActive(i: number): boolean {
    for (const e of inLists[i]) if (kept[e]) return true;
    for (const e of outLists[i]) if (kept[e]) return true;
    return false;
  }

  function setPin(d: number, xy: [number, number] | null): void {
    const pins = { ...pinned() };
    if (xy) pins[pinKey(d)] = [Math.round((xy[0] / W) * 1e4) / 1e4, Math.round((xy[1] / H) * 1e4) / 1e4];
    else delete pins[pinKey(d)];
    model.set("pinned", pins);
    model.save_changes();
  }

  // ---------------------------------------------------------------- events
  const nodeOf = (t: EventTarget | null) => closest<HTMLButtonElement>(t, ".mw-node");

  const onClick = (e: MouseEvent) => {
    const b = nodeOf(e.target);
    if (!b || !nodesLayer.contains(b)) return;
    if (suppressClick) {
      suppressClick = false;
      return;
    }
    const d = Number(b.dataset.index);
    if (e.shiftKey || e.ctrlKey || e.metaKey) {
      if (multi.has(d)) multi.delete(d);
      else multi.add(d);
      place();
      renderControls();
      return;
    }
    multi = new Set([d]);
    select(nodeName(d));
    renderControls();
  };

  let drag: { d: number; x0: number; y0: number; px: number; py: number; moved: boolean; id: number } | null = null;
  const onDown = (e: PointerEvent) => {
    const b = nodeOf(e.target);
    if (!b || e.button !== 0) return;
    const d = Number(b.dataset.index);
    const p = pos.get(d);
    if (!p) return;
    drag = { d, x0: e.clientX, y0: e.clientY, px: p[0], py: p[1], moved: false, id: e.pointerId };
  };
  const onMove = (e: PointerEvent) => {
    if (!drag) return;
    const dx = e.clientX - drag.x0;
    const dy = e.clientY - drag.y0;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    drag.moved = true;
    const xy: [number, number] = [Math.min(W, Math.max(0, drag.px + dx)), Math.min(H, Math.max(0, drag.py + dy))];
    pos.set(drag.d, xy);
    const b = drag.d < nodeEls.length ? nodeEls[drag.d] : groupEls[drag.d - nodeEls.length];
    b.style.left = `${xy[0]}px`;
    b.style.top = `${xy[1]}px`;
    draw();
  };
  const onUp = () => {
    if (!drag) return;
    if (drag.moved) {
      // the click that may follow this pointerup is the drag's, not a selection
      suppressClick = true;
      setTimeout(() => (suppressClick = false), 0);
      setPin(drag.d, pos.get(drag.d) as [number, number]);
      place();
    }
    drag = null;
  };

  const onPanelClick = (e: MouseEvent) => {
    const t = e.target instanceof Element ? e.target : null;
    if (!t || !g) return;
    const sel = str(model.get("selected_node"));
    if (t.closest(".mw-pin")) {
      const gi = groups.findIndex((x) => x.name === sel);
      const d = gi >= 0 ? g.N + gi : g.nodes.indexOf(sel);
      if (d < 0) return;
      setPin(d, pinKey(d) in pinned() ? null : (pos.get(d) ?? [W / 2, H / 2]));
      layout();
      place();
      draw();
      renderPanel();
      return;
    }
    if (t.closest(".mw-ungroup")) {
      setGroups(currentGroups().filter((x) => x.name !== sel));
      select("");
      return;
    }
    const row = t.closest(".mw-edge-row") as HTMLElement | null;
    if (row && row.dataset.node) {
      const i = g.nodes.indexOf(row.dataset.node);
      if (i >= 0 && memberOf[i] >= 0) select(groups[memberOf[i]].name);
      else if (i >= 0) select(row.dataset.node);
    }
  };

  const onSlide = (src: HTMLInputElement) => () => {
    const v = Math.round(Number(src.value));
    if (!Number.isFinite(v)) return;
    n = v;
    redraw();
    idleFaith();
  };
  const onCommit = (src: HTMLInputElement) => () => {
    onSlide(src)();
    model.set("n_edges_shown", n);
    model.save_changes();
    void requestFaith(n);
  };

  const onFull = () => {
    const on = !root.classList.contains("mw-full");
    root.classList.toggle("mw-full", on);
    fullBtn.setAttribute("aria-pressed", String(on));
    setText(fullBtn, on ? "exit full screen" : "full screen");
    redraw();
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Escape" && root.classList.contains("mw-full")) onFull();
  };

  const { dom, on, listen, recolour, dispose } = listeners(model);
  on(nodesLayer, { click: onClick, pointerdown: onDown });
  on(window, { pointermove: onMove, pointerup: onUp });
  dom(panel, "click", onPanelClick);
  on(slider, { input: onSlide(slider), change: onCommit(slider) });
  dom(num, "change", onCommit(num));
  dom(suggest, "change", () => {
    suggestGroups(suggest.value);
    suggest.value = "";
  });
  dom(groupBtn, "click", groupSelected);
  dom(clearGroups, "click", () => setGroups([]));
  dom(showAll, "change", redraw);
  dom(circuitOnly, "change", () => {
    model.set("circuit_only", circuitOnly.checked);
    model.save_changes();
    redraw();
    if (circuitOnly.checked) void requestFaith(-1);
    else idleFaith();
  });
  dom(fullBtn, "click", onFull);
  dom(root, "keydown", onKey);

  listen(["nodes", "node_layers", "senders", "receivers", "kinds", "scores", "in_circuit", "rank"], () => {
    patterns.clear();
    decodeGraph();
    applyGroups();
    redraw();
    renderPanel();
    renderStatus();
  });
  listen(["n_edges_shown"], () => {
    n = Number(model.get("n_edges_shown")) || 0;
    redraw();
    idleFaith();
    renderPanel();
  });
  listen(["selected_node"], onSelected);
  listen(["groups"], () => {
    applyGroups();
    redraw();
    renderPanel();
  });
  listen(["pinned"], () => {
    layout();
    place();
    draw();
  });
  listen(["faithfulness", "curve"], idleFaith);
  listen(["circuit_only", "n_in_circuit"], () => {
    circuitOnly.checked = model.get("circuit_only") === true;
    redraw();
    idleFaith();
    renderPanel();
  });
  listen(["status", "error", "static"], () => {
    renderStatus();
    renderControls();
  });
  listen(["model_name", "method", "metric_name"], renderControls);
  recolour(root, () => {
    draw();
    renderPanel();
  });

  let ro: ResizeObserver | null = null;
  if (typeof ResizeObserver !== "undefined") {
    let lastW = 0;
    ro = new ResizeObserver(() => {
      const w = graphEl.clientWidth;
      if (w && Math.abs(w - lastW) > 1) {
        lastW = w;
        layout();
        place();
        draw();
      }
    });
    ro.observe(graphEl);
  }

  // ---------------------------------------------------------------- first paint
  n = Number(model.get("n_edges_shown")) || 0;
  circuitOnly.checked = model.get("circuit_only") === true;
  decodeGraph();
  applyGroups();
  prune();
  layout();
  renderControls();
  idleFaith();
  renderStatus();
  onSelected();

  return () => {
    faithSeq++;
    nodeSeq++;
    ro?.disconnect();
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
