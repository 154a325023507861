import { describe, expect, it } from "vitest";
import widget from "../src/ablation";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, expectInert, f32, flush, hover, i32, liveModel, mountView } from "./helpers";

const HOSTILE = ["<script>window.__pwned=1</script>", '<img src=x onerror="window.__pwned=2">', "&amp;", "\u202eevil", "a\nb"];
const topk = (toks: string[]) => toks.map((token, i) => ({ token, id: i, prob: 0.5 / (i + 1), logit: 1 }));
// 2 layers × 2 heads, 2 prompts; clean = [10, 8]
const CLEAN = [10, 8];
// rows: 0.0, 0.1, 1.0, 1.1 → ablated per prompt
const ABLATED = [10, 8, 0, 2, 11, 9, 6, 4];
// mean effects: 0.0 → 0, 0.1 → -8, 1.0 → +1, 1.1 → -4

function headState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_name: "zoo:ioi",
    kind: "zero",
    metric_name: "logit_diff(' Mary', ' John')",
    separately: true,
    components: ["0.0", "0.1", "1.0", "1.1"],
    prompts: [HOSTILE[0], "second <b>prompt</b>"],
    view: "heads",
    grid_layers: [0, 1],
    n_heads: 2,
    grid_index: i32([0, 1, 2, 3], [2, 2]),
    clean: f32(CLEAN),
    ablated: f32(ABLATED, [4, 2]),
    selected_component: "",
    selected_prompt: 0,
    panel: {},
    can_run: true,
    status: "ready",
    error: "",
    k: 3,
    ...extra,
  };
}

function barState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return headState({
    components: ["mlp.0", HOSTILE[1], "mlp_post.1[3,4]"],
    view: "bars",
    grid_layers: [],
    n_heads: 0,
    grid_index: {},
    ablated: f32([9, 9, 10, 8, 12, 2], [3, 2]),
    ...extra,
  });
}

function mount(model: AnyModel) {
  return mountView(render, model, ".mw-ablation");
}

const toks = (root: HTMLElement, run: string) =>
  Array.from(root.querySelectorAll(`.mw-topk-list[data-run="${run}"] .mw-topk-row .mw-tok`)).map((e) => e.textContent);
const metricValue = (root: HTMLElement, kind: string) => Number((root.querySelector(`.mw-metric[data-kind="${kind}"]`) as HTMLElement).dataset.value);

describe("Ablation: heads heatmap", () => {
  it("draws layers × heads coloured by mean effect, diverging at the largest |effect|", () => {
    const { root } = mount(staticModel(headState()));
    const cells = root.querySelectorAll<HTMLElement>(".mw-cell");
    expect(cells).toHaveLength(4);
    const cell = (l: number, hd: number) => root.querySelector<HTMLElement>(`.mw-cell[data-layer="${l}"][data-head="${hd}"]`)!;
    expect(cell(0, 1).dataset.component).toBe("1");
    expect(cell(0, 1).style.background).toBe("rgb(33, 102, 172)"); // -8 = -max: full blue
    expect(cell(0, 0).style.background).toBe("rgb(255, 255, 255)"); // 0: white
    expect(cell(1, 0).style.background).not.toBe("rgb(255, 255, 255)");
    expect(root.querySelector(".mw-legend-lo")!.textContent).toBe("-8.00");
    expect(Array.from(root.querySelectorAll(".mw-row-label")).map((e) => e.textContent)).toEqual(["L0", "L1"]);
  });

  it("hover shows clean, ablated, effect and the spread over prompts", () => {
    const { root } = mount(staticModel(headState()));
    hover(root.querySelector('.mw-cell[data-component="3"]')!);
    const tip = root.querySelector<HTMLElement>(".mw-tooltip")!;
    expect(tip.hidden).toBe(false);
    expect(tip.querySelector(".mw-tt-label")!.textContent).toBe("1.1");
    const v = tip.querySelector(".mw-tt-value")!.textContent!;
    expect(v).toContain("effect -4.000");
    expect(v).toContain("clean 9.000 → ablated 5.000");
    expect(v).toContain("per prompt: -4.00 … -4.00 (sd 0, n = 2)");
  });

  it("unablated heads are empty and not clickable", () => {
    const { root } = mount(staticModel(headState({ grid_index: i32([0, -1, 2, 3], [2, 2]) })));
    const empty = root.querySelector<HTMLElement>('.mw-cell[data-layer="0"][data-head="1"]')!;
    expect(empty.classList.contains("mw-empty")).toBe(true);
    expect(empty.dataset.component).toBeUndefined();
  });

  it("prompts show literally in the selector and panel; nothing is parsed as markup", () => {
    const { root } = mount(staticModel(headState({ selected_component: "0.1" })));
    const opts = Array.from(root.querySelectorAll("select.mw-prompt option")).map((o) => o.textContent);
    expect(opts).toEqual([`0: ${HOSTILE[0]}`, "1: second <b>prompt</b>"]);
    expect(root.querySelector(".mw-panel-prompt")!.textContent).toContain("<script>window.__pwned=1</script>");
    expectInert(root, "script, img, b");
  });
});

describe("Ablation: bars", () => {
  it("sorts rows by |mean effect| with one dot per prompt", () => {
    const { root } = mount(staticModel(barState()));
    // effects: mlp.0 → (−1 + 1)/2 = 0; hostile → 0; mlp_post → (2 − 6)/2 = −2
    const rows = Array.from(root.querySelectorAll<HTMLElement>(".mw-bar-row"));
    expect(rows.map((r) => r.dataset.component)).toEqual(["2", "0", "1"]);
    expect(rows.map((r) => r.querySelector(".mw-bar-label")!.textContent)).toEqual(["mlp_post.1[3,4]", "mlp.0", HOSTILE[1]]);
    const dots = rows[0].querySelectorAll<HTMLElement>(".mw-dot");
    expect(dots).toHaveLength(2);
    // scale ±6 (largest |per-prompt effect|): +2 → 66.67 %, −6 → 0 %
    expect(parseFloat(dots[0].style.left)).toBeCloseTo(66.667, 2);
    expect(parseFloat(dots[1].style.left)).toBeCloseTo(0, 5);
    const bar = rows[0].querySelector<HTMLElement>(".mw-bar")!;
    expect(parseFloat(bar.style.left)).toBeCloseTo(100 / 3, 3);
    expect(parseFloat(bar.style.width)).toBeCloseTo(50 / 3, 3);
    expect(root.querySelector("img")).toBeNull();
  });

  it("hovering a dot shows that prompt's own values, the prompt text literal", () => {
    const { root } = mount(staticModel(barState()));
    hover(root.querySelector('.mw-bar-row[data-component="2"] .mw-dot[data-prompt="0"]')!);
    const tip = root.querySelector<HTMLElement>(".mw-tooltip")!;
    expect(tip.querySelector(".mw-tt-label")!.textContent).toBe(`mlp_post.1[3,4] · prompt 0: ${JSON.stringify(HOSTILE[0])}`);
    expect(tip.querySelector(".mw-tt-value")!.textContent).toBe("effect 2.000\nclean 10.00 → ablated 12.00");
    hover(root.querySelector('.mw-bar-row[data-component="2"] .mw-bar-track')!);
    expect(tip.querySelector(".mw-tt-value")!.textContent).toContain("per prompt: -6.00 … 2.00 (sd 4.00, n = 2)");
    expect(root.querySelector("script")).toBeNull();
  });
});

describe("Ablation: static export", () => {
  it("click shows the cached panel; uncached ones say so; prompt change looks up that prompt", () => {
    const panel = {
      component: "0.1",
      prompt: 0,
      clean_metric: 10,
      ablated_metric: 0,
      effect: -10,
      clean_topk: topk([" Mary", HOSTILE[0], " John"]),
      ablated_topk: topk([" John", "&amp;", " Mary"]),
    };
    const model = staticModel({ ...headState(), static: true, panel_cache: { "0.1|0": panel } });
    const { root } = mount(model);
    expect(root.querySelector(".mw-status")!.textContent).toBe("static");
    click(root.querySelector('.mw-cell[data-component="1"]')!);
    expect(model.get("selected_component")).toBe("0.1");
    expect(root.querySelector('.mw-cell[data-component="1"]')!.classList.contains("mw-selected")).toBe(true);
    expect(toks(root, "ablated")).toEqual([" John", "&amp;", " Mary"]);
    expect(toks(root, "clean")).toEqual([" Mary", HOSTILE[0], " John"]);
    expect(metricValue(root, "effect")).toBe(-10);
    const sel = root.querySelector<HTMLSelectElement>("select.mw-prompt")!;
    sel.value = "1";
    sel.dispatchEvent(new Event("change"));
    expect(root.querySelector('.mw-topk-list[data-run="ablated"] .mw-note')!.textContent).toContain("not precomputed");
    // metric values still come from the result: prompt 1 of 0.1: clean 8, ablated 2
    expect(metricValue(root, "clean")).toBe(8);
    expect(metricValue(root, "ablated")).toBe(2);
    expect(root.querySelector("script, img")).toBeNull();
  });
});

describe("Ablation: live kernel", () => {
  it("click requests 'select' {component, prompt} and renders the returned panel", async () => {
    const { model, sent, reply } = liveModel(headState());
    const { root } = mount(model);
    click(root.querySelector('.mw-cell[data-component="3"]')!);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "select", msg: { component: "1.1", prompt: 0 } });
    expect(root.querySelector(".mw-status")!.textContent).toBe("running");
    expect(root.querySelector('.mw-topk-list[data-run="ablated"] .mw-note')!.textContent).toContain("running");
    const panel = { component: "1.1", prompt: 0, clean_metric: 10, ablated_metric: 6, effect: -4, clean_topk: topk([" Mary"]), ablated_topk: topk([" John", "<b>x</b>"]) };
    model.set("panel", panel); // Python syncs the trait, then replies
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: panel });
    await flush();
    expect(toks(root, "ablated")).toEqual([" John", "<b>x</b>"]);
    expect(root.querySelector(".mw-status")!.textContent).toBe("ready");
    expect(root.querySelector(".mw-panel-title")!.textContent).toBe("zero ablation of 1.1");
  });

  it("an error reply is shown, and selection from Python updates the view", async () => {
    const { model, sent, reply } = liveModel(headState());
    const { root } = mount(model);
    click(root.querySelector('.mw-cell[data-component="0"]')!);
    reply({ kind: "mw-response", id: sent[0].id, ok: false, error: "component '0.0' <b>bad</b>" });
    await flush();
    const err = root.querySelector<HTMLElement>(".mw-error")!;
    expect(err.hidden).toBe(false);
    expect(err.textContent).toContain("component '0.0' <b>bad</b>");
    model.set("selected_component", "0.1");
    expect(root.querySelector('.mw-cell[data-component="1"]')!.classList.contains("mw-selected")).toBe(true);
    expect(root.querySelector('.mw-cell[data-component="0"]')!.classList.contains("mw-selected")).toBe(false);
    expect(root.querySelector(".mw-panel-title")!.textContent).toBe("zero ablation of 0.1");
  });

  it("Enter on a focused cell selects it; cleanup removes the view", () => {
    const { model, sent } = liveModel(headState());
    const { root, el, cleanup } = mount(model);
    const c = root.querySelector<HTMLElement>('.mw-cell[data-component="2"]')!;
    c.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(sent[0]).toMatchObject({ name: "select", msg: { component: "1.0" } });
    // arrows move focus (and the tooltip) between ablated heads, skipping none here
    c.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(document.activeElement).toBe(root.querySelector('.mw-cell[data-component="3"]'));
    expect(root.querySelector(".mw-tt-label")!.textContent).toBe("1.1");
    (document.activeElement as HTMLElement).dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowUp", bubbles: true }));
    expect(document.activeElement).toBe(root.querySelector('.mw-cell[data-component="1"]'));
    cleanup();
    expect(el.querySelector(".mw-ablation")).toBeNull();
  });
});
