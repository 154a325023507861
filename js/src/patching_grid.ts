/**
 * PatchingGrid view (docs/widget_protocol.md, "PatchingGrid").
 *
 * A DOM heatmap (one div per cell; grids are at most a few thousand cells) of layers × positions
 * or heads. Hover: the cell's label and exact value. Click: the patched run's top-k next tokens
 * next to the clean and corrupt runs' (request "cell"; static copies: `cell_cache`). Site and
 * mode selectors start a sweep in Python (request "sweep"); cells fill in as `values`/`filled`
 * arrive; "cancel" stops it.
 */

import { diverging, fmt, legend, maxAbs } from "./lib/colour";
import { clear, displayToken, escapeToken, h, setText, style } from "./lib/dom";
import type { Callback, Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { CSS } from "./lib/patching_grid.css";
import { decode, isWire } from "./lib/wire";

const STATIC_TITLE = "Static HTML export: there is no Python kernel, so sweeps cannot run here.";

interface TopkRow {
  token: string;
  prob: number;
}

interface Cell {
  row: number;
  col: number;
  layer: number;
  head: number | null;
  position: number | null;
}

const strs = (x: unknown): string[] => (Array.isArray(x) ? x.map((t) => (typeof t === "string" ? t : String(t))) : []);
const ints = (x: unknown): number[] => (Array.isArray(x) ? x.map((t) => Math.trunc(Number(t))) : []);
const str = (x: unknown, fallback = ""): string => (x == null ? fallback : String(x));

function asTopk(x: unknown): TopkRow[] {
  if (!Array.isArray(x)) return [];
  return x
    .filter((r) => r != null && typeof r === "object")
    .map((r) => ({ token: str((r as TopkRow).token), prob: Number((r as TopkRow).prob) }));
}

/** A token as an axis label: visible escapes, newline as "↵" (always set via textContent). */
const showTok = (t: string): string => (t === "" ? "∅" : displayToken(t.replace(/\n/g, "↵")));

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title");
  const siteSelect = h("select", "mw-site");
  siteSelect.setAttribute("aria-label", "site");
  const modeSelect = h("select", "mw-mode");
  modeSelect.setAttribute("aria-label", "mode");
  for (const m of ["exact", "attribution"]) {
    const o = h("option", null, m);
    o.value = m;
    modeSelect.appendChild(o);
  }
  const cancelBtn = h("button", "mw-cancel", "cancel");
  cancelBtn.type = "button";
  const colourLegend = legend("diverging");
  const statusEl = h("span", "mw-status");
  statusEl.setAttribute("role", "status");
  statusEl.setAttribute("aria-live", "polite");
  const progressFill = h("span");
  const progressEl = h("span", "mw-progress", [progressFill]);
  const header = h("div", "mw-header", [
    title,
    h("label", "mw-control", ["site", siteSelect]),
    h("label", "mw-control", ["mode", modeSelect]),
    cancelBtn,
    colourLegend.el,
    h("span", "mw-status-wrap", [progressEl, statusEl]),
  ]);
  const errorEl = h("div", "mw-error");
  errorEl.setAttribute("role", "alert");
  const gridEl = h("div", "mw-grid");
  gridEl.setAttribute("role", "grid");
  const panelTitle = h("div", "mw-cell-title", "click a cell for its top-k next tokens");
  const lists = h("div", "mw-lists");
  const panel = h("div", "mw-cell-panel", [panelTitle, lists]);
  const ttLabel = h("div", "mw-tt-label");
  const ttValue = h("div", "mw-tt-value");
  const tooltip = h("div", "mw-tooltip", [ttLabel, ttValue]);
  tooltip.setAttribute("role", "tooltip");
  tooltip.hidden = true;
  const root = h("div", "mw-patching-grid", [
    style(CSS),
    header,
    errorEl,
    h("div", "mw-body", [h("div", "mw-grid-wrap", [gridEl]), panel]),
    tooltip,
  ]);
  el.appendChild(root);

  // ---------------------------------------------------------------- state
  let rows = 0;
  let cols = 0;
  let cells: HTMLElement[] = [];
  let values: Float32Array | Int32Array | null = null;
  let filled: Float32Array | Int32Array | null = null;
  let layoutKey = "";
  let selected: Cell | null = null;
  let patched: TopkRow[] | null = null;
  let patchedNote = "";
  let cellSeq = 0;
  let localError = "";

  const isStatic = () => model.get("static") === true;
  const dims = () => strs(model.get("dims"));
  const layers = () => ints(model.get("layers"));
  const heads = () => ints(model.get("heads"));
  const positions = () => ints(model.get("positions"));

  function decodeTrait(name: string): { shape: number[]; data: Float32Array | Int32Array } | null {
    const raw = model.get(name);
    if (!isWire(raw)) return null;
    try {
      return decode(raw);
    } catch (e) {
      localError = `${name}: ${e instanceof Error ? e.message : String(e)}`;
      return null;
    }
  }

  /** Grid row/col → model layer/head/position. */
  function cellAt(r: number, c: number): Cell {
    const d = dims();
    const L = layers();
    const H = heads();
    const P = positions();
    const nh = Math.max(1, H.length);
    if (d.length === 3) return { row: r, col: c, layer: L[Math.floor(r / nh)], head: H[r % nh], position: P[c] };
    if (d[1] === "head") return { row: r, col: c, layer: L[r], head: H[c], position: null };
    if (d[1] === "position") return { row: r, col: c, layer: L[r], head: null, position: P[c] };
    return { row: r, col: c, layer: L[r], head: null, position: null };
  }

  function tokensAt(p: number): [string, string] {
    return [str(strs(model.get("clean_tokens"))[p]), str(strs(model.get("corrupt_tokens"))[p])];
  }

  function colLabel(c: number): string {
    const d = dims();
    if (d.length === 1) return "all positions";
    if (d[1] === "head" && d.length === 2) return `H${heads()[c]}`;
    const [a, b] = tokensAt(positions()[c]);
    return a === b ? showTok(a) : `${showTok(a)}/${showTok(b)}`;
  }

  function rowLabel(r: number): string {
    const cell = cellAt(r, 0);
    return dims().length === 3 ? `L${cell.layer}.H${cell.head}` : `L${cell.layer}`;
  }

  /** "layer 2, position 3 " + quoted tokens; "layer 2, head 1". */
  function cellLabel(cell: Cell): string {
    let s = `layer ${cell.layer}`;
    if (cell.head != null) s += `, head ${cell.head}`;
    if (cell.position != null) {
      const [a, b] = tokensAt(cell.position);
      s += `, position ${cell.position} ${escapeToken(a)}`;
      if (a !== b) s += ` / ${escapeToken(b)}`;
    } else if (dims().length === 1) s += ", all positions";
    return s;
  }

  // ---------------------------------------------------------------- grid
  function build(): void {
    const v = decodeTrait("values");
    const shape = v ? v.shape : [0, 0];
    const r = shape[0] ?? 0;
    const c = shape.length > 1 ? shape[1] : 1;
    const key = JSON.stringify([r, c, dims(), layers(), heads(), positions(), model.get("clean_tokens"), model.get("corrupt_tokens")]);
    values = v ? v.data : null;
    const f = decodeTrait("filled");
    filled = f && f.data.length === r * c ? f.data : null;
    if (key !== layoutKey) {
      layoutKey = key;
      rows = r;
      cols = c;
      hideTooltip();
      clear(gridEl);
      cells = [];
      gridEl.style.gridTemplateColumns = `auto repeat(${cols}, minmax(22px, 1fr))`;
      const frag = document.createDocumentFragment();
      frag.appendChild(h("div", "mw-corner", dims().length === 3 ? "layer.head" : "layer"));
      for (let j = 0; j < cols; j++) {
        const lab = h("div", "mw-col-label", colLabel(j));
        lab.dataset.col = String(j);
        frag.appendChild(lab);
      }
      for (let i = 0; i < rows; i++) {
        const lab = h("div", "mw-row-label", rowLabel(i));
        lab.dataset.row = String(i);
        frag.appendChild(lab);
        for (let j = 0; j < cols; j++) {
          const cell = h("div", "mw-cell");
          cell.dataset.row = String(i);
          cell.dataset.col = String(j);
          cell.tabIndex = -1;
          cell.setAttribute("role", "gridcell");
          cells.push(cell);
          frag.appendChild(cell);
        }
      }
      gridEl.appendChild(frag);
      if (selected && (selected.row >= rows || selected.col >= cols)) selected = null;
      if (cells.length) cells[0].tabIndex = 0;
    }
    colour();
    renderSelection();
  }

  const isFilled = (i: number) => !filled || filled[i] !== 0;

  function colour(): void {
    let m = 0;
    if (values) {
      const vis: number[] = [];
      for (let i = 0; i < values.length; i++) if (isFilled(i)) vis.push(values[i]);
      m = maxAbs(vis);
    }
    colourLegend.update(m);
    for (let i = 0; i < cells.length; i++) {
      const ok = values != null && i < values.length && isFilled(i);
      cells[i].classList.toggle("mw-empty", !ok);
      cells[i].style.background = ok ? diverging((values as Float32Array)[i], m) : "";
    }
  }

  function renderSelection(): void {
    for (const c of gridEl.querySelectorAll(".mw-cell.mw-selected")) c.classList.remove("mw-selected");
    if (selected) cells[selected.row * cols + selected.col]?.classList.add("mw-selected");
  }

  // ---------------------------------------------------------------- tooltip
  function showTooltip(cellEl: HTMLElement): void {
    const r = Number(cellEl.dataset.row);
    const c = Number(cellEl.dataset.col);
    const i = r * cols + c;
    setText(ttLabel, cellLabel(cellAt(r, c)));
    setText(ttValue, values && isFilled(i) ? fmt(values[i], 4) : "not computed yet");
    tooltip.hidden = false;
    const box = root.getBoundingClientRect();
    const cb = cellEl.getBoundingClientRect();
    tooltip.style.left = `${Math.max(0, cb.left - box.left)}px`;
    tooltip.style.top = `${cb.bottom - box.top + 4}px`;
  }

  function hideTooltip(): void {
    tooltip.hidden = true;
  }

  // ---------------------------------------------------------------- side panel
  function topkList(run: string, heading: string, rowsIn: TopkRow[] | null, note: string): HTMLElement {
    const list = h("div", "mw-topk-list", [h("div", "mw-topk-head", heading)]);
    list.dataset.run = run;
    if (rowsIn && rowsIn.length) {
      for (const r of rowsIn) {
        const row = h("div", "mw-topk-row", [
          h("span", "mw-tok", showTok(r.token)),
          h("span", "mw-prob", fmt(r.prob, 3)),
        ]);
        row.title = `${escapeToken(r.token)} p = ${fmt(r.prob, 6)}`;
        list.appendChild(row);
      }
    } else list.appendChild(h("div", "mw-note", note || "no data"));
    return list;
  }

  function renderPanel(): void {
    clear(lists);
    if (!selected) {
      setText(panelTitle, "click a cell for its top-k next tokens");
    } else {
      const i = selected.row * cols + selected.col;
      const v = values && isFilled(i) ? ` = ${fmt(values[i], 4)}` : "";
      setText(panelTitle, `${cellLabel(selected)}${v}`);
    }
    lists.appendChild(topkList("patched", "patched", selected ? patched : null, selected ? patchedNote : "select a cell"));
    lists.appendChild(topkList("clean", `clean ${escapeToken(str(model.get("clean_prompt")))}`, asTopk(model.get("clean_topk")), "not available"));
    lists.appendChild(topkList("corrupt", `corrupt ${escapeToken(str(model.get("corrupt_prompt")))}`, asTopk(model.get("corrupt_topk")), "not available"));
  }

  async function selectCell(r: number, c: number): Promise<void> {
    if (r < 0 || c < 0 || r >= rows || c >= cols) return;
    const cell = cellAt(r, c);
    selected = cell;
    for (const el of cells) el.tabIndex = -1;
    cells[r * cols + c].tabIndex = 0;
    renderSelection();
    patched = null;
    const seq = ++cellSeq;
    if (isStatic()) {
      const cache = model.get("cell_cache") as Record<string, unknown> | undefined;
      const hit = cache && cache[`${r},${c}`];
      patched = hit ? asTopk(hit) : null;
      patchedNote = hit ? "" : "not precomputed in this static copy (only the cells with the largest |value| are)";
      renderPanel();
      return;
    }
    patchedNote = "running the patched forward…";
    renderPanel();
    const msg: Record<string, number> = { layer: cell.layer };
    if (cell.head != null) msg.head = cell.head;
    if (cell.position != null) msg.position = cell.position;
    try {
      const { response } = await request<{ topk: unknown }>(model, "cell", msg, { timeoutMs: 60_000 });
      if (seq !== cellSeq) return;
      patched = asTopk(response.topk);
      patchedNote = "";
    } catch (e) {
      if (seq !== cellSeq) return;
      patchedNote = e instanceof Error ? e.message : String(e);
    }
    renderPanel();
  }

  // ---------------------------------------------------------------- controls and status
  function renderControls(): void {
    const sites = strs(model.get("sites"));
    const site = str(model.get("site"));
    if (Array.from(siteSelect.options, (o) => o.value).join("\n") !== sites.join("\n")) {
      clear(siteSelect);
      for (const s of sites) {
        const o = h("option", null, s);
        o.value = s;
        siteSelect.appendChild(o);
      }
    }
    siteSelect.value = site;
    modeSelect.value = str(model.get("mode"), "exact");
    const running = model.get("status") === "running";
    const off = isStatic() || model.get("can_sweep") === false;
    siteSelect.disabled = modeSelect.disabled = off || running;
    cancelBtn.disabled = isStatic() || !running;
    cancelBtn.hidden = isStatic();
    for (const s of [siteSelect, modeSelect]) s.title = isStatic() ? STATIC_TITLE : off ? "no model or metric to sweep with" : "";
    const d = str(model.get("direction"));
    setText(title, `${str(model.get("metric_name"))} · ${site} · ${d}`);
  }

  function renderStatus(): void {
    const status = str(model.get("status"), "ready");
    const p = Number(model.get("progress"));
    const nf = Number(model.get("n_filled"));
    const nc = Number(model.get("n_cells"));
    statusEl.dataset.status = status;
    setText(statusEl, status === "running" ? `running ${nf}/${nc}` : isStatic() ? "static" : status);
    progressEl.hidden = status !== "running";
    progressFill.style.width = `${Math.round(100 * (Number.isFinite(p) ? Math.min(1, Math.max(0, p)) : 0))}%`;
    root.classList.toggle("mw-busy", status === "running");
    const err = [str(model.get("error")), localError].filter(Boolean).join("\n");
    setText(errorEl, err);
    errorEl.hidden = !err;
    renderControls();
  }

  async function sweep(): Promise<void> {
    localError = "";
    try {
      await request(model, "sweep", { site: siteSelect.value, mode: modeSelect.value });
    } catch (e) {
      localError = e instanceof Error ? e.message : String(e);
      renderControls();
    }
    renderStatus();
  }

  // ---------------------------------------------------------------- events
  const cellOf = (t: EventTarget | null): HTMLElement | null =>
    t instanceof Element ? (t.closest(".mw-cell") as HTMLElement | null) : null;
  const onClick = (e: MouseEvent) => {
    const c = cellOf(e.target);
    if (c && gridEl.contains(c)) void selectCell(Number(c.dataset.row), Number(c.dataset.col));
  };
  const onOver = (e: MouseEvent) => {
    const c = cellOf(e.target);
    if (c) showTooltip(c);
  };
  const onOut = (e: MouseEvent) => {
    if (!cellOf(e.relatedTarget)) hideTooltip();
  };
  const onKey = (e: KeyboardEvent) => {
    const r0 = selected ? selected.row : 0;
    const c0 = selected ? selected.col : 0;
    const moves: Record<string, [number, number]> = {
      ArrowUp: [-1, 0],
      ArrowDown: [1, 0],
      ArrowLeft: [0, -1],
      ArrowRight: [0, 1],
    };
    const mv = moves[e.key];
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      void selectCell(r0, c0);
    } else if (mv) {
      e.preventDefault();
      const r = Math.min(rows - 1, Math.max(0, r0 + mv[0]));
      const c = Math.min(cols - 1, Math.max(0, c0 + mv[1]));
      void selectCell(r, c).then(() => undefined);
      const el2 = cells[r * cols + c];
      if (el2) {
        el2.focus({ preventScroll: false });
        showTooltip(el2);
      }
    }
  };
  const onChange = () => void sweep();
  const onCancel = () => void request(model, "cancel", {}).catch(() => undefined);

  gridEl.addEventListener("click", onClick);
  gridEl.addEventListener("mouseover", onOver);
  gridEl.addEventListener("mouseout", onOut);
  gridEl.addEventListener("keydown", onKey);
  siteSelect.addEventListener("change", onChange);
  modeSelect.addEventListener("change", onChange);
  cancelBtn.addEventListener("click", onCancel);

  const handlers: [string, Callback][] = [];
  const listen = (names: string[], fn: () => void) => {
    const cb: Callback = () => fn();
    for (const name of names) {
      model.on(`change:${name}`, cb);
      handlers.push([`change:${name}`, cb]);
    }
  };
  listen(["values", "filled", "dims", "layers", "heads", "positions", "clean_tokens", "corrupt_tokens"], () => {
    const before = layoutKey;
    build();
    if (layoutKey !== before) {
      selected = null;
      patched = null;
    }
    renderPanel();
  });
  listen(["status", "progress", "error", "n_filled", "n_cells", "static", "can_sweep"], renderStatus);
  listen(["site", "sites", "mode", "direction", "metric_name"], renderControls);
  listen(["clean_topk", "corrupt_topk", "clean_prompt", "corrupt_prompt"], renderPanel);

  // ---------------------------------------------------------------- first paint
  build();
  renderPanel();
  renderStatus();

  return () => {
    cellSeq++;
    for (const [event, cb] of handlers) model.off(event, cb);
    gridEl.removeEventListener("click", onClick);
    gridEl.removeEventListener("mouseover", onOver);
    gridEl.removeEventListener("mouseout", onOut);
    gridEl.removeEventListener("keydown", onKey);
    siteSelect.removeEventListener("change", onChange);
    modeSelect.removeEventListener("change", onChange);
    cancelBtn.removeEventListener("click", onCancel);
    root.remove();
  };
}

export default { render };
