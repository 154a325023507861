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

/** Diverging scale centred at 0: -maxAbs → blue, 0 → white, +maxAbs → red; clamps outside. */
export function divergingRGB(value: number, maxAbs: number): RGB {
  if (!Number.isFinite(value)) {
    if (Number.isNaN(value)) return MISSING;
    return value > 0 ? POS : NEG;
  }
  if (!(maxAbs > 0) || !Number.isFinite(maxAbs)) return WHITE;
  const t = clamp(value / maxAbs, -1, 1);
  return t >= 0 ? mix(WHITE, POS, t) : mix(WHITE, NEG, -t);
}

export function diverging(value: number, maxAbs: number): string {
  return css(divergingRGB(value, maxAbs));
}

/** Sequential scale for non-negative data: 0 → white, max → `end`; clamps outside [0, max]. */
export function sequentialRGB(value: number, max: number, end: RGB = SEQ): RGB {
  if (Number.isNaN(value)) return MISSING;
  if (value === Infinity) return end;
  if (!(max > 0) || !Number.isFinite(max)) return WHITE;
  return mix(WHITE, end, clamp(value / max, 0, 1));
}

export function sequential(value: number, max: number, end: RGB = SEQ): string {
  return css(sequentialRGB(value, max, end));
}

/** Black or white text, whichever contrasts more with the background (WCAG relative luminance). */
export function textColour(bg: RGB): string {
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  const L = 0.2126 * lin(bg[0]) + 0.7152 * lin(bg[1]) + 0.0722 * lin(bg[2]);
  // contrast with black = (L + .05) / .05, with white = 1.05 / (L + .05); equal at L ≈ 0.179
  return L > 0.179 ? "#000" : "#fff";
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
}

/** A small horizontal colour bar with labels at both ends (and 0 for the diverging scale). */
export function legend(kind: "diverging" | "sequential" = "diverging", end: RGB = SEQ): Legend {
  const bar = h("span", "mw-legend-bar");
  bar.style.background =
    kind === "diverging"
      ? `linear-gradient(to right, ${css(NEG)}, ${css(WHITE)}, ${css(POS)})`
      : `linear-gradient(to right, ${css(WHITE)}, ${css(end)})`;
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
        ? `blue = negative, white = 0, red = positive; symmetric at ±${fmt(m, 4)}`
        : `white = 0, darkest = ${fmt(m, 4)}`;
  };
  update(0);
  return { el, update };
}
