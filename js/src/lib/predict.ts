/**
 * Predict, then reveal (mi_widgets/widgets/predict.py): while the view's `predict` question has
 * no guess in `guesses`, the view hides its result and a click records a guess (the "guess"
 * request); then the banner shows the guess next to the answer. Text only (textContent).
 */

import { fmt } from "./colour";
import { h, setText, style } from "./dom";
import type { AnyModel } from "./model";

export interface Guess {
  question: string;
  label: string;
  value: number;
  answer_label: string;
  answer_value: number;
  correct: boolean;
  layer?: number;
  head?: number;
  position?: number;
  site?: string;
}

export function guesses(model: AnyModel): Guess[] {
  const raw = model.get("guesses");
  return Array.isArray(raw) ? (raw.filter((g) => g && typeof g === "object") as Guess[]) : [];
}

/** The guess for the current question, or null. */
export function currentGuess(model: AnyModel): Guess | null {
  const q = model.get("predict");
  if (typeof q !== "string" || q === "") return null;
  const mine = guesses(model).filter((g) => g.question === q);
  return mine.length ? mine[mine.length - 1] : null;
}

/** Whether the result is hidden: a question without a guess yet. */
export function isHidden(model: AnyModel): boolean {
  const q = model.get("predict");
  return typeof q === "string" && q !== "" && currentGuess(model) === null;
}

export const PREDICT_CSS = (root: string) =>
  `${root} .mw-predict{margin:4px 0 6px;padding:4px 8px;border-left:3px solid var(--mw-accent);background:var(--mw-bg2);font-size:12px;overflow-wrap:anywhere}\n` +
  `${root} .mw-predict .mw-q{font-weight:600}\n` +
  `${root} .mw-predict[data-correct=true] .mw-verdict{color:var(--mw-accent)}\n`;

/** The banner: the question and what to do, then the guess and the answer. */
export function predictBanner(model: AnyModel, what: string): { el: HTMLElement; render(): void } {
  const q = h("span", "mw-q");
  const body = h("span", "mw-predict-body");
  const verdict = h("span", "mw-verdict");
  const el = h("div", "mw-predict", [q, " ", body, " ", verdict]);
  el.setAttribute("aria-live", "polite");
  function render(): void {
    const question = model.get("predict");
    el.hidden = typeof question !== "string" || question === "";
    if (el.hidden) return;
    setText(q, question);
    const g = currentGuess(model);
    el.dataset.state = g ? "revealed" : "hidden";
    if (!g) {
      setText(body, `Click ${what} to record your guess; the result appears after.`);
      setText(verdict, "");
      delete el.dataset.correct;
      return;
    }
    el.dataset.correct = String(g.correct === true);
    setText(body, `Your guess: ${g.label} (${fmt(Number(g.value))}). Largest: ${g.answer_label} (${fmt(Number(g.answer_value))}).`);
    setText(verdict, g.correct ? "✓ right" : "✗ not quite");
  }
  render();
  return { el, render };
}

/** Predict, then reveal in a view: the banner just after `after`, its CSS scoped to `root`
 * (whose first class names the view). */
export function addPredictBanner(model: AnyModel, root: HTMLElement, after: HTMLElement, what: string): { el: HTMLElement; render(): void } {
  const banner = predictBanner(model, what);
  after.after(banner.el);
  root.appendChild(style(PREDICT_CSS(`.${root.classList[0]}`)));
  return banner;
}
