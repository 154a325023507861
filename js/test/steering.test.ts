import { describe, expect, it } from "vitest";
import widget from "../src/steering";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { f32, liveModel, mountView } from "./helpers";

const HOSTILE = ["<script>window.__pwned=1</script>", '<img src=x onerror="window.__pwned=2">', "&amp;", "\u202eevil", "\u0000", "a\nb", ""];

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    prompt: "The food was <b>",
    vector: "sentiment",
    vector_names: ["sentiment", "<i>x</i>"],
    site: "resid_post",
    sites: ["resid_pre", "resid_post"],
    layer: 1,
    n_layers: 4,
    coef: -3,
    coef_min: -10,
    coef_max: 10,
    max_new_tokens: 12,
    do_sample: false,
    seed: 0,
    gen_prompt: "The food was <b>",
    gen_coef: -3,
    baseline_tokens: [" lovely", " and"],
    steered_tokens: HOSTILE,
    baseline_done: true,
    steered_done: true,
    metric_a: " positive",
    metric_b: " negative",
    metric_name: "logit_diff(' positive', ' negative')",
    sweep_coefs: f32([-2, -1, 0, 1, 2]),
    sweep_values: f32([-20, -14, 1, 4, 12]),
    status: "ready",
    progress: 1,
    error: "",
    ...extra,
  };
}

function mount(model: AnyModel) {
  return mountView(render, model, ".mw-steering").root;
}

const col = (root: HTMLElement, run: string) =>
  Array.from(root.querySelectorAll(`.mw-column[data-run="${run}"] .mw-token`)).map((e) => e.textContent);

/** A live-kernel model: records sent requests; `set` fires change events like anywidget. */
/** A live kernel that answers every request at once with `{ started: true }`. */
function startedModel(state: Record<string, unknown>) {
  const live = liveModel(state);
  const sent: { name: string; msg: Record<string, unknown> }[] = [];
  live.model.send = (content: unknown) => {
    const c = content as { id: string; name: string; msg: Record<string, unknown> };
    sent.push({ name: c.name, msg: c.msg });
    live.reply({ kind: "mw-response", id: c.id, ok: true, response: { started: true } });
  };
  return { m: live.model, sent };
}

describe("Steering view", () => {
  it("shows hostile tokens literally, as text, one span per token", () => {
    const root = mount(staticModel(baseState()));
    expect(col(root, "steered")).toEqual([
      "<script>window.__pwned=1</script>",
      '<img src=x onerror="window.__pwned=2">',
      "&amp;",
      "\u202eevil",
      "\\x00",
      "a↵\nb",
      "",
    ]);
    expect(root.querySelector(".mw-column[data-run=steered] .mw-token.mw-empty")).not.toBeNull();
    expect(root.querySelectorAll("script, img, b, i")).toHaveLength(0);
    expect((window as unknown as Record<string, unknown>).__pwned).toBeUndefined();
    expect(root.querySelector(".mw-column[data-run=baseline] .mw-prompt-text")!.textContent).toBe("The food was <b>");
    expect(Array.from(root.querySelectorAll("select.mw-vector option")).map((o) => o.textContent)).toEqual(["sentiment", "<i>x</i>"]);
  });

  it("static copies disable every control and say so", () => {
    const root = mount(staticModel(baseState()));
    for (const sel of ["button.mw-generate", "button.mw-sweep", "input.mw-coef", "textarea.mw-prompt", "select.mw-layer"])
      expect((root.querySelector(sel) as HTMLButtonElement).disabled).toBe(true);
    expect((root.querySelector("button.mw-cancel") as HTMLElement).hidden).toBe(true);
    expect(root.querySelector(".mw-status")!.textContent).toBe("static");
  });

  it("appends streamed tokens without rebuilding the column", () => {
    const { m } = startedModel(baseState({ steered_tokens: [], steered_done: false, status: "running" }));
    const root = mount(m);
    expect(col(root, "steered")).toEqual([]);
    m.set("steered_tokens", [" a"]);
    const first = root.querySelector(".mw-column[data-run=steered] .mw-token");
    m.set("steered_tokens", [" a", " b"]);
    expect(col(root, "steered")).toEqual([" a", " b"]);
    expect(root.querySelector(".mw-column[data-run=steered] .mw-token")).toBe(first);
    expect(root.querySelector(".mw-column[data-run=steered]")!.classList.contains("mw-done")).toBe(false);
    expect(root.querySelector(".mw-status")!.textContent).toBe("generating 2/12");
    expect((root.querySelector("button.mw-cancel") as HTMLButtonElement).disabled).toBe(false);
    expect((root.querySelector("button.mw-generate") as HTMLButtonElement).disabled).toBe(true);
    m.set("steered_tokens", [" c"]); // a new generation: rebuilt
    expect(col(root, "steered")).toEqual([" c"]);
    m.set("status", "ready");
    expect(root.querySelector(".mw-column[data-run=steered]")!.classList.contains("mw-done")).toBe(true);
  });

  it("generate and sweep send the controls' settings; the slider saves coef", () => {
    const { m, sent } = startedModel(baseState());
    const root = mount(m);
    const slider = root.querySelector<HTMLInputElement>("input.mw-coef")!;
    slider.value = "4";
    slider.dispatchEvent(new Event("input"));
    expect(root.querySelector(".mw-coef-value")!.textContent).toBe("4");
    slider.dispatchEvent(new Event("change"));
    expect(m.get("coef")).toBe(4);
    (root.querySelector("button.mw-generate") as HTMLButtonElement).click();
    expect(sent[0].name).toBe("generate");
    expect(sent[0].msg).toMatchObject({ coef: 4, layer: 1, vector: "sentiment", site: "resid_post", prompt: "The food was <b>", max_new_tokens: 12 });
    (root.querySelector("button.mw-sweep") as HTMLButtonElement).click();
    expect(sent[1].name).toBe("sweep");
    expect(sent[1].msg).toMatchObject({ metric_a: " positive", metric_b: " negative" });
  });

  it("draws the sweep as an SVG line with one point per coefficient", () => {
    const root = mount(staticModel(baseState()));
    const pts = Array.from(root.querySelectorAll("svg.mw-sweep-plot circle.mw-point"));
    expect(pts).toHaveLength(5);
    expect(pts.map((p) => Number((p as SVGElement).dataset.value))).toEqual([-20, -14, 1, 4, 12]);
    const ys = pts.map((p) => Number(p.getAttribute("cy")));
    for (let i = 1; i < ys.length; i++) expect(ys[i]).toBeLessThan(ys[i - 1]); // larger value, higher up
    expect(root.querySelector("svg.mw-sweep-plot polyline.mw-line")!.getAttribute("points")!.split(" ")).toHaveLength(5);
    expect(root.querySelector("svg.mw-sweep-plot")!.textContent).toContain("logit_diff(' positive', ' negative')");
  });
});
