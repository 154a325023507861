import { describe, expect, it } from "vitest";
import widget, { headOrder, parseHead } from "../src/attention_patterns";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, expectInert, f32, flush, hover, liveModel, mountView, texts, wireB64 } from "./helpers";

const TOKENS = ["<|endoftext|>", "<script>window.__pwned=1</script>", "<img src=x onerror=alert(1)>", "a\nb", "\u202Eevil", " in"];
const T = TOKENS.length;
const L = 2;
const H = 2;

/** Head (l, h): query i attends fully to key max(0, i - 1 - (l * H + h) % 2) — a previous-token
 * head for odd flat indices, a self head for even ones; as uint8 with scale 1/255. */
function headData(flat: number): Uint8Array {
  const out = new Uint8Array(T * T);
  for (let i = 0; i < T; i++) out[i * T + Math.max(0, i - (flat % 2))] = 255;
  out[3 * T + 0] = 51; // one fractional value to read back: 0.2
  out[3 * T + 3 - (flat % 2)] = 204; // 0.8
  return out;
}
const quant = (data: Uint8Array, shape: number[]) => ({ ...wireB64("uint8", shape, data), scale: 1 / 255, offset: 0 });

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const thumbs = new Uint8Array(L * H * T * T);
  for (let i = 0; i < L * H; i++) thumbs.set(headData(i), i * T * T);
  return {
    model_name: "zoo:induction",
    tokens: TOKENS,
    n_layers: L,
    n_heads: H,
    thumb_size: T,
    thumbs: quant(thumbs, [L * H, T, T]),
    scores: {
      previous_token: f32([0.1, 0.9, 0.2, 0.8], [L, H]),
      duplicate_token: f32([0, 0, 0, 0], [L, H]),
      induction: f32([0.3, NaN, 0.95, 0.1], [L, H]),
      bos: f32([0.5, 0.4, 0.3, 0.2], [L, H]),
    },
    score_source: "text",
    score_note: "scores on this text",
    sort_by: "layer",
    selected_head: "",
    error: "",
    ...extra,
  };
}

function mount(model: AnyModel) {
  const { root } = mountView(render, model, ".mw-attention-patterns");
  const order = () => Array.from(root.querySelectorAll<HTMLElement>(".mw-head")).map((e) => e.querySelector(".mw-head-label")!.textContent);
  const head = (l: number, h: number) => root.querySelector<HTMLElement>(`.mw-head[data-layer="${l}"][data-head="${h}"]`)!;
  const strip = (i: number) => root.querySelector<HTMLElement>(`.mw-strip .mw-token[data-pos="${i}"]`)!;
  return { root, order, head, strip };
}

const SHOWN = ["<|endoftext|>", "<script>window.__pwned=1</script>", "<img src=x onerror=alert(1)>", "a↵b", "\u202Eevil", " in"];

describe("helpers", () => {
  it("headOrder sorts by score descending, NaN last, ties in layer order; parseHead reads L.H", () => {
    expect(headOrder(4, null)).toEqual([0, 1, 2, 3]);
    expect(headOrder(5, [0.3, NaN, 0.95, 0.3, 1])).toEqual([4, 2, 0, 3, 1]);
    expect(parseHead("1.2")).toEqual([1, 2]);
    expect(parseHead("1.2.3")).toBeNull();
    expect(parseHead("")).toBeNull();
  });
});

describe("AttentionPatterns: static model", () => {
  it("one thumbnail per head, in layer order, reordered by the chosen score (NaN last)", () => {
    const model = staticModel(baseState());
    const { root, order } = mount(model);
    expect(root.querySelectorAll(".mw-head canvas.mw-thumb")).toHaveLength(L * H);
    expect(order()).toEqual(["0.0", "0.1", "1.0", "1.1"]);
    const sort = root.querySelector<HTMLSelectElement>("select.mw-sort")!;
    sort.value = "induction";
    sort.dispatchEvent(new Event("change", { bubbles: true }));
    expect(model.get("sort_by")).toBe("induction");
    expect(order()).toEqual(["1.0", "0.0", "1.1", "0.1"]);
    expect(texts(root, ".mw-head-score")).toEqual(["0.950", "0.300", "0.100", "n/a"]);
    expect(root.querySelector<HTMLElement>(".mw-head")!.dataset.rank).toBe("0");
    model.set("sort_by", "previous_token"); // from Python
    expect(order()).toEqual(["0.1", "1.1", "1.0", "0.0"]);
    expect(sort.value).toBe("previous_token");
    expect(root.querySelector(".mw-score-note")!.textContent).toBe("scores on this text");
    expect(root.querySelector(".mw-title")!.textContent).toContain("2×2 heads · 6 tokens");
  });

  it("shows the exported head in full: labels on both axes and the strip show hostile tokens literally", () => {
    const { root } = mount(staticModel(baseState({ selected_head: "1.1", head_cache: { "1.1": quant(headData(3), [T, T]) } })));
    expect(root.querySelector(".mw-head.mw-selected .mw-head-label")!.textContent).toBe("1.1");
    expect(root.querySelector(".mw-detail-title")!.textContent).toContain("head 1.1");
    expect(texts(root, ".mw-query-label")).toEqual(SHOWN);
    expect(texts(root, ".mw-key-label")).toEqual(SHOWN);
    expect(texts(root, ".mw-strip .mw-token")).toEqual(["<|endoftext|>", "<script>window.__pwned=1</script>", "<img src=x onerror=alert(1)>", "a↵b", "\u202Eevil", " in"]);
    expectInert(root);
  });

  it("hovering a token shades the others by its attention from and to them", () => {
    const { root, strip } = mount(staticModel(baseState({ selected_head: "1.1", head_cache: { "1.1": quant(headData(3), [T, T]) } })));
    hover(strip(3));
    expect(strip(3).classList.contains("mw-hovered")).toBe(true);
    // row 3 of a previous-token head: 0.2 on token 0, 0.8 on token 2
    expect(strip(0).dataset.from).toBe("0.200");
    expect(strip(2).dataset.from).toBe("0.800");
    expect(strip(1).dataset.from).toBe("0.000");
    expect(strip(2).style.background).not.toBe("");
    // column 3: token 4 attends to 3 with 1.0
    expect(strip(4).dataset.to).toBe("1.000");
    expect(strip(4).style.boxShadow).toContain("inset");
    expect(root.querySelector('.mw-query-label[data-pos="3"]')!.classList.contains("mw-hot")).toBe(true);
    // hovering an axis label does the same
    hover(root.querySelector('.mw-key-label[data-pos="5"]')!);
    expect(strip(4).dataset.from).toBe("1.000");
    strip(0).dispatchEvent(new MouseEvent("mouseout", { bubbles: true, relatedTarget: document.body }));
    expect(strip(4).dataset.from).toBeUndefined();
  });

  it("a head that is not exported says so", () => {
    const { root, head } = mount(staticModel(baseState({ selected_head: "1.1", head_cache: { "1.1": quant(headData(3), [T, T]) } })));
    click(head(0, 0));
    expect(root.querySelector(".mw-note")!.textContent).toContain("not in this static export");
    expect(root.querySelectorAll(".mw-query-label")).toHaveLength(0);
    click(head(1, 1));
    expect(root.querySelectorAll(".mw-query-label")).toHaveLength(T);
  });
});

describe("AttentionPatterns: live kernel", () => {
  it("click a thumbnail: selected_head saved, 'head' requested, its binary pattern shown", async () => {
    const { model, sent, reply, saves } = liveModel(baseState());
    const { root, head, strip } = mount(model);
    expect(root.querySelector(".mw-note")!.textContent).toContain("Click a head");
    expect(sent).toHaveLength(0); // first paint needs no request
    click(head(1, 0));
    expect(model.get("selected_head")).toBe("1.0");
    expect(saves()).toBe(1);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "head", msg: { layer: 1, head: 0 } });
    expect(root.querySelector(".mw-status")!.getAttribute("data-status")).toBe("loading");
    const data = headData(2);
    reply(
      { kind: "mw-response", id: sent[0].id, ok: true, response: { layer: 1, head: 0, pattern: { dtype: "uint8", shape: [T, T], scale: 1 / 255, offset: 0 } } },
      [new DataView(data.buffer)],
    );
    await flush();
    expect(root.querySelector(".mw-status")!.getAttribute("data-status")).toBe("ready");
    expect(texts(root, ".mw-query-label")).toEqual(SHOWN);
    hover(strip(3));
    expect(strip(3).dataset.from).toBe("0.800"); // self head: 0.8 on itself
    expect(strip(0).dataset.from).toBe("0.200");
    // selecting it again (or back) uses the view's cache: no new request
    model.set("selected_head", "");
    model.set("selected_head", "1.0");
    expect(sent).toHaveLength(1);
  });

  it("selected_head set from Python fetches that head; a failed fetch shows the error", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root, head } = mount(model);
    model.set("selected_head", "0.1");
    expect(head(0, 1).classList.contains("mw-selected")).toBe(true);
    expect(sent[0]).toMatchObject({ name: "head", msg: { layer: 0, head: 1 } });
    reply({ kind: "mw-response", id: sent[0].id, ok: false, error: "layer must be an int in 0..1" });
    await flush();
    expect(root.querySelector(".mw-error")!.textContent).toContain("layer must be an int");
    expect(root.querySelector(".mw-status")!.getAttribute("data-status")).toBe("error");
  });
});
