/**
 * TokenActivations view (docs/widget_protocol.md, "TokenActivations").
 *
 * Texts are laid out as blocks of up to BLOCK tokens. Views of up to EAGER_TOKENS tokens render
 * every block at once; longer ones render only the blocks in and near the scrolled viewport
 * (the others are empty placeholders sized by estimate, or by their measured height once
 * seen), so the first paint of a 10,000-token text costs a few hundred spans. A `values`
 * change recolours the rendered spans. All pointer/keyboard handling is delegated to a few
 * listeners on containers; a token reached by keyboard or selected from Python is rendered and
 * scrolled into view first.
 */

import { css, fmt, legend, maxAbs, paletteOf, textColour } from "./lib/colour";
import { CODE_CSS, codePanel } from "./lib/code_panel";
import { clear, displayToken, escapeToken, h, setOptions, setText, style } from "./lib/dom";
import { listKey } from "./lib/keyboard";
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

/** Tokens per block: the unit the view renders, or leaves as a sized placeholder. */
export const BLOCK = 128;
/** Views with at most this many tokens render every block at once (no virtualisation). */
export const EAGER_TOKENS = 1500;
/** Tokens rendered before the view has a size (not yet attached, hidden, or no layout). */
export const INITIAL_TOKENS = 384;

/** A run of consecutive tokens of one text: flat indices `[start, end)`. */
export interface Block {
  text: number;
  start: number;
  end: number;
}

/** Cut texts of `lengths` tokens into blocks of at most `size` tokens (none spans two texts). */
export function chunkTexts(lengths: number[], size: number = BLOCK): Block[] {
  const step = Math.max(1, Math.floor(size));
  const out: Block[] = [];
  let flat = 0;
  lengths.forEach((len, t) => {
    for (let p = 0; p < len; p += step) out.push({ text: t, start: flat + p, end: flat + Math.min(len, p + step) });
    flat += len;
  });
  return out;
}

/** Index of the block holding flat token `i` (binary search), or -1. */
export function blockOf(blocks: Block[], i: number): number {
  let lo = 0;
  let hi = blocks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (i < blocks[mid].start) hi = mid - 1;
    else if (i >= blocks[mid].end) lo = mid + 1;
    else return mid;
  }
  return -1;
}

/**
 * The blocks to render first, before any layout: all of them for a view of at most `eager`
 * tokens, else the leading blocks up to `initial` tokens plus the block of `selected`.
 */
export function initialBlocks(blocks: Block[], selected: number, eager = EAGER_TOKENS, initial = INITIAL_TOKENS): number[] {
  const total = blocks.length ? blocks[blocks.length - 1].end : 0;
  if (total <= eager) return blocks.map((_, b) => b);
  const out: number[] = [];
  for (let b = 0; b < blocks.length && (b === 0 || blocks[b].end <= initial); b++) out.push(b);
  const s = blockOf(blocks, selected);
  if (s >= 0 && !out.includes(s)) out.push(s);
  return out;
}

/**
 * Estimated height (px) of a block of tokens whose widths in characters are `chars` (each token
 * plus its padding) with `breaks` forced line breaks, in a column of `width` px.
 */
export function estimateHeight(chars: number, breaks: number, width: number, charPx = 7.6, linePx = 24): number {
  const perLine = Math.max(8, Math.floor((width > 0 ? width : 640) / charPx));
  return (Math.ceil(chars / perLine) + breaks) * linePx;
}

/**
 * Which blocks are in or near the viewport: `[first, last]` of the blocks whose box
 * (`top`, `bottom` of block `k`, in document order, so both grow with `k`) meets
 * `[lo, hi]`; `null` when none does. Reads `O(log n + visible)` boxes.
 */
export function visibleRange(
  n: number,
  box: (k: number) => { top: number; bottom: number },
  lo: number,
  hi: number,
): [number, number] | null {
  let a = 0;
  let b = n;
  while (a < b) {
    const mid = (a + b) >> 1;
    if (box(mid).bottom < lo) a = mid + 1;
    else b = mid;
  }
  if (a >= n || box(a).top > hi) return null;
  let last = a;
  while (last + 1 < n && box(last + 1).top <= hi) last++;
  return [a, last];
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const unitLabel = h("span", "mw-unit-label");
  const siteSelect = h("select", "mw-site");
  siteSelect.setAttribute("aria-label", "site");
  const layerSelect = h("select", "mw-layer");
  layerSelect.setAttribute("aria-label", "layer");
  const pal = () => paletteOf(model.get("palette"));
  const colourLegend = legend("diverging", pal);
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
  const noteEl = h("div", "mw-static-note");
  noteEl.hidden = true;
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
    noteEl,
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
  /** the span of each rendered token (undefined while its block is a placeholder) */
  let spans: (HTMLElement | undefined)[] = [];
  let textOf = new Int32Array(0);
  let posOf = new Int32Array(0);
  let nTexts = 0;
  let blocks: Block[] = [];
  let blockEls: HTMLElement[] = [];
  /** per block: summed token widths (characters + padding) and forced line breaks, for estimates */
  let blockChars = new Float64Array(0);
  let blockBreaks = new Int32Array(0);
  /** per block: its height when last rendered (NaN: never seen at this width) */
  let measured = new Float64Array(0);
  /** rendered blocks */
  const live = new Set<number>();
  let virtual = false;
  /** measured / estimated height of the blocks rendered so far (calibrates the placeholders) */
  let heightScale = 1;
  let frame = 0;
  let passes = 0;
  let revealedAt = -Infinity;
  let lastWidth = 0;
  const colourCache = new Map<string, [string, string]>();
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
  const n = () => tokens.length;

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
    live.clear();
    colourCache.clear();
    nTexts = texts.length;
    const total = texts.reduce((a, t) => a + t.length, 0);
    tokens = new Array<string>(total);
    spans = new Array<HTMLElement | undefined>(total);
    textOf = new Int32Array(total);
    posOf = new Int32Array(total);
    let i = 0;
    texts.forEach((text, t) => {
      for (let p = 0; p < text.length; p++, i++) {
        tokens[i] = text[p];
        textOf[i] = t;
        posOf[i] = p;
      }
    });
    blocks = chunkTexts(texts.map((t) => t.length));
    virtual = total > EAGER_TOKENS;
    blockEls = new Array<HTMLElement>(blocks.length);
    blockChars = new Float64Array(blocks.length);
    blockBreaks = new Int32Array(blocks.length);
    measured = new Float64Array(blocks.length).fill(NaN);
    heightScale = 1;
    lastWidth = textsEl.clientWidth;
    const width = lastWidth;
    const frag = document.createDocumentFragment();
    let b = 0;
    texts.forEach((_, t) => {
      const line = h("div", "mw-text");
      line.dataset.text = String(t);
      if (texts.length > 1) line.appendChild(h("span", "mw-text-label", `#${t}`));
      for (; b < blocks.length && blocks[b].text === t; b++) {
        const blk = blocks[b];
        let chars = 0;
        let breaks = 0;
        for (let j = blk.start; j < blk.end; j++) {
          const tok = tokens[j];
          chars += tok.length + 1.5;
          for (let c = tok.indexOf("\n"); c >= 0; c = tok.indexOf("\n", c + 1)) breaks++;
        }
        blockChars[b] = chars;
        blockBreaks[b] = breaks;
        const be = h("span", "mw-block mw-pending");
        be.dataset.block = String(b);
        be.style.height = `${placeholderHeight(b, width)}px`;
        blockEls[b] = be;
        line.appendChild(be);
      }
      frag.appendChild(line);
    });
    for (const k of initialBlocks(blocks, asInt(model.get("selected_token"), -1))) renderBlock(k);
    textsEl.appendChild(frag);
    colourLegend.update(vmax);
    renderSelection();
    passes = 0;
    // the first frame shows the initial blocks; the viewport's neighbours come in the next one
    if (virtual && typeof requestAnimationFrame === "function") {
      if (frame && typeof cancelAnimationFrame === "function") cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => {
        frame = 0;
        schedule();
      });
    }
  }

  /** `width`: the texts' inner width (read once by the caller: reading it after a write costs a layout) */
  function placeholderHeight(b: number, width: number): number {
    const m = measured[b];
    if (Number.isFinite(m) && m > 0) return m;
    return Math.max(12, Math.round(estimateHeight(blockChars[b], blockBreaks[b], width - 16) * heightScale));
  }

  /** Put block `b`'s token spans in place of its placeholder, coloured and marked. */
  function renderBlock(b: number): void {
    if (live.has(b) || b < 0 || b >= blocks.length) return;
    const blk = blocks[b];
    const be = blockEls[b];
    const frag = document.createDocumentFragment();
    const sel = selectedIndex();
    const total = String(tokens.length);
    for (let i = blk.start; i < blk.end; i++) {
      const tok = tokens[i];
      const span = h("span", "mw-token");
      span.dataset.index = String(i);
      span.setAttribute("role", "option");
      span.setAttribute("aria-selected", String(i === sel));
      span.setAttribute("aria-setsize", total);
      span.setAttribute("aria-posinset", String(i + 1));
      span.setAttribute("aria-label", `${nTexts > 1 ? `text ${textOf[i]}, ` : ""}position ${posOf[i]}: "${tok}"`);
      const breaks = fillToken(span, tok);
      frag.appendChild(span);
      for (let k = 0; k < breaks; k++) frag.appendChild(document.createElement("br"));
      spans[i] = span;
      paint(i);
    }
    be.classList.remove("mw-pending");
    be.style.height = "";
    be.appendChild(frag);
    live.add(b);
    if (sel >= blk.start && sel < blk.end) markSelected(spans[sel] ?? null);
  }

  /** Put a placeholder of the block's height (measured by the caller) back in place of its spans. */
  function unrenderBlock(b: number, width: number): void {
    if (!live.has(b)) return;
    const blk = blocks[b];
    const be = blockEls[b];
    if (hoverIndex >= blk.start && hoverIndex < blk.end) hideTooltip();
    if (selectedEl && be.contains(selectedEl)) selectedEl = null;
    for (let i = blk.start; i < blk.end; i++) spans[i] = undefined;
    clear(be);
    live.delete(b);
    be.classList.add("mw-pending");
    be.style.height = `${placeholderHeight(b, width)}px`;
  }

  function schedule(): void {
    if (!frame && virtual && typeof requestAnimationFrame === "function") frame = requestAnimationFrame(update);
  }

  /** Render the blocks in and near the viewport (half a screen above and below); drop far ones.
   * Reads (boxes) and writes (DOM) are batched: each read after a write costs a layout. */
  function update(): void {
    frame = 0;
    const viewH = textsEl.clientHeight;
    if (!virtual || !viewH || !blocks.length) return; // no layout yet: the initial blocks stay
    const width = textsEl.clientWidth;
    if (width !== lastWidth) {
      lastWidth = width; // text re-wraps: heights measured at the old width no longer hold
      measured.fill(NaN);
      for (let b = 0; b < blocks.length; b++) if (!live.has(b)) blockEls[b].style.height = `${placeholderHeight(b, width)}px`;
    }
    const rect = textsEl.getBoundingClientRect();
    const range = visibleRange(blocks.length, (k) => blockEls[k].getBoundingClientRect(), rect.top - viewH / 2, rect.bottom + viewH / 2);
    if (!range) return;
    const drop = Array.from(live).filter((k) => k < range[0] - 2 || k > range[1] + 2);
    for (const k of drop) {
      const hgt = blockEls[k].getBoundingClientRect().height;
      if (hgt > 0) measured[k] = hgt;
    }
    let added = 0;
    for (let k = range[0]; k <= range[1]; k++) {
      if (!live.has(k)) {
        renderBlock(k);
        added++;
      }
    }
    if (added) calibrate(width);
    for (const k of drop) unrenderBlock(k, width);
    // the new blocks' real heights differ from their estimates: look again once laid out
    if (added && ++passes < 6) schedule();
  }

  /** Scale the estimates of never-seen blocks by how far off they were for the rendered ones. */
  function calibrate(width: number): void {
    let real = 0;
    let est = 0;
    for (const k of live) {
      const hgt = blockEls[k].getBoundingClientRect().height;
      if (hgt > 0) {
        real += hgt;
        est += estimateHeight(blockChars[k], blockBreaks[k], width - 16);
      }
    }
    if (!(real > 0 && est > 0)) return;
    const next = real / est;
    if (Math.abs(next - heightScale) / heightScale < 0.1) return;
    heightScale = next;
    for (let b = 0; b < blocks.length; b++) {
      if (!live.has(b) && !Number.isFinite(measured[b])) blockEls[b].style.height = `${placeholderHeight(b, width)}px`;
    }
  }

  /** Render token `i` if needed and scroll the texts (only them) so that it is in view. */
  function reveal(i: number): HTMLElement | undefined {
    if (i < 0 || i >= n()) return undefined;
    if (!spans[i]) renderBlock(blockOf(blocks, i));
    const span = spans[i];
    if (span && textsEl.clientHeight) {
      const c = textsEl.getBoundingClientRect();
      const r = span.getBoundingClientRect();
      let dy = 0;
      if (r.top < c.top) dy = r.top - c.top - 8;
      else if (r.bottom > c.bottom) dy = r.bottom - c.bottom + 8;
      if (dy) {
        revealedAt = performance.now();
        textsEl.scrollTop += dy;
        passes = 0;
        schedule();
      }
    }
    return span;
  }

  // ---------------------------------------------------------------- colours
  function paint(i: number): void {
    const span = spans[i];
    if (!span) return;
    const v = values;
    const x = v && i < v.length ? v[i] : NaN;
    const rgb = pal().divergingRGB(x, vmax);
    const key = rgb.join(",");
    let c = colourCache.get(key);
    if (!c) colourCache.set(key, (c = [css(rgb), textColour(rgb)]));
    const st = span.style;
    if (st.backgroundColor !== c[0]) st.backgroundColor = c[0];
    if (st.color !== c[1]) st.color = c[1];
  }

  function recolour(): void {
    colourCache.clear();
    for (const b of live) for (let i = blocks[b].start; i < blocks[b].end; i++) paint(i);
    colourLegend.update(vmax);
  }

  function loadValues(): void {
    values = decodeTrait("values");
    vmax = values ? maxAbs(values) : 0;
    recolour();
    if (hoverIndex >= 0) showTooltip(hoverIndex);
    renderErrors();
  }

  // the top-k arrays (N x k) are decoded when a token is first selected, not for the first paint
  let topkStale = true;
  function ensureTopk(): void {
    if (!topkStale) return;
    topkStale = false;
    topkIdx = decodeTrait("topk_indices");
    topkVal = decodeTrait("topk_values");
    if (decodeErrors.size) renderErrors();
  }

  function loadTopk(): void {
    topkStale = true;
    topkIdx = topkVal = null;
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

  function markSelected(next: HTMLElement | null): void {
    if (selectedEl === next) return;
    if (selectedEl) {
      selectedEl.classList.remove("mw-selected");
      selectedEl.removeAttribute("aria-current");
      selectedEl.setAttribute("aria-selected", "false");
    }
    if (next) {
      next.classList.add("mw-selected");
      next.setAttribute("aria-current", "true");
      next.setAttribute("aria-selected", "true");
    }
    selectedEl = next;
  }

  function renderSelection(): void {
    const i = selectedIndex();
    markSelected(i >= 0 ? (reveal(i) ?? null) : null);
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
    ensureTopk();
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
      fill.style.backgroundColor = css(pal().divergingRGB(v >= 0 ? 1 : -1, 1));
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
    const span = spans[i] ?? reveal(i);
    if (span) tip.showBelow(span, root, { fit: true });
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

  const { dom, listen, recolour: onPalette, dispose } = listeners(model);
  onPalette(root, () => {
    recolour();
    renderTopk();
  });
  dom(textsEl, "click", onTextsClick);
  dom(textsEl, "mouseover", onTextsOver);
  dom(textsEl, "mouseout", onTextsOut);
  dom(textsEl, "keydown", onTextsKey);
  dom(
    textsEl,
    "scroll",
    () => {
      if (performance.now() - revealedAt > 200) hideTooltip(); // not when the view scrolled to a token itself
      passes = 0;
      schedule();
    },
    { passive: true },
  );
  const resize = typeof ResizeObserver === "function" ? new ResizeObserver(() => schedule()) : null;
  resize?.observe(textsEl);
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
  listen(["static_note"], renderNote);

  function renderNote(): void {
    const note = asStr(model.get("static_note"));
    setText(noteEl, note);
    noteEl.hidden = note === "";
  }

  // ---------------------------------------------------------------- first paint
  values = decodeTrait("values");
  vmax = values ? maxAbs(values) : 0;
  buildTexts();
  loadTopk();
  renderNote();
  renderLabel();
  renderSelectors();
  renderStatus();
  renderErrors();

  return () => {
    pending?.abort();
    pending = null;
    if (frame && typeof cancelAnimationFrame === "function") cancelAnimationFrame(frame);
    frame = 0;
    resize?.disconnect();
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
