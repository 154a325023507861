/**
 * Patchscope view (mi_widgets/widgets/patchscope.py has the traits and the request).
 *
 * A layers × positions grid over the source prompt's tokens (rows: residual layers, columns:
 * tokens). Click a cell (or Enter / arrow keys) → request "decode" {layer, position}; Python
 * generates from the inspection prompt with that state patched in at every target layer and
 * sets `decoded` / `decoded_probs`; the panel lists the decoded text per target layer.
 * Static copies read `decoded_cache`. All text goes in through textContent.
 */

import { addCodePanel } from "./lib/code_panel";
import { clear, closest, displayToken, gridCell, h, setText, style } from "./lib/dom";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { CSS } from "./lib/patchscope.css";
import { request } from "./lib/rpc";
import { errorBox, errorText, progressBar, statusPill } from "./lib/status";
import { str, strs } from "./lib/values";

const STATIC_TITLE = "Static HTML export: there is no Python kernel; only precomputed cells can be shown.";

const nums = (x: unknown): number[] => (Array.isArray(x) ? x.map((t) => Number(t)) : []);
const int = (x: unknown, fallback: number): number => {
  const n = Math.trunc(Number(x));
  return Number.isFinite(n) ? n : fallback;
};

/** Text shown literally: visible escapes for control characters, newline as "↵". */
export const showText = (t: string): string => displayToken(t.replace(/\n/g, "↵"));

interface Cached {
  texts: string[];
  probs: number[];
}

function cachedCell(cache: unknown, key: string): Cached | null {
  if (cache == null || typeof cache !== "object") return null;
  const c = (cache as Record<string, unknown>)[key];
  if (c == null || typeof c !== "object") return null;
  return { texts: strs((c as Cached).texts), probs: nums((c as Cached).probs) };
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title", "Patchscope");
  const pill = statusPill();
  const bar = progressBar();
  const header = h("div", "mw-header", [title, h("span", "mw-status-wrap", [bar.el, pill.el])]);
  const errBox = errorBox();
  const targetEl = h("div", "mw-target");
  const gridEl = h("div", "mw-grid");
  gridEl.setAttribute("role", "grid");
  const panelTitle = h("div", "mw-panel-title", "click a cell: source layer × position");
  const listEl = h("div", "mw-decoded");
  const baselineEl = h("div", "mw-baseline");
  const panel = h("div", "mw-panel", [panelTitle, listEl, baselineEl]);
  const root = h("div", "mw-patchscope", [
    style(CSS),
    header,
    errBox.el,
    targetEl,
    h("div", "mw-body", [h("div", "mw-grid-wrap", [gridEl]), panel]),
  ]);
  el.appendChild(root);
  const code = addCodePanel(model, header, root);

  // ---------------------------------------------------------------- state
  let cells: HTMLElement[] = [];
  let rows = 0;
  let cols = 0;
  let layoutKey = "";
  let localError = "";
  let localNote = "";
  let seq = 0;
  const isStatic = () => model.get("static") === true;

  function build(): void {
    const toks = strs(model.get("source_tokens"));
    const nl = Math.max(0, int(model.get("n_layers"), 0));
    const key = JSON.stringify([toks, nl]);
    if (key === layoutKey) return;
    layoutKey = key;
    rows = nl + 1;
    cols = toks.length;
    clear(gridEl);
    cells = [];
    gridEl.style.gridTemplateColumns = `auto repeat(${cols}, minmax(26px, 1fr))`;
    const frag = document.createDocumentFragment();
    frag.appendChild(h("div", "mw-corner", "layer"));
    toks.forEach((t, p) => {
      const lab = h("div", "mw-src-token", showText(t));
      lab.dataset.position = String(p);
      lab.title = `position ${p}`;
      frag.appendChild(lab);
    });
    for (let l = 0; l < rows; l++) {
      const lab = h("div", "mw-row-label", l === nl ? `L${l} (out)` : `L${l}`);
      frag.appendChild(lab);
      for (let p = 0; p < cols; p++) {
        const c = gridCell({ layer: l, position: p });
        c.setAttribute("aria-label", `layer ${l}, position ${p}`);
        cells.push(c);
        frag.appendChild(c);
      }
    }
    gridEl.appendChild(frag);
  }

  function paintCells(): void {
    const done = new Set(strs(model.get("done_cells")));
    const cache = model.get("decoded_cache");
    const sl = int(model.get("selected_layer"), -1);
    const sp = int(model.get("selected_position"), -1);
    for (const c of cells) {
      const key = `${c.dataset.layer},${c.dataset.position}`;
      c.classList.toggle("mw-done", done.has(key) || cachedCell(cache, key) != null);
      const sel = Number(c.dataset.layer) === sl && Number(c.dataset.position) === sp;
      c.classList.toggle("mw-selected", sel);
      c.tabIndex = sel || (sl < 0 && c === cells[0]) ? 0 : -1;
    }
  }

  function renderTarget(): void {
    clear(targetEl);
    const toks = strs(model.get("target_tokens"));
    const tp = int(model.get("target_position"), -1);
    targetEl.appendChild(document.createTextNode("inspection prompt: "));
    toks.forEach((t, i) => {
      const s = h("span", i === tp ? "mw-tt mw-patched" : "mw-tt", showText(t));
      if (i === tp) s.title = "the patched state goes here";
      targetEl.appendChild(s);
    });
  }

  function renderPanel(): void {
    clear(listEl);
    const sl = int(model.get("selected_layer"), -1);
    const sp = int(model.get("selected_position"), -1);
    const toks = strs(model.get("source_tokens"));
    if (sl < 0 || sp < 0) {
      setText(panelTitle, "click a cell: source layer × position");
    } else {
      setText(panelTitle, `source layer ${sl}, position ${sp} "${showText(str(toks[sp]))}"`);
    }
    const tls = nums(model.get("target_layers"));
    let texts = strs(model.get("decoded"));
    let probs = nums(model.get("decoded_probs"));
    if (isStatic() && sl >= 0) {
      const c = cachedCell(model.get("decoded_cache"), `${sl},${sp}`);
      if (c) {
        texts = c.texts;
        probs = c.probs;
      } else {
        texts = [];
        probs = [];
      }
    }
    if (localNote) listEl.appendChild(h("div", "mw-note", localNote));
    if (sl >= 0 && texts.length === tls.length) {
      tls.forEach((tl, j) => {
        const row = h("div", "mw-decoded-row", [
          h("span", "mw-tl", `target L${tl}`),
          h("span", "mw-text", showText(texts[j])),
          h("span", "mw-prob", Number.isFinite(probs[j]) ? probs[j].toFixed(2) : ""),
        ]);
        row.dataset.targetLayer = String(tl);
        row.title = `decoded with the state written at target layer ${tl}; first token probability ${Number.isFinite(probs[j]) ? probs[j].toFixed(3) : "?"}`;
        listEl.appendChild(row);
      });
    }
    const base = str(model.get("baseline"));
    setText(baselineEl, base ? `unpatched: ${showText(base)}` : "");
  }

  function renderStatus(): void {
    const status = str(model.get("status"), "ready");
    const p = Number(model.get("progress"));
    pill.set(status, status === "loading" ? `decoding ${Math.round(100 * (Number.isFinite(p) ? p : 0))}%` : isStatic() ? "static" : status);
    bar.show(status === "loading");
    bar.set(p);
    root.classList.toggle("mw-busy", status === "loading");
    root.title = isStatic() ? STATIC_TITLE : "";
    errBox.set(str(model.get("error")), localError);
  }

  async function select(layer: number, position: number): Promise<void> {
    const my = ++seq;
    localError = "";
    localNote = "";
    if (isStatic()) {
      model.set("selected_layer", layer);
      model.set("selected_position", position);
      if (!cachedCell(model.get("decoded_cache"), `${layer},${position}`)) localNote = "not precomputed in this export";
      renderPanel();
      paintCells();
      return;
    }
    // immediate feedback; Python confirms the selection with the decoded texts
    for (const c of cells) c.classList.toggle("mw-selected", Number(c.dataset.layer) === layer && Number(c.dataset.position) === position);
    try {
      await request(model, "decode", { layer, position }, {
        onProgress: (done, total) => {
          if (my !== seq) return;
          bar.set(done / Math.max(1, total));
        },
      });
    } catch (e) {
      if (my === seq) localError = errorText(e);
    }
    if (my === seq) {
      renderStatus();
      renderPanel();
      paintCells();
    }
  }

  // ---------------------------------------------------------------- events
  const cellOf = (t: EventTarget | null) => closest(t, ".mw-cell");
  const onClick = (e: MouseEvent) => {
    const c = cellOf(e.target);
    if (c && gridEl.contains(c)) void select(Number(c.dataset.layer), Number(c.dataset.position));
  };
  const onKey = (e: KeyboardEvent) => {
    const l0 = Math.max(0, int(model.get("selected_layer"), 0));
    const p0 = Math.max(0, int(model.get("selected_position"), 0));
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const mv = moves[e.key];
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      void select(l0, p0);
    } else if (mv) {
      e.preventDefault();
      const l = Math.min(rows - 1, Math.max(0, l0 + mv[0]));
      const p = Math.min(cols - 1, Math.max(0, p0 + mv[1]));
      void select(l, p);
      cells[l * cols + p]?.focus();
    }
  };
  const { dom, listen, dispose } = listeners(model);
  dom(gridEl, "click", onClick);
  dom(gridEl, "keydown", onKey);

  listen(["source_tokens", "n_layers"], () => {
    build();
    paintCells();
    renderPanel();
  });
  listen(["done_cells", "decoded_cache", "selected_layer", "selected_position"], () => {
    paintCells();
    renderPanel();
  });
  listen(["decoded", "decoded_probs", "target_layers", "baseline"], renderPanel);
  listen(["target_tokens", "target_position"], renderTarget);
  listen(["status", "progress", "error", "static"], renderStatus);

  // ---------------------------------------------------------------- first paint
  build();
  paintCells();
  renderTarget();
  renderPanel();
  renderStatus();

  return () => {
    seq++;
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
