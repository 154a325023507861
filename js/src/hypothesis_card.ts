/**
 * HypothesisCard view (mi_widgets/widgets/hypothesis_card.py has the traits).
 *
 * A validated hypothesis at a glance: the unit and its description with a PASS/FAIL badge, the
 * ablation-kind disagreements, and one row per test (figure, threshold, pass/fail). Click a row
 * (or Enter) to list that test's counterexamples, worst first; `selected_test` syncs back to
 * Python. Display only: no requests. All text goes in through textContent.
 */

import { clear, closest, displayToken, h, setText, style } from "./lib/dom";
import { CSS } from "./lib/hypothesis_card.css";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { str, strs } from "./lib/values";

export interface TestRow {
  name: string;
  figure: number;
  threshold: number;
  direction: string;
  passed: boolean;
  unit: string;
}

export interface CounterexampleRow {
  test: string;
  kind: string;
  context: string;
  activation: number;
  /** a gradient-guided counterexample's token edit ("position 3: ' apple' -> ' stone'"), else "" */
  edit: string;
}

/** A number from a trait; null (Python's NaN/inf sent as JSON null) stays NaN, not 0. */
const num = (x: unknown): number => (x == null ? Number.NaN : Number(x));

const obj = (x: unknown): Record<string, unknown> => (x != null && typeof x === "object" ? (x as Record<string, unknown>) : {});

export function asTests(x: unknown): TestRow[] {
  if (!Array.isArray(x)) return [];
  return x.map((r) => {
    const o = obj(r);
    return {
      name: str(o.name),
      figure: num(o.figure),
      threshold: num(o.threshold),
      direction: str(o.direction),
      passed: o.passed === true,
      unit: str(o.unit),
    };
  });
}

export function asCounterexamples(x: unknown): CounterexampleRow[] {
  if (!Array.isArray(x)) return [];
  return x.map((r) => {
    const o = obj(r);
    return { test: str(o.test), kind: str(o.kind), context: str(o.context), activation: num(o.activation), edit: str(o.edit) };
  });
}

/** A figure for the table: 3 significant decimals, "—" when not finite. */
export const fmt = (v: number): string => (Number.isFinite(v) ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(3)) : "—");

function badge(passed: boolean): HTMLElement {
  return h("span", ["mw-badge", passed ? "mw-pass" : "mw-fail"], passed ? "PASS" : "FAIL");
}

function render({ model, el }: RenderProps): Cleanup {
  const title = h("span", "mw-title");
  const verdictBadge = h("span", "mw-badge");
  const header = h("div", "mw-header", [title, verdictBadge]);
  const desc = h("div", "mw-description");
  const notes = h("div", "mw-notes");
  const tbody = h("tbody");
  const table = h("table", "mw-tests", [
    h("thead", null, [h("tr", null, [h("th", null, "test"), h("th", null, "figure"), h("th", null, "needs"), h("th", null, "unit"), h("th", null, "")])]),
    tbody,
  ]);
  const panelTitle = h("div", "mw-panel-title");
  const list = h("div", "mw-ce-list");
  const panel = h("div", "mw-panel", [panelTitle, list]);
  const root = h("div", "mw-hypothesis-card", [style(CSS), header, desc, notes, table, panel]);
  el.appendChild(root);
  const { dom, listen, dispose } = listeners(model);

  function renderHeader(): void {
    setText(title, `${str(model.get("model_name"))} · ${str(model.get("unit"))}`);
    const passed = model.get("passed") === true;
    verdictBadge.className = `mw-badge ${passed ? "mw-pass" : "mw-fail"}`;
    setText(verdictBadge, passed ? "PASSES" : "FAILS");
    setText(desc, displayToken(str(model.get("description"))));
    clear(notes);
    for (const n of strs(model.get("disagreements"))) notes.appendChild(h("div", "mw-note", n));
  }

  function renderTable(): void {
    clear(tbody);
    const sel = Math.trunc(Number(model.get("selected_test")));
    asTests(model.get("tests")).forEach((t, i) => {
      const row = h("tr", ["mw-test", i === sel ? "mw-selected" : ""].filter(Boolean), [
        h("td", "mw-name", t.name),
        h("td", "mw-num", fmt(t.figure)),
        h("td", "mw-num", `${t.direction} ${fmt(t.threshold)}`),
        h("td", "mw-unit", t.unit),
        h("td", null, [badge(t.passed)]),
      ]);
      row.tabIndex = 0;
      row.dataset.index = String(i);
      row.setAttribute("aria-selected", String(i === sel));
      tbody.appendChild(row);
    });
  }

  function renderPanel(): void {
    const tests = asTests(model.get("tests"));
    const sel = Math.trunc(Number(model.get("selected_test")));
    const all = asCounterexamples(model.get("counterexamples"));
    const name = sel >= 0 && sel < tests.length ? tests[sel].name : "";
    const shown = name ? all.filter((c) => c.test === name) : all;
    setText(panelTitle, name ? `counterexamples: ${name} (${shown.length})` : `counterexamples (${shown.length}); click a test to filter`);
    clear(list);
    if (shown.length === 0) list.appendChild(h("div", "mw-ce-none", "none"));
    for (const c of shown) {
      const row = h("div", "mw-ce", [h("span", "mw-ce-kind", c.kind), h("span", "mw-ce-context", displayToken(c.context)), h("span", "mw-ce-value", fmt(c.activation))]);
      if (c.edit) row.appendChild(h("span", "mw-ce-edit", displayToken(c.edit)));
      list.appendChild(row);
    }
  }

  function select(target: EventTarget | null): void {
    const row = closest(target, "tr.mw-test");
    if (!row || !root.contains(row)) return;
    const i = Number(row.dataset.index);
    const cur = Math.trunc(Number(model.get("selected_test")));
    model.set("selected_test", i === cur ? -1 : i);
    model.save_changes();
  }

  dom(tbody, "click", (e) => select(e.target));
  dom(tbody, "keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      select(e.target);
    }
  });
  listen(["model_name", "unit", "passed", "description", "disagreements"], renderHeader);
  listen(["tests", "selected_test"], () => {
    renderTable();
    renderPanel();
  });
  listen(["counterexamples"], renderPanel);

  renderHeader();
  renderTable();
  renderPanel();
  return () => {
    dispose();
    root.remove();
  };
}

export default { render };
