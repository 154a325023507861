/**
 * Keyboard navigation and ARIA selection state shared by the views: a key and the current
 * position in, the next position out (pure functions, so the views and the tests agree), plus
 * the roving tabindex / aria-selected bookkeeping of a set of items.
 *
 * Lists (TokenActivations' tokens, role=listbox/option): ←/→ (and ↑/↓) move by one, Home/End
 * jump to the ends, Enter/Space activate the current item (the first when none), Escape clears.
 * Grids (PatchingGrid's cells, role=grid/gridcell): arrows move one cell (clamped at the edges),
 * Home/End go to the row's ends, Ctrl+Home/End to the first/last cell, Enter/Space activate.
 */

export type ListMove = { kind: "move"; index: number } | { kind: "activate"; index: number } | { kind: "clear" } | null;
export type GridMove = { kind: "move" | "activate"; row: number; col: number } | null;

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** The effect of `key` on a list of `n` items whose current index is `cur` (-1: none). */
export function listKey(key: string, cur: number, n: number): ListMove {
  if (n <= 0) return null;
  switch (key) {
    case "ArrowRight":
    case "ArrowDown":
      return { kind: "move", index: cur < 0 ? 0 : Math.min(n - 1, cur + 1) };
    case "ArrowLeft":
    case "ArrowUp":
      return { kind: "move", index: cur < 0 ? n - 1 : Math.max(0, cur - 1) };
    case "Home":
      return { kind: "move", index: 0 };
    case "End":
      return { kind: "move", index: n - 1 };
    case "Enter":
    case " ":
      return { kind: "activate", index: cur < 0 ? 0 : cur };
    case "Escape":
      return { kind: "clear" };
    default:
      return null;
  }
}

/** The effect of `key` on a `rows` × `cols` grid whose current cell is (`row`, `col`). */
export function gridKey(key: string, row: number, col: number, rows: number, cols: number, ctrl = false): GridMove {
  if (rows <= 0 || cols <= 0) return null;
  const r = clamp(row, 0, rows - 1);
  const c = clamp(col, 0, cols - 1);
  switch (key) {
    case "ArrowUp":
      return { kind: "move", row: clamp(r - 1, 0, rows - 1), col: c };
    case "ArrowDown":
      return { kind: "move", row: clamp(r + 1, 0, rows - 1), col: c };
    case "ArrowLeft":
      return { kind: "move", row: r, col: clamp(c - 1, 0, cols - 1) };
    case "ArrowRight":
      return { kind: "move", row: r, col: clamp(c + 1, 0, cols - 1) };
    case "Home":
      return { kind: "move", row: ctrl ? 0 : r, col: 0 };
    case "End":
      return { kind: "move", row: ctrl ? rows - 1 : r, col: cols - 1 };
    case "Enter":
    case " ":
      return { kind: "activate", row: r, col: c };
    default:
      return null;
  }
}

/**
 * Mark item `index` selected (aria-selected="true", the others "false") and, with `roving`, make
 * it the one tab stop (item 0 when none is selected, so the set stays reachable). Without
 * `roving` the container keeps the focus (a listbox whose keys its container handles).
 */
export function ariaSelect(items: ArrayLike<HTMLElement>, index: number, roving = true): void {
  const stop = index >= 0 && index < items.length ? index : 0;
  for (let i = 0; i < items.length; i++) {
    const el = items[i];
    if (!el) continue;
    el.setAttribute("aria-selected", String(i === index));
    if (roving) el.tabIndex = i === stop ? 0 : -1;
  }
}
