/**
 * FeatureDashboard view (docs: mi_widgets/widgets/feature_dashboard.py).
 *
 * Left: a searchable (index or explanation text), sortable (frequency, max activation, index)
 * feature list that refills whenever `frequency` / `max_act` change (the dataset pass pushes
 * them as batches finish). Right: the selected feature (`feature` trait): activation histogram,
 * logit effects, top and band-sampled examples coloured by the feature, and steer / ablate on a
 * prompt (request "steer"), with the before/after next-token distributions.
 * Automated interpretability: score badges (`scores`: per feature, each score next to its
 * random-explanation baseline) in the list and under the title; the Explain button sends
 * request "explain" for the selected feature (progress shown; errors as short replies).
 * Tokens are only ever written with textContent.
 */

import { css, fmt, paletteOf, textColour } from "./lib/colour";
import { addCodePanel } from "./lib/code_panel";
import { button, clear, closest, control, displayToken, escapeToken, fillToken, h, setOptions, setText, style } from "./lib/dom";
import { CSS } from "./lib/feature_dashboard.css";
import { listeners } from "./lib/listeners";
import type { Cleanup, RenderProps } from "./lib/model";
import { request } from "./lib/rpc";
import { errorBox, errorText, progressBar, statusPill } from "./lib/status";
import { textTooltip } from "./lib/tooltip";
import { str } from "./lib/values";
import { decode, isWire } from "./lib/wire";

/** Rows drawn in the list at once (the rest are reached by search). */
const MAX_ROWS = 300;

interface Example {
  text: number;
  position: number;
  activation: number;
  tokens: string[];
  center: number;
  start: number;
  len: number;
}
interface Band {
  lo: number;
  hi: number;
  fraction: number;
  examples: Example[];
}
interface Logit {
  token: string;
  id: number;
  value: number;
}
interface Badge {
  name: string;
  label: string;
  value: number;
  baseline: number | null;
}
interface TopTok {
  token: string;
  id: number;
  prob: number;
  other: number;
}

const num = (x: unknown, d = 0): number => {
  const n = typeof x === "number" ? x : Number(x);
  return Number.isFinite(n) ? n : d;
};
const arr = <T>(x: unknown): T[] => (Array.isArray(x) ? (x as T[]) : []);

function wireData(x: unknown): ArrayLike<number> | null {
  if (!isWire(x)) return null;
  try {
    return decode(x).data;
  } catch {
    return null;
  }
}

function render({ model, el }: RenderProps): Cleanup {
  const title = h("span", "mw-title");
  const pill = statusPill({ live: false });
  const bar = progressBar();
  const stopBtn = button("mw-stop", "stop", "stop the dataset pass (results so far stay)");
  const errBox = errorBox();
  const search = control("input", "mw-search", "search features", { type: "search", placeholder: "feature # or explanation" });
  const sortSel = control("select", "mw-sort", "sort features by");
  setOptions(sortSel, ["max_act", "frequency", "index"], ["max act", "frequency", "index"]);
  const listEl = h("div", "mw-feature-list");
  listEl.setAttribute("role", "listbox");
  const listNote = h("div", "mw-note");
  const pane = h("div", "mw-feature-main");
  const [tip, ttToken, ttValue] = textTooltip(["mw-tt-token", "mw-tt-value"], { role: false });
  // steer controls live outside `pane`'s redraws so that typing is never interrupted
  const promptIn = control("input", "mw-prompt", "prompt");
  const coefIn = control("input", "mw-coef", "steering coefficient", { type: "number", step: "any" });
  const steerBtn = button("mw-steer-btn", "steer", "add coef × the feature's decoder direction at its site (every position)");
  const ablateBtn = button("mw-ablate-btn", "ablate", "subtract the feature's contribution to the reconstruction (every position)");
  const steerNote = h("div", "mw-note mw-steer-note");
  const steerPanel = h("div", "mw-steer-panel");
  const steerBox = h("div", "mw-steer", [
    h("div", "mw-section", "Steer / ablate: next-token distribution"),
    h("div", "mw-steer-controls", [promptIn, h("label", null, ["coef ", coefIn]), steerBtn, ablateBtn]),
    steerNote,
    steerPanel,
  ]);
  // autointerp controls, also outside `pane`'s redraws
  const explainBtn = button(
    "mw-explain-btn",
    "explain",
    "write an explanation of the selected feature and score it (simulation, detection, fuzzing, intervention) against random explanations",
  );
  const aiText = h("div", "mw-ai-text");
  const aiBadges = h("div", "mw-ai-badges");
  const aiNote = h("div", "mw-ai-note");
  const aiBox = h("div", "mw-ai", [
    h("div", "mw-ai-head", [h("span", "mw-section", "Explanation & scores (vs random explanations)"), explainBtn]),
    aiText,
    aiBadges,
    aiNote,
  ]);
  const root = h("div", "mw-feature-dashboard", [
    style(CSS),
    h("div", "mw-header", [title, h("span", "mw-status-wrap", [bar.el, pill.el, stopBtn])]),
    errBox.el,
    h("div", "mw-body", [
      h("div", "mw-list-pane", [
        h("div", "mw-list-controls", [search, sortSel]),
        h("div", "mw-feature-row mw-list-head", [h("span", null, "feature"), h("span", "mw-num", "freq"), h("span", "mw-num", "max")]),
        listEl,
        listNote,
      ]),
      h("div", "mw-feature-pane", [aiBox, pane, steerBox]),
    ]),
    tip.el,
  ]);
  el.appendChild(root);
  const code = addCodePanel(model, root.querySelector(".mw-header") as HTMLElement, root);

  const isStatic = () => model.get("static") === true;
  let localError = "";
  let busy = false;
  let aiBusy = false;
  let exActs: ArrayLike<number> | null = null;

  // ------------------------------------------------------------------ header
  function renderHeader(): void {
    setText(
      title,
      `${str(model.get("model_name"))} · ${str(model.get("site"))} layer ${num(model.get("layer"))} · ${num(model.get("d_sae"))} features`,
    );
    const st = str(model.get("status")) || "ready";
    const done = num(model.get("n_texts_done"));
    const total = num(model.get("n_texts"));
    const running = st === "running";
    pill.set(
      st,
      running ? `running ${done}/${total} texts` : isStatic() ? `static · ${done}/${total} texts` : `${st} · ${done}/${total} texts · ${num(model.get("n_tokens"))} tokens`,
    );
    bar.show(running);
    bar.set(num(model.get("progress")));
    stopBtn.hidden = !running || isStatic();
    const msgs = [localError, str(model.get("error"))].filter(Boolean);
    errBox.set(...msgs);
  }

  // ------------------------------------------------------------------ list
  function renderList(): void {
    const freq = wireData(model.get("frequency"));
    const maxa = wireData(model.get("max_act"));
    const n = num(model.get("d_sae"));
    const expl = (model.get("explanations") as Record<string, unknown> | null) ?? {};
    const scores = (model.get("scores") as Record<string, unknown> | null) ?? {};
    const q = search.value.trim().toLowerCase();
    const sel = num(model.get("selected"), -1);
    let ids = Array.from({ length: n }, (_, i) => i);
    if (q) {
      const asNum = /^#?\d+$/.test(q) ? Number(q.replace("#", "")) : -1;
      ids = ids.filter((i) => i === asNum || (asNum < 0 && str(expl[String(i)]).toLowerCase().includes(q)));
    }
    const key = sortSel.value;
    if (key !== "index") {
      const v = key === "frequency" ? freq : maxa;
      if (v) ids.sort((a, b) => v[b] - v[a] || a - b);
    }
    clear(listEl);
    const frag = document.createDocumentFragment();
    for (const i of ids.slice(0, MAX_ROWS)) {
      const e = str(expl[String(i)]);
      const first = badgesOf(scores[String(i)])[0];
      const nameCell = h("span", "mw-fcell", [h("span", "mw-fname", e ? `#${i} ${e}` : `#${i}`)]);
      if (first) nameCell.appendChild(badgeEl(first, "mw-score-badge"));
      const row = h("button", "mw-feature-row", [
        nameCell,
        h("span", "mw-num", freq ? fmt(freq[i], 3) : "–"),
        h("span", "mw-num", maxa ? fmt(maxa[i], 3) : "–"),
      ]);
      row.type = "button";
      row.dataset.feature = String(i);
      row.setAttribute("role", "option");
      row.setAttribute("aria-selected", String(i === sel));
      if (i === sel) row.classList.add("mw-selected");
      frag.appendChild(row);
    }
    listEl.appendChild(frag);
    setText(
      listNote,
      ids.length === 0 ? "no feature matches" : ids.length > MAX_ROWS ? `${ids.length - MAX_ROWS} more: refine the search` : "",
    );
  }

  // ------------------------------------------------------------------ feature
  function exampleRow(ex: Example, maxAct: number): HTMLElement {
    const row = h("div", "mw-example");
    row.dataset.text = String(ex.text);
    row.dataset.position = String(ex.position);
    row.appendChild(h("span", "mw-ex-meta", `${fmt(num(ex.activation), 4)} · #${ex.text}:${ex.position}`));
    arr<string>(ex.tokens).forEach((tok, j) => {
      const v = exActs && ex.start + j < exActs.length ? exActs[ex.start + j] : NaN;
      const span = fillToken(h("span", "mw-token"), str(tok));
      const rgb = paletteOf(model.get("palette")).divergingRGB(v, maxAct);
      span.style.backgroundColor = css(rgb);
      span.style.color = textColour(rgb);
      span.dataset.act = String(v);
      if (j === ex.center) span.classList.add("mw-center");
      row.appendChild(span);
    });
    return row;
  }

  function logitList(rows: Logit[], sign: string): HTMLElement {
    const list = h("div", "mw-logits-list", [h("div", "mw-note", sign === "pos" ? "promotes" : "suppresses")]);
    list.dataset.sign = sign;
    for (const r of rows) list.appendChild(h("div", "mw-logit-row", [h("span", "mw-tok", displayToken(str(r.token))), h("span", "mw-val", fmt(num(r.value), 3))]));
    return list;
  }

  function renderFeature(): void {
    clear(pane);
    const f = (model.get("feature") as Record<string, unknown> | null) ?? {};
    const sel = num(model.get("selected"), -1);
    if (!("index" in f) || num(f.index, -2) !== sel) {
      pane.appendChild(
        h("div", "mw-note", sel < 0 ? "Select a feature." : isStatic() ? `Feature ${sel} is not in this static export (it carries the first feature only).` : "loading…"),
      );
      return;
    }
    exActs = wireData(f.acts);
    const maxAct = num(f.max_act);
    const expl = str(f.explanation);
    pane.appendChild(h("div", "mw-feature-title", `Feature ${sel}${expl ? ` · ${expl}` : ""}`));
    pane.appendChild(
      h("div", "mw-stats", `frequency ${fmt(num(f.frequency), 3)} (${num(f.n_fire)} tokens) · max ${fmt(maxAct, 4)} · mean when firing ${fmt(num(f.mean_act), 4)}`),
    );
    // histogram, trimmed after the last non-empty bin
    const counts = wireData(f.hist);
    const range = arr<number>(f.hist_range);
    const histBox = h("div", null, [h("div", "mw-section", "Activation histogram (non-zero)")]);
    if (counts && counts.length && range.length === 2) {
      let last = 0;
      let top = 0;
      for (let i = 0; i < counts.length; i++) if (counts[i] > 0) { last = i; top = Math.max(top, counts[i]); }
      const nb = Math.max(last + 1, Math.min(8, counts.length));
      const width = (num(range[1]) - num(range[0])) / counts.length;
      const hist = h("div", "mw-hist");
      for (let i = 0; i < nb; i++) {
        const bar = h("span", "mw-hist-bar");
        bar.style.height = `${top ? (counts[i] / top) * 100 : 0}%`;
        bar.title = `${fmt(i * width, 3)}–${fmt((i + 1) * width, 3)}: ${counts[i]} tokens`;
        hist.appendChild(bar);
      }
      histBox.append(hist, h("div", "mw-hist-axis", [h("span", null, "0"), h("span", null, fmt(nb * width, 3))]));
    } else histBox.appendChild(h("div", "mw-note", "never fired"));
    const logits = h("div", "mw-logits", [logitList(arr<Logit>(f.logits_pos), "pos"), logitList(arr<Logit>(f.logits_neg), "neg")]);
    pane.appendChild(h("div", "mw-row2", [histBox, h("div", null, [h("div", "mw-section", "Logit effects (W_dec · W_U)"), logits])]));
    // examples
    const topBox = h("div", "mw-examples");
    topBox.dataset.group = "top";
    topBox.appendChild(h("div", "mw-section", "Top activations"));
    for (const ex of arr<Example>(f.top)) topBox.appendChild(exampleRow(ex, maxAct));
    if (!arr(f.top).length) topBox.appendChild(h("div", "mw-note", "no examples yet"));
    pane.appendChild(topBox);
    arr<Band>(f.bands).forEach((b, i) => {
      const box = h("div", "mw-examples mw-band");
      box.dataset.group = "band";
      box.dataset.band = String(i);
      box.appendChild(h("div", "mw-band-title", `Interval ${fmt(num(b.lo), 3)}–${fmt(num(b.hi), 3)} · ≈${fmt(100 * num(b.fraction), 3)}% of firings`));
      for (const ex of arr<Example>(b.examples)) box.appendChild(exampleRow(ex, maxAct));
      pane.appendChild(box);
    });
  }

  // ------------------------------------------------------------------ autointerp
  function badgesOf(x: unknown): Badge[] {
    if (x == null || typeof x !== "object") return [];
    return arr<Badge>((x as Record<string, unknown>).badges).filter((b) => b && typeof b === "object");
  }

  /** A score badge: "label value", the random baseline in the title; coloured by whether the
   * explanation beats the baseline. */
  function badgeEl(b: Badge, cls: string): HTMLElement {
    const v = num(b.value, NaN);
    const base = b.baseline == null ? NaN : num(b.baseline, NaN);
    const el = h("span", cls, `${str(b.label)} ${fmt(v, 2)}`);
    el.dataset.name = str(b.name);
    el.dataset.value = String(v);
    if (Number.isFinite(base)) {
      el.dataset.baseline = String(base);
      el.classList.add(v > base ? "mw-beats" : "mw-fails");
    }
    el.title = `${str(b.name)} ${fmt(v, 3)}${Number.isFinite(base) ? ` · random explanations ${fmt(base, 3)}` : ""}`;
    return el;
  }

  function renderAI(): void {
    const sel = num(model.get("selected"), -1);
    const stat = isStatic();
    explainBtn.disabled = model.get("can_explain") !== true || stat || sel < 0 || aiBusy;
    explainBtn.hidden = stat;
    const expl = (model.get("explanations") as Record<string, unknown> | null) ?? {};
    const scores = (model.get("scores") as Record<string, unknown> | null) ?? {};
    const e = sel >= 0 ? str(expl[String(sel)]) : "";
    setText(aiText, e ? e : sel >= 0 ? "no explanation yet" : "");
    aiText.classList.toggle("mw-empty-expl", !e);
    clear(aiBadges);
    for (const b of badgesOf(scores[String(sel)])) {
      const wrap = h("span", "mw-badge-wrap", [badgeEl(b, "mw-badge")]);
      if (b.baseline != null && Number.isFinite(num(b.baseline, NaN))) wrap.appendChild(h("span", "mw-badge-base", `random ${fmt(num(b.baseline), 2)}`));
      aiBadges.appendChild(wrap);
    }
    if (!aiBusy) setText(aiNote, "");
  }

  /** Run `work` between `set(true)` and `set(false)`; its failure goes to the error box. */
  async function busyWhile(set: (on: boolean) => void, work: () => Promise<void>): Promise<void> {
    localError = "";
    set(true);
    try {
      await work();
    } catch (e) {
      localError = errorText(e);
    } finally {
      set(false);
    }
  }

  const setAiBusy = (on: boolean) => {
    aiBusy = on;
    if (on) setText(aiNote, "explaining…");
    renderAI();
    renderHeader();
  };

  async function runExplain(): Promise<void> {
    const feature = num(model.get("selected"), -1);
    if (feature < 0) return;
    await busyWhile(setAiBusy, async () => {
      const { response } = await request<Record<string, unknown>>(model, "explain", { feature }, {
        timeoutMs: 30 * 60_000,
        onProgress: (done, total) => setText(aiNote, `explaining… ${done}/${total}`),
      });
      // the kernel sets the traits too; apply the reply at once so the view never lags it
      const expl = { ...((model.get("explanations") as Record<string, unknown> | null) ?? {}) };
      expl[String(feature)] = str(response.explanation);
      model.set("explanations", expl);
      if (response.scores && typeof response.scores === "object" && "badges" in (response.scores as object)) {
        const sc = { ...((model.get("scores") as Record<string, unknown> | null) ?? {}) };
        sc[String(feature)] = response.scores;
        model.set("scores", sc);
      }
    });
  }

  // ------------------------------------------------------------------ steering
  function topList(rows: TopTok[], run: string): HTMLElement {
    const list = h("div", "mw-topk-list", [h("div", "mw-note", run)]);
    list.dataset.run = run;
    for (const r of rows) {
      const d = num(r.prob) - num(r.other);
      const delta = h("span", d > 0 ? "mw-up" : "mw-down", run === "after" ? ` (${d >= 0 ? "+" : ""}${fmt(d, 2)})` : "");
      list.appendChild(h("div", "mw-topk-row", [h("span", "mw-tok", displayToken(str(r.token))), h("span", "mw-prob", [fmt(num(r.prob), 3), delta])]));
    }
    return list;
  }

  function renderSteer(): void {
    const stat = isStatic();
    const can = model.get("can_steer") === true && !stat && num(model.get("selected"), -1) >= 0;
    steerBtn.disabled = ablateBtn.disabled = promptIn.disabled = coefIn.disabled = !can || busy;
    if (document.activeElement !== promptIn) promptIn.value = str(model.get("prompt"));
    if (document.activeElement !== coefIn) coefIn.value = String(num(model.get("coef")));
    clear(steerPanel);
    const r = (model.get("steer_result") as Record<string, unknown> | null) ?? {};
    if (busy) setText(steerNote, "running…");
    else if (stat) setText(steerNote, "Static export: steering needs the Python kernel.");
    else if ("after" in r)
      setText(steerNote, `${str(r.mode)} feature ${num(r.feature)}${r.mode === "steer" ? ` × ${fmt(num(r.coef), 4)}` : ""} on ${escapeToken(str(r.prompt))} · KL ${fmt(num(r.kl), 3)}`);
    else setText(steerNote, "");
    if ("after" in r && !busy) steerPanel.append(topList(arr<TopTok>(r.before), "before"), topList(arr<TopTok>(r.after), "after"));
  }

  async function runSteer(mode: string): Promise<void> {
    const feature = num(model.get("selected"), -1);
    const coef = Number(coefIn.value);
    const setBusy = (on: boolean) => {
      busy = on;
      renderSteer();
      if (!on) renderHeader();
    };
    await busyWhile(setBusy, async () => {
      const { response } = await request<Record<string, unknown>>(model, "steer", { feature, mode, prompt: promptIn.value, coef: Number.isFinite(coef) ? coef : 0 });
      if (model.get("steer_result") !== response) model.set("steer_result", response);
    });
  }

  // ------------------------------------------------------------------ events
  const onList = (ev: Event) => {
    const row = closest(ev.target, ".mw-feature-row[data-feature]");
    if (!row) return;
    // static copies say "not in this export" for features other than the one they carry
    model.set("selected", Number(row.dataset.feature));
    model.save_changes();
  };
  const onOver = (ev: Event) => {
    const span = closest(ev.target, ".mw-example .mw-token");
    if (!span) return tip.hide();
    const row = span.parentElement as HTMLElement;
    const idx = Array.from(row.querySelectorAll(".mw-token")).indexOf(span);
    setText(ttToken, escapeToken(span.textContent ?? ""));
    setText(ttValue, `activation ${fmt(Number(span.dataset.act), 4)} · text ${row.dataset.text}, token ${idx}`);
    tip.showBelow(span, root);
  };
  const onOut = () => tip.hide();
  const onSteer = () => void runSteer("steer");
  const onAblate = () => void runSteer("ablate");
  const onStop = () => void request(model, "stop", {}).catch(() => undefined);
  const onExplain = () => void runExplain();
  const onPrompt = () => {
    model.set("prompt", promptIn.value);
    model.save_changes();
  };
  const onCoef = () => {
    const c = Number(coefIn.value);
    if (Number.isFinite(c)) {
      model.set("coef", c);
      model.save_changes();
    }
  };
  const { dom, on, listen, recolour, dispose } = listeners(model);
  for (const [target, onClick] of [[listEl, onList], [steerBtn, onSteer], [ablateBtn, onAblate], [stopBtn, onStop], [explainBtn, onExplain]] as const) dom(target, "click", onClick);
  on(pane, { mouseover: onOver, mouseleave: onOut });
  dom(search, "input", renderList);
  dom(sortSel, "change", renderList);
  dom(promptIn, "change", onPrompt);
  dom(coefIn, "change", onCoef);
  recolour(root, renderFeature);

  listen(["status", "progress", "n_texts_done", "error", "n_tokens"], renderHeader);
  listen(["frequency", "max_act", "explanations", "scores", "selected", "d_sae"], renderList);
  listen(["explanations", "scores", "selected", "can_explain"], renderAI);
  listen(["feature", "selected"], renderFeature);
  listen(["steer_result", "prompt", "coef", "selected", "can_steer"], renderSteer);
  renderHeader();
  renderList();
  renderFeature();
  renderSteer();
  renderAI();

  return () => {
    code.dispose();
    dispose();
    el.removeChild(root);
  };
}

export default { render };
