/**
 * Show the code: a "code" toggle and a panel with the plain nnsight code that computes what a
 * view shows (Python's `w.code()`, fetched with the "code" request when first opened). The code
 * is put in with textContent only. Hidden in a static copy (no kernel to ask).
 */

import { CODE } from "./base.css";
import { h, setText, style } from "./dom";
import type { AnyModel } from "./model";
import { request } from "./rpc";

export interface CodePanel {
  /** The toggle, for the view's header. */
  button: HTMLButtonElement;
  /** The panel (a <pre>), for the view's body; hidden until the toggle opens it. */
  el: HTMLElement;
  /** Stop listening (the view's cleanup). */
  dispose(): void;
}

export const CODE_CSS = (root: string) =>
  `${root} .mw-code{font-family:${CODE};font-size:11px;white-space:pre;overflow:auto;max-height:28em;margin:6px 0;` +
  `padding:6px 8px;border:1px solid var(--mw-border);border-radius:4px;background:var(--mw-bg2);color:var(--mw-fg)}\n` +
  `${root} .mw-code-toggle[aria-expanded=true]{border-color:var(--mw-accent);color:var(--mw-accent)}\n`;

export function codePanel(model: AnyModel): CodePanel {
  const button = h("button", "mw-code-toggle", "code");
  button.type = "button";
  button.title = "the plain nnsight code that computes this view";
  button.setAttribute("aria-expanded", "false");
  const el = h("pre", "mw-code");
  el.hidden = true;
  el.setAttribute("aria-label", "code that computes this view");
  let seq = 0;
  let loaded = false;
  const sync = () => {
    button.hidden = model.get("static") === true;
  };
  const onClick = () => {
    const open = el.hidden;
    el.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (!open || loaded) return;
    const mine = ++seq;
    setText(el, "loading…");
    request<{ code?: unknown }>(model, "code", {}).then(
      (r) => {
        if (mine !== seq) return;
        loaded = true;
        setText(el, typeof r.response.code === "string" ? r.response.code : "");
      },
      (e: unknown) => {
        if (mine !== seq) return;
        setText(el, `# no code for this view: ${e instanceof Error ? e.message : String(e)}`);
      },
    );
  };
  button.addEventListener("click", onClick);
  const onStatic = () => sync();
  model.on("change:static", onStatic);
  sync();
  return {
    button,
    el,
    dispose() {
      seq++;
      button.removeEventListener("click", onClick);
      model.off("change:static", onStatic);
    },
  };
}

/** Show the code in a view: the toggle at the end of `header`, the panel just under it, and its
 * CSS scoped to `root` (whose first class names the view, e.g. `mw-patching-grid`). */
export function addCodePanel(model: AnyModel, header: HTMLElement, root: HTMLElement): CodePanel {
  const code = codePanel(model);
  header.appendChild(code.button);
  header.after(code.el);
  root.appendChild(style(CODE_CSS(`.${root.classList[0]}`)));
  return code;
}
