import { describe, expect, it } from "vitest";
import widget from "../src/patching_grid";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, expectInert, f32, flush, hover, liveModel, mountView, wireB64 } from "./helpers";

const HOSTILE_CLEAN = ["<|endoftext|>", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a\nb", "\u202Eevil", " in"];
const HOSTILE_CORRUPT = ["<|endoftext|>", "&amp;", "<img src=x onerror=alert(1)>", "a\nb", "\u0000", " in"];
// layers 0..2 × positions 0..5
const VALUES = [0, 0.5, -0.25, 0, 0, 0, 0, 0.1, 0, 0, 0, 0.9, 0, 0, 0, 0, 0, 1];
const topk = (toks: string[]) => toks.map((token, i) => ({ token, id: i, prob: 0.5 / (i + 1), logit: 1 }));

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    dims: ["layer", "position"],
    layers: [0, 1, 2],
    positions: [0, 1, 2, 3, 4, 5],
    heads: [],
    clean_tokens: HOSTILE_CLEAN,
    corrupt_tokens: HOSTILE_CORRUPT,
    clean_prompt: "clean <b>prompt</b>",
    corrupt_prompt: "corrupt prompt",
    values: f32(VALUES, [3, 6]),
    filled: wireB64("uint8", [3, 6], new Uint8Array(18).fill(1)),
    n_filled: 18,
    n_cells: 18,
    site: "resid_pre",
    sites: ["resid_pre", "attn_out", "head_out"],
    mode: "exact",
    direction: "denoise",
    metric_name: "logit_diff(' Paris', ' Tokyo')",
    normalized: true,
    n_pairs: 1,
    clean_topk: topk([" Paris", "<script>x</script>", " Oslo"]),
    corrupt_topk: topk([" Tokyo", " Delhi", "&lt;"]),
    can_sweep: true,
    status: "ready",
    progress: 1,
    error: "",
    k: 3,
    cell_cache: { "2,5": topk([" Paris", " Rome", " Oslo"]) },
    ...extra,
  };
}

function mount(model: AnyModel) {
  const { root } = mountView(render, model, ".mw-patching-grid");
  const cell = (r: number, c: number) => root.querySelector<HTMLElement>(`.mw-cell[data-row="${r}"][data-col="${c}"]`)!;
  return { root, cell };
}

const rowsOf = (root: HTMLElement, run: string) =>
  Array.from(root.querySelectorAll(`.mw-topk-list[data-run="${run}"] .mw-topk-row .mw-tok`)).map((e) => e.textContent);

describe("PatchingGrid: static model", () => {
  it("renders the grid with token labels, clean/corrupt where they differ, shown literally", () => {
    const { root } = mount(staticModel(baseState()));
    expect(root.querySelectorAll(".mw-cell")).toHaveLength(18);
    const cols = Array.from(root.querySelectorAll(".mw-col-label")).map((e) => e.textContent);
    expect(cols).toEqual([
      "<|endoftext|>",
      "<script>alert(1)</script>/&amp;",
      "<img src=x onerror=alert(1)>",
      "a↵b",
      "\u202Eevil/\\x00",
      " in",
    ]);
    expect(Array.from(root.querySelectorAll(".mw-row-label")).map((e) => e.textContent)).toEqual(["L0", "L1", "L2"]);
    expectInert(root);
    // diverging colours (the default palette): 0 white, positive orange, negative blue
    const bg = (r: number, c: number) => root.querySelector<HTMLElement>(`.mw-cell[data-row="${r}"][data-col="${c}"]`)!.style.background;
    expect(bg(0, 0)).toContain("255, 255, 255");
    expect(bg(2, 5)).toContain("230, 97, 1");
    expect(bg(0, 2)).not.toContain("255, 255, 255");
    expect(root.querySelector(".mw-legend-hi")!.textContent).toBe("1.00");
    // kernel-only controls are disabled
    expect(root.querySelector<HTMLSelectElement>("select.mw-site")!.disabled).toBe(true);
    expect(root.querySelector<HTMLSelectElement>("select.mw-mode")!.disabled).toBe(true);
    expect(root.querySelector<HTMLSelectElement>("select.mw-site")!.value).toBe("resid_pre");
  });

  it("hover shows the cell's label and exact value", () => {
    const { root, cell } = mount(staticModel(baseState()));
    hover(cell(0, 1));
    const tip = root.querySelector<HTMLElement>(".mw-tooltip")!;
    expect(tip.hidden).toBe(false);
    expect(tip.querySelector(".mw-tt-label")!.textContent).toBe(
      'layer 0, position 1 "<script>alert(1)</script>" / "&amp;"',
    );
    expect(tip.querySelector(".mw-tt-value")!.textContent).toBe("0.5000");
    hover(cell(1, 1));
    expect(tip.querySelector(".mw-tt-value")!.textContent).toBe("0.1000");
    expect(tip.querySelector(".mw-tt-label")!.textContent).toContain("layer 1, position 1");
  });

  it("click a cached cell: patched, clean and corrupt top-k; an uncached one says so", () => {
    const { root, cell } = mount(staticModel(baseState()));
    expect(rowsOf(root, "clean")).toEqual([" Paris", "<script>x</script>", " Oslo"]);
    expect(rowsOf(root, "corrupt")).toEqual([" Tokyo", " Delhi", "&lt;"]);
    click(cell(2, 5));
    expect(cell(2, 5).classList.contains("mw-selected")).toBe(true);
    expect(rowsOf(root, "patched")).toEqual([" Paris", " Rome", " Oslo"]);
    expect(root.querySelector(".mw-cell-title")!.textContent).toBe('layer 2, position 5 " in" = 1.000');
    click(cell(0, 0));
    expect(rowsOf(root, "patched")).toEqual([]);
    expect(root.querySelector('.mw-topk-list[data-run="patched"] .mw-note')!.textContent).toContain("not precomputed");
    expect(root.querySelectorAll(".mw-cell.mw-selected")).toHaveLength(1);
  });

  it("layers × heads: head labels", () => {
    const { root, cell } = mount(
      staticModel(
        baseState({
          dims: ["layer", "head"],
          positions: [],
          heads: [0, 1],
          values: f32([1, -1, 0.5, 0], [2, 2]),
          filled: wireB64("uint8", [2, 2], new Uint8Array(4).fill(1)),
          layers: [0, 1],
        }),
      ),
    );
    expect(Array.from(root.querySelectorAll(".mw-col-label")).map((e) => e.textContent)).toEqual(["H0", "H1"]);
    hover(cell(1, 1));
    expect(root.querySelector(".mw-tt-label")!.textContent).toBe("layer 1, head 1");
  });
});

describe("PatchingGrid: live kernel", () => {
  it("click a cell requests 'cell' {layer, position} and shows the patched top-k", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root, cell } = mount(model);
    click(cell(1, 3));
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "cell", msg: { layer: 1, position: 3 } });
    expect(root.querySelector('.mw-topk-list[data-run="patched"] .mw-note')!.textContent).toContain("running");
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: { topk: topk([" Tokyo", "<b>x</b>"]) } });
    await flush();
    expect(rowsOf(root, "patched")).toEqual([" Tokyo", "<b>x</b>"]);
  });

  it("a failed cell request shows the error in the panel", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root, cell } = mount(model);
    click(cell(0, 0));
    reply({ kind: "mw-response", id: sent[0].id, ok: false, error: "a sweep is running" });
    await flush();
    expect(root.querySelector('.mw-topk-list[data-run="patched"] .mw-note')!.textContent).toBe("a sweep is running");
  });

  it("site change requests a sweep; partial values fill cells; cancel sends 'cancel'", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root, cell } = mount(model);
    const site = root.querySelector<HTMLSelectElement>("select.mw-site")!;
    const cancel = root.querySelector<HTMLButtonElement>("button.mw-cancel")!;
    expect(site.disabled).toBe(false);
    expect(cancel.disabled).toBe(true);
    site.value = "attn_out";
    site.dispatchEvent(new Event("change", { bubbles: true }));
    expect(sent[0]).toMatchObject({ name: "sweep", msg: { site: "attn_out", mode: "exact" } });
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: { started: true } });
    await flush();
    const mask = new Uint8Array(18);
    mask.fill(1, 0, 6);
    model.set("status", "running");
    model.set("n_filled", 6);
    model.set("progress", 1 / 3);
    model.set("filled", wireB64("uint8", [3, 6], mask));
    expect(root.querySelector<HTMLElement>(".mw-status")!.textContent).toBe("running 6/18");
    expect(root.querySelector<HTMLElement>(".mw-status")!.dataset.status).toBe("running");
    expect(cell(0, 1).classList.contains("mw-empty")).toBe(false);
    expect(cell(2, 5).classList.contains("mw-empty")).toBe(true);
    expect(site.disabled).toBe(true);
    expect(cancel.disabled).toBe(false);
    click(cancel);
    expect(sent[1]).toMatchObject({ name: "cancel" });
    model.set("status", "cancelled");
    expect(cancel.disabled).toBe(true);
  });
});

describe("PatchingGrid: selected_cell", () => {
  it("a click sets selected_cell to the cell's model indices and saves it", () => {
    const { model, saves } = liveModel(baseState({ selected_cell: {} }));
    const { cell } = mount(model);
    click(cell(1, 3));
    expect(model.get("selected_cell")).toEqual({ layer: 1, position: 3 });
    expect(saves()).toBe(1);
    click(cell(2, 0));
    expect(model.get("selected_cell")).toEqual({ layer: 2, position: 0 });
    expect(saves()).toBe(2);
  });

  it("layers × heads × positions: the trait carries layer, head and position", () => {
    const state = baseState({
      dims: ["layer", "head", "position"],
      layers: [0, 1],
      heads: [0, 1],
      positions: [0, 1, 2],
      values: f32(new Array(12).fill(0.1), [4, 3]),
      filled: wireB64("uint8", [4, 3], new Uint8Array(12).fill(1)),
      n_filled: 12,
      n_cells: 12,
    });
    const { model } = liveModel(state);
    const { cell } = mount(model);
    click(cell(3, 2));
    expect(model.get("selected_cell")).toEqual({ layer: 1, head: 1, position: 2 });
  });

  it("set from Python: the view selects that cell and asks for its top-k; {} clears", () => {
    const { model, sent, saves } = liveModel(baseState({ selected_cell: {} }));
    const { root, cell } = mount(model);
    model.set("selected_cell", { layer: 2, position: 5 });
    expect(cell(2, 5).classList.contains("mw-selected")).toBe(true);
    expect(sent[0]).toMatchObject({ name: "cell", msg: { layer: 2, position: 5 } });
    expect(saves()).toBe(0); // no echo back to Python
    model.set("selected_cell", {});
    expect(root.querySelector(".mw-cell.mw-selected")).toBeNull();
    expect(root.querySelector(".mw-cell-title")!.textContent).toContain("click a cell");
  });

  it("a selection present when the view opens is shown", () => {
    const { model, sent } = liveModel(baseState({ selected_cell: { layer: 0, position: 1 } }));
    const { cell } = mount(model);
    expect(cell(0, 1).classList.contains("mw-selected")).toBe(true);
    expect(sent[0]).toMatchObject({ name: "cell", msg: { layer: 0, position: 1 } });
  });
});

describe("PatchingGrid: waiting for the model", () => {
  it("status 'waiting' reads 'waiting for the model'", () => {
    const { model } = liveModel(baseState());
    const { root } = mount(model);
    model.set("status", "waiting");
    const pill = root.querySelector<HTMLElement>(".mw-status")!;
    expect(pill.dataset.status).toBe("waiting");
    expect(pill.textContent).toBe("waiting for the model");
  });
});

describe("PatchingGrid: the linked column (mw.link on position)", () => {
  it("a selected_cell with a position marks that column mw-linked, and only it", () => {
    const { model } = liveModel(baseState({ selected_cell: {} }));
    const { root, cell } = mount(model);
    expect(root.querySelectorAll(".mw-linked").length).toBe(0);
    model.set("selected_cell", { layer: 0, position: 4 });
    for (let r = 0; r < 3; r++) expect(cell(r, 4).classList.contains("mw-linked")).toBe(true);
    expect(root.querySelectorAll(".mw-cell.mw-linked").length).toBe(3);
    expect(root.querySelector('.mw-col-label[data-col="4"]')!.classList.contains("mw-linked")).toBe(true);
    model.set("selected_cell", {});
    expect(root.querySelectorAll(".mw-linked").length).toBe(0);
  });
});

describe("PatchingGrid: show the code", () => {
  it("the code toggle asks Python once and shows the reply as text", async () => {
    const { model, sent, reply } = liveModel(baseState({ selected_cell: {} }));
    const { root } = mount(model);
    const btn = root.querySelector<HTMLButtonElement>(".mw-code-toggle")!;
    const pre = root.querySelector<HTMLElement>(".mw-code")!;
    expect(pre.hidden).toBe(true);
    click(btn);
    expect(pre.hidden).toBe(false);
    expect(btn.getAttribute("aria-expanded")).toBe("true");
    const ask = sent.find((m) => m.name === "code")!;
    expect(ask).toBeTruthy();
    const code = "with nn.trace(ids):\n    x = '<img src=x onerror=window.__pwned=1>'";
    reply({ kind: "mw-response", id: ask.id, ok: true, response: { code } });
    await flush();
    expect(pre.textContent).toBe(code);
    expect(pre.querySelector("img")).toBeNull();
    click(btn);
    click(btn);
    expect(sent.filter((m) => m.name === "code").length).toBe(1);
  });

  it("a static copy has no code toggle", () => {
    const { root } = mount(staticModel(baseState()));
    expect(root.querySelector<HTMLButtonElement>(".mw-code-toggle")!.hidden).toBe(true);
  });
});

describe("PatchingGrid: predict, then reveal", () => {
  it("a question hides the colours; a click sends a guess, not a cell; the guess reveals", async () => {
    const { model, sent } = liveModel(baseState({ selected_cell: {}, predict: "Which layer carries the fact?", guesses: [] }));
    const { root, cell } = mount(model);
    const banner = root.querySelector<HTMLElement>(".mw-predict")!;
    expect(banner.hidden).toBe(false);
    expect(banner.textContent).toContain("Which layer carries the fact?");
    expect(root.querySelectorAll<HTMLElement>(".mw-cell").length).toBe(18);
    expect(Array.from(root.querySelectorAll<HTMLElement>(".mw-cell")).every((c) => c.style.background === "")).toBe(true);
    click(cell(1, 3));
    await flush();
    expect(sent.map((m) => m.name)).toEqual(["guess"]);
    expect(sent[0].msg).toEqual({ layer: 1, position: 3 });
    expect(model.get("selected_cell")).toEqual({});
    // Python records the guess (and the answer) in `guesses`
    model.set("guesses", [{
      question: "Which layer carries the fact?", layer: 1, position: 3, label: "layer 1, position 3 '<b>'",
      value: 0.25, answer: { layer: 2, position: 5 }, answer_label: "layer 2, position 5", answer_value: 0.5, correct: false,
    }]);
    expect(cell(0, 0).style.background).not.toBe("");
    expect(cell(1, 3).classList.contains("mw-guess")).toBe(true);
    expect(cell(2, 5).classList.contains("mw-answer")).toBe(true);
    expect(banner.textContent).toContain("Your guess: layer 1, position 3 '<b>'");
    expect(banner.querySelector("b")).toBeNull();
    expect(banner.textContent).toContain("Largest: layer 2, position 5");
    // now a click selects as usual
    click(cell(0, 0));
    expect(model.get("selected_cell")).toEqual({ layer: 0, position: 0 });
  });

  it("no question: no banner, colours shown", () => {
    const { model } = liveModel(baseState({ predict: "", guesses: [] }));
    const { root, cell } = mount(model);
    expect(root.querySelector<HTMLElement>(".mw-predict")!.hidden).toBe(true);
    expect(cell(0, 0).style.background).not.toBe("");
  });
});

describe("PatchingGrid: keyboard and ARIA (lib/keyboard.ts)", () => {
  it("cells are labelled gridcells; arrows, Home/End and Ctrl+End move the selection; aria-selected follows", () => {
    const { model } = liveModel(baseState({ selected_cell: {} }));
    const { root, cell } = mount(model);
    const grid = root.querySelector<HTMLElement>(".mw-grid")!;
    expect(grid.getAttribute("role")).toBe("grid");
    expect(cell(1, 2).getAttribute("role")).toBe("gridcell");
    expect(cell(1, 2).getAttribute("aria-label")).toMatch(/^layer 1, position 2 .*: -?\d/);
    const key = (k: string, ctrlKey = false) => grid.dispatchEvent(new KeyboardEvent("keydown", { key: k, ctrlKey, bubbles: true }));
    key("Enter");
    expect(model.get("selected_cell")).toEqual({ layer: 0, position: 0 });
    key("ArrowDown");
    key("ArrowRight");
    expect(model.get("selected_cell")).toEqual({ layer: 1, position: 1 });
    expect(cell(1, 1).getAttribute("aria-selected")).toBe("true");
    expect(cell(1, 1).tabIndex).toBe(0);
    expect(root.querySelectorAll('.mw-cell[aria-selected="true"]').length).toBe(1);
    key("End");
    expect(model.get("selected_cell")).toEqual({ layer: 1, position: 5 });
    key("End", true);
    expect(model.get("selected_cell")).toEqual({ layer: 2, position: 5 });
    key("Home", true);
    expect(model.get("selected_cell")).toEqual({ layer: 0, position: 0 });
  });

  it("while a question waits for a guess, a cell's label hides its value", () => {
    const { model } = liveModel(baseState({ predict: "Where?", guesses: [] }));
    const { cell } = mount(model);
    expect(cell(0, 0).getAttribute("aria-label")).toMatch(/hidden until you guess$/);
  });
});
