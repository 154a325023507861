import { describe, expect, it } from "vitest";
import widget, {
  BLOCK,
  EAGER_TOKENS,
  INITIAL_TOKENS,
  blockOf,
  chunkTexts,
  estimateHeight,
  initialBlocks,
  visibleRange,
} from "../src/token_activations";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, f32, flush, i32, liveModel, mountView } from "./helpers";

const HOSTILE = [
  "<script>alert(1)</script>",
  "<img src=x onerror=alert(1)>",
  "&amp;",
  "\u202Eevil",
  "\u0000",
  "😀",
  "\n",
  " leading",
];
const SECOND = ["Hello", " world", "!"];
const N = HOSTILE.length + SECOND.length; // 11

/** topk for token i: units [i, 100 + i, 200] with values [3, -2, 1]. */
function topk(n: number) {
  const idx: number[] = [];
  const val: number[] = [];
  for (let i = 0; i < n; i++) {
    idx.push(i, 100 + i, 200);
    val.push(3, -2, 1);
  }
  return { topk_indices: i32(idx, [n, 3]), topk_values: f32(val, [n, 3]) };
}

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const cache: Record<string, unknown> = {};
  for (let i = 0; i < N; i++) {
    // unit u's values: u at token u, 0 elsewhere (so each unit lights up one distinct token)
    for (const u of [i, 100 + i, 200]) {
      const v = new Array(N).fill(0);
      v[u % N] = u === 200 ? -1 : 1;
      cache[String(u)] = f32(v);
    }
  }
  return {
    texts: [HOSTILE, SECOND],
    site: "mlp_post",
    layer: 2,
    sites: ["mlp_post", "resid_post", "attn_out"],
    n_layers: 6,
    n_units: 3072,
    unit_kind: "neuron",
    values: f32(Array.from({ length: N }, (_, i) => (i % 2 ? -1 : 1) * (i + 1))),
    ...topk(N),
    selected_token: -1,
    selected_unit: 17,
    unit_label: "neuron 17",
    status: "ready",
    progress: 0,
    error: "",
    static: true,
    unit_cache: cache,
    ...extra,
  };
}

function mount(model: AnyModel) {
  const mounted = mountView(render, model, ".mw-token-activations");
  const tokens = () => Array.from(mounted.root.querySelectorAll<HTMLElement>(".mw-token"));
  return { ...mounted, tokens };
}

describe("TokenActivations: rendering", () => {
  it("exports anywidget's { render }", () => {
    expect(widget.render).toBe(render);
  });

  it("shows hostile tokens literally and creates no markup from them", () => {
    const model = staticModel(baseState());
    const { root, tokens, el } = mount(model);
    const spans = tokens();
    expect(spans).toHaveLength(N);
    expect(spans.map((s) => s.dataset.index)).toEqual(Array.from({ length: N }, (_, i) => String(i)));
    expect(spans[0].textContent).toBe("<script>alert(1)</script>");
    expect(spans[1].textContent).toBe("<img src=x onerror=alert(1)>");
    expect(spans[2].textContent).toBe("&amp;");
    expect(spans[3].textContent).toBe("\u202Eevil"); // literal, isolated by CSS (unicode-bidi: isolate)
    expect(spans[4].textContent).toBe("\\x00"); // C0 control shown as a visible escape
    expect(spans[5].textContent).toBe("😀");
    expect(spans[6].textContent).toBe("↵"); // newline marker ...
    expect(spans[6].nextElementSibling!.tagName).toBe("BR"); // ... followed by a line break
    expect(spans[7].textContent).toBe(" leading"); // leading space kept
    expect(spans.slice(8).map((s) => s.textContent)).toEqual(SECOND);
    // select and hover every token: the top-k title and the tooltip show the token too
    for (const s of spans) {
      click(s);
      s.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    }
    click(spans[0]);
    expect(root.querySelector(".mw-topk-title")!.textContent).toContain('"<script>alert(1)</script>"');
    click(spans[1]);
    expect(root.querySelector(".mw-topk-title")!.textContent).toContain("<img src=x onerror=alert(1)>");
    spans[3].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(root.querySelector(".mw-tooltip")!.textContent).toContain("\\u202eevil");
    expect(root.querySelector("script")).toBeNull();
    expect(root.querySelector("img")).toBeNull();
    expect(el.querySelectorAll("*[onerror]")).toHaveLength(0);
    // the only elements inside token spans are the newline markers
    for (const s of spans) {
      for (const child of Array.from(s.children)) expect(child.className).toBe("mw-nl");
    }
  });

  it("has the stable hooks: header label, selectors, status, top-k panel, legend", () => {
    const { root } = mount(staticModel(baseState()));
    expect(root.querySelector(".mw-unit-label")!.textContent).toBe("neuron 17");
    const site = root.querySelector<HTMLSelectElement>("select.mw-site")!;
    const layer = root.querySelector<HTMLSelectElement>("select.mw-layer")!;
    expect(Array.from(site.options).map((o) => o.value)).toEqual(["mlp_post", "resid_post", "attn_out"]);
    expect(site.value).toBe("mlp_post");
    expect(Array.from(layer.options).map((o) => o.value)).toEqual(["0", "1", "2", "3", "4", "5"]);
    expect(layer.value).toBe("2");
    expect(root.querySelector(".mw-status")).not.toBeNull();
    expect(root.querySelector(".mw-topk")).not.toBeNull();
    expect(root.querySelector(".mw-legend")!.textContent).toContain("11.0");
    expect(root.querySelector("style")!.textContent).toContain(".mw-token");
  });

  it("colours tokens with the diverging scale (max |value| → the ends)", () => {
    const { tokens } = mount(staticModel(baseState()));
    const spans = tokens();
    // values: +1, -2, +3, ..., +11 (index 10) → the largest is the default palette's full orange
    expect(spans[10].style.backgroundColor).toBe("rgb(230, 97, 1)");
    expect(spans[10].style.color).toBe("#000"); // orange is light enough for dark text
    expect(spans[0].style.backgroundColor).not.toBe(spans[1].style.backgroundColor);
    expect(spans[0].style.color).toBe("#000"); // pale background → dark text
  });

  it("follows its palette trait: classic is RdBu, greyscale is grey, back to the default", () => {
    const model = staticModel(baseState());
    const { tokens } = mount(model);
    model.set("palette", "classic");
    expect(tokens()[10].style.backgroundColor).toBe("rgb(178, 24, 43)");
    expect(tokens()[10].style.color).toBe("#fff");
    model.set("palette", "greyscale");
    const [r, g, b] = tokens()[10].style.backgroundColor.match(/\d+/g)!.map(Number);
    expect(r === g && g === b).toBe(true);
    model.set("palette", "no such palette"); // unknown → the default
    expect(tokens()[10].style.backgroundColor).toBe("rgb(230, 97, 1)");
  });

  it("disables the selectors in static mode and says why", () => {
    const { root } = mount(staticModel(baseState()));
    for (const sel of root.querySelectorAll("select")) {
      expect((sel as HTMLSelectElement).disabled).toBe(true);
      expect(sel.getAttribute("title")).toMatch(/static/i);
    }
  });

  it("renders from a minimal state (traits not set yet) without errors", () => {
    const { root, tokens } = mount(staticModel({ texts: [["a", "b"]], values: {}, topk_indices: {}, topk_values: {} }));
    expect(tokens()).toHaveLength(2);
    expect((root.querySelector(".mw-error") as HTMLElement).hidden).toBe(true);
    click(tokens()[0]);
    expect(root.querySelector(".mw-topk")!.textContent).toContain("No top-k data");
  });

  it("shows a broken wire array as an error in the view", () => {
    const bad = { dtype: "float32", shape: [5], b64: "AAAA" };
    const { root } = mount(staticModel(baseState({ values: bad })));
    const err = root.querySelector<HTMLElement>(".mw-error")!;
    expect(err.hidden).toBe(false);
    expect(err.textContent).toContain("values");
  });

  it("renders a 2,000-token text: the first blocks at once, a far token once it is selected", () => {
    const n = 2000;
    const texts = [Array.from({ length: n }, (_, i) => ` tok${i}`)];
    const model = staticModel(baseState({ texts, values: f32(Array.from({ length: n }, (_, i) => Math.sin(i))), ...topk(n) }));
    const t0 = performance.now();
    const { root, tokens } = mount(model);
    const first = tokens();
    expect(first.length).toBeGreaterThan(0);
    expect(first.length).toBeLessThanOrEqual(INITIAL_TOKENS);
    expect(first.map((s) => s.dataset.index)).toEqual(first.map((_, i) => String(i)));
    expect(root.querySelector('.mw-token[data-index="1999"]')).toBeNull();
    expect(root.querySelectorAll(".mw-block.mw-pending")).toHaveLength(Math.ceil(n / BLOCK) - Math.ceil(first.length / BLOCK));
    model.set("selected_token", 1999); // as Python (or a linked view) would
    const last = root.querySelector<HTMLElement>('.mw-token[data-index="1999"]')!;
    expect(last.textContent).toBe(" tok1999");
    expect(last.style.backgroundColor).toMatch(/^rgb\(/);
    expect(last.classList.contains("mw-selected")).toBe(true);
    expect(last.getAttribute("aria-selected")).toBe("true");
    expect(last.getAttribute("aria-setsize")).toBe("2000");
    expect(last.getAttribute("aria-posinset")).toBe("2000");
    expect(root.querySelector(".mw-topk-title")!.textContent).toContain("token 1999");
    click(root.querySelector<HTMLElement>('.mw-token[data-index="1950"]')!);
    expect(model.get("selected_token")).toBe(1950);
    expect(last.classList.contains("mw-selected")).toBe(false);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it("a 10,000-token text starts with far fewer spans; End and Home reach both ends by keyboard", () => {
    const n = 10_000;
    const texts = [Array.from({ length: n }, (_, i) => (i % 50 === 49 ? "\n" : ` w${i}`))];
    const model = staticModel(baseState({ texts, values: f32(Array.from({ length: n }, (_, i) => (i % 7) - 3)), ...topk(n) }));
    const { root, tokens } = mount(model);
    expect(tokens().length).toBeLessThanOrEqual(INITIAL_TOKENS);
    const box = root.querySelector<HTMLElement>(".mw-texts")!;
    const key = (k: string) => box.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
    key("End");
    expect(model.get("selected_token")).toBe(n - 1);
    const last = root.querySelector<HTMLElement>(`.mw-token[data-index="${n - 1}"]`)!;
    expect(last.textContent).toBe("↵");
    expect(last.classList.contains("mw-selected")).toBe(true);
    expect(root.querySelector<HTMLElement>(".mw-tooltip")!.textContent).toContain(`token ${n - 1}`);
    key("ArrowLeft");
    expect(root.querySelector<HTMLElement>(`.mw-token[data-index="${n - 2}"]`)!.classList.contains("mw-selected")).toBe(true);
    key("Home");
    expect(tokens()[0].classList.contains("mw-selected")).toBe(true);
    expect(tokens().length).toBeLessThan(n / 5);
    // a recolour reaches the rendered far block too
    model.set("values", f32(Array.from({ length: n }, (_, i) => (i === n - 2 ? 5 : 0))));
    expect(root.querySelector<HTMLElement>(`.mw-token[data-index="${n - 2}"]`)!.style.backgroundColor).toBe("rgb(230, 97, 1)");
  });

  it("shows the static copy's note when it has one", () => {
    const { root } = mount(staticModel(baseState({ static_note: "This saved copy shows the first 11 of 20 tokens" })));
    const note = root.querySelector<HTMLElement>(".mw-static-note")!;
    expect(note.hidden).toBe(false);
    expect(note.textContent).toContain("first 11 of 20");
    const plain = mount(staticModel(baseState()));
    expect(plain.root.querySelector<HTMLElement>(".mw-static-note")!.hidden).toBe(true);
  });
});

describe("TokenActivations: blocks (the virtualised layout)", () => {
  it("chunkTexts cuts each text into blocks of at most `size` tokens, never across texts", () => {
    expect(chunkTexts([5, 0, 3], 2)).toEqual([
      { text: 0, start: 0, end: 2 },
      { text: 0, start: 2, end: 4 },
      { text: 0, start: 4, end: 5 },
      { text: 2, start: 5, end: 7 },
      { text: 2, start: 7, end: 8 },
    ]);
    const blocks = chunkTexts([10_000, 7], BLOCK);
    expect(blocks).toHaveLength(Math.ceil(10_000 / BLOCK) + 1);
    expect(blocks.every((b, k) => k === 0 || b.start === blocks[k - 1].end)).toBe(true);
    expect(blocks.every((b) => b.end - b.start <= BLOCK && b.end > b.start)).toBe(true);
    expect(blocks[blocks.length - 1]).toEqual({ text: 1, start: 10_000, end: 10_007 });
  });

  it("blockOf finds the block of every token, and -1 outside", () => {
    const blocks = chunkTexts([7, 3, 11], 4);
    for (let i = 0; i < 21; i++) {
      const b = blockOf(blocks, i);
      expect(blocks[b].start <= i && i < blocks[b].end).toBe(true);
    }
    expect(blockOf(blocks, -1)).toBe(-1);
    expect(blockOf(blocks, 21)).toBe(-1);
  });

  it("initialBlocks: everything for a small view; the leading blocks and the selection's for a large one", () => {
    const small = chunkTexts([EAGER_TOKENS], BLOCK);
    expect(initialBlocks(small, -1)).toEqual(small.map((_, k) => k));
    const big = chunkTexts([10_000], BLOCK);
    const first = initialBlocks(big, -1);
    expect(first).toEqual(Array.from({ length: Math.floor(INITIAL_TOKENS / BLOCK) }, (_, k) => k));
    expect(initialBlocks(big, 9_999)).toEqual([...first, big.length - 1]);
    expect(initialBlocks(big, 10)).toEqual(first);
  });

  it("visibleRange picks the blocks that meet the window, reading few boxes", () => {
    const tops = Array.from({ length: 100 }, (_, k) => k * 50); // 100 blocks of 50 px
    let reads = 0;
    const box = (k: number) => (reads++, { top: tops[k], bottom: tops[k] + 50 });
    expect(visibleRange(100, box, 1000, 1400)).toEqual([19, 28]);
    expect(reads).toBeLessThan(25);
    expect(visibleRange(100, box, -500, 10)).toEqual([0, 0]);
    expect(visibleRange(100, box, 4990, 9000)).toEqual([99, 99]);
    expect(visibleRange(100, box, 6000, 7000)).toBeNull();
    expect(visibleRange(0, box, 0, 100)).toBeNull();
  });

  it("estimateHeight grows with the text and the line breaks, shrinks with the width", () => {
    expect(estimateHeight(800, 0, 760)).toBeGreaterThan(estimateHeight(400, 0, 760));
    expect(estimateHeight(400, 3, 760)).toBe(estimateHeight(400, 0, 760) + 3 * 24);
    expect(estimateHeight(800, 0, 380)).toBeGreaterThan(estimateHeight(800, 0, 760));
    expect(estimateHeight(800, 0, 0)).toBeGreaterThan(0); // no layout yet: a default width
  });
});

describe("TokenActivations: interactions", () => {
  it("clicking a token sets selected_token, highlights it and fills the top-k panel", () => {
    const model = staticModel(baseState());
    let saves = 0;
    model.save_changes = () => void saves++;
    const { root, tokens } = mount(model);
    const panel = root.querySelector(".mw-topk")!;
    expect(panel.querySelectorAll(".mw-topk-row")).toHaveLength(0);

    click(tokens()[2]);
    expect(model.get("selected_token")).toBe(2);
    expect(saves).toBe(1);
    expect(tokens()[2].classList.contains("mw-selected")).toBe(true);
    expect(root.querySelectorAll(".mw-selected")).toHaveLength(1);
    const rows = Array.from(panel.querySelectorAll<HTMLElement>(".mw-topk-row"));
    expect(rows.map((r) => r.dataset.unit)).toEqual(["2", "102", "200"]);
    expect(rows[0].textContent).toContain("neuron 2");
    expect(rows[0].textContent).toContain("3.000");
    expect(rows[1].textContent).toContain("-2.000");

    click(tokens()[9]);
    expect(model.get("selected_token")).toBe(9);
    expect(tokens()[2].classList.contains("mw-selected")).toBe(false);
    expect(tokens()[9].classList.contains("mw-selected")).toBe(true);
  });

  it("clicking the ↵ marker inside a newline token selects that token", () => {
    const model = staticModel(baseState());
    const { tokens } = mount(model);
    click(tokens()[6].querySelector(".mw-nl")!);
    expect(model.get("selected_token")).toBe(6);
  });

  it("clicking a top-k row sets selected_unit and (static) recolours from unit_cache", () => {
    const model = staticModel(baseState());
    let saves = 0;
    model.save_changes = () => void saves++;
    const { root, tokens } = mount(model);
    const before = tokens();
    click(before[3]);
    const row = root.querySelector<HTMLElement>('.mw-topk-row[data-unit="3"]')!;
    click(row);
    expect(model.get("selected_unit")).toBe(3);
    expect(saves).toBe(2);
    // unit 3 in the cache: 1 at token 3, 0 elsewhere
    const after = tokens();
    expect(after).toEqual(before); // same elements
    after.forEach((s, i) => expect(s.style.backgroundColor).toBe(i === 3 ? "rgb(230, 97, 1)" : "rgb(255, 255, 255)"));
    expect(root.querySelector(".mw-unit-label")!.textContent).toBe("neuron 3");
    expect(root.querySelector('.mw-topk-row[data-unit="3"]')!.classList.contains("mw-active")).toBe(true);

    // unit 200 is negative at token 200 % N
    click(root.querySelector('.mw-topk-row[data-unit="200"]')!);
    expect(model.get("selected_unit")).toBe(200);
    expect(tokens()[200 % N].style.backgroundColor).toBe("rgb(33, 102, 172)");
    expect(tokens()[3].style.backgroundColor).toBe("rgb(255, 255, 255)");
  });

  it("hover shows a tooltip with the literal token, indices and the exact value", () => {
    const model = staticModel(baseState());
    const { root, tokens } = mount(model);
    const tip = root.querySelector<HTMLElement>(".mw-tooltip")!;
    expect(tip.hidden).toBe(true);
    tokens()[9].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toContain('" world"');
    expect(tip.textContent).toContain("token 9");
    expect(tip.textContent).toContain("text 1, position 1");
    expect(tip.textContent).toContain("-10.00"); // values[9] = -(9 + 1)
    tokens()[4].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(tip.textContent).toContain('"\\x00"');
    tokens()[0].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(tip.textContent).toContain("<script>alert(1)</script>");
    expect(tip.querySelector("script")).toBeNull();
    tokens()[0].dispatchEvent(new MouseEvent("mouseout", { bubbles: true, relatedTarget: root }));
    expect(tip.hidden).toBe(true);
  });

  it("arrow keys move the selection", () => {
    const model = staticModel(baseState({ selected_token: 4 }));
    const { root } = mount(model);
    const texts = root.querySelector(".mw-texts")!;
    texts.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(model.get("selected_token")).toBe(5);
    texts.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(model.get("selected_token")).toBe(-1);
  });
});

describe("TokenActivations: Python-side changes", () => {
  it("model.set('values') recolours the same span elements", () => {
    const model = staticModel(baseState());
    const { tokens } = mount(model);
    const before = tokens();
    const colours = before.map((s) => s.style.backgroundColor);
    model.set("values", f32(Array.from({ length: N }, (_, i) => (i === 5 ? -4 : 0))));
    const after = tokens();
    expect(after).toHaveLength(N);
    after.forEach((s, i) => expect(s).toBe(before[i]));
    expect(after[5].style.backgroundColor).toBe("rgb(33, 102, 172)");
    expect(after[0].style.backgroundColor).toBe("rgb(255, 255, 255)");
    expect(after.map((s) => s.style.backgroundColor)).not.toEqual(colours);
  });

  it("selected_token, selected_unit, unit_label, layer, site, texts and status from Python update the view", () => {
    const model = staticModel(baseState());
    const { root, tokens } = mount(model);
    model.set("selected_token", 7);
    expect(tokens()[7].classList.contains("mw-selected")).toBe(true);
    expect(root.querySelectorAll(".mw-topk-row")).toHaveLength(3);

    model.set("topk_indices", i32(Array.from({ length: N * 2 }, (_, j) => 50 + j), [N, 2]));
    model.set("topk_values", f32(Array.from({ length: N * 2 }, () => 0.5), [N, 2]));
    expect(Array.from(root.querySelectorAll<HTMLElement>(".mw-topk-row")).map((r) => r.dataset.unit)).toEqual(["64", "65"]);

    model.set("unit_label", "direction: sentiment");
    expect(root.querySelector(".mw-unit-label")!.textContent).toBe("direction: sentiment");

    model.set("layer", 4);
    model.set("site", "resid_post");
    expect(root.querySelector<HTMLSelectElement>("select.mw-layer")!.value).toBe("4");
    expect(root.querySelector<HTMLSelectElement>("select.mw-site")!.value).toBe("resid_post");

    model.set("status", "loading");
    model.set("progress", 0.4);
    const status = root.querySelector<HTMLElement>(".mw-status")!;
    expect(status.dataset.status).toBe("loading");
    expect(status.textContent).toContain("40%");
    model.set("error", "boom: layer 99 out of range");
    model.set("status", "error");
    expect(status.dataset.status).toBe("error");
    expect(root.querySelector(".mw-error")!.textContent).toContain("boom: layer 99 out of range");
    expect((root.querySelector(".mw-error") as HTMLElement).hidden).toBe(false);

    model.set("texts", [["a", "b"]]);
    expect(tokens().map((s) => s.textContent)).toEqual(["a", "b"]);
  });

  it("cleanup removes the model listeners and the DOM", () => {
    const model = staticModel(baseState());
    const { el, cleanup } = mount(model);
    cleanup();
    expect(el.querySelector(".mw-token-activations")).toBeNull();
    expect(() => model.set("values", f32(new Array(N).fill(1)))).not.toThrow();
  });
});


describe("TokenActivations: live kernel", () => {
  it("changing the layer requests fetch {site, layer}, shows progress, then ready", async () => {
    const { model, sent, reply, listeners } = liveModel(baseState());
    const { root } = mount(model);
    const layer = root.querySelector<HTMLSelectElement>("select.mw-layer")!;
    const status = root.querySelector<HTMLElement>(".mw-status")!;
    expect(layer.disabled).toBe(false);
    layer.value = "5";
    layer.dispatchEvent(new Event("change", { bubbles: true }));
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "fetch", msg: { site: "mlp_post", layer: 5 } });
    expect(status.dataset.status).toBe("loading");
    reply({ kind: "mw-progress", id: sent[0].id, done: 1, total: 4 });
    expect(status.textContent).toContain("25%");
    model.set("layer", 5);
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: {} });
    await flush();
    expect(status.dataset.status).toBe("ready");
    expect(layer.value).toBe("5");
    expect(listeners.size).toBe(0);
  });

  it("a failed fetch shows the error in the view and restores the selector", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root } = mount(model);
    const site = root.querySelector<HTMLSelectElement>("select.mw-site")!;
    site.value = "attn_out";
    site.dispatchEvent(new Event("change", { bubbles: true }));
    expect(sent[0]).toMatchObject({ msg: { site: "attn_out", layer: 2 } });
    reply({ kind: "mw-response", id: sent[0].id, ok: false, error: "site attn_out not hooked" });
    await flush();
    const err = root.querySelector<HTMLElement>(".mw-error")!;
    expect(err.hidden).toBe(false);
    expect(err.textContent).toContain("site attn_out not hooked");
    expect(root.querySelector<HTMLElement>(".mw-status")!.dataset.status).toBe("error");
    expect(site.value).toBe("mlp_post");
  });

  it("clicking a top-k row in live mode only sets selected_unit (Python sends the values)", () => {
    const { model } = liveModel(baseState());
    const { root, tokens } = mount(model);
    const colours = tokens().map((s) => s.style.backgroundColor);
    click(tokens()[1]);
    click(root.querySelector('.mw-topk-row[data-unit="101"]')!);
    expect(model.get("selected_unit")).toBe(101);
    expect(tokens().map((s) => s.style.backgroundColor)).toEqual(colours);
  });
});

describe("TokenActivations: keyboard and ARIA (lib/keyboard.ts)", () => {
  it("the tokens are a listbox of options; aria-selected follows the selection; keys move and Enter activates", () => {
    const model = staticModel(baseState({ selected_token: -1 }));
    const { root, tokens } = mount(model);
    const texts = root.querySelector<HTMLElement>(".mw-texts")!;
    expect(texts.getAttribute("role")).toBe("listbox");
    expect(tokens().every((t) => t.getAttribute("role") === "option")).toBe(true);
    expect(tokens()[1].getAttribute("aria-label")).toMatch(/position 1: "/);
    const key = (k: string) => texts.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
    key("Enter");
    expect(model.get("selected_token")).toBe(0);
    key("End");
    const last = tokens().length - 1;
    expect(model.get("selected_token")).toBe(last);
    expect(tokens().filter((t) => t.getAttribute("aria-selected") === "true")).toEqual([tokens()[last]]);
    key("ArrowUp");
    expect(model.get("selected_token")).toBe(last - 1);
    key("Home");
    expect(model.get("selected_token")).toBe(0);
    expect(tokens()[0].getAttribute("aria-selected")).toBe("true");
    expect(tokens()[last].getAttribute("aria-selected")).toBe("false");
  });
});
