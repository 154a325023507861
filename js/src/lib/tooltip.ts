/**
 * The hover tooltip every view uses: a hidden `div.mw-tooltip` (role=tooltip) placed inside the
 * view's root (which is `position:relative`), shown below an element or next to the pointer.
 * Its content is the caller's child elements, whose text the caller sets with textContent.
 */

import { h } from "./dom";

export interface Tooltip {
  readonly el: HTMLDivElement;
  /**
   * Show below `anchor`, left-aligned with it (+`dx` px), in `root`'s coordinates. `fit`: shift
   * left so that the tooltip does not overflow `root`'s right edge.
   */
  showBelow(anchor: Element, root: Element, opts?: { dx?: number; fit?: boolean }): void;
  /** Show 12 px right of and below the viewport point (x, y), in `root`'s coordinates. */
  showAt(x: number, y: number, root: Element): void;
  hide(): void;
}

export function tooltip(children: Node[], opts: { role?: boolean } = {}): Tooltip {
  const el = h("div", "mw-tooltip", children);
  if (opts.role !== false) el.setAttribute("role", "tooltip");
  el.hidden = true;
  const place = (left: number, top: number) => {
    el.style.left = `${Math.max(0, left)}px`;
    el.style.top = `${top}px`;
  };
  return {
    el,
    showBelow(anchor, root, { dx = 0, fit = false } = {}) {
      el.hidden = false;
      const rr = root.getBoundingClientRect();
      const r = anchor.getBoundingClientRect();
      let left = r.left - rr.left + dx;
      if (fit) {
        const width = el.offsetWidth;
        if (rr.width > 0 && left + width > rr.width) left = Math.max(0, rr.width - width);
      }
      place(left, r.bottom - rr.top + 4);
    },
    showAt(x, y, root) {
      el.hidden = false;
      const rr = root.getBoundingClientRect();
      place(x - rr.left + 12, y - rr.top + 12);
    },
    hide() {
      el.hidden = true;
    },
  };
}

/** A tooltip of two text lines: `[tooltip, first line, second line]` (classes `mw-tt-label` and
 * `mw-tt-value` unless given). */
export function textTooltip(classes: [string, string] = ["mw-tt-label", "mw-tt-value"], opts: { role?: boolean } = {}): [Tooltip, HTMLElement, HTMLElement] {
  const first = h("div", classes[0]);
  const second = h("div", classes[1]);
  return [tooltip([first, second], opts), first, second];
}
