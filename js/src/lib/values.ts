/**
 * Reading model traits defensively (a trait may be missing, null or of another type while
 * Python fills it in), and showing tokens as labels.
 */

import { displayToken } from "./dom";

export const strs = (x: unknown): string[] => (Array.isArray(x) ? x.map((t) => (typeof t === "string" ? t : String(t))) : []);
export const ints = (x: unknown): number[] => (Array.isArray(x) ? x.map((t) => Math.trunc(Number(t))) : []);
export const str = (x: unknown, fallback = ""): string => (x == null ? fallback : String(x));

/** A token as a label: visible escapes, newline as "↵", empty as "∅" (always set via textContent). */
export const showTok = (t: string): string => (t === "" ? "∅" : displayToken(t.replace(/\n/g, "↵")));

/** One next-token prediction as Python sends it (docs/widget_protocol.md, "top-k"). */
export interface TopkRow {
  token: string;
  prob: number;
}

export function asTopk(x: unknown): TopkRow[] {
  if (!Array.isArray(x)) return [];
  return x
    .filter((r) => r != null && typeof r === "object")
    .map((r) => ({ token: str((r as TopkRow).token), prob: Number((r as TopkRow).prob) }));
}
