/**
 * Show the code in every view that has a Python `code()` (the patching grid's own test covers
 * the panel in depth): a toggle, one "code" request when first opened, the reply shown as text
 * (never markup), the toggle hidden in a static copy.
 */
import { describe, expect, it } from "vitest";
import circuitGraph from "../src/circuit_graph";
import featureDashboard from "../src/feature_dashboard";
import patchscope from "../src/patchscope";
import steering from "../src/steering";
import { click, expectInert, flush, liveModel, mountView } from "./helpers";
import { staticModel } from "../src/lib/static_model";

const VIEWS = [
  ["Steering", steering.render, ".mw-steering"],
  ["Patchscope", patchscope.render, ".mw-patchscope"],
  ["FeatureDashboard", featureDashboard.render, ".mw-feature-dashboard"],
  ["CircuitGraph", circuitGraph.render, ".mw-circuit-graph"],
] as const;

describe.each(VIEWS)("%s: show the code", (_name, render, selector) => {
  it("asks Python once and shows the reply as text", async () => {
    const { model, sent, reply } = liveModel({});
    const { root } = mountView(render, model, selector);
    const btn = root.querySelector<HTMLButtonElement>(".mw-code-toggle")!;
    const pre = root.querySelector<HTMLElement>(".mw-code")!;
    expect(btn.hidden).toBe(false);
    expect(pre.hidden).toBe(true);
    click(btn);
    expect(pre.hidden).toBe(false);
    const ask = sent.filter((m) => m.name === "code");
    expect(ask.length).toBe(1);
    const code = "with model.trace(ids):\n    x = '<img src=x onerror=window.__pwned=1>'";
    reply({ kind: "mw-response", id: ask[0].id, ok: true, response: { code } });
    await flush();
    expect(pre.textContent).toBe(code);
    expectInert(root);
    click(btn);
    click(btn);
    expect(sent.filter((m) => m.name === "code").length).toBe(1);
  });

  it("a static copy has no code toggle", () => {
    const { root } = mountView(render, staticModel({}), selector);
    expect(root.querySelector<HTMLButtonElement>(".mw-code-toggle")!.hidden).toBe(true);
  });
});
