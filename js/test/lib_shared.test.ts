import { describe, expect, it } from "vitest";
import { h, setOptions } from "../src/lib/dom";
import { listeners } from "../src/lib/listeners";
import { staticModel } from "../src/lib/static_model";
import { errorBox, progressBar, statusPill } from "../src/lib/status";
import { click } from "./helpers";

describe("listeners", () => {
  it("dispose removes every DOM listener and model change handler it added", () => {
    const model = staticModel({ a: 1, b: 1 });
    const btn = h("button");
    const calls: string[] = [];
    const { dom, listen, dispose } = listeners(model);
    dom(btn, "click", () => calls.push("click"));
    listen(["a", "b"], () => calls.push("change"));
    click(btn);
    model.set("a", 2);
    model.set("b", 2);
    expect(calls).toEqual(["click", "change", "change"]);
    dispose();
    click(btn);
    model.set("a", 3);
    model.set("b", 3);
    expect(calls).toHaveLength(3);
  });
});

describe("setOptions", () => {
  it("keeps the option elements when values and labels are unchanged, rebuilds otherwise", () => {
    const select = h("select");
    setOptions(select, ["0", "1"], ["<b>a</b>", "b"]);
    const first = select.options[0];
    expect(Array.from(select.options, (o) => [o.value, o.textContent])).toEqual([["0", "<b>a</b>"], ["1", "b"]]);
    expect(select.querySelector("b")).toBeNull();
    setOptions(select, ["0", "1"], ["<b>a</b>", "b"]);
    expect(select.options[0]).toBe(first);
    setOptions(select, ["0", "1"], ["c", "b"]);
    expect(select.options[0].textContent).toBe("c");
    setOptions(select, ["x"]);
    expect(Array.from(select.options, (o) => [o.value, o.textContent])).toEqual([["x", "x"]]);
  });
});

describe("status pill, progress bar, error box", () => {
  it("set state, width and messages as text", () => {
    const pill = statusPill({ live: false });
    expect(pill.el.getAttribute("role")).toBe("status");
    expect(pill.el.hasAttribute("aria-live")).toBe(false);
    pill.set("running", "<i>running</i> 1/2");
    expect(pill.el.dataset.status).toBe("running");
    expect(pill.el.textContent).toBe("<i>running</i> 1/2");
    const bar = progressBar();
    const fill = bar.el.firstElementChild as HTMLElement;
    bar.set(0.256);
    expect(fill.style.width).toBe("26%");
    bar.set(7);
    expect(fill.style.width).toBe("100%");
    bar.set(NaN);
    expect(fill.style.width).toBe("0%");
    const errs = errorBox();
    errs.set("", "<img src=x>", "second");
    expect(errs.el.hidden).toBe(false);
    expect(errs.el.textContent).toBe("<img src=x>\nsecond");
    expect(errs.el.querySelector("img")).toBeNull();
    errs.set("", "");
    expect(errs.el.hidden).toBe(true);
  });
});

// ------------------------------------------------------------------ theme
import { PALETTE, HOST_VARS, preamble, statusCss, themeValue } from "../src/lib/base.css";
import {
  backgroundBehind,
  contrast,
  DARK_NEUTRAL,
  diverging,
  divergingRGB,
  followHostTheme,
  neutral,
  parseColour,
  setNeutral,
  WHITE,
  type RGB,
} from "../src/lib/colour";

const rgbOf = (hex: string): RGB => parseColour(hex)![0];
const TEXT = ["fg", "fg2", "accent", "err"] as const;
const BACKGROUNDS = ["bg", "bg0", "bg2"] as const;
// the backgrounds the palette meets in practice: its own, and hosts that define no variables
const HOST_BG: Record<string, string[]> = {
  light: ["#ffffff", "#f7f7f7"], // JupyterLab/Colab/marimo light
  dark: ["#181c1a", "#1e1e1e", "#111111", "#0d1117"], // marimo dark, VS Code dark, Colab dark, GitHub dark
};

describe("theme palette", () => {
  for (const [i, scheme] of [[0, "light"], [1, "dark"]] as const) {
    it(`${scheme}: every text colour has contrast >= 4.5 on every background`, () => {
      const bgs = [...BACKGROUNDS.map((b) => PALETTE[b][i]), ...HOST_BG[scheme]];
      for (const t of TEXT)
        for (const b of bgs) {
          const c = contrast(rgbOf(PALETTE[t][i]), rgbOf(b));
          expect(c, `${scheme} ${t} ${PALETTE[t][i]} on ${b}: ${c.toFixed(2)}`).toBeGreaterThanOrEqual(4.5);
        }
      expect(contrast(rgbOf(PALETTE.onErr[i]), rgbOf(PALETTE.err[i]))).toBeGreaterThanOrEqual(4.5);
    });
  }

  it("the marimo-dark failure: the old light fallback on marimo's dark background", () => {
    expect(contrast(rgbOf("#1f2328"), rgbOf("#181c1a"))).toBeLessThan(1.2); // what users saw
    expect(contrast(rgbOf(PALETTE.fg[1]), rgbOf("#181c1a"))).toBeGreaterThan(12);
  });

  it("each role reads JupyterLab, then VS Code, then light-dark() of our palette", () => {
    expect(themeValue("fg")).toBe("var(--jp-ui-font-color1,var(--vscode-foreground,light-dark(#1f2328,#e6edf3)))");
    const css = preamble(".mw-x");
    for (const role of Object.keys(PALETTE) as (keyof typeof PALETTE)[]) {
      for (const v of HOST_VARS[role]) expect(css).toContain(`var(${v},`);
    }
    expect(css).toContain("@media (prefers-color-scheme:dark){.mw-x{color-scheme:dark}}");
    expect(css).toMatch(/:where\([^)]*\.vscode-dark[^{]*\.mw-x\{color-scheme:dark\}/);
    expect(css).toMatch(/:where\([^)]*data-jp-theme-light=true[^{]*\.mw-x\{color-scheme:light\}/);
    // the light markers come last: they win where a page carries both
    expect(css.indexOf("color-scheme:light")).toBeGreaterThan(css.indexOf("{color-scheme:dark}"));
    expect(statusCss(".mw-x", "running")).toContain("color:var(--mw-on-err)");
  });
});

describe("colour scales on a dark page", () => {
  it("the neutral end is white by default and the page's background when given", () => {
    setNeutral(WHITE);
    expect(diverging(0, 1)).toBe("rgb(255, 255, 255)");
    expect(divergingRGB(0, 1, DARK_NEUTRAL)).toEqual(DARK_NEUTRAL);
    expect(divergingRGB(1, 1, DARK_NEUTRAL)).toEqual([178, 24, 43]);
    const half = divergingRGB(-0.5, 1, DARK_NEUTRAL);
    expect(half[2]).toBeGreaterThan(DARK_NEUTRAL[2]);
    expect(half[2]).toBeLessThan(172);
  });

  it("parseColour reads hex and rgb()/rgba()", () => {
    expect(parseColour("#181c1a")).toEqual([[24, 28, 26], 1]);
    expect(parseColour("#fff")).toEqual([[255, 255, 255], 1]);
    expect(parseColour("rgba(0, 0, 0, 0)")).toEqual([[0, 0, 0], 0]);
    expect(parseColour("rgb(24 28 26 / 50%)")).toEqual([[24, 28, 26], 0.5]);
    expect(parseColour("transparent")).toBeNull();
  });

  it("followHostTheme: a dark host background sets color-scheme and the scales' neutral end", async () => {
    setNeutral(WHITE);
    const host = document.createElement("div");
    host.style.backgroundColor = "rgb(24, 28, 26)"; // marimo dark, no theme variables
    const root = h("div", "mw-patching-grid");
    const pill = h("span", "mw-status");
    root.appendChild(pill);
    host.appendChild(root);
    document.body.appendChild(host);
    const seen: unknown[] = [];
    root.addEventListener("mw-theme", (e) => seen.push((e as CustomEvent).detail));
    try {
      expect(backgroundBehind(root)).toEqual([24, 28, 26]);
      followHostTheme(pill);
      expect(root.style.colorScheme).toBe("dark");
      expect(neutral()).toEqual([24, 28, 26]);
      expect(seen).toEqual([{ scheme: "dark", zero: [24, 28, 26] }]);
      host.style.backgroundColor = "rgb(255, 255, 255)";
      document.body.classList.add("light"); // a theme switch: the page's classes change
      await new Promise((r) => setTimeout(r, 0));
      expect(root.style.colorScheme).toBe("light");
      expect(neutral()).toEqual(WHITE);
    } finally {
      document.body.classList.remove("light");
      host.remove();
      setNeutral(WHITE);
    }
  });

  it("no opaque background anywhere: the canvas decides (light unless the document allows dark)", () => {
    setNeutral(WHITE);
    const root = h("div", "mw-x");
    const pill = h("span", "mw-status");
    root.appendChild(pill);
    document.body.appendChild(root);
    try {
      followHostTheme(pill);
      expect(root.style.colorScheme).toBe("light");
      expect(neutral()).toEqual(WHITE);
    } finally {
      root.remove();
    }
  });
});
