/** Styles for the LogitLens view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble } from "./base.css";

const R = ".mw-logit-lens";

export const CSS = `${preamble(R)}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin:0 0 6px}
${R} .mw-title{font-weight:600;unicode-bidi:isolate}
${R} .mw-control{display:inline-flex;align-items:center;gap:4px;color:var(--mw-fg2);font-size:12px}
${R} select,${R} button,${R} input{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 6px}
${R} input.mw-target{width:9em;font-family:${CODE}}
${R} select:disabled,${R} button:disabled,${R} input:disabled{opacity:.6;cursor:not-allowed}
${R} .mw-legend{display:inline-flex;align-items:center;gap:4px;font-size:11px;color:var(--mw-fg2)}
${R} .mw-legend-bar{display:inline-block;width:96px;height:10px;border-radius:2px;border:1px solid var(--mw-border)}
${R} .mw-status{font-size:11px;padding:1px 7px;border-radius:9px;background:var(--mw-bg2);color:var(--mw-fg2);margin-left:auto}
${R} .mw-status[data-status=loading]{color:var(--mw-accent)}
${errorCss(R)}
${R} .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
${R} .mw-grid-wrap{overflow:auto;max-width:100%;max-height:40em}
${R} .mw-grid{display:grid;gap:1px;font-size:11px}
${R} .mw-col-label{font-family:${CODE};white-space:pre;overflow:hidden;text-overflow:ellipsis;max-width:8em;
  text-align:center;align-self:end;cursor:pointer;unicode-bidi:isolate;padding:0 2px;border-bottom:2px solid transparent}
${R} .mw-col-label.mw-selected{border-bottom-color:var(--mw-accent);font-weight:600}
${R} .mw-row-label{font-family:${CODE};color:var(--mw-fg2);padding:0 4px;align-self:center;text-align:right;white-space:nowrap}
${R} .mw-corner,${R} .mw-kl-head{font-size:10px;color:var(--mw-fg2);align-self:end}
${R} .mw-kl{font-size:10px;color:var(--mw-fg2);align-self:center;font-variant-numeric:tabular-nums;padding-left:4px}
${R} .mw-cell{min-width:36px;max-width:8em;height:20px;padding:0 3px;border-radius:2px;cursor:pointer;outline:none;
  font-family:${CODE};white-space:pre;overflow:hidden;text-overflow:ellipsis;text-align:center;line-height:20px;unicode-bidi:isolate}
${R} .mw-cell:hover,${R} .mw-cell:focus-visible{box-shadow:inset 0 0 0 2px var(--mw-fg2)}
${R} .mw-cell.mw-selected{box-shadow:inset 0 0 0 2px var(--mw-accent)}
${R} .mw-target-panel{flex:1 1 260px;min-width:220px;border:1px solid var(--mw-border);border-radius:4px;padding:6px 8px}
${R} .mw-target-title{font-weight:600;margin:0 0 4px;overflow-wrap:anywhere;unicode-bidi:isolate}
${R} svg.mw-line{display:block;width:100%;max-width:340px;height:auto}
${R} svg.mw-line .mw-axis{stroke:var(--mw-border);fill:none}
${R} svg.mw-line .mw-path{stroke:var(--mw-accent);stroke-width:2;fill:none}
${R} svg.mw-line .mw-point{fill:var(--mw-accent)}
${R} svg.mw-line text{font-size:9px;fill:var(--mw-fg2)}
${R} .mw-line-table{display:grid;grid-template-columns:auto auto;gap:0 12px;font-size:12px;margin-top:4px}
${R} .mw-line-row{display:contents}
${R} .mw-layer{font-family:${CODE};color:var(--mw-fg2)}
${R} .mw-prob{font-variant-numeric:tabular-nums;text-align:right}
${R} .mw-note{font-size:11px;color:var(--mw-fg2)}
${R} .mw-tok{font-family:${CODE};white-space:pre;unicode-bidi:isolate}
${R} .mw-tooltip{position:absolute;z-index:10;pointer-events:none;background:var(--mw-bg);border:1px solid var(--mw-border);
  border-radius:4px;padding:4px 8px;box-shadow:0 2px 8px rgba(0,0,0,.15);font-size:12px;max-width:28em;overflow-wrap:anywhere}
${R} .mw-tt-label{font-weight:600;margin-bottom:2px}
${R} .mw-tt-row{display:flex;justify-content:space-between;gap:10px}
`;
