/**
 * LogitLens view (docs/widget_protocol.md, "LogitLens").
 *
 * A DOM grid of layers × positions: each cell shows the lens's top-1 token at that row and
 * position (literal, via textContent), shaded by its probability. Hover: the cell's top-k with
 * probabilities. Click a cell or a token: the target token's probability across layers at that
 * position, as a line and a table (target: the user's, else the model's final top-1 there).
 * The lens selector switches logit / tuned lens (request "lens"; static copies: `lens_cache`);
 * the target box asks Python for a new target (request "target").
 */

import { css, fmt, legend, paletteOf, textColour } from "./lib/colour";
import { button, clear, closest, control, escapeToken, gridCell, h, setOptions, setText, svg } from "./lib/dom";
import { frame } from "./lib/frame";
import { listeners } from "./lib/listeners";
import { CSS } from "./lib/logit_lens.css";
import type { Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { errorBox, errorText, statusPill } from "./lib/status";
import { textTooltip } from "./lib/tooltip";
import { showTok, str, strs } from "./lib/values";
import { decodeTrait } from "./lib/wire";

const STATIC_TITLE = "Static HTML export: there is no Python kernel, so new lenses and targets cannot be computed here.";
const PAYLOAD = ["top_ids", "top_probs", "kl", "final_prob", "vocab", "target_prob"];

function render({ model, el }: RenderProps): Cleanup {
  // ---------------------------------------------------------------- skeleton
  const title = h("span", "mw-title");
  const lensSelect = control("select", "mw-lens", "lens");
  const targetInput = control("input", "mw-target", "target token", { type: "text", placeholder: "final top-1", spellcheck: false });
  const targetBtn = button("mw-target-set", "track");
  const pal = () => paletteOf(model.get("palette"));
  const colourLegend = legend("sequential", pal);
  const pill = statusPill({ role: false, live: false });
  const header = h("div", "mw-header", [
    title,
    h("label", "mw-control", ["lens ", lensSelect]),
    h("label", "mw-control", ["target ", targetInput, targetBtn]),
    colourLegend.el,
    pill.el,
  ]);
  const errBox = errorBox();
  const gridEl = h("div", "mw-grid");
  gridEl.setAttribute("role", "grid");
  const panelTitle = h("div", "mw-target-title");
  const lineWrap = h("div", "mw-line-wrap");
  const table = h("div", "mw-line-table");
  const panel = h("div", "mw-target-panel", [panelTitle, lineWrap, table]);
  const [tip, ttLabel, ttRows] = textTooltip(["mw-tt-label", "mw-tt-rows"]);
  const body = h("div", "mw-body", [h("div", "mw-grid-wrap", [gridEl]), panel]);
  const { root, code } = frame(model, el, "mw-logit-lens", CSS, header, [header, errBox.el, body, tip.el]);

  // ---------------------------------------------------------------- state
  let R = 0;
  let T = 0;
  let K = 0;
  let ids: Int32Array | Float32Array = new Int32Array(0);
  let probs: Float32Array | Int32Array = new Float32Array(0);
  let kl: Float32Array | Int32Array | null = null;
  let finalProb: Float32Array | Int32Array | null = null;
  let targetProb: Float32Array | Int32Array | null = null;
  let cells: HTMLElement[] = [];
  let colLabels: HTMLElement[] = [];
  let layoutKey = "";
  let localError = "";
  let busy = false;

  const isStatic = () => model.get("static") === true;
  const tokens = () => strs(model.get("tokens"));
  const names = () => strs(model.get("layer_names"));
  const vocab = () => (model.get("vocab") ?? {}) as Record<string, string>;
  const tokOf = (id: number): string => {
    const v = vocab()[String(id)];
    return v == null ? `#${id}` : v;
  };
  const selected = () => {
    const p = Number(model.get("selected_position"));
    return Number.isInteger(p) && p >= 0 && p < T ? p : -1;
  };

  const dec = (name: string) => decodeTrait(model.get(name), name, (msg) => (localError = msg));

  // ---------------------------------------------------------------- grid
  function build(): void {
    const ti = dec("top_ids");
    const tp = dec("top_probs");
    const shape = ti ? ti.shape : [0, 0, 0];
    R = shape[0] ?? 0;
    T = shape[1] ?? 0;
    K = shape[2] ?? 0;
    ids = ti ? ti.data : new Int32Array(0);
    probs = tp && tp.data.length === ids.length ? tp.data : new Float32Array(ids.length);
    const k = dec("kl");
    kl = k && k.data.length === R * T ? k.data : null;
    const f = dec("final_prob");
    finalProb = f && f.data.length === R * T ? f.data : null;
    const t = dec("target_prob");
    targetProb = t && t.data.length === R * T ? t.data : null;
    const key = JSON.stringify([R, T, names(), tokens()]);
    if (key !== layoutKey) {
      layoutKey = key;
      hideTooltip();
      clear(gridEl);
      cells = [];
      colLabels = [];
      gridEl.style.gridTemplateColumns = `auto repeat(${T}, minmax(36px, auto)) auto`;
      const frag = document.createDocumentFragment();
      frag.appendChild(h("div", "mw-corner", "layer"));
      const toks = tokens();
      for (let p = 0; p < T; p++) {
        const lab = h("div", "mw-col-label", showTok(str(toks[p])));
        lab.dataset.pos = String(p);
        lab.title = `position ${p} ${escapeToken(str(toks[p]))}`;
        colLabels.push(lab);
        frag.appendChild(lab);
      }
      frag.appendChild(h("div", "mw-kl-head", "KL"));
      const rowNames = names();
      for (let r = 0; r < R; r++) {
        const lab = h("div", "mw-row-label", str(rowNames[r], `row ${r}`));
        lab.dataset.row = String(r);
        frag.appendChild(lab);
        for (let p = 0; p < T; p++) {
          const cell = gridCell({ row: r, pos: p }, r === 0 && p === 0);
          cells.push(cell);
          frag.appendChild(cell);
        }
        const klEl = h("div", "mw-kl");
        klEl.dataset.row = String(r);
        frag.appendChild(klEl);
      }
      gridEl.appendChild(frag);
    }
    paint();
  }

  function paint(): void {
    colourLegend.update(1);
    const pl = pal();
    for (let r = 0; r < R; r++) {
      for (let p = 0; p < T; p++) {
        const i = r * T + p;
        const cell = cells[i];
        if (!cell) continue;
        const prob = K ? probs[i * K] : NaN;
        setText(cell, K ? showTok(tokOf(ids[i * K])) : "");
        const rgb = pl.sequentialRGB(prob, 1);
        cell.style.background = css(rgb);
        cell.style.color = textColour(rgb);
      }
      const klEl = gridEl.querySelector<HTMLElement>(`.mw-kl[data-row="${r}"]`);
      if (klEl) {
        let s = 0;
        if (kl) for (let p = 0; p < T; p++) s += kl[r * T + p];
        setText(klEl, kl && T ? fmt(s / T, 3) : "");
        klEl.title = "mean KL(final ‖ this row) over positions, nats";
      }
    }
    renderSelection();
  }

  function renderSelection(): void {
    const p = selected();
    for (const c of gridEl.querySelectorAll(".mw-selected")) c.classList.remove("mw-selected", "mw-linked");
    if (p >= 0) {
      // mw-linked: the column of the selected position (also when mw.link set it from another view)
      colLabels[p]?.classList.add("mw-selected", "mw-linked");
      for (let r = 0; r < R; r++) cells[r * T + p]?.classList.add("mw-selected", "mw-linked");
    }
  }

  // ---------------------------------------------------------------- tooltip
  function showTooltip(cellEl: HTMLElement): void {
    const r = Number(cellEl.dataset.row);
    const p = Number(cellEl.dataset.pos);
    const i = r * T + p;
    setText(ttLabel, `${str(names()[r])}, position ${p} ${escapeToken(str(tokens()[p]))}`);
    clear(ttRows);
    for (let j = 0; j < K; j++) {
      const row = h("div", "mw-tt-row", [h("span", "mw-tok", showTok(tokOf(ids[i * K + j]))), h("span", "mw-prob", fmt(probs[i * K + j], 3))]);
      ttRows.appendChild(row);
    }
    tip.showBelow(cellEl, root);
  }

  function hideTooltip(): void {
    tip.hide();
  }

  // ---------------------------------------------------------------- target line
  function renderPanel(): void {
    clear(lineWrap);
    clear(table);
    const p = selected();
    const tid = Number(model.get("target_id"));
    const hasTarget = Number.isInteger(tid) && tid >= 0 && targetProb != null;
    if (p < 0) {
      setText(panelTitle, "click a token or a cell for the target's probability across layers");
      return;
    }
    const tok = hasTarget ? str(model.get("target")) : str(strs(model.get("final_tokens"))[p]);
    clear(panelTitle);
    panelTitle.append(
      `position ${p} ${escapeToken(str(tokens()[p]))} → p(`,
      h("span", "mw-tok mw-target-token", showTok(tok)),
      `)${hasTarget ? "" : " · the model's top-1"}`,
    );
    const src = hasTarget ? targetProb : finalProb;
    if (!src) {
      table.appendChild(h("div", "mw-note", "no probabilities for this target"));
      return;
    }
    const vals: number[] = [];
    for (let r = 0; r < R; r++) vals.push(src[r * T + p]);
    // line: x = row, y = probability in [0, 1]
    const W = 320;
    const H = 140;
    const L = 30;
    const B = 18;
    const x = (r: number) => L + (R > 1 ? (r / (R - 1)) * (W - L - 8) : (W - L) / 2);
    const y = (v: number) => 6 + (1 - Math.min(1, Math.max(0, v))) * (H - B - 6);
    const s = svg("svg", { class: "mw-line", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "target probability by layer" });
    s.appendChild(svg("path", { class: "mw-axis", d: `M${L},6V${H - B}H${W - 4}` }));
    for (const v of [0, 0.5, 1]) {
      const t = svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
      t.textContent = String(v);
      s.appendChild(t);
    }
    s.appendChild(svg("path", { class: "mw-path", d: vals.map((v, r) => `${r ? "L" : "M"}${x(r).toFixed(1)},${y(v).toFixed(1)}`).join("") }));
    const rowNames = names();
    vals.forEach((v, r) => {
      const c = svg("circle", { class: "mw-point", cx: x(r).toFixed(1), cy: y(v).toFixed(1), r: 3 });
      c.dataset.row = String(r);
      const t = svg("title", {});
      t.textContent = `${str(rowNames[r])}: ${fmt(v, 4)}`;
      c.appendChild(t);
      s.appendChild(c);
    });
    const first = svg("text", { x: x(0), y: H - 4, "text-anchor": "start" });
    first.textContent = str(rowNames[0]);
    const last = svg("text", { x: x(R - 1), y: H - 4, "text-anchor": "end" });
    last.textContent = str(rowNames[R - 1]);
    s.append(first, last);
    lineWrap.appendChild(s);
    vals.forEach((v, r) => {
      const row = h("div", "mw-line-row", [h("span", "mw-layer", str(rowNames[r])), h("span", "mw-prob", fmt(v, 4))]);
      row.dataset.row = String(r);
      table.appendChild(row);
    });
  }

  function select(p: number): void {
    if (p < 0 || p >= T) return;
    model.set("selected_position", p);
    model.save_changes();
    renderSelection();
    renderPanel();
  }

  // ---------------------------------------------------------------- controls and status
  function renderControls(): void {
    const lenses = strs(model.get("lenses"));
    setOptions(lensSelect, lenses);
    const lens = str(model.get("lens"), "logit");
    lensSelect.value = lens;
    const noKernel = isStatic() || model.get("can_compute") === false;
    lensSelect.disabled = busy || lenses.length < 2 || (noKernel && !staticLenses().includes(lens === "logit" ? "tuned" : "logit"));
    targetInput.disabled = targetBtn.disabled = busy || noKernel;
    targetInput.title = targetBtn.title = isStatic() ? STATIC_TITLE : noKernel ? "no model attached" : "";
    setText(title, `${str(model.get("model_name"))} · ${lens} lens`);
  }

  function staticLenses(): string[] {
    const cache = model.get("lens_cache");
    return cache && typeof cache === "object" ? Object.keys(cache as object) : [];
  }

  function renderStatus(): void {
    const status = busy ? "loading" : str(model.get("status"), "ready");
    pill.set(status, isStatic() ? "static" : status);
    root.classList.toggle("mw-busy", status === "loading");
    errBox.set(str(model.get("error")), localError);
    renderControls();
  }

  async function call(name: string, msg: Record<string, unknown>): Promise<void> {
    localError = "";
    busy = true;
    renderStatus();
    try {
      await request(model, name, msg, { timeoutMs: 120_000 });
    } catch (e) {
      localError = errorText(e);
    }
    busy = false;
    renderStatus();
  }

  function switchLens(lens: string): void {
    if (isStatic() || model.get("can_compute") === false) {
      const cache = model.get("lens_cache") as Record<string, Record<string, unknown>> | undefined;
      const hit = cache && cache[lens];
      if (!hit) {
        localError = `the ${lens} lens is not in this static copy`;
        renderStatus();
        return;
      }
      for (const n of PAYLOAD) model.set(n, hit[n] ?? {});
      model.set("lens", lens);
      return;
    }
    void call("lens", { lens });
  }

  // ---------------------------------------------------------------- events
  const cellOf = (t: EventTarget | null) => closest(t, ".mw-cell, .mw-col-label");
  const onClick = (e: MouseEvent) => {
    const c = cellOf(e.target);
    if (c && gridEl.contains(c)) select(Number(c.dataset.pos));
  };
  const onOver = (e: MouseEvent) => {
    const c = cellOf(e.target);
    if (c && c.classList.contains("mw-cell")) showTooltip(c);
  };
  const onOut = (e: MouseEvent) => {
    if (!cellOf(e.relatedTarget)) hideTooltip();
  };
  const onKey = (e: KeyboardEvent) => {
    const c = cellOf(e.target);
    if (!c || !c.classList.contains("mw-cell")) return;
    const r0 = Number(c.dataset.row);
    const p0 = Number(c.dataset.pos);
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const mv = moves[e.key];
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      select(p0);
    } else if (mv) {
      e.preventDefault();
      const r = Math.min(R - 1, Math.max(0, r0 + mv[0]));
      const p = Math.min(T - 1, Math.max(0, p0 + mv[1]));
      const next = cells[r * T + p];
      if (next) {
        c.tabIndex = -1;
        next.tabIndex = 0;
        next.focus();
        showTooltip(next);
      }
    }
  };
  const onLens = () => switchLens(lensSelect.value);
  const onTarget = () => void call("target", { token: targetInput.value });
  const onTargetKey = (e: KeyboardEvent) => {
    if (e.key === "Enter") {
      e.preventDefault();
      onTarget();
    }
  };

  const { dom, on, listen, recolour, dispose } = listeners(model);
  on(gridEl, { click: onClick, mouseover: onOver, mouseout: onOut, keydown: onKey });
  dom(lensSelect, "change", onLens);
  dom(targetBtn, "click", onTarget);
  dom(targetInput, "keydown", onTargetKey);
  recolour(root, paint);

  listen(["top_ids", "top_probs", "kl", "final_prob", "target_prob", "vocab", "tokens", "layer_names"], () => {
    build();
    renderPanel();
  });
  listen(["target"], () => {
    targetInput.value = str(model.get("target"));
  });
  listen(["selected_position", "target", "target_id", "final_tokens"], () => {
    renderSelection();
    renderPanel();
    renderControls();
  });
  listen(["status", "error", "static", "can_compute", "lens", "lenses", "model_name"], renderStatus);

  // ---------------------------------------------------------------- first paint
  targetInput.value = str(model.get("target"));
  build();
  renderPanel();
  renderStatus();

  return () => {
    code.dispose();
    dispose();
    root.remove();
  };
}

export default { render };
