/** Styles for the HypothesisCard view, injected as a <style> element's textContent. */

import { CODE, preamble } from "./base.css";

const R = ".mw-hypothesis-card";

export const CSS = `${preamble(R, "--mw-pass:#2e7d32;--mw-fail:#c62828;")}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 12px;margin:0 0 4px}
${R} .mw-title{font-weight:600;font-family:${CODE};unicode-bidi:isolate}
${R} .mw-badge{font-size:11px;font-weight:600;border-radius:3px;padding:1px 6px;color:#fff}
${R} .mw-badge.mw-pass{background:var(--mw-pass)}
${R} .mw-badge.mw-fail{background:var(--mw-fail)}
${R} .mw-description{margin:0 0 6px;overflow-wrap:anywhere;unicode-bidi:isolate}
${R} .mw-note{font-size:12px;border-left:3px solid var(--mw-fail);padding:2px 6px;margin:0 0 6px;overflow-wrap:anywhere}
${R} table{border-collapse:collapse;font-size:12px;margin:0 0 6px}
${R} th,${R} td{padding:2px 8px;text-align:left;border-bottom:1px solid var(--mw-border)}
${R} td.mw-num{text-align:right;font-variant-numeric:tabular-nums;font-family:${CODE}}
${R} tr.mw-test{cursor:pointer;outline:none}
${R} tr.mw-test:hover,${R} tr.mw-test:focus-visible{background:var(--mw-bg2)}
${R} tr.mw-test.mw-selected{box-shadow:inset 3px 0 0 var(--mw-accent)}
${R} .mw-panel{border:1px solid var(--mw-border);border-radius:4px;padding:4px 8px;font-size:12px}
${R} .mw-panel-title{font-weight:600;margin:0 0 4px}
${R} .mw-ce{display:flex;gap:8px;align-items:baseline}
${R} .mw-ce-kind{color:var(--mw-fg2);min-width:11em;white-space:nowrap}
${R} .mw-ce-context{font-family:${CODE};white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate;flex:1}
${R} .mw-ce-value{font-variant-numeric:tabular-nums;color:var(--mw-fg2)}
`;
