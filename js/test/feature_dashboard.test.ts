import { describe, expect, it } from "vitest";
import widget from "../src/feature_dashboard";
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, f32, flush, i32, liveModel, mountView } from "./helpers";

const { render } = widget;

const HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "&amp;", "\u202Eevil", "\u0000", "a\nb"];

function example(text: number, tokens: string[], center: number, start: number, activation: number) {
  return { text, position: center + 3, activation, tokens, center, start, len: tokens.length };
}

function featurePayload(index: number) {
  const top = [example(0, HOSTILE, 1, 0, 4), example(2, [" in", " Paris", "."], 1, HOSTILE.length, 3)];
  const acts = [0, 4, 1, 0, 0, 2, 0.5, 3, 0];
  return {
    index,
    frequency: 0.25,
    n_fire: 12,
    max_act: 4,
    mean_act: 1.5,
    explanation: index === 0 ? "<b>cities</b>" : "",
    hist: i32([5, 4, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    hist_range: [0, 8],
    top,
    bands: [{ lo: 3, hi: 4, fraction: 0.1, examples: [example(5, [" Rome", "!"], 0, 0, 4)] }],
    acts: f32(acts),
    logits_pos: [{ token: " Paris", id: 1, value: 2.5 }, { token: "<i>x</i>", id: 2, value: 1 }],
    logits_neg: [{ token: " the", id: 3, value: -1.5 }],
  };
}

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_name: "zoo:tiny",
    site: "resid_pre",
    layer: 0,
    d_sae: 4,
    n_texts: 10,
    n_texts_done: 10,
    n_tokens: 120,
    frequency: f32([0.25, 0.5, 0.01, 0.1]),
    max_act: f32([4, 1, 9, 2]),
    explanations: { "0": "<b>cities</b>", "3": "sentiment words" },
    selected: 0,
    feature: featurePayload(0),
    prompt: "The Eiffel Tower is in",
    coef: 8,
    steer_result: {},
    can_steer: true,
    status: "ready",
    progress: 1,
    error: "",
    k: 5,
    static: true,
    ...extra,
  };
}

function mount(model: AnyModel) {
  const { root } = mountView(render, model, ".mw-feature-dashboard");
  const rows = () => Array.from(root.querySelectorAll<HTMLElement>(".mw-feature-row[data-feature]")).map((r) => Number(r.dataset.feature));
  return { root, rows };
}

describe("FeatureDashboard: list", () => {
  it("sorts by max activation, frequency or index, and searches index and explanation text", () => {
    const { root, rows } = mount(staticModel(baseState()));
    expect(rows()).toEqual([2, 0, 3, 1]);
    const sort = root.querySelector<HTMLSelectElement>("select.mw-sort")!;
    sort.value = "frequency";
    sort.dispatchEvent(new Event("change"));
    expect(rows()).toEqual([1, 0, 3, 2]);
    sort.value = "index";
    sort.dispatchEvent(new Event("change"));
    expect(rows()).toEqual([0, 1, 2, 3]);
    const search = root.querySelector<HTMLInputElement>("input.mw-search")!;
    search.value = "SENTIMENT";
    search.dispatchEvent(new Event("input"));
    expect(rows()).toEqual([3]);
    search.value = "#2";
    search.dispatchEvent(new Event("input"));
    expect(rows()).toEqual([2]);
    search.value = "nothing like this";
    search.dispatchEvent(new Event("input"));
    expect(rows()).toEqual([]);
    expect(root.querySelector(".mw-note")!.textContent).toBe("no feature matches");
  });

  it("refills when the pass pushes new statistics, and shows progress while running", () => {
    const model = staticModel(baseState({ static: false, status: "running", n_texts_done: 3, progress: 0.3 }));
    const { root, rows } = mount(model);
    const status = root.querySelector<HTMLElement>(".mw-status")!;
    expect(status.dataset.status).toBe("running");
    expect(status.textContent).toBe("running 3/10 texts");
    expect(root.querySelector<HTMLElement>(".mw-progress")!.hidden).toBe(false);
    expect(root.querySelector<HTMLElement>("button.mw-stop")!.hidden).toBe(false);
    model.set("max_act", f32([4, 10, 9, 2]));
    expect(rows()).toEqual([1, 2, 0, 3]);
    model.set("status", "ready");
    model.set("n_texts_done", 10);
    expect(status.textContent).toContain("ready · 10/10 texts");
    expect(root.querySelector<HTMLElement>("button.mw-stop")!.hidden).toBe(true);
  });
});

describe("FeatureDashboard: selected feature", () => {
  it("shows examples with hostile tokens literally, coloured by the feature, with the centre marked", () => {
    const { root } = mount(staticModel(baseState()));
    expect(root.querySelector(".mw-feature-title")!.textContent).toBe("Feature 0 · <b>cities</b>");
    expect(root.querySelector('.mw-feature-row[data-feature="0"] .mw-fname')!.textContent).toBe("#0 <b>cities</b>");
    const ex = root.querySelectorAll('.mw-examples[data-group="top"] .mw-example');
    expect(ex).toHaveLength(2);
    const toks = Array.from(ex[0].querySelectorAll<HTMLElement>(".mw-token"));
    expect(toks.map((t) => t.textContent)).toEqual(["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "&amp;", "\u202Eevil", "\\x00", "a↵b"]);
    expect(root.querySelector("script, img, b, i")).toBeNull();
    // activation 4 = the feature's max: the positive end of the diverging scale (the default
    // palette's orange); 0 white
    expect(toks[1].classList.contains("mw-center")).toBe(true);
    expect(toks[1].style.backgroundColor).toBe("rgb(230, 97, 1)");
    expect(toks[0].style.backgroundColor).toBe("rgb(255, 255, 255)");
    const second = Array.from(ex[1].querySelectorAll<HTMLElement>(".mw-token"));
    expect(second.map((t) => Number(t.dataset.act))).toEqual([0.5, 3, 0]);
    expect(ex[0].querySelector(".mw-ex-meta")!.textContent).toBe("4.000 · #0:4");
    const band = root.querySelector('.mw-band[data-band="0"]')!;
    expect(band.querySelector(".mw-band-title")!.textContent).toContain("3.00–4.00");
    expect(band.querySelectorAll(".mw-example")).toHaveLength(1);
    // histogram trimmed to at least 8 bins; logit lists literal
    expect(root.querySelectorAll(".mw-hist-bar")).toHaveLength(8);
    const pos = Array.from(root.querySelectorAll('.mw-logits-list[data-sign="pos"] .mw-tok')).map((t) => t.textContent);
    expect(pos).toEqual([" Paris", "<i>x</i>"]);
    toks[0].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(root.querySelector(".mw-tooltip .mw-tt-token")!.textContent).toBe('"<script>alert(1)</script>"');
  });

  it("static: steering is disabled, and features other than the exported one say so", () => {
    const { root } = mount(staticModel(baseState()));
    expect(root.querySelector<HTMLButtonElement>("button.mw-steer-btn")!.disabled).toBe(true);
    expect(root.querySelector<HTMLButtonElement>("button.mw-ablate-btn")!.disabled).toBe(true);
    click(root.querySelector('.mw-feature-row[data-feature="2"]')!);
    expect(root.querySelector(".mw-feature-main")!.textContent).toContain("not in this static export");
    expect(root.querySelector('.mw-feature-row[data-feature="2"]')!.classList.contains("mw-selected")).toBe(true);
  });
});

describe("FeatureDashboard: live kernel", () => {
  it("clicking a row sets `selected`; steer sends a request and shows before/after", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const { root } = mount(model);
    click(root.querySelector('.mw-feature-row[data-feature="3"]')!);
    expect(model.get("selected")).toBe(3);
    model.set("selected", 0);
    const steer = root.querySelector<HTMLButtonElement>("button.mw-steer-btn")!;
    expect(steer.disabled).toBe(false);
    root.querySelector<HTMLInputElement>("input.mw-coef")!.value = "12.5";
    click(steer);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "steer", msg: { feature: 0, mode: "steer", prompt: "The Eiffel Tower is in", coef: 12.5 } });
    expect(steer.disabled).toBe(true);
    const response = {
      feature: 0, mode: "steer", coef: 12.5, prompt: "The Eiffel Tower is in", kl: 0.5,
      before: [{ token: " Paris", id: 1, prob: 0.9, other: 0.2 }],
      after: [{ token: "<b>Rome</b>", id: 2, prob: 0.6, other: 0.05 }, { token: " Paris", id: 1, prob: 0.2, other: 0.9 }],
    };
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response });
    await flush();
    const after = Array.from(root.querySelectorAll('.mw-topk-list[data-run="after"] .mw-topk-row'));
    expect(after.map((r) => r.querySelector(".mw-tok")!.textContent)).toEqual(["<b>Rome</b>", " Paris"]);
    expect(after[1].querySelector(".mw-prob")!.textContent).toBe("0.200 (-0.70)");
    expect(root.querySelectorAll('.mw-topk-list[data-run="before"] .mw-topk-row')).toHaveLength(1);
    expect(root.querySelector(".mw-steer-note")!.textContent).toContain("steer feature 0 × 12.5");
    click(root.querySelector("button.mw-ablate-btn")!);
    expect(sent[1]).toMatchObject({ name: "steer", msg: { mode: "ablate" } });
    reply({ kind: "mw-response", id: sent[1].id, ok: false, error: "prompt must be a non-empty string" });
    await flush();
    expect(root.querySelector(".mw-error")!.textContent).toBe("prompt must be a non-empty string");
  });

  it("stop sends 'stop'", () => {
    const { model, sent } = liveModel(baseState({ status: "running" }));
    const { root } = mount(model);
    click(root.querySelector("button.mw-stop")!);
    expect(sent[0]).toMatchObject({ name: "stop" });
  });
});

describe("FeatureDashboard: explanations and scores", () => {
  const scores = {
    "0": {
      explanation: "<b>cities</b>",
      scorer: "rule",
      badges: [
        { name: "simulation", label: "sim", value: 0.98, baseline: -0.04 },
        { name: "intervention", label: "int", value: 0.4, baseline: 0.47 },
      ],
    },
  };

  it("shows score badges next to a feature and under its title, each with its random baseline", () => {
    const { root } = mount(staticModel(baseState({ scores })));
    const rowBadge = root.querySelector<HTMLElement>('.mw-feature-row[data-feature="0"] .mw-score-badge')!;
    expect(rowBadge.textContent).toBe("sim 0.98");
    expect(rowBadge.classList.contains("mw-beats")).toBe(true);
    expect(root.querySelector('.mw-feature-row[data-feature="3"] .mw-score-badge')).toBeNull();
    // the row's name cell still reads as before
    expect(root.querySelector('.mw-feature-row[data-feature="0"] .mw-fname')!.textContent).toBe("#0 <b>cities</b>");
    const badges = Array.from(root.querySelectorAll<HTMLElement>(".mw-ai-badges .mw-badge"));
    expect(badges.map((b) => b.textContent)).toEqual(["sim 0.98", "int 0.40"]);
    expect(badges[1].classList.contains("mw-fails")).toBe(true);
    expect(Array.from(root.querySelectorAll(".mw-badge-base")).map((b) => b.textContent)).toEqual(["random -0.040", "random 0.47"]);
    expect(root.querySelector(".mw-ai-text")!.textContent).toBe("<b>cities</b>");
    expect(root.querySelector("b")).toBeNull();
    // static: no Explain
    expect(root.querySelector<HTMLButtonElement>("button.mw-explain-btn")!.disabled).toBe(true);
  });

  it("Explain sends 'explain' for the selected feature, shows progress, then the explanation and badges", async () => {
    const { model, sent, reply } = liveModel(baseState({ can_explain: true, selected: 3, explanations: {} }));
    const { root, rows } = mount(model);
    const btn = root.querySelector<HTMLButtonElement>("button.mw-explain-btn")!;
    expect(btn.disabled).toBe(false);
    expect(root.querySelector(".mw-ai-text")!.textContent).toBe("no explanation yet");
    click(btn);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "explain", msg: { feature: 3 } });
    expect(btn.disabled).toBe(true);
    reply({ kind: "mw-progress", id: sent[0].id, done: 2, total: 8 });
    expect(root.querySelector(".mw-ai-note")!.textContent).toBe("explaining… 2/8");
    const response = {
      feature: 3, explanation: "tokens in {Paris, Rome}",
      scores: { explanation: "tokens in {Paris, Rome}", scorer: "rule", badges: [{ name: "simulation", label: "sim", value: 0.9, baseline: 0.1 }] },
    };
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response });
    await flush();
    expect(btn.disabled).toBe(false);
    expect(root.querySelector(".mw-ai-text")!.textContent).toBe("tokens in {Paris, Rome}");
    expect(root.querySelector('.mw-feature-row[data-feature="3"] .mw-score-badge')!.textContent).toBe("sim 0.90");
    const search = root.querySelector<HTMLInputElement>("input.mw-search")!;
    search.value = "paris";
    search.dispatchEvent(new Event("input"));
    expect(rows()).toEqual([3]);
    click(btn);
    reply({ kind: "mw-response", id: sent[1].id, ok: false, error: "LMError: HTTP 401 from http://x/v1/chat/completions" });
    await flush();
    expect(root.querySelector(".mw-error")!.textContent).toContain("HTTP 401");
    expect(root.querySelector(".mw-ai-text")!.textContent).toBe("tokens in {Paris, Rome}");
  });
});
