import { describe, expect, it } from "vitest";
import { h, setOptions } from "../src/lib/dom";
import { listeners } from "../src/lib/listeners";
import { staticModel } from "../src/lib/static_model";
import { errorBox, progressBar, statusPill } from "../src/lib/status";
import { click } from "./helpers";

describe("listeners", () => {
  it("dispose removes every DOM listener and model change handler it added", () => {
    const model = staticModel({ a: 1, b: 1 });
    const btn = h("button");
    const calls: string[] = [];
    const { dom, listen, dispose } = listeners(model);
    dom(btn, "click", () => calls.push("click"));
    listen(["a", "b"], () => calls.push("change"));
    click(btn);
    model.set("a", 2);
    model.set("b", 2);
    expect(calls).toEqual(["click", "change", "change"]);
    dispose();
    click(btn);
    model.set("a", 3);
    model.set("b", 3);
    expect(calls).toHaveLength(3);
  });
});

describe("setOptions", () => {
  it("keeps the option elements when values and labels are unchanged, rebuilds otherwise", () => {
    const select = h("select");
    setOptions(select, ["0", "1"], ["<b>a</b>", "b"]);
    const first = select.options[0];
    expect(Array.from(select.options, (o) => [o.value, o.textContent])).toEqual([["0", "<b>a</b>"], ["1", "b"]]);
    expect(select.querySelector("b")).toBeNull();
    setOptions(select, ["0", "1"], ["<b>a</b>", "b"]);
    expect(select.options[0]).toBe(first);
    setOptions(select, ["0", "1"], ["c", "b"]);
    expect(select.options[0].textContent).toBe("c");
    setOptions(select, ["x"]);
    expect(Array.from(select.options, (o) => [o.value, o.textContent])).toEqual([["x", "x"]]);
  });
});

describe("status pill, progress bar, error box", () => {
  it("set state, width and messages as text", () => {
    const pill = statusPill({ live: false });
    expect(pill.el.getAttribute("role")).toBe("status");
    expect(pill.el.hasAttribute("aria-live")).toBe(false);
    pill.set("running", "<i>running</i> 1/2");
    expect(pill.el.dataset.status).toBe("running");
    expect(pill.el.textContent).toBe("<i>running</i> 1/2");
    const bar = progressBar();
    const fill = bar.el.firstElementChild as HTMLElement;
    bar.set(0.256);
    expect(fill.style.width).toBe("26%");
    bar.set(7);
    expect(fill.style.width).toBe("100%");
    bar.set(NaN);
    expect(fill.style.width).toBe("0%");
    const errs = errorBox();
    errs.set("", "<img src=x>", "second");
    expect(errs.el.hidden).toBe(false);
    expect(errs.el.textContent).toBe("<img src=x>\nsecond");
    expect(errs.el.querySelector("img")).toBeNull();
    errs.set("", "");
    expect(errs.el.hidden).toBe(true);
  });
});
