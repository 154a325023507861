/**
 * TokenActivations view (docs/widget_protocol.md, "TokenActivations").
 *
 * Texts are rendered once per `texts` change as inline token spans; a `values` change only
 * recolours them. All pointer/keyboard handling is delegated to a few listeners on containers.
 */

import { css, divergingRGB, fmt, legend, maxAbs, NEG, POS, textColour } from "./lib/colour";
import { CODE_CSS, codePanel } from "./lib/code_panel";
import { clear, displayToken, escapeToken, h, setOptions, setText, style } from "./lib/dom";
import { ariaSelect, listKey } from "./lib/keyboard";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { errorBox, errorText, progressBar, statusPill } from "./lib/status";
import { CSS } from "./lib/token_activations.css";
import { tooltip } from "./lib/tooltip";
import { decode, isWire } from "./lib/wire";

const STATIC_TITLE =
  "Static HTML export: there is no Python kernel, so the site and layer cannot change here. " +
  "Open the notebook to explore other sites and layers.";

function asTexts(raw: unknown): string[][] {
  if (!Array.isArray(raw)) return [];
  if (raw.every((t) => typeof t === "string")) return [raw as string[]]; // a single text
  return raw.map((t) => (Array.isArray(t) ? t.map((tok) => (typeof tok === "string" ? tok : String(tok))) : []));
}

function asInt(x: unknown, fallback: number): number {
  const n = typeof x === "number" ? x : Number(x);
  return Number.isFinite(n) ? Math.trunc(n) : fallback;
}

function asStr(x: unknown, fallback = ""): string {
  return x == null ? fallback : String(x);
}

/**
 * Fill `span` with the visible form of `tok` (controls escaped, each newline as a "↵" marker);
 * returns how many line breaks to put after the span.
 */
function fillToken(span: HTMLElement, tok: string): number {
  if (tok === "") {
    span.classList.add("mw-empty");
    return 0;
  }
  const parts = tok.split("\n");
  for (let p = 0; p < parts.length; p++) {
    if (p > 0) span.appendChild(h("span", "mw-nl", "↵"));
    if (parts[p]) span.appendChild(document.createTextNode(displayToken(parts[p])));
  }
  return parts.length - 1;
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const unitLabel = h("span", "mw-unit-label");
  const siteSelect = h("select", "mw-site");
  siteSelect.setAttribute("aria-label", "site");
  const layerSelect = h("select", "mw-layer");
  layerSelect.setAttribute("aria-label", "layer");
  const colourLegend = legend("diverging");
  const pill = statusPill();
  const bar = progressBar();
  const header = h("div", "mw-header", [
    unitLabel,
    h("label", "mw-control", ["site", siteSelect]),
    h("label", "mw-control", ["layer", layerSelect]),
    colourLegend.el,
    h("span", "mw-status-wrap", [bar.el, pill.el]),
  ]);
  const errBox = errorBox();
  const textsEl = h("div", "mw-texts");
  textsEl.tabIndex = 0;
  textsEl.setAttribute("role", "listbox");
  textsEl.setAttribute("aria-label", "tokens; click or use the arrow keys to select one");
  const topkEl = h("div", "mw-topk");
  topkEl.setAttribute("aria-label", "top units at the selected token");
  const ttToken = h("div", "mw-tt-token");
  const ttMeta = h("div", "mw-tt-meta");
  const ttValue = h("div", "mw-tt-value");
  const tip = tooltip([ttToken, ttMeta, ttValue]);
  const root = h("div", "mw-token-activations", [
    style(CSS),
    header,
    errBox.el,
    h("div", "mw-body", [textsEl, topkEl]),
    tip.el,
  ]);
  el.appendChild(root);
  // show the code: a toggle in the header, the code under it (w.code() in Python)
  const code = codePanel(model);
  header.appendChild(code.button);
  header.after(code.el);
  root.appendChild(style(CODE_CSS(".mw-token-activations")));

  // ---------------------------------------------------------------- state
  let tokens: string[] = [];
  let spans: HTMLElement[] = [];
  let textOf = new Int32Array(0);
  let posOf = new Int32Array(0);
  let values: ArrayLike<number> | null = null;
  let vmax = 0;
  let topkIdx: ArrayLike<number> | null = null;
  let topkVal: ArrayLike<number> | null = null;
  let topkK = 0;
  let selectedEl: HTMLElement | null = null;
  let hoverIndex = -1;
  let pending: AbortController | null = null;
  let localProgress = 0;
  let localError = "";
  const decodeErrors = new Map<string, string>();
  // static mode: values of the initially coloured unit, so it can be shown again
  const staticOriginal = new Map<number, unknown>();
  const staticLabel = asStr(model.get("unit_label"));

  const isStatic = () => model.get("static") === true;
  const n = () => spans.length;

  function decodeTrait(name: string): ArrayLike<number> | null {
    const raw = model.get(name);
    decodeErrors.delete(name);
    if (raw == null || (typeof raw === "object" && Object.keys(raw).length === 0)) return null; // not set yet
    if (!isWire(raw)) {
      decodeErrors.set(name, `${name}: not a wire array`);
      return null;
    }
    try {
      return decode(raw).data;
    } catch (e) {
      decodeErrors.set(name, `${name}: ${errorText(e)}`);
      return null;
    }
  }

  // ---------------------------------------------------------------- texts
  function buildTexts(): void {
    const texts = asTexts(model.get("texts"));
    hideTooltip();
    selectedEl = null;
    clear(textsEl);
    const total = texts.reduce((a, t) => a + t.length, 0);
    tokens = new Array<string>(total);
    spans = new Array<HTMLElement>(total);
    textOf = new Int32Array(total);
    posOf = new Int32Array(total);
    const frag = document.createDocumentFragment();
    let i = 0;
    texts.forEach((text, t) => {
      const line = h("div", "mw-text");
      line.dataset.text = String(t);
      if (texts.length > 1) line.appendChild(h("span", "mw-text-label", `#${t}`));
      for (let p = 0; p < text.length; p++, i++) {
        const tok = text[p];
        const span = h("span", "mw-token");
        span.dataset.index = String(i);
        span.setAttribute("role", "option");
        span.setAttribute("aria-selected", "false");
        span.setAttribute("aria-label", `${texts.length > 1 ? `text ${t}, ` : ""}position ${p}: "${tok}"`);
        const breaks = fillToken(span, tok);
        line.appendChild(span);
        for (let b = 0; b < breaks; b++) line.appendChild(document.createElement("br"));
        tokens[i] = tok;
        spans[i] = span;
        textOf[i] = t;
        posOf[i] = p;
      }
      frag.appendChild(line);
    });
    textsEl.appendChild(frag);
    recolour();
    renderSelection();
  }

  // ---------------------------------------------------------------- colours
  function recolour(): void {
    const v = values;
    const cache = new Map<string, [string, string]>();
    for (let i = 0; i < spans.length; i++) {
      const x = v && i < v.length ? v[i] : NaN;
      const rgb = divergingRGB(x, vmax);
      const key = rgb.join(",");
      let c = cache.get(key);
      if (!c) cache.set(key, (c = [css(rgb), textColour(rgb)]));
      const s = spans[i].style;
      if (s.backgroundColor !== c[0]) s.backgroundColor = c[0];
      if (s.color !== c[1]) s.color = c[1];
    }
    colourLegend.update(vmax);
  }

  function loadValues(): void {
    values = decodeTrait("values");
    vmax = values ? maxAbs(values) : 0;
    recolour();
    if (hoverIndex >= 0) showTooltip(hoverIndex);
    renderErrors();
  }

  function loadTopk(): void {
    topkIdx = decodeTrait("topk_indices");
    topkVal = decodeTrait("topk_values");
    const raw = model.get("topk_indices") as { shape?: unknown } | null;
    const shape = raw && Array.isArray(raw.shape) ? raw.shape : [];
    topkK = shape.length >= 2 ? asInt(shape[1], 0) : 0;
    renderTopk();
    renderErrors();
  }

  // ---------------------------------------------------------------- labels
  function unitName(u: number): string {
    return `${asStr(model.get("unit_kind"), "unit")} ${u}`;
  }

  function currentLabel(): string {
    const label = asStr(model.get("unit_label"));
    if (label) return label;
    const u = asInt(model.get("selected_unit"), -1);
    return u >= 0 ? unitName(u) : "direction";
  }

  function renderLabel(): void {
    setText(unitLabel, currentLabel());
    const nUnits = asInt(model.get("n_units"), 0);
    const kind = asStr(model.get("unit_kind"), "unit");
    unitLabel.title =
      `${asStr(model.get("site"))}, layer ${asInt(model.get("layer"), 0)}` +
      (nUnits ? ` (${nUnits} ${kind}s)` : "");
  }

  // ---------------------------------------------------------------- selection + top-k
  function selectedIndex(): number {
    const i = asInt(model.get("selected_token"), -1);
    return i >= 0 && i < n() ? i : -1;
  }

  function renderSelection(): void {
    const i = selectedIndex();
    const next = i >= 0 ? spans[i] : null;
    if (selectedEl !== next) {
      if (selectedEl) {
        selectedEl.classList.remove("mw-selected");
        selectedEl.removeAttribute("aria-current");
      }
      if (next) {
        next.classList.add("mw-selected");
        next.setAttribute("aria-current", "true");
      }
      selectedEl = next;
    }
    ariaSelect(spans, i, false);
    renderTopk();
  }

  function renderTopk(): void {
    clear(topkEl);
    const i = selectedIndex();
    const kind = asStr(model.get("unit_kind"), "unit");
    if (i < 0) {
      topkEl.appendChild(h("div", "mw-topk-hint", `Click a token to list its top ${kind}s.`));
      return;
    }
    topkEl.appendChild(
      h("div", "mw-topk-title", [`Top ${kind}s at token ${i} `, h("span", "mw-tt-token", escapeToken(tokens[i]))]),
    );
    const k = topkK;
    if (!topkIdx || k <= 0 || (i + 1) * k > topkIdx.length) {
      topkEl.appendChild(h("div", "mw-topk-hint", "No top-k data for this token."));
      return;
    }
    const sel = asInt(model.get("selected_unit"), -1);
    const cache = isStatic() ? ((model.get("unit_cache") as Record<string, unknown> | null) ?? {}) : null;
    let rowMax = 0;
    for (let j = 0; j < k; j++) {
      const v = topkVal && i * k + j < topkVal.length ? Math.abs(topkVal[i * k + j]) : 0;
      if (v > rowMax && Number.isFinite(v)) rowMax = v;
    }
    const frag = document.createDocumentFragment();
    for (let j = 0; j < k; j++) {
      const u = topkIdx[i * k + j];
      const v = topkVal && i * k + j < topkVal.length ? topkVal[i * k + j] : NaN;
      const fill = h("span", "mw-topk-fill");
      fill.style.width = `${rowMax > 0 && Number.isFinite(v) ? Math.round((Math.abs(v) / rowMax) * 100) : 0}%`;
      fill.style.backgroundColor = css(v >= 0 ? POS : NEG);
      const row = h("button", "mw-topk-row", [
        h("span", "mw-topk-name", unitName(u)),
        h("span", "mw-topk-bar", [fill]),
        h("span", "mw-topk-value", fmt(v)),
      ]);
      row.type = "button";
      row.dataset.unit = String(u);
      row.title = `${unitName(u)}: ${fmt(v)} at token ${i}. Click to colour the text by this ${kind}.`;
      if (u === sel) {
        row.classList.add("mw-active");
        row.setAttribute("aria-pressed", "true");
      } else {
        row.setAttribute("aria-pressed", "false");
      }
      if (cache && u !== sel && !isWire(cache[String(u)]) && !staticOriginal.has(u)) {
        row.disabled = true;
        row.title = `${unitName(u)}: ${fmt(v)}. Not included in this static export.`;
      }
      frag.appendChild(row);
    }
    topkEl.appendChild(frag);
  }

  function selectToken(i: number): void {
    model.set("selected_token", i);
    model.save_changes();
  }

  function selectUnit(u: number): void {
    model.set("selected_unit", u);
    model.save_changes();
  }

  /** Static mode: colour by `unit` from unit_cache (no kernel to ask). */
  function applyStaticUnit(): void {
    if (!isStatic()) return;
    const u = asInt(model.get("selected_unit"), -1);
    const cache = (model.get("unit_cache") as Record<string, unknown> | null) ?? {};
    const wire = staticOriginal.has(u) ? staticOriginal.get(u) : cache[String(u)];
    if (!isWire(wire)) return;
    if (model.get("values") !== wire) model.set("values", wire);
    const label = staticOriginal.has(u) ? staticLabel : unitName(u);
    if (model.get("unit_label") !== label) model.set("unit_label", label);
  }

  if (isStatic()) staticOriginal.set(asInt(model.get("selected_unit"), -1), model.get("values"));

  // ---------------------------------------------------------------- tooltip
  function showTooltip(i: number): void {
    if (i < 0 || i >= n()) return hideTooltip();
    hoverIndex = i;
    setText(ttToken, escapeToken(tokens[i]));
    setText(ttMeta, `token ${i} · text ${textOf[i]}, position ${posOf[i]}`);
    const v = values && i < values.length ? values[i] : NaN;
    setText(ttValue, `${currentLabel()}: ${values && i < values.length ? fmt(v) : "no value"}`);
    tip.showBelow(spans[i], root, { fit: true });
  }

  function hideTooltip(): void {
    hoverIndex = -1;
    tip.hide();
  }

  function tokenIndexOf(target: EventTarget | null): number {
    if (!(target instanceof Element)) return -1;
    const span = target.closest(".mw-token");
    if (!span || !textsEl.contains(span)) return -1;
    const i = Number((span as HTMLElement).dataset.index);
    return Number.isInteger(i) ? i : -1;
  }

  // ---------------------------------------------------------------- status / errors / selectors
  function renderStatus(): void {
    const st = asStr(model.get("status"), "ready");
    const loading = pending !== null || st === "loading";
    const modelProgress = st === "loading" ? Number(model.get("progress")) || 0 : 0;
    const p = Math.min(1, Math.max(0, Math.max(localProgress, modelProgress)));
    const failed = !loading && (st === "error" || localError !== "");
    pill.set(
      loading ? "loading" : failed ? "error" : "ready",
      loading ? (p > 0 ? `loading ${Math.round(p * 100)}%` : "loading…") : failed ? "error" : isStatic() ? "static" : "ready",
    );
    bar.show(loading);
    bar.set(p);
    root.classList.toggle("mw-busy", loading);
    root.setAttribute("aria-busy", String(loading));
  }

  function renderErrors(): void {
    const msgs: string[] = [];
    if (localError) msgs.push(localError);
    const modelError = asStr(model.get("error"));
    if (modelError && modelError !== localError) msgs.push(modelError);
    for (const m of decodeErrors.values()) msgs.push(m);
    errBox.set(...msgs);
  }

  function renderSelectors(): void {
    const stat = isStatic();
    for (const s of [siteSelect, layerSelect]) {
      s.disabled = stat;
      s.title = stat ? STATIC_TITLE : s === siteSelect ? "site (recomputes with the model)" : "layer (recomputes with the model)";
    }
    if (pending) return; // keep showing what the user asked for until the reply comes
    const site = asStr(model.get("site"));
    const sites = Array.isArray(model.get("sites")) ? (model.get("sites") as unknown[]).map((s) => asStr(s)) : [];
    if (site && !sites.includes(site)) sites.unshift(site);
    setOptions(siteSelect, sites);
    siteSelect.value = site;
    const layer = asInt(model.get("layer"), 0);
    const nLayers = Math.max(asInt(model.get("n_layers"), 0), layer + 1, 1);
    const layers = Array.from({ length: nLayers }, (_, j) => String(j));
    setOptions(layerSelect, layers);
    layerSelect.value = String(layer);
  }

  async function fetchView(): Promise<void> {
    if (isStatic()) return;
    const site = siteSelect.value;
    const layer = Number(layerSelect.value);
    pending?.abort();
    const ctrl = new AbortController();
    pending = ctrl;
    localProgress = 0;
    localError = "";
    renderStatus();
    renderErrors();
    try {
      await request(model, "fetch", { site, layer }, {
        signal: ctrl.signal,
        onProgress: (done, total) => {
          if (pending !== ctrl) return;
          localProgress = total > 0 ? done / total : 0;
          renderStatus();
        },
      });
    } catch (e) {
      if (ctrl.signal.aborted) return; // superseded by a newer request, or the view was closed
      localError = `Could not load ${site}, layer ${layer}: ${errorText(e)}`;
    } finally {
      if (pending === ctrl) {
        pending = null;
        localProgress = 0;
        renderSelectors();
        renderStatus();
        renderErrors();
      }
    }
  }

  // ---------------------------------------------------------------- DOM events (delegated)
  const onTextsClick = (e: MouseEvent) => {
    const i = tokenIndexOf(e.target);
    if (i >= 0) {
      selectToken(i);
      textsEl.focus({ preventScroll: true });
    }
  };
  const onTextsOver = (e: MouseEvent) => {
    const i = tokenIndexOf(e.target);
    if (i >= 0 && i !== hoverIndex) showTooltip(i);
  };
  const onTextsOut = (e: MouseEvent) => {
    if (tokenIndexOf(e.relatedTarget) < 0) hideTooltip();
  };
  const onTextsKey = (e: KeyboardEvent) => {
    if (!n()) return;
    const cur = selectedIndex();
    const mv = listKey(e.key, cur, n());
    if (!mv) return;
    const next = mv.kind === "clear" ? -1 : mv.index;
    e.preventDefault();
    e.stopPropagation();
    if (next !== cur) selectToken(next);
    if (next >= 0) showTooltip(next);
    else hideTooltip();
  };
  const onTopkClick = (e: MouseEvent) => {
    const row = e.target instanceof Element ? (e.target.closest(".mw-topk-row") as HTMLButtonElement | null) : null;
    if (!row || row.disabled || !topkEl.contains(row)) return;
    const u = Number(row.dataset.unit);
    if (Number.isInteger(u)) selectUnit(u);
  };
  const onSelectChange = () => void fetchView();

  const { dom, listen, dispose } = listeners(model);
  dom(textsEl, "click", onTextsClick);
  dom(textsEl, "mouseover", onTextsOver);
  dom(textsEl, "mouseout", onTextsOut);
  dom(textsEl, "keydown", onTextsKey);
  dom(textsEl, "scroll", hideTooltip, { passive: true });
  dom(topkEl, "click", onTopkClick);
  dom(siteSelect, "change", onSelectChange);
  dom(layerSelect, "change", onSelectChange);

  // ---------------------------------------------------------------- model events
  listen(["texts"], buildTexts);
  listen(["values"], loadValues);
  listen(["topk_indices", "topk_values"], loadTopk);
  listen(["selected_token"], () => {
    renderSelection();
    if (hoverIndex >= 0) showTooltip(hoverIndex);
  });
  listen(["selected_unit"], () => {
    applyStaticUnit();
    renderLabel();
    renderTopk();
  });
  listen(["unit_label", "unit_kind", "n_units"], () => {
    renderLabel();
    renderTopk();
    if (hoverIndex >= 0) showTooltip(hoverIndex);
  });
  listen(["site", "layer", "sites", "n_layers"], () => {
    renderSelectors();
    renderLabel();
  });
  listen(["status", "progress"], renderStatus);
  listen(["error"], () => {
    renderErrors();
    renderStatus();
  });
  listen(["static"], () => {
    renderSelectors();
    renderStatus();
    renderTopk();
  });
  listen(["unit_cache"], renderTopk);

  // ---------------------------------------------------------------- first paint
  values = decodeTrait("values");
  vmax = values ? maxAbs(values) : 0;
  buildTexts();
  loadTopk();
  renderLabel();
  renderSelectors();
  renderStatus();
  renderErrors();

  return () => {
    pending?.abort();
    pending = null;
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
