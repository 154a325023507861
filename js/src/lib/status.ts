/**
 * The status pill, progress bar and error box that every view's header shows. Text goes in
 * through textContent only (messages from Python may contain anything).
 */

import { followHostTheme } from "./colour";
import { h, setText } from "./dom";

export interface StatusPill {
  /** `span.mw-status`; `data-status` carries the state for CSS and tests. */
  readonly el: HTMLSpanElement;
  set(state: string, text: string): void;
}

/**
 * `role`: role=status; `live`: aria-live=polite. Both default to true. Every view has one pill,
 * so it is also where a view starts following the page's light/dark theme (colour.ts).
 */
export function statusPill({ role = true, live = true }: { role?: boolean; live?: boolean } = {}): StatusPill {
  const el = h("span", "mw-status");
  if (role) el.setAttribute("role", "status");
  if (live) el.setAttribute("aria-live", "polite");
  followHostTheme(el);
  return {
    el,
    set(state, text) {
      el.dataset.status = state;
      setText(el, text);
    },
  };
}

export interface ProgressBar {
  /** `span.mw-progress > span`, the inner span's width is the fraction done. */
  readonly el: HTMLSpanElement;
  show(on: boolean): void;
  /** Fraction done in [0, 1] (clamped; not finite counts as 0). */
  set(fraction: number): void;
}

export function progressBar(): ProgressBar {
  const fill = h("span");
  const el = h("span", "mw-progress", [fill]);
  return {
    el,
    show(on) {
      el.hidden = !on;
    },
    set(fraction) {
      const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
      fill.style.width = `${Math.round(100 * f)}%`;
    },
  };
}

export interface ErrorBox {
  /** `div.mw-error` (role=alert), hidden while there is no message. */
  readonly el: HTMLDivElement;
  /** Show the non-empty messages, one per line. */
  set(...messages: string[]): void;
}

export function errorBox(): ErrorBox {
  const el = h("div", "mw-error");
  el.setAttribute("role", "alert");
  return {
    el,
    set(...messages) {
      const text = messages.filter(Boolean).join("\n");
      setText(el, text);
      el.hidden = !text;
    },
  };
}

/** An error's message, for the error box. */
export const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
