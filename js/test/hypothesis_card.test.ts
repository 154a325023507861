import { describe, expect, it } from "vitest";
import widget, { asTests, fmt } from "../src/hypothesis_card";
const { render } = widget;
import { staticModel } from "../src/lib/static_model";
import { click, expectInert, liveModel, mountView, texts } from "./helpers";

const HOSTILE = "<img src=x onerror=alert(1)>";

function state(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_name: "zoo:induction",
    unit: "1.2",
    description: `previous-token head ${HOSTILE}`,
    passed: false,
    tests: [
      { name: "activation: detection accuracy", figure: 0.5, threshold: 0.8, direction: ">=", passed: false, unit: "balanced acc" },
      { name: "ablation (resample)", figure: 9.987, threshold: 5, direction: ">=", passed: true, unit: "drop" },
      { name: "replacement: metric kept", figure: null, threshold: 0.9, direction: ">=", passed: false, unit: "fraction" },
    ],
    counterexamples: [
      { test: "activation: detection accuracy", kind: "predicted, silent", context: "<|endoftext|>[[ castle]] apple", activation: 3e-7 },
      { test: "activation: detection accuracy", kind: "predicted, silent", context: `[[${HOSTILE}]]\nnext`, activation: 4e-7 },
      { test: "attention: mass on predicted keys", kind: "attends elsewhere", context: "a [[b]]", activation: 0.04 },
    ],
    disagreements: ["ablation kinds disagree"],
    selected_test: -1,
    ...extra,
  };
}

const mount = (model: ReturnType<typeof staticModel>) => mountView(render, model, ".mw-hypothesis-card");

describe("HypothesisCard", () => {
  it("shows the verdict, one row per test and every counterexample, text only", () => {
    const { root } = mount(staticModel(state()));
    expect(root.querySelector(".mw-title")!.textContent).toBe("zoo:induction · 1.2");
    expect(root.querySelector(".mw-header .mw-badge")!.textContent).toBe("FAILS");
    expect(root.querySelector(".mw-description")!.textContent).toContain(HOSTILE);
    expect(texts(root, ".mw-note")).toEqual(["ablation kinds disagree"]);
    expect(texts(root, "tr.mw-test .mw-name")).toEqual(["activation: detection accuracy", "ablation (resample)", "replacement: metric kept"]);
    expect(texts(root, "tr.mw-test .mw-badge")).toEqual(["FAIL", "PASS", "FAIL"]);
    expect(texts(root, "tr.mw-test td.mw-num")).toEqual(["0.500", ">= 0.800", "9.987", ">= 5.000", "—", ">= 0.900"]);
    expect(root.querySelectorAll(".mw-ce")).toHaveLength(3);
    expect(root.querySelector("img, script")).toBeNull();
    expect((window as unknown as Record<string, unknown>).__pwned).toBeUndefined();
  });

  it("clicking a test lists its counterexamples and syncs selected_test; clicking again clears", () => {
    const m = liveModel(state());
    const { root } = mount(m.model);
    const row = root.querySelectorAll<HTMLElement>("tr.mw-test")[0];
    click(row.querySelector("td")!);
    expect(m.model.get("selected_test")).toBe(0);
    expect(m.saves()).toBe(1);
    expect(root.querySelectorAll("tr.mw-test.mw-selected")).toHaveLength(1);
    expect(root.querySelector(".mw-panel-title")!.textContent).toBe("counterexamples: activation: detection accuracy (2)");
    expect(texts(root, ".mw-ce-context")[1]).toContain(HOSTILE);
    click(root.querySelectorAll<HTMLElement>("tr.mw-test")[0].querySelector("td")!);
    expect(m.model.get("selected_test")).toBe(-1);
    expect(root.querySelectorAll(".mw-ce")).toHaveLength(3);
  });

  it("a test without counterexamples says none; the card follows trait changes", () => {
    const m = staticModel(state({ selected_test: 1 }));
    const { root } = mount(m);
    expect(texts(root, ".mw-ce-none")).toEqual(["none"]);
    m.set("passed", true);
    expect(root.querySelector(".mw-header .mw-badge")!.textContent).toBe("PASSES");
  });

  it("reads malformed traits defensively", () => {
    expect(asTests("nope")).toEqual([]);
    expect(asTests([null])[0].name).toBe("");
    expect(fmt(Number.NaN)).toBe("—");
    expect(fmt(123.4)).toBe("123");
  });
});

describe("HypothesisCard: gradient-guided counterexamples", () => {
  it("an edited counterexample shows its token edit, as text; corpus ones show none", () => {
    const edited = {
      test: "activation: detection accuracy", kind: "predicted, silent (edited)",
      context: " stone apple table[[ river]]", activation: 0.0, edit: `position 3: ' apple' -> '${HOSTILE}'`,
    };
    const base = state();
    const { root } = mount(staticModel({ ...base, counterexamples: [...(base.counterexamples as unknown[]), edited] }));
    const edits = texts(root, ".mw-ce-edit");
    expect(edits).toHaveLength(1);
    expect(edits[0]).toContain(HOSTILE);
    expect(root.querySelectorAll(".mw-ce")).toHaveLength(4);
    expectInert(root);
  });
});
