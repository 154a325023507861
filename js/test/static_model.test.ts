import { describe, expect, it } from "vitest";
import { staticModel } from "../src/lib/static_model";

describe("staticModel", () => {
  it("get/set with change:<name> events, off, and a no-op send", () => {
    const m = staticModel({ layer: 1 });
    expect(m.get("layer")).toBe(1);
    expect(m.get("static")).toBe(true);
    const seen: unknown[] = [];
    const cb = (_m: unknown, v: unknown) => seen.push(v);
    m.on("change:layer", cb);
    m.set("layer", 2);
    m.set("layer", 2); // unchanged: no event
    m.set("other", 5);
    expect(seen).toEqual([2]);
    m.off("change:layer", cb);
    m.set("layer", 3);
    expect(seen).toEqual([2]);
    expect(m.get("layer")).toBe(3);
    expect(() => m.send({ kind: "mw-request" })).not.toThrow();
    expect(() => m.save_changes()).not.toThrow();
  });

  it("keeps an explicit static flag and does not mutate its input", () => {
    const init = { static: false, a: 1 };
    const m = staticModel(init);
    m.set("a", 2);
    expect(m.get("static")).toBe(false);
    expect(init.a).toBe(1);
  });
});
