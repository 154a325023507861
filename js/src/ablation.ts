/**
 * Ablation view (docs/widget_protocol.md, "Ablation").
 *
 * Heads ablated separately: a layers × heads DOM heatmap of the mean effect (ablated − clean),
 * diverging colours centred at 0. Otherwise: horizontal bars sorted by |mean effect|, with a dot
 * per prompt. Hover: clean / ablated / effect and the spread over prompts. Click: a side panel
 * with the chosen prompt's top-k next tokens with and without that ablation (request "select";
 * static copies: `panel_cache`).
 */

import { CSS } from "./lib/ablation.css";
import { css, fmt, legend, maxAbs, paletteOf } from "./lib/colour";
import { clear, closest, control, displayToken, escapeToken, h, setOptions, setText } from "./lib/dom";
import { frame } from "./lib/frame";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { errorBox, errorText, statusPill } from "./lib/status";
import { textTooltip } from "./lib/tooltip";
import { topkList } from "./lib/topk";
import { asTopk, ints, str, strs, type TopkRow } from "./lib/values";
import { decodeTrait } from "./lib/wire";

interface Panel {
  component: string;
  prompt: number;
  clean_metric: number;
  ablated_metric: number;
  effect: number;
  clean_topk: TopkRow[];
  ablated_topk: TopkRow[];
}

interface Stats {
  clean: number;
  ablated: number;
  effect: number;
  min: number;
  max: number;
  sd: number;
  perPrompt: number[];
}

function asPanel(x: unknown): Panel | null {
  if (x == null || typeof x !== "object" || !("component" in x)) return null;
  const p = x as Record<string, unknown>;
  return {
    component: str(p.component),
    prompt: Number(p.prompt),
    clean_metric: Number(p.clean_metric),
    ablated_metric: Number(p.ablated_metric),
    effect: Number(p.effect),
    clean_topk: asTopk(p.clean_topk),
    ablated_topk: asTopk(p.ablated_topk),
  };
}

const short = (s: string, n = 60): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title");
  const promptSelect = control("select", "mw-prompt", "prompt");
  const pal = () => paletteOf(model.get("palette"));
  const colourLegend = legend("diverging", pal);
  const pill = statusPill({ role: false, live: false });
  const header = h("div", "mw-header", [title, h("label", "mw-control", ["prompt ", promptSelect]), colourLegend.el, pill.el]);
  const errBox = errorBox();
  const chart = h("div", "mw-chart");
  const panelTitle = h("div", "mw-panel-title");
  const panelPrompt = h("div", "mw-panel-prompt");
  const metrics = h("div", "mw-metrics");
  const lists = h("div", "mw-lists");
  const panelEl = h("div", "mw-panel", [panelTitle, panelPrompt, metrics, lists]);
  const [tip, ttLabel, ttValue] = textTooltip();
  const { root, code } = frame(model, el, "mw-ablation", CSS, header, [header, errBox.el, h("div", "mw-body", [chart, panelEl]), tip.el]);

  // ---------------------------------------------------------------- state
  let stats: Stats[] = [];
  let targets: HTMLElement[] = []; // one focusable element per component row
  let localError = "";
  let pending = "";
  let seq = 0;
  const isStatic = () => model.get("static") === true;
  const components = () => strs(model.get("components"));
  const prompts = () => strs(model.get("prompts"));

  const arr = (name: string) => decodeTrait(model.get(name), name, (msg) => (localError = msg));

  function computeStats(): void {
    const c = arr("clean");
    const a = arr("ablated");
    stats = [];
    if (!c || !a) return;
    const n = c.data.length;
    const rows = a.shape[0] ?? 0;
    let cm = 0;
    for (let j = 0; j < n; j++) cm += c.data[j];
    cm /= n || 1;
    for (let r = 0; r < rows; r++) {
      const per: number[] = [];
      let am = 0;
      for (let j = 0; j < n; j++) {
        const v = a.data[r * n + j];
        am += v;
        per.push(v - c.data[j]);
      }
      am /= n || 1;
      const e = am - cm;
      let ss = 0;
      for (const x of per) ss += (x - e) ** 2;
      stats.push({ clean: cm, ablated: am, effect: e, min: Math.min(...per), max: Math.max(...per), sd: Math.sqrt(ss / (n || 1)), perPrompt: per });
    }
  }

  function tooltipText(i: number): [string, string] {
    const s = stats[i];
    const label = components()[i] ?? "";
    if (!s) return [label, "no data"];
    const lines = [`effect ${fmt(s.effect, 4)}`, `clean ${fmt(s.clean, 4)} → ablated ${fmt(s.ablated, 4)}`];
    if (s.perPrompt.length > 1) lines.push(`per prompt: ${fmt(s.min, 3)} … ${fmt(s.max, 3)} (sd ${fmt(s.sd, 3)}, n = ${s.perPrompt.length})`);
    return [`${label}`, lines.join("\n")];
  }

  // ---------------------------------------------------------------- chart
  function buildHeads(m: number): void {
    const layers = ints(model.get("grid_layers"));
    const nh = Number(model.get("n_heads")) || 0;
    const idx = arr("grid_index");
    const grid = h("div", "mw-grid");
    grid.setAttribute("role", "grid");
    grid.style.gridTemplateColumns = `auto repeat(${nh}, minmax(28px, 1fr))`;
    grid.appendChild(h("div", "mw-corner", "layer \\ head"));
    for (let j = 0; j < nh; j++) grid.appendChild(h("div", "mw-col-label", `H${j}`));
    for (let r = 0; r < layers.length; r++) {
      grid.appendChild(h("div", "mw-row-label", `L${layers[r]}`));
      for (let j = 0; j < nh; j++) {
        const ci = idx && idx.data.length === layers.length * nh ? idx.data[r * nh + j] : -1;
        const cell = h("div", "mw-cell");
        cell.dataset.layer = String(layers[r]);
        cell.dataset.head = String(j);
        cell.setAttribute("role", "gridcell");
        if (ci >= 0 && stats[ci]) {
          cell.dataset.component = String(ci);
          cell.style.background = css(pal().divergingRGB(stats[ci].effect, m));
          cell.tabIndex = -1;
          targets[ci] = cell;
        } else {
          cell.classList.add("mw-empty");
          cell.title = "not ablated";
        }
        grid.appendChild(cell);
      }
    }
    chart.appendChild(grid);
  }

  function buildBars(): void {
    let m = 0;
    for (const s of stats) m = Math.max(m, maxAbs(s.perPrompt), Math.abs(s.effect));
    const order = stats.map((_, i) => i).sort((a, b) => Math.abs(stats[b].effect) - Math.abs(stats[a].effect) || a - b);
    const bars = h("div", "mw-bars");
    const pos = (v: number) => (m > 0 ? 50 + (50 * Math.max(-m, Math.min(m, v))) / m : 50);
    const labels = components();
    for (const i of order) {
      const s = stats[i];
      const bar = h("span", "mw-bar");
      const a = pos(0);
      const b = pos(s.effect);
      bar.style.left = `${Math.min(a, b)}%`;
      bar.style.width = `${Math.abs(b - a)}%`;
      bar.style.background = css(pal().divergingRGB(s.effect, m));
      const track = h("div", "mw-bar-track", [h("span", "mw-bar-zero"), bar]);
      s.perPrompt.forEach((v, j) => {
        const dot = h("span", "mw-dot");
        dot.dataset.prompt = String(j);
        dot.style.left = `${pos(v)}%`;
        track.appendChild(dot);
      });
      const row = h("div", "mw-bar-row", [h("div", "mw-bar-label", labels[i] ?? ""), track, h("div", "mw-bar-value", fmt(s.effect, 3))]);
      row.dataset.component = String(i);
      row.tabIndex = -1;
      row.setAttribute("role", "row");
      targets[i] = row;
      bars.appendChild(row);
    }
    chart.appendChild(bars);
  }

  function build(): void {
    hideTooltip();
    computeStats();
    clear(chart);
    targets = [];
    let m = 0;
    for (const s of stats) m = Math.max(m, Math.abs(s.effect));
    if (model.get("view") === "heads") buildHeads(m);
    else buildBars();
    colourLegend.update(m);
    const first = targets.find(Boolean);
    if (first) first.tabIndex = 0;
    renderSelection();
  }

  function renderSelection(): void {
    const sel = str(model.get("selected_component"));
    const i = components().indexOf(sel);
    for (const t of chart.querySelectorAll(".mw-selected")) t.classList.remove("mw-selected");
    if (i >= 0 && targets[i]) targets[i].classList.add("mw-selected");
  }

  // ---------------------------------------------------------------- prompt selector
  function renderPrompts(): void {
    const ps = prompts();
    const want = ps.map((p, i) => `${i}: ${short(displayToken(p.replace(/\n/g, "↵")))}`);
    setOptions(promptSelect, want.map((_, i) => String(i)), want);
    promptSelect.value = String(Number(model.get("selected_prompt")) || 0);
    promptSelect.disabled = ps.length < 2;
  }

  // ---------------------------------------------------------------- tooltip
  function showTooltip(t: HTMLElement, dot: HTMLElement | null = null): void {
    const i = Number(t.dataset.component);
    let [label, value] = tooltipText(i);
    const j = dot ? Number(dot.dataset.prompt) : -1;
    const cl = j >= 0 ? arr("clean") : null;
    if (cl && stats[i] && j < cl.data.length) {
      // one prompt's dot: that prompt's own values
      const e = stats[i].perPrompt[j];
      label = `${label} · prompt ${j}: ${short(escapeToken(prompts()[j] ?? ""), 48)}`;
      value = `effect ${fmt(e, 4)}\nclean ${fmt(cl.data[j], 4)} → ablated ${fmt(cl.data[j] + e, 4)}`;
    }
    setText(ttLabel, label);
    setText(ttValue, value);
    tip.showBelow(t, root);
  }
  function hideTooltip(): void {
    tip.hide();
  }

  // ---------------------------------------------------------------- side panel
  function currentPanel(): { panel: Panel | null; note: string } {
    const sel = str(model.get("selected_component"));
    const p = Number(model.get("selected_prompt")) || 0;
    if (!sel) return { panel: null, note: "" };
    if (isStatic()) {
      const cache = model.get("panel_cache") as Record<string, unknown> | undefined;
      const hit = asPanel(cache ? cache[`${sel}|${p}`] : null);
      return { panel: hit, note: hit ? "" : "not precomputed in this static copy (only the largest effects on prompt 0 are)" };
    }
    const panel = asPanel(model.get("panel"));
    if (panel && panel.component === sel && panel.prompt === p) return { panel, note: "" };
    if (pending) return { panel: null, note: "running the ablated forward…" };
    if (model.get("can_run") === false) return { panel: null, note: "no model (or resample reference) attached: cannot re-run" };
    return { panel: null, note: "" };
  }

  function renderPanel(): void {
    clear(lists);
    clear(metrics);
    const sel = str(model.get("selected_component"));
    const p = Number(model.get("selected_prompt")) || 0;
    if (!sel) {
      setText(panelTitle, "click a component for the top-k next tokens with and without it");
      setText(panelPrompt, "");
      return;
    }
    const kind = str(model.get("kind"));
    setText(panelTitle, `${kind} ablation of ${sel}`);
    setText(panelPrompt, `prompt ${p}: ${escapeToken(prompts()[p] ?? "")}`);
    const { panel, note } = currentPanel();
    const i = components().indexOf(sel);
    const c = panel ? panel.clean_metric : NaN;
    const a = panel ? panel.ablated_metric : NaN;
    // metric values come from the result itself, so they are known before the top-k arrive
    const cl = arr("clean");
    const ab = arr("ablated");
    const n = cl ? cl.data.length : 0;
    const cv = panel ? c : cl && p < n ? cl.data[p] : NaN;
    const av = panel ? a : ab && i >= 0 ? ab.data[i * n + p] : NaN;
    for (const [k, label, v] of [
      ["clean", "clean", cv],
      ["ablated", "ablated", av],
      ["effect", "effect", av - cv],
    ] as [string, string, number][]) {
      const m = h("span", "mw-metric", [`${label} `, h("span", "mw-metric-value", fmt(v, 4))]);
      m.dataset.kind = k;
      m.dataset.value = String(v);
      metrics.appendChild(m);
    }
    lists.appendChild(topkList("ablated", "ablated", panel ? panel.ablated_topk : null, note || "not available"));
    lists.appendChild(topkList("clean", "clean", panel ? panel.clean_topk : null, note || "not available"));
  }

  async function select(i: number, prompt?: number): Promise<void> {
    const comp = components()[i];
    if (comp === undefined) return;
    const p = prompt ?? (Number(model.get("selected_prompt")) || 0);
    for (const t of targets) if (t) t.tabIndex = -1;
    if (targets[i]) targets[i].tabIndex = 0;
    localError = "";
    if (isStatic()) {
      model.set("selected_component", comp);
      model.set("selected_prompt", p);
      return;
    }
    const s = ++seq;
    pending = comp;
    model.set("selected_component", comp);
    model.set("selected_prompt", p);
    renderSelection();
    renderPanel();
    renderStatus();
    try {
      await request(model, "select", { component: comp, prompt: p }, { timeoutMs: 120_000 });
    } catch (e) {
      if (s === seq) localError = errorText(e);
    }
    if (s === seq) pending = "";
    renderStatus();
    renderPanel();
  }

  function renderStatus(): void {
    const status = pending ? "running" : str(model.get("status"), "ready");
    pill.set(status, isStatic() ? "static" : status);
    errBox.set(str(model.get("error")), localError);
    const n = components().length;
    setText(title, `${str(model.get("model_name"))} · ${str(model.get("kind"))} ablation · ${str(model.get("metric_name"))} · ${n} component${n === 1 ? "" : "s"}${model.get("separately") === false ? " together" : ""}`);
  }

  // ---------------------------------------------------------------- events
  const targetOf = (t: EventTarget | null) => closest(t, "[data-component]");
  const onClick = (e: MouseEvent) => {
    const t = targetOf(e.target);
    if (t && chart.contains(t)) void select(Number(t.dataset.component));
  };
  const onOver = (e: MouseEvent) => {
    const t = targetOf(e.target);
    const dot = closest(e.target, ".mw-dot");
    if (t && chart.contains(t)) showTooltip(t, dot);
  };
  const onOut = (e: MouseEvent) => {
    if (!targetOf(e.relatedTarget)) hideTooltip();
  };
  const onKey = (e: KeyboardEvent) => {
    const t = targetOf(e.target);
    if (!t) return;
    const i = Number(t.dataset.component);
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      void select(i);
      return;
    }
    const next = neighbour(t, e.key);
    if (next) {
      e.preventDefault();
      for (const x of targets) if (x) x.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
      showTooltip(next);
    }
  };
  /** The focusable neighbour of `t` in the arrow key's direction (skipping unablated heads). */
  function neighbour(t: HTMLElement, key: string): HTMLElement | null {
    const all = Array.from(chart.querySelectorAll<HTMLElement>("[data-component]"));
    const k = all.indexOf(t);
    if (model.get("view") !== "heads") {
      const d = key === "ArrowDown" ? 1 : key === "ArrowUp" ? -1 : 0;
      return d ? all[k + d] ?? null : null;
    }
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const mv = moves[key];
    if (!mv) return null;
    const layers = ints(model.get("grid_layers"));
    let r = layers.indexOf(Number(t.dataset.layer));
    let c = Number(t.dataset.head);
    for (;;) {
      r += mv[0];
      c += mv[1];
      if (r < 0 || r >= layers.length || c < 0 || c >= (Number(model.get("n_heads")) || 0)) return null;
      const el2 = chart.querySelector<HTMLElement>(`.mw-cell[data-layer="${layers[r]}"][data-head="${c}"][data-component]`);
      if (el2) return el2;
    }
  }
  const onPrompt = () => {
    const p = Number(promptSelect.value);
    const i = components().indexOf(str(model.get("selected_component")));
    if (i >= 0) void select(i, p);
    else {
      model.set("selected_prompt", p);
      if (!isStatic()) model.save_changes();
    }
  };
  const { dom, on, listen, recolour, dispose } = listeners(model);
  on(chart, { click: onClick, mouseover: onOver, mouseout: onOut, keydown: onKey });
  dom(promptSelect, "change", onPrompt);
  recolour(root, build);

  listen(["clean", "ablated", "components", "view", "grid_layers", "n_heads", "grid_index"], () => {
    build();
    renderPanel();
  });
  listen(["selected_component"], () => {
    renderSelection();
    renderPanel();
  });
  listen(["selected_prompt", "prompts"], () => {
    renderPrompts();
    renderPanel();
  });
  listen(["panel", "kind", "panel_cache", "can_run"], renderPanel);
  listen(["status", "error", "static", "model_name", "metric_name", "separately"], renderStatus);

  // ---------------------------------------------------------------- first paint
  build();
  renderPrompts();
  renderPanel();
  renderStatus();

  return () => {
    seq++;
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
