import { describe, expect, it } from "vitest";
import widget from "../src/patchscope";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, expectInert, flush, liveModel, mountView } from "./helpers";

const HOSTILE = ["<|endoftext|>", "<script>window.__pwned=1</script>", "<img src=x onerror=alert(1)>", "a\nb", "\u202Eevil", " in"];

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    source_prompt: HOSTILE.join(""),
    source_tokens: HOSTILE,
    target_prompt: "The Silver Mill is in",
    target_tokens: ["<|endoftext|>", "The", " Silver", " Mill", " is", " in"],
    target_position: 5,
    n_layers: 2,
    target_layers: [0, 1, 2],
    n_tokens: 2,
    selected_layer: -1,
    selected_position: -1,
    decoded: [],
    decoded_probs: [],
    baseline: " Moscow.",
    done_cells: [],
    status: "ready",
    progress: 1,
    error: "",
    decoded_cache: {
      "1,5": { texts: [" Paris.", "<b>x</b>", "\u0000"], probs: [0.9, 0.5, 0.25] },
    },
    ...extra,
  };
}

function mount(model: AnyModel) {
  const { root } = mountView(render, model, ".mw-patchscope");
  const cell = (l: number, p: number) => root.querySelector<HTMLElement>(`.mw-cell[data-layer="${l}"][data-position="${p}"]`)!;
  return { root, cell };
}

const texts = (root: HTMLElement) => Array.from(root.querySelectorAll(".mw-decoded-row .mw-text")).map((e) => e.textContent);

describe("Patchscope: static model", () => {
  it("renders the layers × positions grid with source tokens shown literally", () => {
    const { root } = mount(staticModel(baseState()));
    expect(root.querySelectorAll(".mw-cell")).toHaveLength(3 * 6);
    expect(Array.from(root.querySelectorAll(".mw-src-token")).map((e) => e.textContent)).toEqual([
      "<|endoftext|>",
      "<script>window.__pwned=1</script>",
      "<img src=x onerror=alert(1)>",
      "a↵b",
      "\u202Eevil",
      " in",
    ]);
    expect(Array.from(root.querySelectorAll(".mw-row-label")).map((e) => e.textContent)).toEqual(["L0", "L1", "L2 (out)"]);
    expectInert(root, "script, img, b");
    // the patched slot of the inspection prompt is marked
    expect(root.querySelector(".mw-tt.mw-patched")!.textContent).toBe(" in");
    expect(root.querySelector(".mw-cell.mw-done")).toBe(root.querySelector('.mw-cell[data-layer="1"][data-position="5"]'));
    expect(root.querySelector(".mw-status")!.textContent).toBe("static");
    expect(root.querySelector(".mw-baseline")!.textContent).toBe("unpatched:  Moscow.");
  });

  it("click a precomputed cell: decoded text per target layer; others say not precomputed", () => {
    const { root, cell } = mount(staticModel(baseState()));
    click(cell(1, 5));
    expect(cell(1, 5).classList.contains("mw-selected")).toBe(true);
    expect(texts(root)).toEqual([" Paris.", "<b>x</b>", "\\x00"]);
    expect(Array.from(root.querySelectorAll(".mw-decoded-row")).map((e) => (e as HTMLElement).dataset.targetLayer)).toEqual(["0", "1", "2"]);
    expect(Array.from(root.querySelectorAll(".mw-decoded-row .mw-prob")).map((e) => e.textContent)).toEqual(["0.90", "0.50", "0.25"]);
    expect(root.querySelector(".mw-panel-title")!.textContent).toBe('source layer 1, position 5 " in"');
    click(cell(0, 1));
    expect(texts(root)).toEqual([]);
    expect(root.querySelector(".mw-decoded .mw-note")!.textContent).toContain("not precomputed");
    expect(root.querySelectorAll(".mw-cell.mw-selected")).toHaveLength(1);
  });
});

describe("Patchscope: live kernel", () => {
  it("click requests 'decode' {layer, position}; progress and the decoded texts are shown", async () => {
    const { model, sent, reply } = liveModel(baseState({ decoded_cache: undefined }));
    const { root, cell } = mount(model);
    click(cell(2, 3));
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "decode", msg: { layer: 2, position: 3 } });
    expect(cell(2, 3).classList.contains("mw-selected")).toBe(true);
    model.set("status", "loading");
    model.set("progress", 0.5);
    expect(root.querySelector(".mw-status")!.textContent).toBe("decoding 50%");
    expect(root.querySelector<HTMLElement>(".mw-progress")!.hidden).toBe(false);
    // Python sets the traits, then answers
    model.set("decoded", [" Rome.", "<script>x</script>", "a\nb"]);
    model.set("decoded_probs", [0.5, 0.25, 0.125]);
    model.set("selected_layer", 2);
    model.set("selected_position", 3);
    model.set("done_cells", ["2,3"]);
    model.set("status", "ready");
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: {} });
    await flush();
    expect(texts(root)).toEqual([" Rome.", "<script>x</script>", "a↵b"]);
    expect(cell(2, 3).classList.contains("mw-done")).toBe(true);
    expect(root.querySelector(".mw-status")!.textContent).toBe("ready");
    expect(root.querySelector("script")).toBeNull();
  });

  it("a failed request shows the error", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root, cell } = mount(model);
    click(cell(0, 0));
    reply({ kind: "mw-response", id: sent[0].id, ok: false, error: "layer must be an int in 0..2" });
    await flush();
    const err = root.querySelector<HTMLElement>(".mw-error")!;
    expect(err.hidden).toBe(false);
    expect(err.textContent).toBe("layer must be an int in 0..2");
  });

  it("arrow keys move the selection and request the new cell", () => {
    const { model, sent } = liveModel(baseState({ selected_layer: 1, selected_position: 1 }));
    const { root } = mount(model);
    root.querySelector(".mw-grid")!.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    expect(sent[0]).toMatchObject({ name: "decode", msg: { layer: 2, position: 1 } });
  });
});
