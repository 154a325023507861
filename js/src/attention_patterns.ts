/**
 * AttentionPatterns view (docs/widget_protocol.md, "AttentionPatterns").
 *
 * First paint: every head as a small canvas thumbnail (uint8, block-max pooled) in a grid that
 * the score selector reorders. Clicking a head sets `selected_head`; its full pattern is then
 * fetched with the "head" request (uint8 + scale; static mode: `head_cache`) and drawn on a
 * canvas with token labels on both axes. Hovering a token (text strip, axis label or canvas row)
 * shades the others by the attention it pays them (blue background) and the attention they pay
 * it (orange underline). Token text only ever goes in through textContent.
 */

import { CSS } from "./lib/attention_patterns.css";
import { css, fmt, paletteOf, textColour, WHITE, type Palette } from "./lib/colour";
import { clear, closest, control, displayToken, escapeToken, fillToken, h, setOptions, setText } from "./lib/dom";
import { frame } from "./lib/frame";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { errorBox, errorText, statusPill } from "./lib/status";
import { textTooltip } from "./lib/tooltip";
import { decode, isWire, type WireArray } from "./lib/wire";

const SORTS: [string, string][] = [
  ["layer", "layer order"],
  ["previous_token", "previous-token score"],
  ["duplicate_token", "duplicate-token score"],
  ["induction", "induction score"],
  ["bos", "BOS score"],
];
const CACHE_HEADS = 16;

function asInt(x: unknown, fallback: number): number {
  const n = typeof x === "number" ? x : Number(x);
  return Number.isFinite(n) ? Math.trunc(n) : fallback;
}

function asStr(x: unknown, fallback = ""): string {
  return x == null ? fallback : String(x);
}

/** Parse "L.H" → [L, H] (null for anything else). */
export function parseHead(s: unknown): [number, number] | null {
  const m = /^(\d+)\.(\d+)$/.exec(asStr(s));
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/**
 * Head indices (layer-major) in display order: layer order, or `scores` descending with NaN
 * last and ties in layer order (the same order as AttentionPatterns.sorted_heads in Python).
 */
export function headOrder(n: number, scores: ArrayLike<number> | null): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  if (!scores) return idx;
  const key = (i: number) => {
    const v = i < scores.length ? scores[i] : NaN;
    return Number.isNaN(v) ? Infinity : -v;
  };
  return idx.sort((a, b) => key(a) - key(b) || a - b);
}

/** The palette's sequential scale from white (attention 0) to its end (1), as 256 RGB triples. */
function scaleTable(pal: Palette): Uint8ClampedArray {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) lut.set(pal.sequentialRGB(i / 255, 1, WHITE), i * 3);
  return lut;
}

/** RGBA pixels of a [rows, cols] block of attention values, coloured through `lut`. */
function paint(data: ArrayLike<number>, offset: number, rows: number, cols: number, img: ImageData, lut: Uint8ClampedArray): void {
  const px = img.data;
  for (let i = 0; i < rows * cols; i++) {
    const t = data[offset + i];
    const o = i * 4;
    const j = 3 * Math.round(255 * (t > 0 ? (t < 1 ? t : 1) : 0));
    px[o] = lut[j];
    px[o + 1] = lut[j + 1];
    px[o + 2] = lut[j + 2];
    px[o + 3] = 255;
  }
}

function draw(canvas: HTMLCanvasElement, data: ArrayLike<number>, offset: number, rows: number, cols: number, lut: Uint8ClampedArray): void {
  canvas.width = cols;
  canvas.height = rows;
  let ctx: CanvasRenderingContext2D | null = null;
  try {
    ctx = canvas.getContext("2d");
  } catch {
    ctx = null; // no canvas (e.g. a DOM without one): the labels and scores still work
  }
  if (!ctx || typeof ctx.createImageData !== "function") return;
  const img = ctx.createImageData(cols, rows);
  paint(data, offset, rows, cols, img, lut);
  ctx.putImageData(img, 0, 0);
}

interface HeadView {
  el: HTMLButtonElement;
  canvas: HTMLCanvasElement;
  score: HTMLElement;
}

interface Pattern {
  key: string;
  t: number;
  data: Float32Array | Int32Array;
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title");
  const sortSelect = control("select", "mw-sort", "sort heads by");
  setOptions(sortSelect, SORTS.map((s) => s[0]), SORTS.map((s) => s[1]));
  const scoreNote = h("span", "mw-score-note");
  const pill = statusPill();
  const header = h("div", "mw-header", [title, h("label", "mw-control", ["sort", sortSelect]), scoreNote, pill.el]);
  const errBox = errorBox();
  const headsEl = h("div", "mw-heads");
  headsEl.setAttribute("aria-label", "attention heads; click one to see its full pattern");
  const detailTitle = h("div", "mw-detail-title");
  const detailNote = h("div", "mw-note");
  const keyLabels = h("div", "mw-key-labels");
  const queryLabels = h("div", "mw-query-labels");
  const canvas = h("canvas", "mw-pattern-canvas");
  const rowHl = h("div", "mw-hl");
  const colHl = h("div", "mw-hl");
  rowHl.hidden = colHl.hidden = true;
  const canvasWrap = h("div", "mw-canvas-wrap", [canvas, rowHl, colHl]);
  const patternEl = h("div", "mw-pattern", [h("div"), keyLabels, queryLabels, canvasWrap]);
  patternEl.setAttribute("aria-label", "full attention pattern: rows are queries, columns are keys");
  const stripEl = h("div", "mw-strip");
  stripEl.setAttribute("aria-label", "tokens; hover one to see its attention to and from the others");
  const fromSwatch = h("span", "mw-swatch");
  const toSwatch = h("span", "mw-swatch");
  const legendEl = h("div", "mw-legend", [
    h("span", null, [fromSwatch, "attention from the hovered token"]),
    h("span", null, [toSwatch, "attention to the hovered token"]),
  ]);
  const detailEl = h("div", "mw-detail", [detailTitle, detailNote, patternEl, legendEl, stripEl]);
  const [tip, ttLabel, ttValue] = textTooltip();
  const { root, code } = frame(model, el, "mw-attention-patterns", CSS, header, [header, errBox.el, headsEl, detailEl, tip.el]);
  // the view's palette: its sequential scale shades attention, its positive edge colour underlines
  const pal = () => paletteOf(model.get("palette"));
  function paintLegend(): void {
    const p = pal();
    fromSwatch.style.background = css(p.sequentialRGB(1, 1));
    toSwatch.style.boxShadow = `inset 0 -3px 0 ${css(p.edges[1])}`;
    legendEl.dataset.palette = p.name;
  }

  // ---------------------------------------------------------------- state
  let tokens: string[] = [];
  let spans: HTMLElement[] = [];
  let qLabels: (HTMLElement | null)[] = [];
  let kLabels: (HTMLElement | null)[] = [];
  let heads: HeadView[] = [];
  let current: Pattern | null = null;
  let cell = 1;
  let hovered = -1;
  let pending: AbortController | null = null;
  let loadingKey = "";
  let localError = "";
  const cache = new Map<string, Pattern>();
  const isStatic = () => model.get("static") === true;
  const nLayers = () => Math.max(0, asInt(model.get("n_layers"), 0));
  const nHeads = () => Math.max(0, asInt(model.get("n_heads"), 0));

  function decodeWire(raw: unknown): Float32Array | Int32Array | null {
    if (!isWire(raw)) return null;
    try {
      return decode(raw).data;
    } catch (e) {
      localError = errorText(e);
      return null;
    }
  }

  function scoresFor(kind: string): ArrayLike<number> | null {
    if (kind === "layer") return null;
    const all = model.get("scores") as Record<string, unknown> | null;
    return all ? decodeWire(all[kind]) : null;
  }

  // ---------------------------------------------------------------- thumbnails
  function buildHeads(): void {
    clear(headsEl);
    const L = nLayers();
    const H = nHeads();
    heads = [];
    for (let layer = 0; layer < L; layer++) {
      for (let head = 0; head < H; head++) {
        const c = h("canvas", "mw-thumb");
        const score = h("span", "mw-head-score");
        const btn = h("button", "mw-head", [c, h("span", "mw-head-label", `${layer}.${head}`), score]);
        btn.type = "button";
        btn.dataset.layer = String(layer);
        btn.dataset.head = String(head);
        btn.title = `head ${layer}.${head}: click for its full pattern`;
        heads.push({ el: btn, canvas: c, score });
      }
    }
    paintThumbs();
    applySort();
    renderSelection();
  }

  /** Draw every head's thumbnail (layer-major, as `heads`) in the view's palette. */
  function paintThumbs(): void {
    const thumbs = model.get("thumbs") as WireArray | null;
    const data = decodeWire(thumbs);
    const shape = thumbs && Array.isArray(thumbs.shape) ? thumbs.shape.map(Number) : [];
    const s = shape.length === 3 ? shape[1] : 0;
    const lut = scaleTable(pal());
    heads.forEach((hv, i) => {
      if (data && s > 0 && (i + 1) * s * s <= data.length) draw(hv.canvas, data, i * s * s, s, s, lut);
    });
  }

  function applySort(): void {
    const kind = asStr(model.get("sort_by"), "layer");
    if (sortSelect.value !== kind) sortSelect.value = kind;
    const scores = scoresFor(kind);
    const label = SORTS.find(([k]) => k === kind)?.[1] ?? kind;
    heads.forEach((hv, i) => {
      const v = scores && i < scores.length ? scores[i] : NaN;
      setText(hv.score, scores ? (Number.isNaN(v) ? "n/a" : v.toFixed(3)) : "");
      hv.el.title = `head ${hv.el.dataset.layer}.${hv.el.dataset.head}` + (scores ? `, ${label} ${Number.isNaN(v) ? "n/a" : fmt(v)}` : "");
    });
    const order = headOrder(heads.length, scores);
    const frag = document.createDocumentFragment();
    order.forEach((i, rank) => {
      heads[i].el.dataset.rank = String(rank);
      frag.appendChild(heads[i].el);
    });
    headsEl.appendChild(frag);
  }

  function selectHead(layer: number, head: number): void {
    model.set("selected_head", `${layer}.${head}`);
    model.save_changes();
  }

  // ---------------------------------------------------------------- selection + full pattern
  function renderSelection(): void {
    const sel = asStr(model.get("selected_head"));
    for (const hv of heads) {
      const on = `${hv.el.dataset.layer}.${hv.el.dataset.head}` === sel;
      hv.el.classList.toggle("mw-selected", on);
      hv.el.setAttribute("aria-pressed", String(on));
    }
    void loadDetail();
  }

  async function loadDetail(): Promise<void> {
    const sel = asStr(model.get("selected_head"));
    const lh = parseHead(sel);
    if (!lh || lh[0] >= nLayers() || lh[1] >= nHeads()) {
      pending?.abort();
      pending = null;
      showPattern(null, "Click a head to see its full pattern.");
      return;
    }
    if (current && current.key === sel) return;
    const hit = cache.get(sel);
    if (hit) {
      showPattern(hit);
      return;
    }
    if (isStatic()) {
      const hc = (model.get("head_cache") as Record<string, unknown> | null) ?? {};
      const data = decodeWire(hc[sel]);
      if (!data) {
        showPattern(null, `Head ${sel}'s full pattern is not in this static export (only the selected head's is).`);
        return;
      }
      showPattern(remember(sel, data));
      return;
    }
    if (loadingKey === sel) return;
    pending?.abort();
    const ctrl = new AbortController();
    pending = ctrl;
    loadingKey = sel;
    localError = "";
    renderStatus();
    try {
      const { response, buffers } = await request<{ pattern: WireArray }>(
        model, "head", { layer: lh[0], head: lh[1] }, { signal: ctrl.signal },
      );
      const data = decode({ ...response.pattern, buffer: buffers[0] }).data;
      if (pending !== ctrl) return;
      const p = remember(sel, data);
      if (asStr(model.get("selected_head")) === sel) showPattern(p);
    } catch (e) {
      if (ctrl.signal.aborted) return;
      localError = `Could not load head ${sel}: ${errorText(e)}`;
    } finally {
      if (pending === ctrl) {
        pending = null;
        loadingKey = "";
        renderStatus();
      }
    }
  }

  function remember(key: string, data: Float32Array | Int32Array): Pattern {
    const t = Math.round(Math.sqrt(data.length));
    const p = { key, t, data };
    cache.set(key, p);
    if (cache.size > CACHE_HEADS) cache.delete(cache.keys().next().value as string);
    return p;
  }

  function showPattern(p: Pattern | null, note = ""): void {
    current = p;
    setHover(-1);
    hideTooltip();
    clear(keyLabels);
    clear(queryLabels);
    qLabels = [];
    kLabels = [];
    patternEl.hidden = legendEl.hidden = p === null;
    setText(detailNote, note);
    detailNote.hidden = note === "";
    if (!p) {
      setText(detailTitle, "");
      renderStatus();
      return;
    }
    const T = p.t;
    setText(detailTitle, `head ${p.key}: rows are queries (attending), columns are keys (attended to)`);
    cell = Math.max(1, Math.min(20, Math.floor(560 / Math.max(1, T))));
    draw(canvas, p.data, 0, T, T, scaleTable(pal()));
    canvas.style.width = canvas.style.height = `${T * cell}px`;
    // label every `stride`-th token so that labels never get smaller than ~9px
    const stride = Math.max(1, Math.ceil(9 / cell));
    const font = Math.max(8, Math.min(12, cell * stride - 2));
    keyLabels.style.height = "90px";
    keyLabels.style.width = `${T * cell}px`;
    queryLabels.style.width = "112px";
    queryLabels.style.height = `${T * cell}px`;
    qLabels = new Array(T).fill(null);
    kLabels = new Array(T).fill(null);
    const kf = document.createDocumentFragment();
    const qf = document.createDocumentFragment();
    for (let j = 0; j < T; j += stride) {
      const tok = j < tokens.length ? tokens[j] : "";
      for (const [cls, frag, arr] of [
        ["mw-key-label", kf, kLabels],
        ["mw-query-label", qf, qLabels],
      ] as const) {
        const lab = h("span", cls, displayToken(tok.replace(/\n/g, "↵")));
        lab.dataset.pos = String(j);
        lab.title = `${j}: ${escapeToken(tok)}`;
        lab.style.fontSize = `${font}px`;
        if (cls === "mw-key-label") {
          lab.style.left = `${j * cell}px`;
          lab.style.width = `${cell * stride}px`;
          lab.style.lineHeight = `${cell * stride}px`;
        } else {
          lab.style.top = `${j * cell}px`;
          lab.style.height = `${cell * stride}px`;
          lab.style.lineHeight = `${cell * stride}px`;
        }
        frag.appendChild(lab);
        arr[j] = lab;
      }
    }
    keyLabels.appendChild(kf);
    queryLabels.appendChild(qf);
    renderStatus();
  }

  // ---------------------------------------------------------------- text strip + hover
  function buildStrip(): void {
    const raw = model.get("tokens");
    tokens = Array.isArray(raw) ? raw.map((t) => asStr(t)) : [];
    clear(stripEl);
    spans = [];
    const frag = document.createDocumentFragment();
    tokens.forEach((tok, i) => {
      const span = h("span", "mw-token");
      span.dataset.pos = String(i);
      fillToken(span, tok);
      frag.appendChild(span);
      spans.push(span);
    });
    stripEl.appendChild(frag);
    setHover(-1);
    renderLinked();
  }

  /** Shade every token by its attention from / to token `i` in the current head (-1: clear). */
  /** The token marked by `selected_position` (set from Python or by mw.link): -1 for none. */
  function linkedPos(): number {
    const v = Number(model.get("selected_position"));
    return Number.isInteger(v) && v >= 0 && v < tokens.length ? v : -1;
  }

  function renderLinked(): void {
    const lp = linkedPos();
    spans.forEach((s, j) => s.classList.toggle("mw-linked", j === lp));
  }

  function setHover(i: number): void {
    if (i < 0) i = linkedPos(); // with no hover, show the linked token's attention
    const p = current;
    if (i >= 0 && (!p || i >= p.t)) i = -1;
    if (hovered >= 0) {
      qLabels[hovered]?.classList.remove("mw-hot");
      kLabels[hovered]?.classList.remove("mw-hot");
    }
    hovered = i;
    const pl = pal();
    for (let j = 0; j < spans.length; j++) {
      const s = spans[j];
      if (i < 0 || !p || j >= p.t) {
        if (s.dataset.from !== undefined) {
          delete s.dataset.from;
          delete s.dataset.to;
          s.style.background = "";
          s.style.boxShadow = "";
          s.style.color = "";
        }
        s.classList.remove("mw-hovered");
        continue;
      }
      const from = p.data[i * p.t + j];
      const to = p.data[j * p.t + i];
      s.dataset.from = from.toFixed(3);
      s.dataset.to = to.toFixed(3);
      const a = Math.max(0, Math.min(1, from));
      const bg = pl.sequentialRGB(a, 1);
      s.style.background = a > 0.004 ? css(bg) : "";
      s.style.color = a > 0.004 ? textColour(bg) : "";
      const b = Math.max(0, Math.min(1, to));
      s.style.boxShadow = b > 0.004 ? `inset 0 -3px 0 rgba(${pl.edges[1].join(",")},${b.toFixed(3)})` : "";
      s.classList.toggle("mw-hovered", j === i);
    }
    if (i >= 0 && p) {
      qLabels[i]?.classList.add("mw-hot");
      kLabels[i]?.classList.add("mw-hot");
      rowHl.hidden = colHl.hidden = false;
      const size = `${p.t * cell}px`;
      Object.assign(rowHl.style, { left: "0px", top: `${i * cell}px`, width: size, height: `${cell}px` });
      Object.assign(colHl.style, { left: `${i * cell}px`, top: "0px", width: `${cell}px`, height: size });
    } else {
      rowHl.hidden = colHl.hidden = true;
    }
  }

  function showTooltip(q: number, k: number, x: number, y: number): void {
    const p = current;
    if (!p) return;
    const tq = q < tokens.length ? tokens[q] : "";
    const tk = k < tokens.length ? tokens[k] : "";
    setText(ttLabel, `${q} ${escapeToken(tq)} → ${k} ${escapeToken(tk)}`);
    setText(ttValue, `attention ${fmt(p.data[q * p.t + k])}`);
    tip.showAt(x, y, root);
  }

  function hideTooltip(): void {
    tip.hide();
  }

  function posOf(target: EventTarget | null, selector: string, within: HTMLElement): number {
    if (!(target instanceof Element)) return -1;
    const e = target.closest(selector);
    if (!e || !within.contains(e)) return -1;
    const i = Number((e as HTMLElement).dataset.pos);
    return Number.isInteger(i) ? i : -1;
  }

  // ---------------------------------------------------------------- status
  function renderStatus(): void {
    const loading = pending !== null;
    const err = localError || asStr(model.get("error"));
    pill.set(loading ? "loading" : err ? "error" : "ready", loading ? `loading head ${loadingKey}…` : err ? "error" : isStatic() ? "static" : "ready");
    errBox.set(err);
    root.setAttribute("aria-busy", String(loading));
  }

  function renderHeader(): void {
    const L = nLayers();
    const H = nHeads();
    setText(title, `${asStr(model.get("model_name"), "model")} · ${L}×${H} heads · ${tokens.length} tokens`);
    setText(scoreNote, asStr(model.get("score_note")));
  }

  // ---------------------------------------------------------------- DOM events
  const onHeadsClick = (e: MouseEvent) => {
    const btn = closest(e.target, ".mw-head");
    if (!btn || !headsEl.contains(btn)) return;
    selectHead(Number(btn.dataset.layer), Number(btn.dataset.head));
  };
  const onSort = () => {
    model.set("sort_by", sortSelect.value);
    model.save_changes();
    applySort();
  };
  const onStripOver = (e: MouseEvent) => {
    const i = posOf(e.target, ".mw-token", stripEl);
    if (i >= 0 && i !== hovered) setHover(i);
  };
  const onStripOut = (e: MouseEvent) => {
    if (posOf(e.relatedTarget, ".mw-token", stripEl) < 0) setHover(-1);
  };
  const onLabelOver = (e: MouseEvent) => {
    const i = Math.max(posOf(e.target, ".mw-query-label", queryLabels), posOf(e.target, ".mw-key-label", keyLabels));
    if (i >= 0 && i !== hovered) setHover(i);
  };
  const onCanvasMove = (e: MouseEvent) => {
    const p = current;
    if (!p) return;
    const r = canvas.getBoundingClientRect();
    const scale = r.width > 0 ? r.width / p.t : cell;
    const k = Math.floor((e.clientX - r.left) / scale);
    const q = Math.floor((e.clientY - r.top) / scale);
    if (q < 0 || k < 0 || q >= p.t || k >= p.t) return hideTooltip();
    if (q !== hovered) setHover(q);
    showTooltip(q, k, e.clientX, e.clientY);
  };
  const onCanvasLeave = () => {
    hideTooltip();
    setHover(-1);
  };
  const onPatternLeave = () => setHover(-1);

  const { dom, on, listen, recolour, dispose } = listeners(model);
  dom(headsEl, "click", onHeadsClick);
  dom(sortSelect, "change", onSort);
  on(stripEl, { mouseover: onStripOver, mouseout: onStripOut });
  for (const labels of [keyLabels, queryLabels]) on(labels, { mouseover: onLabelOver, mouseleave: onPatternLeave });
  on(canvas, { mousemove: onCanvasMove, mouseleave: onCanvasLeave });
  recolour(root, () => {
    paintLegend();
    paintThumbs();
    const p = current;
    if (p) draw(canvas, p.data, 0, p.t, p.t, scaleTable(pal()));
    setHover(hovered);
  });

  // ---------------------------------------------------------------- model events
  listen(["tokens"], () => {
    buildStrip();
    cache.clear();
    current = null;
    renderHeader();
    void loadDetail();
  });
  listen(["thumbs", "n_layers", "n_heads"], () => {
    cache.clear();
    current = null;
    buildHeads();
    renderHeader();
  });
  listen(["scores", "sort_by"], applySort);
  listen(["score_note", "model_name"], renderHeader);
  listen(["selected_head"], renderSelection);
  listen(["selected_position"], () => {
    renderLinked();
    setHover(-1);
  });
  listen(["head_cache"], () => void loadDetail());
  listen(["error", "static"], renderStatus);

  // ---------------------------------------------------------------- first paint
  paintLegend();
  buildStrip();
  renderHeader();
  buildHeads();
  renderStatus();

  return () => {
    pending?.abort();
    pending = null;
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
