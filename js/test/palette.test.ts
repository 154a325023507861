import { describe, expect, it } from "vitest";
import widget from "../src/patching_grid";
import lensWidget from "../src/logit_lens";
import { DARK_NEUTRAL, DEFAULT_PALETTE, PALETTES, paletteOf, WHITE, type RGB } from "../src/lib/colour";
import { staticModel } from "../src/lib/static_model";
import { f32, i32, mountView, wireB64 } from "./helpers";

// ------------------------------------------------------------------ colour-vision deficiency

/**
 * Machado, Oliveira & Fernandes (2009), "A physiologically-based model for simulation of color
 * vision deficiency", IEEE TVCG 15(6): the severity-1.0 matrices (dichromacy), applied to
 * linear sRGB.
 */
const MACHADO: Record<string, number[][]> = {
  protanopia: [
    [0.152286, 1.052583, -0.204868],
    [0.114503, 0.786281, 0.099216],
    [-0.003882, -0.048116, 1.051998],
  ],
  deuteranopia: [
    [0.367322, 0.860646, -0.227968],
    [0.280085, 0.672501, 0.047413],
    [-0.01182, 0.04294, 0.968881],
  ],
  tritanopia: [
    [1.255528, -0.076749, -0.178779],
    [-0.078411, 0.930809, 0.147602],
    [0.004733, 0.691367, 0.3039],
  ],
};

const toLinear = (c: number) => {
  const s = c / 255;
  return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
};

/** Linear sRGB as a viewer with `deficiency` sees it (clipped to the gamut). */
function simulate(rgb: RGB, deficiency: string): number[] {
  const l = rgb.map(toLinear);
  const m = MACHADO[deficiency];
  if (!m) return l;
  return m.map((row) => Math.min(1, Math.max(0, row[0] * l[0] + row[1] * l[1] + row[2] * l[2])));
}

/** CIELAB (D65) of a linear sRGB colour. */
function lab(lin: number[]): [number, number, number] {
  const [r, g, b] = lin;
  const X = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
  const Y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  const Z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
  const f = (t: number) => (t > 216 / 24389 ? Math.cbrt(t) : ((24389 / 27) * t + 16) / 116);
  return [116 * f(Y) - 16, 500 * (f(X) - f(Y)), 200 * (f(Y) - f(Z))];
}

/** CIE76 colour difference ΔE*ab between two sRGB colours as seen with `deficiency`. */
function deltaE(a: RGB, b: RGB, deficiency: string): number {
  const [p, q] = [lab(simulate(a, deficiency)), lab(simulate(b, deficiency))];
  return Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
}

const VISION = ["normal", "protanopia", "deuteranopia", "tritanopia"];

/**
 * Two colours "stay distinguishable" when ΔE*ab ≥ 20. A just-noticeable difference is about
 * 2.3 ΔE*ab (Mahy, Van Eycken & Oosterlinck 1994); colours of small marks need several JNDs to
 * be told apart at a glance (Stone, Szafir & Setlur 2014, "An engineering model for color
 * difference as a function of size"), and heatmap cells are ~22 px: 20 (≈ 9 JNDs) is the bar.
 */
const MIN_DELTA_E = 20;

/** The smallest ΔE*ab between the ends and the middle of a diverging scale, over `VISION`. */
function worstDivergingContrast(ends: (zero: RGB) => [RGB, RGB, RGB], zero: RGB): { value: number; where: string } {
  const [neg, mid, pos] = ends(zero);
  let worst = { value: Infinity, where: "" };
  for (const v of VISION) {
    for (const [a, b, what] of [
      [neg, pos, "negative end vs positive end"],
      [neg, mid, "negative end vs 0"],
      [pos, mid, "positive end vs 0"],
    ] as [RGB, RGB, string][]) {
      const d = deltaE(a, b, v);
      if (d < worst.value) worst = { value: d, where: `${what}, ${v}` };
    }
  }
  return worst;
}

const divergingOf = (name: string) => (zero: RGB): [RGB, RGB, RGB] => {
  const p = paletteOf(name);
  return [p.divergingRGB(-1, 1, zero), p.divergingRGB(0, 1, zero), p.divergingRGB(1, 1, zero)];
};

describe("palettes under simulated colour-vision deficiency (Machado 2009, severity 1)", () => {
  it("offers the four palettes, blue_orange by default", () => {
    expect([...PALETTES]).toEqual(["blue_orange", "viridis", "greyscale", "classic"]);
    expect(DEFAULT_PALETTE).toBe("blue_orange");
    expect(paletteOf(undefined).name).toBe("blue_orange");
    expect(paletteOf("no such palette").name).toBe("blue_orange");
    expect(paletteOf("toString").name).toBe("blue_orange");
  });

  for (const name of PALETTES) {
    for (const [page, zero] of [
      ["light page", WHITE],
      ["dark page", DARK_NEUTRAL],
    ] as [string, RGB][]) {
      it(`${name} (${page}): negative end, 0 and positive end stay ΔE*ab ≥ ${MIN_DELTA_E} apart for every vision`, () => {
        const worst = worstDivergingContrast(divergingOf(name), zero);
        expect(worst.value, worst.where).toBeGreaterThanOrEqual(MIN_DELTA_E);
      });
    }
  }

  it("the test has teeth: a red–green diverging scale fails it", () => {
    // Red (200, 40, 40) and green (40, 140, 40) of matched lightness around white: ΔE*ab 109
    // apart with normal vision, but about 7 for deuteranopes and 31 for protanopes; ColorBrewer's
    // RdYlGn ends (215, 48, 39) / (26, 152, 80) come out near 20 for protanopes, 26 for
    // deuteranopes. Every palette above clears 20 in the worst case.
    const redGreen = (zero: RGB): [RGB, RGB, RGB] => [[200, 40, 40], zero, [40, 140, 40]];
    const worst = worstDivergingContrast(redGreen, WHITE);
    expect(worst.value).toBeLessThan(MIN_DELTA_E);
    expect(worst.where).toBe("negative end vs positive end, deuteranopia");
    expect(deltaE([200, 40, 40], [40, 140, 40], "normal")).toBeGreaterThan(100);
  });

  for (const name of PALETTES) {
    it(`${name}: the sequential scale is monotonic in lightness for every vision`, () => {
      const p = paletteOf(name);
      for (const v of VISION) {
        const L = Array.from({ length: 33 }, (_, i) => lab(simulate(p.sequentialRGB(i / 32, 1, WHITE), v))[0]);
        const steps = L.slice(1).map((x, i) => x - L[i]);
        const sign = Math.sign(steps[0]);
        expect(sign, `${name}, ${v}`).not.toBe(0);
        for (const s of steps) expect(Math.sign(s), `${name}, ${v}: ${L.map((x) => x.toFixed(1)).join(" ")}`).toBe(sign);
        expect(Math.abs(L[32] - L[0]), `${name}, ${v}`).toBeGreaterThanOrEqual(MIN_DELTA_E);
      }
    });
  }

  it("a hue-only sequential scale fails the lightness check", () => {
    // red → green at constant-ish lightness: not monotonic in L* for deuteranopes' eyes
    const L = [0, 0.25, 0.5, 0.75, 1].map((t) => {
      const c: RGB = [Math.round(200 - 160 * t), Math.round(40 + 100 * t), 40];
      return lab(simulate(c, "deuteranopia"))[0];
    });
    expect(Math.abs(L[4] - L[0])).toBeLessThan(MIN_DELTA_E);
  });

  it("greyscale paints greys only (monochromacy, print)", () => {
    const p = paletteOf("greyscale");
    for (const v of [-2, -1, -0.3, 0, 0.4, 1, 3]) {
      const [r, g, b] = p.divergingRGB(v, 1, DARK_NEUTRAL);
      expect(r === g && g === b, `${v} → ${r},${g},${b}`).toBe(true);
      const [r2, g2, b2] = p.sequentialRGB(Math.abs(v), 1, DARK_NEUTRAL);
      expect(r2 === g2 && g2 === b2).toBe(true);
    }
  });
});

// ------------------------------------------------------------------ views

const gridState = (extra: Record<string, unknown> = {}) => ({
  dims: ["layer", "position"],
  layers: [0, 1],
  positions: [0, 1],
  heads: [],
  clean_tokens: ["a", "b"],
  corrupt_tokens: ["a", "c"],
  values: f32([-1, 0, 0.5, 1], [2, 2]),
  filled: wireB64("uint8", [2, 2], new Uint8Array(4).fill(1)),
  n_filled: 4,
  n_cells: 4,
  site: "resid_pre",
  sites: ["resid_pre"],
  mode: "exact",
  status: "ready",
  static: true,
  ...extra,
});

function mountGrid(state: Record<string, unknown>) {
  const model = staticModel(state);
  const { root } = mountView(widget.render, model, ".mw-patching-grid");
  const bg = (r: number, c: number) => root.querySelector<HTMLElement>(`.mw-cell[data-row="${r}"][data-col="${c}"]`)!.style.background;
  const legendBar = () => root.querySelector<HTMLElement>(".mw-legend-bar")!.style.background;
  return { model, root, bg, legendBar };
}

const grey = (css: string) => {
  const m = /rgb\((\d+), (\d+), (\d+)\)/.exec(css);
  return m !== null && m[1] === m[2] && m[2] === m[3];
};

describe("views follow their own palette trait", () => {
  it("PatchingGrid: no palette → blue–orange; each palette's ends and legend", () => {
    const a = mountGrid(gridState());
    expect(a.bg(0, 0)).toBe("rgb(33, 102, 172)"); // -1: blue
    expect(a.bg(1, 1)).toBe("rgb(230, 97, 1)"); // +1: orange
    expect(a.bg(0, 1)).toBe("rgb(255, 255, 255)"); // 0: the page's neutral
    expect(a.legendBar()).toContain("rgb(230, 97, 1)");
    expect(a.root.querySelector<HTMLElement>(".mw-legend")!.title).toContain("orange = positive");
    const c = mountGrid(gridState({ palette: "classic" }));
    expect(c.bg(1, 1)).toBe("rgb(178, 24, 43)");
    expect(c.bg(0, 0)).toBe("rgb(33, 102, 172)");
    const v = mountGrid(gridState({ palette: "viridis" }));
    expect([v.bg(0, 0), v.bg(0, 1), v.bg(1, 1)]).toEqual(["rgb(68, 1, 84)", "rgb(33, 145, 140)", "rgb(253, 231, 37)"]);
  });

  it("PatchingGrid: change:palette repaints cells and legend; another view on the page keeps its own", () => {
    const a = mountGrid(gridState());
    const b = mountGrid(gridState({ palette: "classic" }));
    a.model.set("palette", "greyscale");
    for (const [r, c] of [[0, 0], [0, 1], [1, 0], [1, 1]]) expect(grey(a.bg(r, c)), a.bg(r, c)).toBe(true);
    expect(a.bg(0, 0)).not.toBe(a.bg(1, 1)); // sign still reads as lightness
    expect(a.legendBar()).not.toContain("230, 97, 1");
    expect(a.root.querySelector<HTMLElement>(".mw-legend")!.dataset.palette).toBe("greyscale");
    // the other view is untouched
    expect(b.bg(1, 1)).toBe("rgb(178, 24, 43)");
    expect(b.bg(0, 1)).toBe("rgb(255, 255, 255)");
    expect(b.legendBar()).toContain("rgb(178, 24, 43)");
    // and back; an unknown name is the default
    a.model.set("palette", "classic");
    expect(a.bg(1, 1)).toBe("rgb(178, 24, 43)");
    a.model.set("palette", "jet");
    expect(a.bg(1, 1)).toBe("rgb(230, 97, 1)");
  });

  it("LogitLens: the probability shading follows the palette's sequential scale", () => {
    const model = staticModel({
      tokens: ["a", "b"],
      layer_names: ["L0"],
      top_ids: i32([0, 1], [1, 2, 1]),
      top_probs: f32([1, 0], [1, 2, 1]),
      vocab: { "0": "x", "1": "y" },
      lenses: ["logit"],
      lens: "logit",
      static: true,
    });
    const { root } = mountView(lensWidget.render, model, ".mw-logit-lens");
    const cell = (p: number) => root.querySelector<HTMLElement>(`.mw-cell[data-pos="${p}"]`)!;
    expect(cell(0).style.background).toBe("rgb(84, 39, 143)"); // p = 1: purple
    expect(cell(1).style.background).toBe("rgb(255, 255, 255)"); // p = 0: neutral
    model.set("palette", "viridis");
    expect(cell(0).style.background).toBe("rgb(253, 231, 37)");
    expect(cell(1).style.background).toBe("rgb(68, 1, 84)");
    expect(cell(1).style.color).toBe("#fff"); // text stays readable on the dark end
    model.set("palette", "greyscale");
    expect(cell(0).style.background).toBe("rgb(0, 0, 0)");
    expect(grey(cell(1).style.background)).toBe(true);
  });
});
