/** Colour scales (CSS colour strings), text contrast, and a small legend element. */

import { h } from "./dom";

export type RGB = [number, number, number];

export const WHITE: RGB = [255, 255, 255];
/** Ends of the diverging scale (ColorBrewer RdBu ends). */
export const NEG: RGB = [33, 102, 172];
export const POS: RGB = [178, 24, 43];
/** Default end of the sequential scale. */
export const SEQ: RGB = [84, 39, 143];
/** Colour for values that are NaN / missing. */
export const MISSING: RGB = [200, 200, 200];
/** Neutral end (the value 0) of the scales on a dark page whose background is unknown. */
export const DARK_NEUTRAL: RGB = [30, 33, 36];

/**
 * The neutral end of the scales when none is passed: white, or the page's own dark background
 * once `followHostTheme` has seen one (so that 0 reads as "nothing" on a dark page as on a light
 * one). One page has one theme, so this is shared by every view on it.
 */
let pageNeutral: RGB = WHITE;
export const neutral = (): RGB => pageNeutral;
export function setNeutral(rgb: RGB): void {
  pageNeutral = rgb;
}

function mix(a: RGB, b: RGB, t: number): RGB {
  return [
    Math.round(a[0] + (b[0] - a[0]) * t),
    Math.round(a[1] + (b[1] - a[1]) * t),
    Math.round(a[2] + (b[2] - a[2]) * t),
  ];
}

function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}

export function css(rgb: RGB): string {
  return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
}

// ------------------------------------------------------------------ palettes

/** A scale's colour stops, evenly spaced from its low end to its high end; `null` stands for the
 * neutral colour (white on a light page, the background on a dark one). */
type Stops = readonly (RGB | null)[];

/** The colour at `t` in 0..1 along `stops` (piecewise linear in sRGB). */
function ramp(stops: Stops, t: number, zero: RGB): RGB {
  const n = stops.length - 1;
  const x = clamp(t, 0, 1) * n;
  const i = Math.min(n - 1, Math.floor(x));
  return mix(stops[i] ?? zero, stops[i + 1] ?? zero, x - i);
}

/** The names of the palettes a view's `palette` trait may hold (mi_widgets/widgets/palette.py). */
export const PALETTES = ["blue_orange", "viridis", "greyscale", "classic"] as const;
export type PaletteName = (typeof PALETTES)[number];
/** Blue–orange: its two ends stay far apart for protan, deutan and tritan viewers
 * (js/test/palette.test.ts), where RdBu's red darkens towards its blue for protans. */
export const DEFAULT_PALETTE: PaletteName = "blue_orange";

export interface Palette {
  readonly name: PaletteName;
  /** Diverging scale centred at 0: -maxAbs → the low end, 0 → the middle, +maxAbs → the high
   * end; clamps outside; NaN → MISSING, ±Infinity → the ends. */
  divergingRGB(value: number, maxAbs: number, zero?: RGB): RGB;
  /** Sequential scale for non-negative data: 0 → the low end, max → the high end; clamps. */
  sequentialRGB(value: number, max: number, zero?: RGB): RGB;
  /** A CSS gradient of the scale, low to high (legends). */
  gradient(kind: "diverging" | "sequential", zero?: RGB): string;
  /** Ends of lines drawn on the page itself (graph edges, negative and positive), which fade to a
   * mid grey that reads on light and dark pages. */
  readonly edges: readonly [RGB, RGB];
  /** What the eye sees, for legends' titles: the diverging scale's low end, middle and high end,
   * the sequential scale's low and high ends, the edges' negative and positive ends. */
  readonly words: readonly string[];
}

const VIRIDIS: RGB[] = [
  [68, 1, 84], [71, 45, 123], [59, 82, 139], [44, 114, 142], [33, 145, 140],
  [40, 174, 128], [94, 201, 98], [173, 220, 48], [253, 231, 37],
];
/** ColorBrewer PuOr's orange end (as the circuit graph's positive edges). */
const ORANGE: RGB = [230, 97, 1];

/** A diverging scale along `stops`: -m → the first stop, 0 → the middle, +m → the last. */
function divRGB(stops: Stops, value: number, m: number, zero: RGB): RGB {
  if (!Number.isFinite(value)) return Number.isNaN(value) ? MISSING : ramp(stops, value > 0 ? 1 : 0, zero);
  if (!(m > 0) || !Number.isFinite(m)) return ramp(stops, 0.5, zero);
  return ramp(stops, (clamp(value / m, -1, 1) + 1) / 2, zero);
}

/** A sequential scale along `stops`: 0 → the first stop, max → the last. */
function seqRGB(stops: Stops, value: number, max: number, zero: RGB): RGB {
  if (Number.isNaN(value)) return MISSING;
  if (value === Infinity) return ramp(stops, 1, zero);
  if (!(max > 0) || !Number.isFinite(max)) return ramp(stops, 0, zero);
  return ramp(stops, value / max, zero);
}

function makePalette(name: PaletteName, div: Stops, seq: Stops, edges: readonly [RGB, RGB], words: string): Palette {
  const divergingRGB = (v: number, m: number, zero: RGB = pageNeutral) => divRGB(div, v, m, zero);
  const sequentialRGB = (v: number, max: number, zero: RGB = pageNeutral) => seqRGB(seq, v, max, zero);
  return {
    name,
    edges,
    words: words.split("|"),
    divergingRGB,
    sequentialRGB,
    gradient: (kind, zero = pageNeutral) =>
      `linear-gradient(to right, ${(kind === "diverging" ? div : seq).map((c) => css(c ?? zero)).join(", ")})`,
  };
}

const PALETTE_OF: Record<PaletteName, Palette> = {
  blue_orange: /* @__PURE__ */ makePalette("blue_orange", [NEG, null, ORANGE], [null, SEQ], [NEG, ORANGE], "blue|neutral|orange|neutral|strongest|blue|orange"),
  // one perceptually uniform scale for both kinds: a value's order is its lightness's order
  viridis: /* @__PURE__ */ makePalette("viridis", VIRIDIS, VIRIDIS, [[68, 1, 84], [94, 201, 98]], "purple|teal|yellow|purple|yellow|purple|green"),
  // monochromacy and print: lightness alone, darker = larger in both kinds
  greyscale: /* @__PURE__ */ makePalette("greyscale", [[240, 240, 240], [128, 128, 128], [16, 16, 16]], [WHITE, [0, 0, 0]], [[215, 215, 215], [0, 0, 0]], "light|grey|dark|white|black|light grey|black"),
  // the colours before palettes: RdBu ends and purple; the graph's PuOr edges
  classic: /* @__PURE__ */ makePalette("classic", [NEG, null, POS], [null, SEQ], [[94, 60, 153], ORANGE], "blue|neutral|red|neutral|strongest|purple|orange"),
};

/** The palette named `name` (a view's `palette` trait); anything else → the default palette. */
export function paletteOf(name: unknown): Palette {
  return Object.prototype.hasOwnProperty.call(PALETTE_OF, String(name))
    ? PALETTE_OF[name as PaletteName]
    : PALETTE_OF[DEFAULT_PALETTE];
}

/**
 * Diverging scale centred at 0 (classic palette): -maxAbs → blue, 0 → the neutral colour (white
 * on a light page, the background on a dark one), +maxAbs → red; clamps outside.
 */
export function divergingRGB(value: number, maxAbs: number, zero: RGB = pageNeutral): RGB {
  return divRGB([NEG, null, POS], value, maxAbs, zero);
}

export function diverging(value: number, maxAbs: number, zero: RGB = pageNeutral): string {
  return css(divergingRGB(value, maxAbs, zero));
}

/** Sequential scale for non-negative data: 0 → the neutral colour, max → `end`; clamps outside [0, max]. */
export function sequentialRGB(value: number, max: number, end: RGB = SEQ, zero: RGB = pageNeutral): RGB {
  return seqRGB([null, end], value, max, zero);
}

export function sequential(value: number, max: number, end: RGB = SEQ, zero: RGB = pageNeutral): string {
  return css(sequentialRGB(value, max, end, zero));
}

/** WCAG relative luminance of an sRGB colour, 0 (black) .. 1 (white). */
export function luminance(rgb: RGB): number {
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(rgb[0]) + 0.7152 * lin(rgb[1]) + 0.0722 * lin(rgb[2]);
}

/** WCAG contrast ratio of two colours, 1 .. 21 (text wants at least 4.5). */
export function contrast(a: RGB, b: RGB): number {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

/** `#rgb`, `#rrggbb`, `rgb(r, g, b)` or `rgba(r, g, b, a)` → [RGB, alpha]; null otherwise. */
export function parseColour(text: string): [RGB, number] | null {
  const t = text.trim().toLowerCase();
  let m = /^#([0-9a-f]{3}|[0-9a-f]{6})$/.exec(t);
  if (m) {
    const hex = m[1].length === 3 ? m[1].replace(/./g, "$&$&") : m[1];
    return [[0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16)) as RGB, 1];
  }
  m = /^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+)(%?))?\s*\)$/.exec(t);
  if (!m) return null;
  const a = m[4] === undefined ? 1 : Number(m[4]) / (m[5] ? 100 : 1);
  return [[Number(m[1]), Number(m[2]), Number(m[3])].map((v) => Math.round(v)) as RGB, a];
}

/** Black or white text, whichever contrasts more with the background (WCAG relative luminance). */
export function textColour(bg: RGB): string {
  // contrast with black = (L + .05) / .05, with white = 1.05 / (L + .05); equal at L ≈ 0.179
  return luminance(bg) > 0.179 ? "#000" : "#fff";
}

/** Largest finite |value| (0 for empty / all non-finite). */
export function maxAbs(data: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < data.length; i++) {
    const a = Math.abs(data[i]);
    if (a > m && a !== Infinity) m = a;
  }
  return m;
}

export function fmt(x: number, digits = 4): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  const s = x.toPrecision(digits);
  // 1.000e+5 → 1.000e5, keep the digits (exactness matters in tooltips)
  return s.replace("e+", "e");
}

export interface Legend {
  el: HTMLElement;
  /** Label the ends ±max (0..max) and redraw the bar in the current palette and neutral. */
  update(max: number): void;
}

/** A small horizontal colour bar with labels at both ends (and 0 for the diverging scale), in
 * the palette that `pal` returns when `update` runs. */
export function legend(kind: "diverging" | "sequential" = "diverging", pal: () => Palette = () => PALETTE_OF.classic): Legend {
  const bar = h("span", "mw-legend-bar");
  const lo = h("span", "mw-legend-lo");
  const hi = h("span", "mw-legend-hi");
  const el = h("span", "mw-legend", [lo, bar, hi]);
  el.setAttribute("aria-label", "colour scale");
  const update = (max: number) => {
    const p = pal();
    bar.style.background = p.gradient(kind);
    el.dataset.palette = p.name;
    const m = Number.isFinite(max) && max > 0 ? max : 0;
    lo.textContent = kind === "diverging" ? (m ? fmt(-m, 3) : "0") : "0";
    hi.textContent = m ? fmt(m, 3) : "0";
    const [neg, mid, pos, zero, top] = p.words;
    el.title =
      kind === "diverging"
        ? `${neg} = negative, ${mid} = 0, ${pos} = positive; symmetric at ±${fmt(m, 4)}`
        : `${zero} = 0, ${top} = ${fmt(m, 4)}`;
  };
  update(0);
  return { el, update };
}

// ------------------------------------------------------------------ the host's theme

/** The opaque colour behind `el`: the first ancestor (crossing shadow roots) with a background
 * colour at least half opaque; null when every ancestor is transparent (the canvas shows). */
export function backgroundBehind(el: Element | null): RGB | null {
  let node: Element | null = el;
  while (node) {
    const c = parseColour(getComputedStyle(node).backgroundColor || "");
    if (c && c[1] >= 0.5) return c[0];
    const parent: Element | null = node.parentElement;
    if (parent) node = parent;
    else {
      const root = node.getRootNode();
      node = root instanceof ShadowRoot ? root.host : null;
    }
  }
  return null;
}

/** The page's canvas where no element paints a background: dark only when the document's
 * `color-scheme` (its root's CSS, else its `<meta name="color-scheme">`) allows dark and, if it
 * allows light too, the OS prefers dark. */
function canvas(): RGB {
  let cs = getComputedStyle(document.documentElement).colorScheme || "";
  if (cs === "normal" || !cs) cs = document.querySelector('meta[name="color-scheme"]')?.getAttribute("content") ?? "";
  const osDark = typeof window.matchMedia === "function" && window.matchMedia("(prefers-color-scheme: dark)").matches;
  return /\bdark\b/.test(cs) && (!/\blight\b/.test(cs) || osDark) ? CANVAS_DARK : WHITE;
}

/** Chromium's dark canvas. */
const CANVAS_DARK: RGB = [18, 18, 18];

/** The outermost ancestor-or-self of `el` whose class names a mi-widgets element (`mw-…`):
 * the view's root, or the static export's wrapper around it. */
function viewRoot(el: HTMLElement): HTMLElement {
  let root = el;
  for (let p = el.parentElement; p; p = p.parentElement) {
    if (Array.from(p.classList).some((c) => c.startsWith("mw-"))) root = p;
  }
  return root;
}

/**
 * Make a view follow the page's light/dark theme where CSS alone cannot tell (a host that
 * defines neither JupyterLab's nor VS Code's variables, e.g. marimo): measure the background
 * behind the view, set `color-scheme` on its root (base.css.ts picks its fallback palette with
 * `light-dark()`), and make that background the scales' neutral end on a dark page. `anchor` is
 * any element of the view (the status pill calls this, so every view does it). Runs once the
 * view is in the page, then again when the page's classes, theme attributes or the OS
 * preference change; each change fires a bubbling `mw-theme` event at `anchor`, for views to
 * recolour.
 */
export function followHostTheme(anchor: HTMLElement): void {
  if (typeof window === "undefined" || typeof MutationObserver === "undefined") return;
  let last = "";
  let root = anchor;
  const apply = () => {
    const bg = backgroundBehind(root.parentElement) ?? canvas();
    const scheme = luminance(bg) < 0.2 ? "dark" : "light";
    root.style.colorScheme = scheme;
    const zero: RGB = scheme === "dark" ? bg : WHITE;
    const key = `${scheme}|${zero.join(",")}`;
    if (key === last) return;
    last = key;
    setNeutral(zero);
    anchor.dispatchEvent(new CustomEvent("mw-theme", { bubbles: true, detail: { scheme, zero } }));
  };
  let tries = 0;
  const start = () => {
    if (!anchor.isConnected) {
      if (tries++ < 120) setTimeout(start, 50); // anywidget may attach the view after render
      return;
    }
    root = viewRoot(anchor);
    apply();
    const obs = new MutationObserver(() => (anchor.isConnected ? apply() : stop()));
    for (const node of [document.documentElement, document.body]) {
      if (node) obs.observe(node, { attributes: true, attributeFilter: ["class", "style", "data-theme", "data-jp-theme-light", "theme"] });
    }
    const mq = typeof window.matchMedia === "function" ? window.matchMedia("(prefers-color-scheme: dark)") : null;
    const onMq = () => (anchor.isConnected ? apply() : stop());
    mq?.addEventListener?.("change", onMq);
    const stop = () => {
      obs.disconnect();
      mq?.removeEventListener?.("change", onMq);
    };
  };
  if (anchor.isConnected) start();
  else setTimeout(start, 0);
}
