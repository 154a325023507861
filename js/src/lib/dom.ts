/**
 * Tiny DOM helpers. Text only ever goes in through `textContent`; there is deliberately no
 * helper that parses markup.
 */

export type Child = Node | string | null | undefined | false;

/** Create `<tag class="...">` with children (strings become text nodes). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string | string[] | null,
  children?: Child[] | string,
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (cls) el.className = Array.isArray(cls) ? cls.join(" ") : cls;
  if (typeof children === "string") el.textContent = children;
  else if (children) append(el, children);
  return el;
}

/** Create an SVG element `<tag>` with attributes `attrs` and, if given, its text. */
export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}, text?: string): SVGElementTagNameMap[K] {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The element matching `selector` at or above an event's target `t`; null when none. */
export function closest<E extends Element = HTMLElement>(t: EventTarget | null, selector: string): E | null {
  return t instanceof Element ? (t.closest(selector) as E | null) : null;
}

/** A heatmap cell `<div class="mw-cell" role="gridcell">` with `data` as its data-* attributes,
 * reached by Tab only when `tabbable` (the arrow keys move between cells). */
export function gridCell(data: Record<string, number>, tabbable = false): HTMLDivElement {
  const cell = h("div", "mw-cell");
  for (const [k, v] of Object.entries(data)) cell.dataset[k] = String(v);
  cell.tabIndex = tabbable ? 0 : -1;
  cell.setAttribute("role", "gridcell");
  return cell;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c == null || c === false) continue;
    el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
}

export function setText(el: Node, text: unknown): void {
  const s = text == null ? "" : String(text);
  if (el.textContent !== s) el.textContent = s;
}

export function clear(el: Node): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** A form control `<tag class="cls" aria-label="label">` with `props` set (type, placeholder, …). */
export function control<K extends "input" | "select" | "textarea">(
  tag: K,
  cls: string,
  label: string,
  props: Partial<HTMLElementTagNameMap[K]> = {},
): HTMLElementTagNameMap[K] {
  const el = h(tag, cls);
  el.setAttribute("aria-label", label);
  return Object.assign(el, props);
}

/** A `<button type="button">` (never a form submit) with its text and title. */
export function button(cls: string, text: string, title = ""): HTMLButtonElement {
  const b = h("button", cls, text);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

/** A `<style>` element whose CSS is set via textContent (no external stylesheet, no fonts). */
export function style(cssText: string): HTMLStyleElement {
  const s = document.createElement("style");
  s.textContent = cssText;
  return s;
}

/**
 * Make a token readable without letting it affect layout: C0 controls (other than the newline,
 * handled by the caller), DEL, C1 controls and the Unicode line/paragraph separators become
 * visible escapes; tab becomes "⇥". Bidi controls stay literal (the caller isolates each token).
 */
export function displayToken(tok: string): string {
  // eslint-disable-next-line no-control-regex
  return tok.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    if (c === "\t") return "⇥";
    const code = c.charCodeAt(0);
    if (code > 0xff) return "\\u" + code.toString(16).padStart(4, "0");
    return "\\x" + code.toString(16).padStart(2, "0");
  });
}

/** Put token `tok` into `span`: visible escapes for controls, a "↵" marker (`span.mw-nl`) for
 * each newline, `mw-empty` on the span for an empty token (text only, via text nodes). */
export function fillToken(span: HTMLElement, tok: string): HTMLElement {
  if (tok === "") span.classList.add("mw-empty");
  tok.split("\n").forEach((part, i) => {
    if (i > 0) span.appendChild(h("span", "mw-nl", "↵"));
    if (part) span.appendChild(document.createTextNode(displayToken(part)));
  });
  return span;
}

/** Quoted, fully escaped form of a token (tooltips): shows whitespace and invisible characters. */
export function escapeToken(tok: string): string {
  let out = "";
  for (const ch of tok) {
    const code = ch.codePointAt(0) as number;
    if (ch === "\\") out += "\\\\";
    else if (ch === '"') out += '\\"';
    else if (ch === "\n") out += "\\n";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\r") out += "\\r";
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) out += "\\x" + code.toString(16).padStart(2, "0");
    else if (
      (code >= 0x200b && code <= 0x200f) || // zero-width, LRM, RLM
      (code >= 0x2028 && code <= 0x202e) || // separators, bidi embeddings/overrides
      (code >= 0x2060 && code <= 0x206f) || // word joiner, bidi isolates, invisible operators
      code === 0x061c || // Arabic letter mark
      code === 0xfeff || // BOM / zero-width no-break space
      code === 0x00ad || // soft hyphen
      code === 0xfffd // replacement character (usually a split multi-byte sequence)
    )
      out += "\\u" + code.toString(16).padStart(4, "0");
    else out += ch;
  }
  return `"${out}"`;
}

/**
 * Give `select` the options `values` (shown as `labels`, by default the values themselves),
 * leaving it untouched when it already has them (so that an open dropdown is not rebuilt).
 */
export function setOptions(select: HTMLSelectElement, values: string[], labels: string[] = values): void {
  const opts = select.options;
  const label = (i: number) => labels[i] ?? "";
  if (opts.length === values.length && values.every((v, i) => opts[i].value === v && opts[i].textContent === label(i))) return;
  clear(select);
  values.forEach((v, i) => {
    const o = h("option", null, label(i));
    o.value = v;
    select.appendChild(o);
  });
}
