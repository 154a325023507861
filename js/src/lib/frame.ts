/** The frame every view shares: its root element, its CSS and the show-the-code toggle. */

import { addCodePanel, type CodePanel } from "./code_panel";
import { h, style, type Child } from "./dom";
import type { AnyModel } from "./model";

/**
 * Append the view's root `<div class="cls">` (the view's CSS, then `children`) to `el`, with the
 * show-the-code toggle at the end of `header` (one of `children`) and its panel just under it
 * (Python's `w.code()`).
 */
export function frame(model: AnyModel, el: HTMLElement, cls: string, css: string, header: HTMLElement, children: Child[]): { root: HTMLDivElement; code: CodePanel } {
  const root = h("div", cls, [style(css), ...children]);
  el.appendChild(root);
  return { root, code: addCodePanel(model, header, root) };
}
