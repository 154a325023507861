/**
 * PatchingGrid view (docs/widget_protocol.md, "PatchingGrid").
 *
 * A DOM heatmap (one div per cell; grids are at most a few thousand cells) of layers × positions
 * or heads. Hover: the cell's label and exact value. Click: the patched run's top-k next tokens
 * next to the clean and corrupt runs' (request "cell"; static copies: `cell_cache`). Site and
 * mode selectors start a sweep in Python (request "sweep"); cells fill in as `values`/`filled`
 * arrive; "cancel" stops it.
 */

import { css, fmt, legend, maxAbs, paletteOf } from "./lib/colour";
import { button, clear, closest, control, escapeToken, gridCell, h, setOptions, setText } from "./lib/dom";
import { frame } from "./lib/frame";
import { ariaSelect, gridKey } from "./lib/keyboard";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { CSS } from "./lib/patching_grid.css";
import { addPredictBanner, currentGuess, isHidden } from "./lib/predict";
import { request } from "./lib/rpc";
import { errorBox, errorText, progressBar, statusPill } from "./lib/status";
import { textTooltip } from "./lib/tooltip";
import { topkList } from "./lib/topk";
import { asTopk, ints, showTok, str, strs, type TopkRow } from "./lib/values";
import { decodeTrait } from "./lib/wire";

const STATIC_TITLE = "Static HTML export: there is no Python kernel, so sweeps cannot run here.";

interface Cell {
  row: number;
  col: number;
  layer: number;
  head: number | null;
  position: number | null;
}

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title");
  const siteSelect = control("select", "mw-site", "site");
  const modeSelect = control("select", "mw-mode", "mode");
  setOptions(modeSelect, ["exact", "attribution"]);
  const cancelBtn = button("mw-cancel", "cancel");
  const pal = () => paletteOf(model.get("palette"));
  const colourLegend = legend("diverging", pal);
  const pill = statusPill();
  const bar = progressBar();
  const header = h("div", "mw-header", [
    title,
    h("label", "mw-control", ["site", siteSelect]),
    h("label", "mw-control", ["mode", modeSelect]),
    cancelBtn,
    colourLegend.el,
    h("span", "mw-status-wrap", [bar.el, pill.el]),
  ]);
  const errBox = errorBox();
  const gridEl = h("div", "mw-grid");
  gridEl.setAttribute("role", "grid");
  const panelTitle = h("div", "mw-cell-title", "click a cell for its top-k next tokens");
  const lists = h("div", "mw-lists");
  const panel = h("div", "mw-cell-panel", [panelTitle, lists]);
  const [tip, ttLabel, ttValue] = textTooltip();
  const body = h("div", "mw-body", [h("div", "mw-grid-wrap", [gridEl]), panel]);
  const { root, code } = frame(model, el, "mw-patching-grid", CSS, header, [header, errBox.el, body, tip.el]);
  // predict, then reveal: the values stay hidden until a guess
  const banner = addPredictBanner(model, root, errBox.el, "the cell you expect to matter most");

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

  const dec = (name: string) => decodeTrait(model.get(name), name, (msg) => (localError = msg));

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
    const v = dec("values");
    const shape = v ? v.shape : [0, 0];
    const r = shape[0] ?? 0;
    const c = shape.length > 1 ? shape[1] : 1;
    const key = JSON.stringify([r, c, dims(), layers(), heads(), positions(), model.get("clean_tokens"), model.get("corrupt_tokens")]);
    values = v ? v.data : null;
    const f = dec("filled");
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
          const cell = gridCell({ row: i, col: j });
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
    const hide = isHidden(model);
    const p = pal();
    root.classList.toggle("mw-predicting", hide);
    for (let i = 0; i < cells.length; i++) {
      const ok = values != null && i < values.length && isFilled(i);
      cells[i].classList.toggle("mw-empty", !ok);
      cells[i].style.background = ok && !hide ? css(p.divergingRGB((values as Float32Array)[i], m)) : "";
      const what = hide ? "hidden until you guess" : ok ? fmt((values as Float32Array)[i], 4) : "not computed yet";
      cells[i].setAttribute("aria-label", `${cellLabel(cellAt(Math.floor(i / cols), i % cols))}: ${what}`);
    }
    renderGuess();
  }

  /** The guess and the answer of the current question, marked mw-guess / mw-answer. */
  function renderGuess(): void {
    for (const c of gridEl.querySelectorAll(".mw-guess,.mw-answer")) c.classList.remove("mw-guess", "mw-answer");
    const g = currentGuess(model) as (Record<string, unknown> & { answer?: unknown }) | null;
    if (!g) return;
    const mine = cellOfTrait(g);
    if (mine) cells[mine[0] * cols + mine[1]]?.classList.add("mw-guess");
    const ans = cellOfTrait(g.answer);
    if (ans) cells[ans[0] * cols + ans[1]]?.classList.add("mw-answer");
  }

  function renderSelection(): void {
    for (const c of gridEl.querySelectorAll(".mw-cell.mw-selected")) c.classList.remove("mw-selected");
    if (selected) cells[selected.row * cols + selected.col]?.classList.add("mw-selected");
    ariaSelect(cells, selected ? selected.row * cols + selected.col : -1);
    // mw-linked: the whole column of the selected position (mw.link(..., on="position") sets it)
    for (const c of gridEl.querySelectorAll(".mw-linked")) c.classList.remove("mw-linked");
    if (selected && selected.position != null && dims()[dims().length - 1] === "position") {
      gridEl.querySelector(`.mw-col-label[data-col="${selected.col}"]`)?.classList.add("mw-linked");
      for (let r = 0; r < rows; r++) cells[r * cols + selected.col]?.classList.add("mw-linked");
    }
  }

  // ---------------------------------------------------------------- tooltip
  function showTooltip(cellEl: HTMLElement): void {
    const r = Number(cellEl.dataset.row);
    const c = Number(cellEl.dataset.col);
    const i = r * cols + c;
    setText(ttLabel, cellLabel(cellAt(r, c)));
    setText(ttValue, isHidden(model) ? "guess first" : values && isFilled(i) ? fmt(values[i], 4) : "not computed yet");
    tip.showBelow(cellEl, root);
  }

  function hideTooltip(): void {
    tip.hide();
  }

  // ---------------------------------------------------------------- side panel
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

  /** The `selected_cell` trait's value for a cell: its model indices ({} for none). */
  function cellTrait(cell: Cell | null): Record<string, number> {
    if (!cell) return {};
    const t: Record<string, number> = { layer: cell.layer };
    if (cell.head != null) t.head = cell.head;
    if (cell.position != null) t.position = cell.position;
    return t;
  }

  /** Grid row/col of a `selected_cell` value, or null when it names no cell of this grid. */
  function cellOfTrait(v: unknown): [number, number] | null {
    if (!v || typeof v !== "object") return null;
    const t = v as Record<string, unknown>;
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const cell = cellAt(r, c);
        if (
          cell.layer === t.layer &&
          (cell.head == null || cell.head === t.head) &&
          (cell.position == null || cell.position === t.position)
        )
          return [r, c];
      }
    return null;
  }

  /** Keep `selected_cell` (Python's view of the selection) equal to the cell shown. */
  function syncSelectedTrait(): void {
    const want = cellTrait(selected);
    if (JSON.stringify(model.get("selected_cell") ?? {}) === JSON.stringify(want)) return;
    model.set("selected_cell", want);
    model.save_changes();
  }

  async function selectCell(r: number, c: number): Promise<void> {
    if (r < 0 || c < 0 || r >= rows || c >= cols) return;
    const cell = cellAt(r, c);
    if (isHidden(model) && !isStatic()) {
      // predict, then reveal: this click is the guess; Python records it and reveals
      try {
        await request(model, "guess", cellTrait(cell));
      } catch (e) {
        localError = errorText(e);
        renderStatus();
      }
      return;
    }
    selected = cell;
    syncSelectedTrait();
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
      patchedNote = errorText(e);
    }
    renderPanel();
  }

  // ---------------------------------------------------------------- controls and status
  function renderControls(): void {
    const sites = strs(model.get("sites"));
    const site = str(model.get("site"));
    setOptions(siteSelect, sites);
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
    const text =
      status === "running" ? `running ${nf}/${nc}` : status === "waiting" ? "waiting for the model" : isStatic() ? "static" : status;
    pill.set(status, text);
    bar.show(status === "running");
    bar.set(p);
    root.classList.toggle("mw-busy", status === "running");
    errBox.set(str(model.get("error")), localError);
    renderControls();
  }

  async function sweep(): Promise<void> {
    localError = "";
    try {
      await request(model, "sweep", { site: siteSelect.value, mode: modeSelect.value });
    } catch (e) {
      localError = errorText(e);
      renderControls();
    }
    renderStatus();
  }

  // ---------------------------------------------------------------- events
  const cellOf = (t: EventTarget | null) => closest(t, ".mw-cell");
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
    const mv = gridKey(e.key, selected ? selected.row : 0, selected ? selected.col : 0, rows, cols, e.ctrlKey || e.metaKey);
    if (!mv) return;
    e.preventDefault();
    void selectCell(mv.row, mv.col);
    const el2 = cells[mv.row * cols + mv.col];
    if (mv.kind === "move" && el2) {
      el2.focus({ preventScroll: false });
      showTooltip(el2);
    }
  };
  const onChange = () => void sweep();
  const onCancel = () => void request(model, "cancel", {}).catch(() => undefined);

  const { dom, on, listen, recolour, dispose } = listeners(model);
  on(gridEl, { click: onClick, mouseover: onOver, mouseout: onOut, keydown: onKey });
  for (const select of [siteSelect, modeSelect]) dom(select, "change", onChange);
  dom(cancelBtn, "click", onCancel);
  recolour(root, colour);

  listen(["values", "filled", "dims", "layers", "heads", "positions", "clean_tokens", "corrupt_tokens"], () => {
    const before = layoutKey;
    build();
    if (layoutKey !== before) {
      selected = null;
      patched = null;
      const rc = cellOfTrait(model.get("selected_cell"));
      if (rc) void selectCell(rc[0], rc[1]);
    }
    renderPanel();
  });
  listen(["predict", "guesses"], () => {
    banner.render();
    colour();
    renderPanel();
  });
  listen(["selected_cell"], () => {
    // set from Python (or echoed back from our own set): select that cell, or clear
    const want = model.get("selected_cell");
    if (JSON.stringify(want ?? {}) === JSON.stringify(cellTrait(selected))) return;
    const rc = cellOfTrait(want);
    if (rc) void selectCell(rc[0], rc[1]);
    else {
      selected = null;
      patched = null;
      cellSeq++;
      renderSelection();
      renderPanel();
    }
  });
  listen(["status", "progress", "error", "n_filled", "n_cells", "static", "can_sweep"], renderStatus);
  listen(["site", "sites", "mode", "direction", "metric_name"], renderControls);
  listen(["clean_topk", "corrupt_topk", "clean_prompt", "corrupt_prompt"], renderPanel);

  // ---------------------------------------------------------------- first paint
  build();
  renderPanel();
  renderStatus();
  {
    const rc = cellOfTrait(model.get("selected_cell"));
    if (rc) void selectCell(rc[0], rc[1]);
  }

  return () => {
    cellSeq++;
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
