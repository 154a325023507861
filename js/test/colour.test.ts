import { describe, expect, it } from "vitest";
import { diverging, divergingRGB, fmt, legend, maxAbs, NEG, POS, sequential, textColour } from "../src/lib/colour";

describe("diverging scale", () => {
  it("maps 0 to white and ±max to the ends", () => {
    expect(diverging(0, 5)).toBe("rgb(255, 255, 255)");
    expect(divergingRGB(5, 5)).toEqual(POS);
    expect(divergingRGB(-5, 5)).toEqual(NEG);
    expect(diverging(5, 5)).toBe(`rgb(${POS.join(", ")})`);
  });

  it("is symmetric: same intensity for v and -v", () => {
    const p = divergingRGB(2, 5);
    const n = divergingRGB(-2, 5);
    const dist = (c: number[], e: number[]) => Math.hypot(c[0] - 255, c[1] - 255, c[2] - 255) / Math.hypot(e[0] - 255, e[1] - 255, e[2] - 255);
    expect(dist(p, POS)).toBeCloseTo(0.4, 1);
    expect(dist(n, NEG)).toBeCloseTo(0.4, 1);
  });

  it("clamps out-of-range values to the ends", () => {
    expect(divergingRGB(50, 5)).toEqual(POS);
    expect(divergingRGB(-50, 5)).toEqual(NEG);
    expect(divergingRGB(Infinity, 5)).toEqual(POS);
  });

  it("handles a zero scale and NaN without throwing", () => {
    expect(diverging(3, 0)).toBe("rgb(255, 255, 255)");
    expect(diverging(NaN, 1)).not.toBe("rgb(255, 255, 255)");
  });
});

describe("sequential scale", () => {
  it("white at 0, the colour at max, clamped", () => {
    expect(sequential(0, 2, [10, 20, 30])).toBe("rgb(255, 255, 255)");
    expect(sequential(2, 2, [10, 20, 30])).toBe("rgb(10, 20, 30)");
    expect(sequential(9, 2, [10, 20, 30])).toBe("rgb(10, 20, 30)");
    expect(sequential(-1, 2, [10, 20, 30])).toBe("rgb(255, 255, 255)");
  });
});

describe("helpers", () => {
  it("textColour picks dark text on light backgrounds and light on dark", () => {
    expect(textColour([255, 255, 255])).toBe("#000");
    expect(textColour(POS)).toBe("#fff");
    expect(textColour(NEG)).toBe("#fff");
    expect(textColour([250, 220, 210])).toBe("#000");
  });

  it("maxAbs ignores non-finite values", () => {
    expect(maxAbs(new Float32Array([1, -3, NaN, Infinity, 2]))).toBe(3);
    expect(maxAbs([])).toBe(0);
  });

  it("fmt gives 4 significant digits", () => {
    expect(fmt(0.123456)).toBe("0.1235");
    expect(fmt(-2)).toBe("-2.000");
    expect(fmt(0)).toBe("0");
    expect(fmt(NaN)).toBe("NaN");
  });

  it("legend shows the symmetric range", () => {
    const l = legend("diverging");
    l.update(2.5);
    expect(l.el.textContent).toContain("-2.50");
    expect(l.el.textContent).toContain("2.50");
  });
});
