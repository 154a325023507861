/** Styles for the PatchingGrid view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble, statusCss, topkCss } from "./base.css";

const R = ".mw-patching-grid";

export const CSS = `${preamble(R)}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin:0 0 6px}
${R} .mw-title{font-weight:600;unicode-bidi:isolate}
${R} .mw-control{display:inline-flex;align-items:center;gap:4px;color:var(--mw-fg2);font-size:12px}
${R} select,${R} button{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 6px}
${R} select:disabled,${R} button:disabled{opacity:.6;cursor:not-allowed}
${R} .mw-legend{display:inline-flex;align-items:center;gap:4px;font-size:11px;color:var(--mw-fg2);font-variant-numeric:tabular-nums}
${R} .mw-legend-bar{display:inline-block;width:96px;height:10px;border-radius:2px;border:1px solid var(--mw-border)}
${statusCss(R, "running")}
${errorCss(R)}
${R} .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
${R} .mw-grid-wrap{overflow:auto;max-width:100%;max-height:36em}
${R} .mw-grid{display:grid;gap:1px;font-size:11px}
${R} .mw-col-label{writing-mode:vertical-rl;transform:rotate(180deg);white-space:pre;font-family:${CODE};
  max-height:10em;overflow:hidden;text-overflow:ellipsis;align-self:end;justify-self:center;unicode-bidi:isolate;padding:2px 0}
${R} .mw-row-label{font-family:${CODE};color:var(--mw-fg2);padding:0 4px;align-self:center;text-align:right;white-space:nowrap}
${R} .mw-corner{font-size:10px;color:var(--mw-fg2);align-self:end}
${R} .mw-cell{min-width:22px;height:22px;border-radius:2px;cursor:pointer;outline:none}
${R} .mw-cell.mw-empty{background:repeating-linear-gradient(45deg,var(--mw-bg2),var(--mw-bg2) 3px,transparent 3px,transparent 6px)!important}
${R} .mw-cell:hover,${R} .mw-cell:focus-visible{box-shadow:inset 0 0 0 2px var(--mw-fg2)}
${R} .mw-cell.mw-selected{box-shadow:inset 0 0 0 2px var(--mw-accent)}
${R} .mw-cell.mw-guess{outline:2px dashed var(--mw-fg);outline-offset:-2px}
${R} .mw-cell.mw-answer{outline:2px solid var(--mw-accent);outline-offset:-2px}
${R}.mw-predicting .mw-cell{background:var(--mw-bg2)}
${R} .mw-col-label.mw-linked{color:var(--mw-accent);font-weight:600}
${R} .mw-cell.mw-linked:not(.mw-selected){box-shadow:inset 0 0 0 1px var(--mw-accent)}
${R}.mw-busy .mw-grid{opacity:.8}
${R} .mw-cell-panel{flex:1 1 300px;min-width:240px;border:1px solid var(--mw-border);border-radius:4px;padding:6px 8px}
${R} .mw-cell-title{font-weight:600;margin:0 0 4px;overflow-wrap:anywhere;unicode-bidi:isolate}
${topkCss(R, "flex:1 1 90px;min-width:90px")}
${R} .mw-tooltip{position:absolute;z-index:10;pointer-events:none;background:var(--mw-bg);border:1px solid var(--mw-border);
  border-radius:4px;padding:4px 8px;box-shadow:0 2px 8px rgba(0,0,0,.15);font-size:12px;max-width:28em;overflow-wrap:anywhere}
${R} .mw-tt-value{font-variant-numeric:tabular-nums;font-weight:600}
`;
