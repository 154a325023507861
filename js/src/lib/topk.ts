/** A run's top-k next tokens as a list (`div.mw-topk-list[data-run]`), shared by the panel views. */

import { fmt } from "./colour";
import { escapeToken, h } from "./dom";
import { showTok, type TopkRow } from "./values";

/** `rows` empty or null: the list shows `note` (default "no data") instead. */
export function topkList(run: string, heading: string, rows: TopkRow[] | null, note: string): HTMLElement {
  const list = h("div", "mw-topk-list", [h("div", "mw-topk-head", heading)]);
  list.dataset.run = run;
  if (rows && rows.length) {
    for (const r of rows) {
      const row = h("div", "mw-topk-row", [h("span", "mw-tok", showTok(r.token)), h("span", "mw-prob", fmt(r.prob, 3))]);
      row.title = `${escapeToken(r.token)} p = ${fmt(r.prob, 6)}`;
      list.appendChild(row);
    }
  } else list.appendChild(h("div", "mw-note", note || "no data"));
  return list;
}
