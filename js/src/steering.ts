/**
 * Steering view (mi_widgets/widgets/steering.py has the traits, requests and DOM hooks).
 *
 * Controls: prompt, vector, site, layer, coefficient slider, max new tokens. "generate" asks
 * Python to generate baseline and steered continuations in a background thread; tokens arrive
 * as `baseline_tokens` / `steered_tokens` grow and are appended to the two columns (only the
 * new ones, so a stream costs O(tokens)). "cancel" stops it. "sweep" fills an SVG plot of the
 * metric against the coefficient. Token text only ever goes in through textContent.
 */

import { fmt } from "./lib/colour";
import { addCodePanel } from "./lib/code_panel";
import { button, clear, control, displayToken, escapeToken, h, setOptions, setText, style, svg } from "./lib/dom";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { errorBox, errorText, statusPill } from "./lib/status";
import { CSS } from "./lib/steering.css";
import { str, strs } from "./lib/values";
import { decode, isWire } from "./lib/wire";

const STATIC_TITLE = "Static HTML export: there is no Python kernel, so nothing can be generated here.";

const num = (x: unknown, fallback = 0): number => (typeof x === "number" && Number.isFinite(x) ? x : fallback);
/** A coefficient as typed: at most 3 decimals, no trailing zeros. */
const coefText = (x: number): string => String(Math.round(x * 1000) / 1000);

/** One generated token as a span: visible escapes, a newline as "↵" plus a real line break. */
function tokenSpan(tok: string, i: number): HTMLElement {
  const span = h("span", "mw-token");
  span.dataset.index = String(i);
  span.title = escapeToken(tok);
  if (tok === "") span.classList.add("mw-empty");
  const parts = tok.split("\n");
  span.textContent = parts.map((p) => displayToken(p)).join("↵\n");
  return span;
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const promptBox = control("textarea", "mw-prompt", "prompt", { rows: 2 });
  const vectorSelect = control("select", "mw-vector", "vector");
  const siteSelect = control("select", "mw-site", "site");
  const layerSelect = control("select", "mw-layer", "layer");
  const coefInput = control("input", "mw-coef", "coefficient", { type: "range" });
  const coefValue = h("span", "mw-coef-value");
  const maxTokens = control("input", "mw-max-tokens", "max new tokens", { type: "number", min: "1" });
  const genBtn = button("mw-generate", "generate");
  const cancelBtn = button("mw-cancel", "cancel");
  const metricA = control("input", "mw-metric-a", "metric token");
  const metricB = control("input", "mw-metric-b", "metric minus token");
  const sweepBtn = button("mw-sweep", "sweep");
  const pill = statusPill();
  const errBox = errorBox();

  const column = (run: string, label: string) => {
    const head = h("div", "mw-column-head", label);
    const promptEl = h("span", "mw-prompt-text");
    const tokens = h("span", "mw-tokens");
    const col = h("div", "mw-column", [head, h("div", "mw-text", [promptEl, tokens])]);
    col.dataset.run = run;
    return { col, head, promptEl, tokens, shown: [] as string[] };
  };
  const base = column("baseline", "baseline");
  const steered = column("steered", "steered");
  const plotWrap = h("div", "mw-sweep");
  const root = h("div", "mw-steering", [
    style(CSS),
    promptBox,
    h("div", "mw-controls", [
      h("label", "mw-control", ["vector", vectorSelect]),
      h("label", "mw-control", ["site", siteSelect]),
      h("label", "mw-control", ["layer", layerSelect]),
      h("label", "mw-control", ["coef", coefInput, coefValue]),
      h("label", "mw-control", ["tokens", maxTokens]),
      genBtn,
      cancelBtn,
      pill.el,
    ]),
    h("div", "mw-controls", [
      h("label", "mw-control", ["sweep metric", metricA, "−", metricB]),
      sweepBtn,
    ]),
    errBox.el,
    h("div", "mw-columns", [base.col, steered.col]),
    plotWrap,
  ]);
  el.appendChild(root);
  const code = addCodePanel(model, root.querySelector(".mw-controls") as HTMLElement, root);

  let localError = "";
  const isStatic = () => model.get("static") === true;
  const running = () => model.get("status") === "running";

  // ---------------------------------------------------------------- controls
  function renderControls(): void {
    setOptions(vectorSelect, strs(model.get("vector_names")));
    vectorSelect.value = str(model.get("vector"));
    setOptions(siteSelect, strs(model.get("sites")));
    siteSelect.value = str(model.get("site"));
    const n = Math.max(1, num(model.get("n_layers"), 1));
    setOptions(layerSelect, Array.from({ length: n }, (_, i) => String(i)));
    layerSelect.value = String(num(model.get("layer")));
    const lo = num(model.get("coef_min"), -10);
    const hi = num(model.get("coef_max"), 10);
    coefInput.min = String(lo);
    coefInput.max = String(hi);
    coefInput.step = String((hi - lo) / 200);
    const c = num(model.get("coef"), 0);
    if (Number(coefInput.value) !== c) coefInput.value = String(c);
    setText(coefValue, coefText(c));
    if (document.activeElement !== promptBox) promptBox.value = str(model.get("prompt"));
    maxTokens.value = String(num(model.get("max_new_tokens"), 20));
    if (document.activeElement !== metricA) metricA.value = str(model.get("metric_a"));
    if (document.activeElement !== metricB) metricB.value = str(model.get("metric_b"));
    const st = isStatic();
    const busy = running();
    for (const c2 of [promptBox, vectorSelect, siteSelect, layerSelect, coefInput, maxTokens, metricA, metricB]) c2.disabled = st;
    genBtn.disabled = st || busy;
    sweepBtn.disabled = st || busy;
    cancelBtn.disabled = st || !busy;
    cancelBtn.hidden = st;
    root.title = st ? STATIC_TITLE : "";
  }

  function renderStatus(): void {
    const status = str(model.get("status")) || "ready";
    const n = strs(model.get("steered_tokens")).length;
    const total = num(model.get("max_new_tokens"), 0);
    pill.set(status, isStatic() ? "static" : status === "running" ? `generating ${n}/${total}` : status);
    errBox.set(localError || str(model.get("error")));
    renderControls();
  }

  // ---------------------------------------------------------------- columns
  function fill(c: typeof base, tokens: string[], done: boolean): void {
    const same = c.shown.length <= tokens.length && c.shown.every((t, i) => t === tokens[i]);
    if (!same) {
      clear(c.tokens);
      c.shown = [];
    }
    const frag = document.createDocumentFragment();
    for (let i = c.shown.length; i < tokens.length; i++) frag.appendChild(tokenSpan(tokens[i], i));
    c.tokens.appendChild(frag);
    c.shown = tokens.slice();
    c.col.classList.toggle("mw-done", done);
    c.col.dataset.count = String(tokens.length);
  }

  function renderColumns(): void {
    const p = str(model.get("gen_prompt"));
    setText(base.promptEl, displayToken(p));
    setText(steered.promptEl, displayToken(p));
    const vec = str(model.get("vector"));
    setText(steered.head, `steered: ${vec} × ${coefText(num(model.get("gen_coef")))} at ${str(model.get("site"))} ${num(model.get("layer"))}`);
    fill(base, strs(model.get("baseline_tokens")), model.get("baseline_done") === true || !running());
    fill(steered, strs(model.get("steered_tokens")), model.get("steered_done") === true || !running());
    renderStatus();
  }

  // ---------------------------------------------------------------- sweep plot
  function renderPlot(): void {
    clear(plotWrap);
    const cw = model.get("sweep_coefs");
    const vw = model.get("sweep_values");
    if (!isWire(cw) || !isWire(vw)) return;
    let xs: Float32Array | Int32Array;
    let ys: Float32Array | Int32Array;
    try {
      xs = decode(cw).data;
      ys = decode(vw).data;
    } catch (e) {
      localError = `sweep: ${errorText(e)}`;
      return;
    }
    const n = Math.min(xs.length, ys.length);
    if (n === 0) return;
    const W = 420;
    const H = 220;
    const m = { l: 48, r: 12, t: 12, b: 34 };
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      x0 = Math.min(x0, xs[i]); x1 = Math.max(x1, xs[i]);
      if (Number.isFinite(ys[i])) { y0 = Math.min(y0, ys[i]); y1 = Math.max(y1, ys[i]); }
    }
    if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
    if (!(y1 > y0)) { y0 -= 1; y1 += 1; }
    y0 = Math.min(y0, 0); y1 = Math.max(y1, 0);
    const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const sy = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    const plot = svg("svg", { class: "mw-sweep-plot", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
    plot.setAttribute("aria-label", `${str(model.get("metric_name"))} against the steering coefficient`);
    plot.appendChild(svg("line", { class: "mw-zero", x1: m.l, x2: W - m.r, y1: sy(0), y2: sy(0) }));
    plot.appendChild(svg("line", { class: "mw-axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    plot.appendChild(svg("line", { class: "mw-axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    for (const [v, anchor] of [[x0, "start"], [x1, "end"]] as [number, string][])
      plot.appendChild(svg("text", { x: sx(v), y: H - m.b + 12, "text-anchor": anchor }, fmt(v, 3)));
    for (const v of [y0, y1]) plot.appendChild(svg("text", { x: m.l - 4, y: sy(v) + 3, "text-anchor": "end" }, fmt(v, 3)));
    plot.appendChild(svg("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle" }, "coefficient"));
    plot.appendChild(svg("text", { x: m.l, y: m.t - 2 }, str(model.get("metric_name"))));
    const c = num(model.get("coef"), NaN);
    if (Number.isFinite(c) && c >= x0 && c <= x1) plot.appendChild(svg("line", { class: "mw-current", x1: sx(c), x2: sx(c), y1: m.t, y2: H - m.b }));
    const pts: string[] = [];
    for (let i = 0; i < n; i++) if (Number.isFinite(ys[i])) pts.push(`${sx(xs[i]).toFixed(1)},${sy(ys[i]).toFixed(1)}`);
    plot.appendChild(svg("polyline", { class: "mw-line", points: pts.join(" ") }));
    for (let i = 0; i < n; i++) {
      if (!Number.isFinite(ys[i])) continue;
      const pt = svg("circle", { class: "mw-point", cx: sx(xs[i]), cy: sy(ys[i]), r: 3 });
      pt.dataset.index = String(i);
      pt.dataset.coef = String(xs[i]);
      pt.dataset.value = String(ys[i]);
      pt.appendChild(svg("title", {}, `coef ${fmt(xs[i], 4)}: ${fmt(ys[i], 4)}`));
      plot.appendChild(pt);
    }
    plotWrap.appendChild(plot);
  }

  // ---------------------------------------------------------------- actions
  const settings = () => ({
    prompt: promptBox.value,
    vector: vectorSelect.value,
    site: siteSelect.value,
    layer: Number(layerSelect.value),
    coef: Number(coefInput.value),
    max_new_tokens: Math.max(1, Math.trunc(Number(maxTokens.value) || 1)),
    metric_a: metricA.value,
    metric_b: metricB.value,
  });

  async function act(name: string): Promise<void> {
    if (isStatic()) return;
    localError = "";
    renderStatus();
    try {
      await request(model, name, settings(), { timeoutMs: 120_000 });
    } catch (e) {
      localError = errorText(e);
    }
    renderStatus();
  }

  const onGenerate = () => void act("generate");
  const onSweep = () => void act("sweep");
  const onCancel = () => void request(model, "cancel", {}).catch(() => undefined);
  const onCoefInput = () => setText(coefValue, coefText(Number(coefInput.value)));
  const onCoefChange = () => {
    if (isStatic()) return;
    model.set("coef", Number(coefInput.value));
    model.save_changes();
  };
  const { dom, listen, dispose } = listeners(model);
  dom(genBtn, "click", onGenerate);
  dom(sweepBtn, "click", onSweep);
  dom(cancelBtn, "click", onCancel);
  dom(coefInput, "input", onCoefInput);
  dom(coefInput, "change", onCoefChange);

  listen(["baseline_tokens", "steered_tokens", "baseline_done", "steered_done", "gen_prompt", "gen_coef"], renderColumns);
  listen(["status", "error", "progress", "static"], renderColumns);
  listen(["vector", "vector_names", "site", "sites", "layer", "n_layers", "coef", "coef_min", "coef_max", "prompt", "max_new_tokens", "metric_a", "metric_b"], renderControls);
  listen(["sweep_coefs", "sweep_values", "metric_name", "coef"], renderPlot);

  renderColumns();
  renderPlot();

  return () => {
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
