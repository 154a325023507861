import { describe, expect, it } from "vitest";
import widget from "../src/probe_accuracy";
const { render } = widget;
import type { AnyModel } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
import { click, f32, flush, hover, i32, liveModel, mountView } from "./helpers";

const HOSTILE = ["<script>window.__pwned=1</script>", '<img src=x onerror="window.__pwned=2">', "&amp;", "\u202eevil", "a\nb", "", "\u0000"];
const LAYERS = [
  { site: "resid_pre", layer: -1, name: "embed" },
  { site: "resid_post", layer: 0, name: "resid_post 0" },
  { site: "resid_post", layer: 1, name: "resid_post 1" },
];
const CURVES = ["train", "validation", "test", "control", "baseline", "after erasure"];
const KINDS = ["split", "split", "split", "split", "split", "overlay"];
// [curve, layer, (mean, min, max, sd)]
function statsArray(): number[] {
  const out: number[] = [];
  CURVES.forEach((_, c) => {
    for (let l = 0; l < 3; l++) {
      const m = 0.5 + 0.1 * l + 0.01 * c;
      out.push(m, m - 0.05, m + 0.05, 0.03);
    }
  });
  out[5 * 12 + 0] = NaN; // the overlay has no value at the embedding
  return out;
}

function panel(layer: number, extra: Record<string, unknown> = {}) {
  return {
    site: layer < 0 ? "resid_pre" : "resid_post",
    layer,
    name: LAYERS.find((k) => k.layer === layer)!.name,
    rank_class: 1,
    classes: [0, 1],
    confusion: i32([7, 2, 3, 8], [2, 2]),
    n_test: 20,
    accuracy: 0.75,
    examples: [
      { index: 4, rank: 0, label: 1, pred: 1, score: 2.5 },
      { index: 9, rank: 1, label: 0, pred: 1, score: 1.25 },
      { index: 2, rank: 19, label: 0, pred: 0, score: -3 },
    ],
    texts: ["good <b>x</b>", "meh", "bad"],
    tokens: true,
    str_tokens: [HOSTILE.slice(0, 3), HOSTILE.slice(3, 5), HOSTILE.slice(5)],
    values: f32([1, 2, 3, -1, 0.5, -2, 0]),
    offset: 0.5,
    ...extra,
  };
}

function baseState(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    title: "zoo:tiny · probe: <b>sentiment</b>",
    layers: LAYERS,
    sites: ["resid_post"],
    site: "resid_post",
    curve_names: CURVES,
    curve_kinds: KINDS,
    stats: f32(statsArray(), [6, 3, 4]),
    n_seeds: 2,
    band: "minmax",
    hidden_curves: ["validation"],
    classes: [0, 1],
    rank_class: 1,
    selected_layer: null,
    selected_site: "",
    panel: {},
    has_model: true,
    control_kind: "token identity",
    status: "ready",
    progress: 1,
    error: "",
    max_examples: 40,
    ...extra,
  };
}

function mount(model: AnyModel) {
  return mountView(render, model, ".mw-probe-accuracy").root;
}

const confusion = (root: HTMLElement) =>
  Array.from(root.querySelectorAll<HTMLElement>(".mw-conf-cell")).map((td) => [td.dataset.true, td.dataset.pred, td.textContent]);

describe("ProbeAccuracy: plot", () => {
  it("draws one line and band per visible curve, points per layer, and x labels", () => {
    const root = mount(liveModel(baseState()).model);
    const lines = Array.from(root.querySelectorAll<SVGElement>("path.mw-line")).map((p) => p.dataset.curve);
    expect(lines).toEqual(["train", "test", "control", "baseline", "after erasure"]); // validation hidden
    expect(root.querySelectorAll('.mw-point[data-curve="test"]')).toHaveLength(3);
    expect(root.querySelectorAll('.mw-point[data-curve="after erasure"]')).toHaveLength(2); // NaN skipped
    expect(Array.from(root.querySelectorAll(".mw-x-label")).map((t) => t.textContent)).toEqual(["embed", "resid_post 0", "resid_post 1"]);
    expect(root.querySelector(".mw-title")!.textContent).toBe("zoo:tiny · probe: <b>sentiment</b>");
    expect(root.querySelector(".mw-title b")).toBeNull();
  });

  it("hover a point shows the exact mean, min, max and sd", () => {
    const root = mount(liveModel(baseState()).model);
    hover(root.querySelector('.mw-point[data-curve="test"][data-index="2"]')!);
    const tip = root.querySelector<HTMLElement>(".mw-tooltip")!;
    expect(tip.hidden).toBe(false);
    expect(tip.querySelector(".mw-tt-label")!.textContent).toBe("test · resid_post 1");
    const m = Math.fround(0.5 + 0.2 + 0.02);
    expect(tip.querySelector(".mw-tt-value")!.textContent).toContain(`accuracy ${m.toPrecision(4)}`);
    expect(tip.querySelector(".mw-tt-value")!.textContent).toContain("mean of 2 seeds");
  });

  it("legend toggles a curve through hidden_curves (saved to Python)", () => {
    const { model, saves } = liveModel(baseState());
    const root = mount(model);
    const toggle = root.querySelector<HTMLElement>('.mw-curve-toggle[data-curve="after erasure"]')!;
    expect(toggle.getAttribute("aria-pressed")).toBe("true");
    click(toggle);
    expect(model.get("hidden_curves")).toEqual(["validation", "after erasure"]);
    expect(saves()).toBe(1);
    expect(root.querySelector('path.mw-line[data-curve="after erasure"]')).toBeNull();
    click(root.querySelector('.mw-curve-toggle[data-curve="validation"]')!);
    expect(root.querySelector('path.mw-line[data-curve="validation"]')).not.toBeNull();
  });

  it("band switches between min–max and ±sd", () => {
    const { model } = liveModel(baseState());
    const root = mount(model);
    const d1 = root.querySelector('path.mw-band[data-curve="test"]')!.getAttribute("d");
    model.set("band", "sd");
    const d2 = root.querySelector('path.mw-band[data-curve="test"]')!.getAttribute("d");
    expect(d1).not.toBe(d2);
  });
});

describe("ProbeAccuracy: layer panel", () => {
  it("click a layer requests 'layer' {site, layer}; the panel shows confusion and ranked coloured examples", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const root = mount(model);
    click(root.querySelector('.mw-layer-hit[data-index="2"]')!);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "layer", msg: { site: "resid_post", layer: 1 } });
    expect(root.querySelector(".mw-status")!.getAttribute("data-status")).toBe("loading");
    // Python sets the traits, then replies
    model.set("selected_layer", 1);
    model.set("selected_site", "resid_post");
    model.set("panel", panel(1));
    reply({ kind: "mw-response", id: sent[0].id, ok: true, response: { site: "resid_post", layer: 1 } });
    await flush();
    expect(root.querySelector(".mw-status")!.getAttribute("data-status")).toBe("ready");
    expect(root.querySelector('.mw-layer-hit[data-index="2"]')!.classList.contains("mw-selected")).toBe(true);
    expect(confusion(root)).toEqual([
      ["0", "0", "7"],
      ["0", "1", "2"],
      ["1", "0", "3"],
      ["1", "1", "8"],
    ]);
    const rows = Array.from(root.querySelectorAll<HTMLElement>(".mw-example"));
    expect(rows.map((r) => r.dataset.rank)).toEqual(["0", "1", "19"]);
    expect(root.querySelector(".mw-gap")!.textContent).toContain("17 more");
    expect(rows[1].querySelector(".mw-ex-meta")!.classList.contains("mw-wrong")).toBe(true);
    // tokens literal, coloured by value - offset on a symmetric scale
    const toks = Array.from(root.querySelectorAll<HTMLElement>(".mw-token"));
    expect(toks.map((t) => t.textContent)).toEqual([
      "<script>window.__pwned=1</script>",
      '<img src=x onerror="window.__pwned=2">',
      "&amp;",
      "\u202eevil",
      "a↵b",
      "",
      "\\x00",
    ]);
    expect(toks[5].classList.contains("mw-empty")).toBe(true);
    expect(root.querySelector(".mw-examples script, .mw-examples img")).toBeNull();
    // 3 and -2 are ±2.5 = ±max |v - 0.5| from the boundary: the default palette's ends, orange and blue
    expect(toks[2].style.backgroundColor.replace(/\s/g, "")).toBe("rgb(230,97,1)");
    expect(toks[5].style.backgroundColor.replace(/\s/g, "")).toBe("rgb(33,102,172)");
    hover(toks[0]);
    expect(root.querySelector(".mw-tooltip .mw-tt-label")!.textContent).toBe('"<script>window.__pwned=1</script>"');
    expect(root.querySelector(".mw-tooltip .mw-tt-value")!.textContent).toContain("projection 1");
    expect((window as unknown as Record<string, unknown>).__pwned).toBeUndefined();
  });

  it("without token colouring the examples are plain text with a note asking for model=", () => {
    const { model } = liveModel(baseState({ has_model: false, panel: panel(0, { tokens: false, str_tokens: undefined, values: undefined }) }));
    const root = mount(model);
    expect(root.querySelectorAll(".mw-token")).toHaveLength(0);
    expect(Array.from(root.querySelectorAll(".mw-ex-plain")).map((e) => e.textContent)).toEqual(["good <b>x</b>", "meh", "bad"]);
    expect(root.querySelector(".mw-no-tokens")!.textContent).toContain("model=");
  });

  it("ranking by the other class sends rank_class", () => {
    const { model, sent } = liveModel(baseState({ selected_layer: 0, selected_site: "resid_post", panel: panel(0) }));
    const root = mount(model);
    const sel = root.querySelector<HTMLSelectElement>("select.mw-rank-class")!;
    sel.value = "0";
    sel.dispatchEvent(new Event("change", { bubbles: true }));
    expect(sent[0]).toMatchObject({ name: "layer", msg: { site: "resid_post", layer: 0, rank_class: 0 } });
  });

  it("a failed request shows the error", async () => {
    const { model, sent, reply } = liveModel(baseState());
    const root = mount(model);
    click(root.querySelector('.mw-x-label[data-index="0"]')!);
    expect(sent[0]).toMatchObject({ msg: { site: "resid_pre", layer: -1 } });
    reply({ kind: "mw-response", id: sent[0].id, ok: false, error: "no probe at layer 7" });
    await flush();
    expect(root.querySelector(".mw-error")!.textContent).toContain("no probe at layer 7");
    expect(root.querySelector(".mw-status")!.getAttribute("data-status")).toBe("error");
  });
});

describe("ProbeAccuracy: static export", () => {
  const cache = { "resid_post|1": panel(1), "resid_pre|-1": panel(-1, { tokens: false }) };

  it("opens on the precomputed best layer and switches panels from the cache", () => {
    const root = mount(staticModel(baseState({ panel_cache: cache, static_layer: { site: "resid_post", layer: 1 } })));
    expect(root.querySelector(".mw-status")!.textContent).toBe("static");
    expect(root.querySelector(".mw-panel-title")!.textContent).toContain("resid_post 1");
    expect(root.querySelectorAll(".mw-token")).toHaveLength(7);
    click(root.querySelector('.mw-layer-hit[data-index="0"]')!);
    expect(root.querySelector(".mw-panel-title")!.textContent).toContain("embed");
    expect(root.querySelector(".mw-no-tokens")!.textContent).toContain("not precomputed");
    click(root.querySelector('.mw-layer-hit[data-index="1"]')!);
    expect(root.querySelector(".mw-error")!.textContent).toContain("not precomputed");
    expect(root.querySelector<HTMLSelectElement>("select.mw-rank-class")!.disabled).toBe(true);
  });
});

describe("ProbeAccuracy: predict, then reveal", () => {
  it("a question hides the curves; a click on a layer sends the guess; the guess draws them", async () => {
    const q = "Where is sentiment read best?";
    const { model, sent } = liveModel(baseState({ predict: q, guesses: [] }));
    const root = mount(model);
    const banner = root.querySelector<HTMLElement>(".mw-predict")!;
    expect(banner.hidden).toBe(false);
    expect(banner.textContent).toContain(q);
    expect(root.querySelectorAll(".mw-line").length).toBe(0);
    expect(root.querySelectorAll(".mw-point").length).toBe(0);
    const hits = root.querySelectorAll<SVGElement>(".mw-layer-hit");
    expect(hits.length).toBeGreaterThan(1);
    const li = Number(hits[1].dataset.index);
    click(hits[1]);
    await flush();
    expect(sent.map((m) => m.name)).toEqual(["guess"]);
    const key = LAYERS[li] as { site: string; layer: number };
    expect(sent[0].msg).toEqual({ site: key.site, layer: key.layer });
    model.set("guesses", [{ question: q, site: key.site, layer: key.layer, label: "resid_post 0", value: 0.75,
      answer: { site: key.site, layer: key.layer }, answer_label: "resid_post 0", answer_value: 0.75, correct: true }]);
    expect(root.querySelectorAll(".mw-line").length).toBeGreaterThan(0);
    expect(root.querySelectorAll("line.mw-guess").length).toBe(1);
    expect(root.querySelectorAll("line.mw-answer").length).toBe(1);
    expect(banner.textContent).toContain("✓ right");
  });
});
