import { describe, expect, it } from "vitest";
import widget from "../src/logit_lens";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, expectInert, flush, hover, i32, liveModel, mountView, texts, wireB64 } from "./helpers";

/** float → IEEE binary16 bits (round to nearest; enough for test values). */
function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const b = new Uint32Array(f.buffer)[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = ((b >>> 23) & 0xff) - 127 + 15;
  const frac = b & 0x7fffff;
  if (v === 0) return sign;
  if (exp <= 0) return sign | Math.round((frac | 0x800000) / 2 ** (14 - exp));
  return sign | (exp << 10) | Math.round(frac / 8192);
}
const f16 = (values: number[], shape: number[]) => wireB64("float16", shape, new Uint16Array(values.map(toHalf)));

const HOSTILE = ["<|endoftext|>", "<script>window.__pwned=1</script>", "<img src=x onerror=alert(1)>", "a\nb", "\u202Eevil"];
const NAMES = ["embed", "resid_post 0", "resid_post 1"];
// vocab ids: 10..14 hostile-ish predictions
const VOCAB: Record<string, string> = {
  "10": "<b>bold</b>",
  "11": " Paris",
  "12": "&amp;",
  "13": "\u0000",
  "14": " Rome",
};
const R = 3;
const T = 5;
const K = 2;
// top-1 ids by row: row 0 all 10, row 1 all 12, row 2 all 11; top-2 always 14
const ids: number[] = [];
const probs: number[] = [];
for (let r = 0; r < R; r++)
  for (let p = 0; p < T; p++) {
    ids.push([10, 12, 11][r], 14);
    probs.push([0.25, 0.5, 1][r], 0.125);
  }
const FINAL = [0.0625, 0.25, 0.75, 0.5, 0.125].concat([0.125, 0.25, 0.5, 0.5, 0.5], [1, 1, 1, 1, 0.875]);

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_name: "zoo:tiny",
    text: "x",
    tokens: HOSTILE,
    layer_names: NAMES,
    final_tokens: [" Paris", " Paris", "<i>x</i>", " Paris", " Paris"],
    lens: "logit",
    lenses: ["logit", "tuned"],
    k: K,
    top_ids: i32(ids, [R, T, K]),
    top_probs: f16(probs, [R, T, K]),
    kl: f16(new Array(R * T).fill(0).map((_, i) => (i < T ? 2 : i < 2 * T ? 0.5 : 0)), [R, T]),
    final_prob: f16(FINAL, [R, T]),
    vocab: VOCAB,
    target: "",
    target_id: -1,
    target_prob: {},
    selected_position: -1,
    can_compute: true,
    status: "ready",
    error: "",
    lens_cache: {
      logit: {},
      tuned: {
        top_ids: i32(ids.map((i) => (i === 10 ? 14 : i)), [R, T, K]),
        top_probs: f16(probs, [R, T, K]),
        kl: f16(new Array(R * T).fill(0.25), [R, T]),
        final_prob: f16(FINAL, [R, T]),
        vocab: VOCAB,
        target_prob: {},
      },
    },
    ...extra,
  };
}

function mount(model: AnyModel) {
  const { root } = mountView(render, model, ".mw-logit-lens");
  const cell = (r: number, p: number) => root.querySelector<HTMLElement>(`.mw-cell[data-row="${r}"][data-pos="${p}"]`)!;
  return { root, cell };
}


describe("LogitLens: static model", () => {
  it("grid of top-1 tokens shaded by probability, hostile tokens literal", () => {
    const { root, cell } = mount(staticModel(baseState()));
    expect(root.querySelectorAll(".mw-cell")).toHaveLength(R * T);
    expect(texts(root, ".mw-col-label")).toEqual([
      "<|endoftext|>",
      "<script>window.__pwned=1</script>",
      "<img src=x onerror=alert(1)>",
      "a↵b",
      "\u202Eevil",
    ]);
    expect(texts(root, ".mw-row-label")).toEqual(NAMES);
    expect(cell(0, 0).textContent).toBe("<b>bold</b>");
    expect(cell(1, 3).textContent).toBe("&amp;");
    expect(cell(2, 4).textContent).toBe(" Paris");
    expectInert(root, "script, img, b");
    // shading: p = 1 → the scale's end, p = 0.25 lighter, white text on dark cells
    expect(cell(2, 0).style.background).toContain("84, 39, 143");
    expect(cell(0, 0).style.background).not.toContain("84, 39, 143");
    expect(cell(2, 0).style.color).toMatch(/^(#fff|rgb\(255, 255, 255\))$/);
    expect(cell(0, 0).style.color).toMatch(/^(#000|rgb\(0, 0, 0\))$/);
    // mean KL per row
    expect(texts(root, ".mw-kl")).toEqual(["2.00", "0.500", "0"]);
    // no kernel: target box disabled; the lens switch works from the cache
    expect(root.querySelector<HTMLInputElement>("input.mw-target")!.disabled).toBe(true);
    expect(root.querySelector<HTMLSelectElement>("select.mw-lens")!.disabled).toBe(false);
    expect(root.querySelector(".mw-status")!.textContent).toBe("static");
  });

  it("hover a cell shows its top-k with probabilities", () => {
    const { root, cell } = mount(staticModel(baseState()));
    hover(cell(1, 1));
    const tip = root.querySelector<HTMLElement>(".mw-tooltip")!;
    expect(tip.hidden).toBe(false);
    expect(tip.querySelector(".mw-tt-label")!.textContent).toBe('resid_post 0, position 1 "<script>window.__pwned=1</script>"');
    expect(texts(tip, ".mw-tt-row .mw-tok")).toEqual(["&amp;", " Rome"]);
    expect(texts(tip, ".mw-tt-row .mw-prob")).toEqual(["0.500", "0.125"]);
  });

  it("click a position: the final top-1's probability across layers as a line and a table", () => {
    const model = staticModel(baseState());
    const { root, cell } = mount(model);
    expect(root.querySelector(".mw-target-title")!.textContent).toContain("click");
    click(cell(0, 2));
    expect(model.get("selected_position")).toBe(2);
    expect(root.querySelector(".mw-target-token")!.textContent).toBe("<i>x</i>");
    expect(root.querySelector(".mw-target-title")!.textContent).toContain("the model's top-1");
    expect(texts(root, ".mw-line-row .mw-layer")).toEqual(NAMES);
    expect(texts(root, ".mw-line-row .mw-prob")).toEqual(["0.7500", "0.5000", "1.000"]);
    expect(root.querySelectorAll("svg.mw-line circle.mw-point")).toHaveLength(R);
    expect(root.querySelectorAll('.mw-cell.mw-selected[data-pos="2"]')).toHaveLength(R);
    expect(root.querySelector('.mw-col-label[data-pos="2"]')!.classList.contains("mw-selected")).toBe(true);
    // clicking a token label selects that position too
    click(root.querySelector('.mw-col-label[data-pos="4"]')!);
    expect(texts(root, ".mw-line-row .mw-prob")).toEqual(["0.1250", "0.5000", "0.8750"]);
    // the probabilities are shown to 4 significant digits (float16 on the wire)
    expect(root.querySelectorAll(".mw-cell.mw-selected")).toHaveLength(R);
  });

  it("a chosen target's line; lens switch from the static cache", () => {
    const tp = new Array(R * T).fill(0).map((_, i) => [0, 0.25, 0.5][Math.floor(i / T)]);
    const model = staticModel(baseState({ target: "\u202Eevil", target_id: 13, target_prob: f16(tp, [R, T]) }));
    const { root, cell } = mount(model);
    click(cell(1, 0));
    expect(root.querySelector(".mw-target-token")!.textContent).toBe("\u202Eevil");
    expect(texts(root, ".mw-line-row .mw-prob")).toEqual(["0", "0.2500", "0.5000"]);
    const sel = root.querySelector<HTMLSelectElement>("select.mw-lens")!;
    sel.value = "tuned";
    sel.dispatchEvent(new Event("change", { bubbles: true }));
    expect(model.get("lens")).toBe("tuned");
    expect(cell(0, 0).textContent).toBe(" Rome");
    expect(texts(root, ".mw-kl")).toEqual(["0.250", "0.250", "0.250"]);
    expect(root.querySelector(".mw-title")!.textContent).toBe("zoo:tiny · tuned lens");
  });
});

describe("LogitLens: live kernel", () => {
  it("lens switch requests 'lens'; new arrays repaint the grid", async () => {
    const { model, sent, reply } = liveModel(baseState({ lens_cache: undefined }));
    const { root, cell } = mount(model);
    const sel = root.querySelector<HTMLSelectElement>("select.mw-lens")!;
    sel.value = "tuned";
    sel.dispatchEvent(new Event("change", { bubbles: true }));
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "lens", msg: { lens: "tuned" } });
    expect(root.querySelector(".mw-status")!.textContent).toBe("loading");
    expect(sel.disabled).toBe(true);
    model.set("top_ids", i32(ids.map(() => 11), [R, T, K]));
    model.set("lens", "tuned");
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: { lens: "tuned" } });
    await flush();
    expect(cell(0, 0).textContent).toBe(" Paris");
    expect(root.querySelector(".mw-status")!.textContent).toBe("ready");
    expect(sel.disabled).toBe(false);
  });

  it("target box requests 'target'; errors show", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root } = mount(model);
    const input = root.querySelector<HTMLInputElement>("input.mw-target")!;
    expect(input.disabled).toBe(false);
    input.value = " Rome";
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(sent[0]).toMatchObject({ name: "target", msg: { token: " Rome" } });
    reply({ kind: "mw-response", id: sent[0].id, ok: false, error: "target ' Eiffel Tower' is 2 tokens" });
    await flush();
    expect(root.querySelector(".mw-error")!.textContent).toBe("target ' Eiffel Tower' is 2 tokens");
    root.querySelector<HTMLButtonElement>("button.mw-target-set")!.click();
    expect(sent[1]).toMatchObject({ name: "target", msg: { token: " Rome" } });
    reply({ kind: "mw-response", id: sent[1].id, ok: true, response: {} });
    await flush();
    expect(root.querySelector<HTMLElement>(".mw-error")!.hidden).toBe(true);
  });
});

describe("LogitLens: the linked column (mw.link on position)", () => {
  it("selected_position set from Python marks that column's cells and label mw-linked", () => {
    const { model } = liveModel(baseState());
    const { root } = mountView(render, model, ".mw-logit-lens");
    model.set("selected_position", 3);
    const linked = Array.from(root.querySelectorAll<HTMLElement>(".mw-cell.mw-linked"));
    expect(linked.length).toBe(R);
    expect(linked.every((c) => c.dataset.pos === "3")).toBe(true);
    expect(root.querySelectorAll(".mw-col-label.mw-linked").length).toBe(1);
    model.set("selected_position", -1);
    expect(root.querySelectorAll(".mw-linked").length).toBe(0);
  });
});
