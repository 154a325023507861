/**
 * ProbeAccuracy view (docs/widget_protocol.md, "ProbeAccuracy").
 *
 * An SVG line plot of accuracy per layer (one curve per split or overlay, a band over seeds),
 * a legend that toggles curves, and a side panel for the selected layer: confusion matrix and
 * the test examples ranked by probe score, coloured token by token by the probe direction.
 */

import { css, fmt, legend, maxAbs, paletteOf, textColour } from "./lib/colour";
import { clear, closest, control, displayToken, escapeToken, h, setOptions, setText, svg } from "./lib/dom";
import { frame } from "./lib/frame";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { CSS } from "./lib/probe_accuracy.css";
import { addPredictBanner, currentGuess, isHidden } from "./lib/predict";
import { request } from "./lib/rpc";
import { errorBox, errorText, progressBar, statusPill } from "./lib/status";
import { textTooltip } from "./lib/tooltip";
import { decode, isWire } from "./lib/wire";

const W = 600;
const H = 300;
const M = { left: 40, right: 12, top: 10, bottom: 62 };

const COLOURS: Record<string, string> = {
  train: "#4c72b0",
  validation: "#8172b3",
  test: "#c44e52",
  ood: "#dd8452",
  control: "#55a868",
  baseline: "#937860",
};
const DASH: Record<string, string> = { train: "5 3", control: "2 3", baseline: "8 3 2 3" };
const OVERLAY_COLOURS = ["#17becf", "#e377c2", "#bcbd22", "#1f77b4", "#7f7f7f", "#ff7f0e"];

interface LayerKey {
  site: string;
  layer: number;
  name: string;
}

interface Example {
  index: number;
  rank: number;
  label: number;
  pred: number;
  score: number;
}

interface Panel {
  site: string;
  layer: number;
  name: string;
  rank_class: number;
  classes: number[];
  confusion: unknown;
  n_test: number;
  accuracy: number;
  examples: Example[];
  texts: string[];
  tokens: boolean;
  str_tokens?: string[][];
  values?: unknown;
  offset?: number;
  centre?: string;
}

const asStr = (x: unknown, fallback = ""): string => (x == null ? fallback : String(x));
const asNum = (x: unknown, fallback: number): number => {
  const n = typeof x === "number" ? x : Number(x);
  return x != null && Number.isFinite(n) ? n : fallback;
};
const strList = (x: unknown): string[] => (Array.isArray(x) ? x.map((v) => asStr(v)) : []);

function asLayers(raw: unknown): LayerKey[] {
  if (!Array.isArray(raw)) return [];
  return raw.map((r) => {
    const o = (r ?? {}) as Record<string, unknown>;
    const layer = asNum(o.layer, 0);
    return { site: asStr(o.site), layer, name: asStr(o.name, layer < 0 ? "embed" : `${asStr(o.site)} ${layer}`) };
  });
}

function asPanel(raw: unknown): Panel | null {
  if (!raw || typeof raw !== "object") return null;
  const p = raw as Partial<Panel>;
  if (!Array.isArray(p.examples) || !isWire(p.confusion)) return null;
  return p as Panel;
}

/** Fill a token span with the visible form of `tok` (controls escaped, newline as "↵"). */
function fillToken(span: HTMLElement, tok: string): void {
  if (tok === "") span.classList.add("mw-empty");
  else span.textContent = tok.split("\n").map(displayToken).join("↵");
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title");
  const siteSelect = control("select", "mw-site", "site");
  const siteControl = h("label", "mw-control", ["site", siteSelect]);
  const bandSelect = control("select", "mw-band", "error band");
  setOptions(bandSelect, ["minmax", "sd"], ["min–max", "±1 sd"]);
  const pill = statusPill({ live: false });
  const bar = progressBar();
  const header = h("div", "mw-header", [
    title,
    siteControl,
    h("label", "mw-control", ["band over seeds", bandSelect]),
    h("span", "mw-status-wrap", [bar.el, pill.el]),
  ]);
  const errBox = errorBox();
  const plot = svg("svg", {
    class: "mw-plot",
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": "probe accuracy per layer; click a layer for its confusion matrix and examples",
  });
  const legendEl = h("div", "mw-legend");
  const panelEl = h("div", "mw-layer-panel");
  panelEl.setAttribute("aria-live", "polite");
  const [tip, ttLabel, ttValue] = textTooltip(undefined, { role: false });
  const body = h("div", "mw-body", [h("div", "mw-plot-wrap", [plot, legendEl]), panelEl]);
  const { root, code } = frame(model, el, "mw-probe-accuracy", CSS, header, [header, errBox.el, body, tip.el]);
  // predict, then reveal: the curves stay hidden until a guess
  const banner = addPredictBanner(model, root, errBox.el, "the layer you expect to be best");

  // ---------------------------------------------------------------- state
  let pending: AbortController | null = null;
  let localProgress = 0;
  let localError = "";
  let shown: number[] = []; // indices into `layers` on the x axis
  const isStatic = () => model.get("static") === true;
  const layers = () => asLayers(model.get("layers"));
  const names = () => strList(model.get("curve_names"));

  function curveColour(name: string, j: number): string {
    if (COLOURS[name] && model.get("curve_kinds") && strList(model.get("curve_kinds"))[j] === "split") return COLOURS[name];
    const overlays = names().filter((_, k) => strList(model.get("curve_kinds"))[k] !== "split");
    return OVERLAY_COLOURS[Math.max(0, overlays.indexOf(name)) % OVERLAY_COLOURS.length];
  }

  function stats(): { data: ArrayLike<number>; nc: number; nl: number } | null {
    const raw = model.get("stats");
    if (!isWire(raw)) return null;
    try {
      const d = decode(raw);
      return { data: d.data, nc: d.shape[0] ?? 0, nl: d.shape[1] ?? 0 };
    } catch (e) {
      localError = `stats: ${errorText(e)}`;
      return null;
    }
  }

  // ---------------------------------------------------------------- plot
  const x = (i: number) => M.left + (shown.length <= 1 ? (W - M.left - M.right) / 2 : (i * (W - M.left - M.right)) / (shown.length - 1));
  const y = (v: number) => M.top + (1 - Math.min(1.02, Math.max(0, v)) / 1.02) * (H - M.top - M.bottom);

  function selectedIndex(): number {
    const sel = model.get("selected_layer");
    if (sel == null) return -1;
    const layer = asNum(sel, NaN);
    const site = asStr(model.get("selected_site"));
    return layers().findIndex((k) => k.layer === layer && (k.layer < 0 || k.site === site));
  }

  function renderPlot(): void {
    clear(plot);
    const all = layers();
    const site = asStr(model.get("site"));
    shown = all.map((_, i) => i).filter((i) => all[i].layer < 0 || all[i].site === site);
    const st = stats();
    const sel = selectedIndex();
    const hidden = new Set(strList(model.get("hidden_curves")));
    const band = asStr(model.get("band"), "minmax");
    // grid + axes
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      plot.appendChild(svg("line", { class: "mw-grid-line", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
      const t = svg("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" });
      t.textContent = String(v);
      plot.appendChild(t);
    }
    const yl = svg("text", { x: 10, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 10 ${(M.top + H - M.bottom) / 2})` });
    yl.textContent = "accuracy";
    plot.appendChild(yl);
    const step = shown.length > 1 ? (W - M.left - M.right) / (shown.length - 1) : W - M.left - M.right;
    shown.forEach((li, i) => {
      const hit = svg("rect", { class: "mw-layer-hit", x: x(i) - step / 2, y: M.top, width: step, height: H - M.top - M.bottom });
      hit.dataset.index = String(li);
      hit.setAttribute("tabindex", "0");
      hit.setAttribute("role", "button");
      hit.setAttribute("aria-label", `layer ${all[li].name}`);
      if (li === sel) hit.classList.add("mw-selected");
      plot.appendChild(hit);
      const lab = svg("text", { class: "mw-x-label", x: x(i), y: H - M.bottom + 14, "text-anchor": "end", transform: `rotate(-35 ${x(i)} ${H - M.bottom + 14})` });
      lab.dataset.index = String(li);
      lab.textContent = all[li].name;
      if (li === sel) lab.classList.add("mw-selected");
      plot.appendChild(lab);
    });
    plot.appendChild(svg("line", { class: "mw-axis", x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }));
    // the guess and the answer of the current question, marked on the x axis
    const g = currentGuess(model) as (Record<string, unknown> & { answer?: Record<string, unknown> }) | null;
    if (g) {
      const at = (k: unknown, cls: string) => {
        const key = k as { layer?: unknown; site?: unknown } | undefined;
        const li = all.findIndex((l) => l.layer === key?.layer && (l.layer < 0 || l.site === key?.site));
        const i = shown.indexOf(li);
        if (i >= 0) plot.appendChild(svg("line", { class: cls, x1: x(i), x2: x(i), y1: M.top, y2: H - M.bottom }));
      };
      at(g, "mw-guess");
      at(g.answer, "mw-answer");
    }
    if (!st || isHidden(model)) return; // predict, then reveal: no curves before the guess
    const cn = names();
    cn.forEach((name, c) => {
      if (hidden.has(name) || c >= st.nc) return;
      const colour = curveColour(name, c);
      const at = (li: number, k: number) => st.data[(c * st.nl + li) * 4 + k];
      // band, drawn per contiguous run of finite values
      let upper: string[] = [];
      let lower: string[] = [];
      let line: string[] = [];
      const flush = () => {
        if (upper.length && st.nl) {
          const band_ = svg("path", { class: "mw-band", d: `M${upper.join("L")}L${lower.reverse().join("L")}Z`, fill: colour });
          band_.dataset.curve = name;
          plot.appendChild(band_);
        }
        if (line.length) {
          const path = svg("path", { class: "mw-line", d: `M${line.join("L")}`, stroke: colour });
          path.dataset.curve = name;
          if (DASH[name] && strList(model.get("curve_kinds"))[c] === "split") path.setAttribute("stroke-dasharray", DASH[name]);
          plot.appendChild(path);
        }
        upper = [];
        lower = [];
        line = [];
      };
      shown.forEach((li, i) => {
        const m = at(li, 0);
        if (!Number.isFinite(m)) return flush();
        const lo = band === "sd" ? m - at(li, 3) : at(li, 1);
        const hi = band === "sd" ? m + at(li, 3) : at(li, 2);
        upper.push(`${x(i).toFixed(1)},${y(hi).toFixed(1)}`);
        lower.push(`${x(i).toFixed(1)},${y(lo).toFixed(1)}`);
        line.push(`${x(i).toFixed(1)},${y(m).toFixed(1)}`);
      });
      flush();
      shown.forEach((li, i) => {
        const m = at(li, 0);
        if (!Number.isFinite(m)) return;
        const pt = svg("circle", { class: "mw-point", cx: x(i), cy: y(m), r: 3.5, fill: colour });
        pt.dataset.curve = name;
        pt.dataset.index = String(li);
        plot.appendChild(pt);
      });
    });
  }

  function renderLegend(): void {
    clear(legendEl);
    const hidden = new Set(strList(model.get("hidden_curves")));
    const kinds = strList(model.get("curve_kinds"));
    names().forEach((name, c) => {
      const sw = h("span", "mw-swatch");
      sw.style.borderTopColor = curveColour(name, c);
      if (DASH[name] && kinds[c] === "split") sw.style.borderTopStyle = "dashed";
      const label = name + (kinds[c] === "split" && name === "control" && model.get("control_kind") ? ` (${asStr(model.get("control_kind"))})` : "");
      const b = h("button", "mw-curve-toggle", [sw, label]);
      b.type = "button";
      b.dataset.curve = name;
      b.setAttribute("aria-pressed", String(!hidden.has(name)));
      b.title = `${hidden.has(name) ? "show" : "hide"} ${name}`;
      legendEl.appendChild(b);
    });
  }

  function renderHeader(): void {
    setText(title, asStr(model.get("title")));
    const sites = strList(model.get("sites"));
    const site = asStr(model.get("site"));
    siteControl.hidden = sites.length <= 1;
    setOptions(siteSelect, sites);
    siteSelect.value = site;
    bandSelect.value = asStr(model.get("band"), "minmax");
  }

  // ---------------------------------------------------------------- tooltip
  function showTooltip(target: Element, label: string, value: string): void {
    setText(ttLabel, label);
    setText(ttValue, value);
    tip.showBelow(target, root, { dx: 8 });
  }

  function pointTooltip(pt: Element): void {
    const st = stats();
    const name = asStr((pt as SVGElement).dataset.curve);
    const li = asNum((pt as SVGElement).dataset.index, -1);
    const c = names().indexOf(name);
    if (!st || c < 0 || li < 0) return;
    const at = (k: number) => st.data[(c * st.nl + li) * 4 + k];
    const isSplit = strList(model.get("curve_kinds"))[c] === "split";
    const n = asNum(model.get("n_seeds"), 1);
    let value = `accuracy ${fmt(at(0))}`;
    if (isSplit && n > 1) value += ` (mean of ${n} seeds; min ${fmt(at(1))}, max ${fmt(at(2))}, sd ${fmt(at(3))})`;
    showTooltip(pt, `${name} · ${layers()[li]?.name ?? li}`, value);
  }

  // ---------------------------------------------------------------- panel
  function renderPanel(): void {
    clear(panelEl);
    const p = asPanel(model.get("panel"));
    if (!p) {
      panelEl.appendChild(h("div", "mw-note", "Click a layer to see its confusion matrix and the test examples ranked by probe score."));
      return;
    }
    const classes = Array.isArray(p.classes) ? p.classes.map((c) => asNum(c, 0)) : [];
    panelEl.appendChild(h("div", "mw-panel-title", `${p.name}: test accuracy ${fmt(asNum(p.accuracy, NaN))} (first seed, ${asNum(p.n_test, 0)} examples)`));
    // confusion matrix
    let conf: ArrayLike<number> = [];
    try {
      conf = decode(p.confusion as never).data;
    } catch (e) {
      panelEl.appendChild(h("div", "mw-error", `confusion: ${errorText(e)}`));
    }
    const K = classes.length;
    const table = h("table", "mw-confusion");
    const head = h("tr", null, [h("th", null, "true \\ predicted")]);
    for (const c of classes) head.appendChild(h("th", null, String(c)));
    table.appendChild(head);
    classes.forEach((ct, i) => {
      const row = h("tr", null, [h("th", null, String(ct))]);
      classes.forEach((cp, j) => {
        const td = h("td", "mw-conf-cell", String(conf[i * K + j] ?? ""));
        td.dataset.true = String(ct);
        td.dataset.pred = String(cp);
        row.appendChild(td);
      });
      table.appendChild(row);
    });
    panelEl.appendChild(table);
    // rank class
    const rc = control("select", "mw-rank-class", "rank by class");
    setOptions(rc, classes.map(String));
    rc.value = String(p.rank_class);
    rc.disabled = isStatic();
    const pal = paletteOf(model.get("palette"));
    const colourLegend = legend("diverging", () => pal);
    panelEl.appendChild(h("div", "mw-note", [h("label", "mw-control", ["examples ranked by score for class", rc]), " ", p.tokens ? colourLegend.el : null]));
    if (!p.tokens) {
      panelEl.appendChild(
        h(
          "div",
          "mw-note mw-no-tokens",
          isStatic() ? "Token colouring of this layer was not precomputed in this export." : "Token colouring needs the model: build the view with model= (result.widget(model=m)).",
        ),
      );
    } else {
      panelEl.appendChild(
        h(
          "div",
          "mw-note",
          `Tokens coloured by their projection onto the probe direction${p.centre === "boundary" ? ", centred at the probe's decision boundary" : ` of class ${p.rank_class}, centred at 0`}.`,
        ),
      );
    }
    // examples
    let values: ArrayLike<number> | null = null;
    if (p.tokens && isWire(p.values)) {
      try {
        values = decode(p.values).data;
      } catch (e) {
        panelEl.appendChild(h("div", "mw-error", `values: ${errorText(e)}`));
      }
    }
    const offset = asNum(p.offset, 0);
    let vmax = 0;
    if (values) {
      const centred = Array.from(values, (v) => v - offset);
      vmax = maxAbs(centred);
      colourLegend.update(vmax);
    }
    const list = h("div", "mw-examples");
    let flat = 0;
    let prevRank = -1;
    p.examples.forEach((ex, j) => {
      const rank = asNum(ex.rank, j);
      if (prevRank >= 0 && rank > prevRank + 1) list.appendChild(h("div", "mw-gap", `… ${rank - prevRank - 1} more …`));
      prevRank = rank;
      const wrong = asNum(ex.pred, 0) !== asNum(ex.label, 0);
      const meta = h("span", wrong ? "mw-ex-meta mw-wrong" : "mw-ex-meta", `#${rank + 1} ${fmt(asNum(ex.score, NaN), 3)} y=${ex.label} ŷ=${ex.pred}`);
      meta.title = `rank ${rank + 1}, score ${fmt(asNum(ex.score, NaN))}, label ${ex.label}, predicted ${ex.pred}`;
      const text = h("span", "mw-ex-text");
      const toks = p.tokens && Array.isArray(p.str_tokens) ? p.str_tokens[j] : null;
      if (toks && values) {
        for (const tok of toks) {
          const span = h("span", "mw-token");
          fillToken(span, asStr(tok));
          const v = flat < values.length ? values[flat] : NaN;
          const rgb = pal.divergingRGB(v - offset, vmax);
          span.style.backgroundColor = css(rgb);
          span.style.color = textColour(rgb);
          span.dataset.i = String(flat);
          span.dataset.value = String(v);
          text.appendChild(span);
          flat++;
        }
      } else {
        text.classList.add("mw-ex-plain");
        text.textContent = displayToken(asStr(p.texts?.[j]).split("\n").join("↵"));
      }
      const row = h("div", "mw-example", [meta, text]);
      row.dataset.index = String(ex.index);
      row.dataset.rank = String(rank);
      list.appendChild(row);
    });
    panelEl.appendChild(list);
  }

  // ---------------------------------------------------------------- status
  function renderStatus(): void {
    const st = asStr(model.get("status"), "ready");
    const loading = pending !== null || st === "loading";
    const p = Math.min(1, Math.max(localProgress, st === "loading" ? asNum(model.get("progress"), 0) : 0));
    const failed = !loading && (st === "error" || localError !== "");
    pill.set(loading ? "loading" : failed ? "error" : "ready", loading ? (p > 0 ? `loading ${Math.round(p * 100)}%` : "loading…") : failed ? "error" : isStatic() ? "static" : "ready");
    bar.show(loading);
    bar.set(p);
    root.setAttribute("aria-busy", String(loading));
    const msgs = [localError, asStr(model.get("error"))].filter((m, i, a) => m && a.indexOf(m) === i);
    errBox.set(...msgs);
  }

  // ---------------------------------------------------------------- selection
  function staticPanel(key: LayerKey, rankClass?: number): void {
    const cache = (model.get("panel_cache") as Record<string, unknown> | null) ?? {};
    const p = asPanel(cache[`${key.site}|${key.layer}`]);
    if (!p) {
      localError = `${key.name} was not precomputed in this static export`;
      renderStatus();
      return;
    }
    localError = rankClass != null && rankClass !== p.rank_class ? "ranking by another class needs the kernel" : "";
    model.set("selected_layer", key.layer);
    model.set("selected_site", key.site);
    model.set("panel", p);
    renderStatus();
  }

  async function selectLayer(li: number, rankClass?: number): Promise<void> {
    const key = layers()[li];
    if (!key) return;
    if (isHidden(model) && !isStatic()) {
      // predict, then reveal: this click is the guess; Python records it and reveals
      try {
        await request(model, "guess", { site: key.site, layer: key.layer });
      } catch (e) {
        localError = errorText(e);
        renderStatus();
      }
      return;
    }
    if (isStatic()) return staticPanel(key, rankClass);
    pending?.abort();
    const ctrl = new AbortController();
    pending = ctrl;
    localProgress = 0;
    localError = "";
    renderStatus();
    const msg: Record<string, unknown> = { site: key.site, layer: key.layer };
    if (rankClass != null) msg.rank_class = rankClass;
    try {
      await request(model, "layer", msg, {
        signal: ctrl.signal,
        onProgress: (done, total) => {
          if (pending !== ctrl) return;
          localProgress = total > 0 ? done / total : 0;
          renderStatus();
        },
      });
    } catch (e) {
      if (ctrl.signal.aborted) return;
      localError = `Could not load ${key.name}: ${errorText(e)}`;
    } finally {
      if (pending === ctrl) {
        pending = null;
        localProgress = 0;
        renderStatus();
      }
    }
  }

  // ---------------------------------------------------------------- events
  const indexOf = (t: EventTarget | null): number => {
    if (!(t instanceof Element)) return -1;
    const e = t.closest(".mw-layer-hit, .mw-x-label, .mw-point") as SVGElement | null;
    return e ? asNum(e.dataset.index, -1) : -1;
  };
  const onPlotClick = (e: MouseEvent) => {
    const li = indexOf(e.target);
    if (li >= 0) void selectLayer(li);
  };
  const onPlotKey = (e: KeyboardEvent) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    const li = indexOf(e.target);
    if (li < 0) return;
    e.preventDefault();
    void selectLayer(li);
  };
  const onPlotOver = (e: MouseEvent) => {
    const t = e.target instanceof Element ? e.target : null;
    if (t && t.classList.contains("mw-point")) pointTooltip(t);
    else if (t && t.classList.contains("mw-layer-hit")) {
      const key = layers()[asNum((t as SVGElement).dataset.index, -1)];
      if (key) showTooltip(t, key.name, "click for the confusion matrix and examples");
    }
  };
  const onPlotOut = () => {
    tip.hide();
  };
  const onLegendClick = (e: MouseEvent) => {
    const b = closest(e.target, ".mw-curve-toggle");
    if (!b) return;
    const name = asStr(b.dataset.curve);
    const hidden = strList(model.get("hidden_curves"));
    model.set("hidden_curves", hidden.includes(name) ? hidden.filter((n) => n !== name) : [...hidden, name]);
    model.save_changes();
  };
  const onPanelOver = (e: MouseEvent) => {
    const t = closest(e.target, ".mw-token");
    if (!t) return;
    const p = asPanel(model.get("panel"));
    const v = asNum(t.dataset.value, NaN);
    showTooltip(t, escapeToken(tokenText(t)), `projection ${fmt(v)} (boundary at ${fmt(asNum(p?.offset, 0))})`);
  };
  const tokenText = (t: HTMLElement) => {
    const p = asPanel(model.get("panel"));
    const i = asNum(t.dataset.i, -1);
    const toks = p?.str_tokens?.flat() ?? [];
    return asStr(toks[i]);
  };
  const onPanelChange = (e: Event) => {
    const t = e.target as HTMLSelectElement;
    if (!t.classList.contains("mw-rank-class")) return;
    const li = selectedIndex();
    if (li >= 0) void selectLayer(li, asNum(t.value, 0));
  };
  const onSite = () => {
    model.set("site", siteSelect.value);
    model.save_changes();
  };
  const onBand = () => {
    model.set("band", bandSelect.value);
    model.save_changes();
  };
  const { dom, on, listen, recolour, dispose } = listeners(model);
  on(plot, { click: onPlotClick, keydown: onPlotKey, mouseover: onPlotOver, mouseout: onPlotOut });
  dom(legendEl, "click", onLegendClick);
  on(panelEl, { mouseover: onPanelOver, mouseout: onPlotOut, change: onPanelChange });
  dom(siteSelect, "change", onSite);
  dom(bandSelect, "change", onBand);
  recolour(root, renderPanel);

  listen(["layers", "stats", "curve_names", "curve_kinds", "hidden_curves", "band", "site", "selected_layer", "selected_site"], () => {
    renderHeader();
    renderPlot();
    renderLegend();
  });
  listen(["predict", "guesses"], () => {
    banner.render();
    renderPlot();
  });
  listen(["panel"], renderPanel);
  listen(["status", "progress", "error"], renderStatus);
  listen(["title", "sites"], renderHeader);

  renderHeader();
  renderPlot();
  renderLegend();
  renderPanel();
  renderStatus();
  if (isStatic() && !asPanel(model.get("panel"))) {
    const sl = (model.get("static_layer") ?? {}) as Record<string, unknown>;
    const li = layers().findIndex((k) => k.layer === asNum(sl.layer, NaN) && (k.layer < 0 || k.site === asStr(sl.site)));
    if (li >= 0) staticPanel(layers()[li]);
  }

  return () => {
    pending?.abort();
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
