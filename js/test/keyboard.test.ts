import { describe, expect, it } from "vitest";
import { ariaSelect, gridKey, listKey } from "../src/lib/keyboard";

describe("listKey", () => {
  it("moves by one, clamps at the ends, and starts from an end when nothing is selected", () => {
    expect(listKey("ArrowRight", 2, 5)).toEqual({ kind: "move", index: 3 });
    expect(listKey("ArrowRight", 4, 5)).toEqual({ kind: "move", index: 4 });
    expect(listKey("ArrowLeft", 0, 5)).toEqual({ kind: "move", index: 0 });
    expect(listKey("ArrowRight", -1, 5)).toEqual({ kind: "move", index: 0 });
    expect(listKey("ArrowLeft", -1, 5)).toEqual({ kind: "move", index: 4 });
    expect(listKey("ArrowDown", 1, 5)).toEqual({ kind: "move", index: 2 });
  });
  it("Home/End jump, Enter/Space activate, Escape clears, other keys do nothing", () => {
    expect(listKey("Home", 3, 5)).toEqual({ kind: "move", index: 0 });
    expect(listKey("End", 0, 5)).toEqual({ kind: "move", index: 4 });
    expect(listKey("Enter", 2, 5)).toEqual({ kind: "activate", index: 2 });
    expect(listKey(" ", -1, 5)).toEqual({ kind: "activate", index: 0 });
    expect(listKey("Escape", 2, 5)).toEqual({ kind: "clear" });
    expect(listKey("a", 2, 5)).toBeNull();
    expect(listKey("ArrowRight", -1, 0)).toBeNull();
  });
});

describe("gridKey", () => {
  it("arrows move one cell and stop at the edges", () => {
    expect(gridKey("ArrowDown", 0, 0, 3, 4)).toEqual({ kind: "move", row: 1, col: 0 });
    expect(gridKey("ArrowUp", 0, 2, 3, 4)).toEqual({ kind: "move", row: 0, col: 2 });
    expect(gridKey("ArrowRight", 1, 3, 3, 4)).toEqual({ kind: "move", row: 1, col: 3 });
    expect(gridKey("ArrowLeft", 1, 3, 3, 4)).toEqual({ kind: "move", row: 1, col: 2 });
  });
  it("Home/End go to the row's ends, with Ctrl to the grid's; Enter activates", () => {
    expect(gridKey("Home", 2, 2, 3, 4)).toEqual({ kind: "move", row: 2, col: 0 });
    expect(gridKey("End", 0, 1, 3, 4)).toEqual({ kind: "move", row: 0, col: 3 });
    expect(gridKey("Home", 2, 2, 3, 4, true)).toEqual({ kind: "move", row: 0, col: 0 });
    expect(gridKey("End", 0, 1, 3, 4, true)).toEqual({ kind: "move", row: 2, col: 3 });
    expect(gridKey("Enter", 1, 1, 3, 4)).toEqual({ kind: "activate", row: 1, col: 1 });
    expect(gridKey("x", 1, 1, 3, 4)).toBeNull();
    expect(gridKey("ArrowDown", 0, 0, 0, 0)).toBeNull();
  });
});

describe("ariaSelect", () => {
  it("marks one item selected and makes it the only tab stop", () => {
    const items = [0, 1, 2].map(() => document.createElement("span"));
    ariaSelect(items, 1);
    expect(items.map((e) => e.getAttribute("aria-selected"))).toEqual(["false", "true", "false"]);
    expect(items.map((e) => e.tabIndex)).toEqual([-1, 0, -1]);
    ariaSelect(items, -1);
    expect(items.map((e) => e.getAttribute("aria-selected"))).toEqual(["false", "false", "false"]);
    expect(items.map((e) => e.tabIndex)).toEqual([0, -1, -1]);
  });
});
