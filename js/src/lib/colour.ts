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

/**
 * Diverging scale centred at 0: -maxAbs → blue, 0 → the neutral colour (white on a light page,
 * the background on a dark one), +maxAbs → red; clamps outside.
 */
export function divergingRGB(value: number, maxAbs: number, zero: RGB = pageNeutral): RGB {
  if (!Number.isFinite(value)) {
    if (Number.isNaN(value)) return MISSING;
    return value > 0 ? POS : NEG;
  }
  if (!(maxAbs > 0) || !Number.isFinite(maxAbs)) return zero;
  const t = clamp(value / maxAbs, -1, 1);
  return t >= 0 ? mix(zero, POS, t) : mix(zero, NEG, -t);
}

export function diverging(value: number, maxAbs: number, zero: RGB = pageNeutral): string {
  return css(divergingRGB(value, maxAbs, zero));
}

/** Sequential scale for non-negative data: 0 → the neutral colour, max → `end`; clamps outside [0, max]. */
export function sequentialRGB(value: number, max: number, end: RGB = SEQ, zero: RGB = pageNeutral): RGB {
  if (Number.isNaN(value)) return MISSING;
  if (value === Infinity) return end;
  if (!(max > 0) || !Number.isFinite(max)) return zero;
  return mix(zero, end, clamp(value / max, 0, 1));
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
  update(max: number): void;
  /** Redraw the bar with another neutral end (after the page's theme changed). */
  setNeutral(zero: RGB): void;
}

/** A small horizontal colour bar with labels at both ends (and 0 for the diverging scale). */
export function legend(kind: "diverging" | "sequential" = "diverging", end: RGB = SEQ): Legend {
  const bar = h("span", "mw-legend-bar");
  const setNeutral = (zero: RGB) => {
    bar.style.background =
      kind === "diverging"
        ? `linear-gradient(to right, ${css(NEG)}, ${css(zero)}, ${css(POS)})`
        : `linear-gradient(to right, ${css(zero)}, ${css(end)})`;
  };
  setNeutral(pageNeutral);
  const lo = h("span", "mw-legend-lo");
  const hi = h("span", "mw-legend-hi");
  const el = h("span", "mw-legend", [lo, bar, hi]);
  el.setAttribute("aria-label", "colour scale");
  const update = (max: number) => {
    const m = Number.isFinite(max) && max > 0 ? max : 0;
    lo.textContent = kind === "diverging" ? (m ? fmt(-m, 3) : "0") : "0";
    hi.textContent = m ? fmt(m, 3) : "0";
    el.title =
      kind === "diverging"
        ? `blue = negative, neutral = 0, red = positive; symmetric at ±${fmt(m, 4)}`
        : `neutral = 0, strongest = ${fmt(m, 4)}`;
  };
  update(0);
  return { el, update, setNeutral };
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
