/** Styles for the Ablation view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble, topkCss } from "./base.css";

const R = ".mw-ablation";

export const CSS = `${preamble(R)}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin:0 0 6px}
${R} .mw-title{font-weight:600;unicode-bidi:isolate}
${R} select{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 6px;max-width:28em}
${R} select:disabled{opacity:.6;cursor:not-allowed}
${R} .mw-legend{display:inline-flex;align-items:center;gap:4px;font-size:11px;color:var(--mw-fg2);font-variant-numeric:tabular-nums}
${R} .mw-legend-bar{display:inline-block;width:96px;height:10px;border-radius:2px;border:1px solid var(--mw-border)}
${R} .mw-status{font-size:11px;padding:1px 7px;border-radius:9px;background:var(--mw-bg2);color:var(--mw-fg2);margin-left:auto}
${R} .mw-status[data-status=running]{color:var(--mw-accent)}
${R} .mw-status[data-status=error]{color:#fff;background:var(--mw-err)}
${errorCss(R)}
${R} .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
${R} .mw-chart{overflow:auto;max-width:100%;max-height:36em}
${R} .mw-grid{display:grid;gap:1px;font-size:11px}
${R} .mw-col-label{font-family:${CODE};color:var(--mw-fg2);text-align:center}
${R} .mw-row-label{font-family:${CODE};color:var(--mw-fg2);padding:0 4px;align-self:center;text-align:right;white-space:nowrap}
${R} .mw-corner{font-size:10px;color:var(--mw-fg2);align-self:end}
${R} .mw-cell{min-width:28px;height:24px;border-radius:2px;cursor:pointer;outline:none}
${R} .mw-cell.mw-empty{cursor:default;background:repeating-linear-gradient(45deg,var(--mw-bg2),var(--mw-bg2) 3px,transparent 3px,transparent 6px)!important}
${R} .mw-cell:hover,${R} .mw-cell:focus-visible,${R} .mw-bar-row:hover,${R} .mw-bar-row:focus-visible{box-shadow:inset 0 0 0 2px var(--mw-fg2)}
${R} .mw-cell.mw-selected,${R} .mw-bar-row.mw-selected{box-shadow:inset 0 0 0 2px var(--mw-accent)}
${R} .mw-bars{display:grid;grid-template-columns:auto minmax(220px,1fr) auto;gap:2px 8px;align-items:center;font-size:12px}
${R} .mw-bar-row{display:contents;cursor:pointer}
${R} .mw-bar-label{font-family:${CODE};text-align:right;white-space:nowrap;unicode-bidi:isolate}
${R} .mw-bar-track{position:relative;height:18px;background:var(--mw-bg2);border-radius:2px}
${R} .mw-bar-row.mw-selected .mw-bar-track{box-shadow:inset 0 0 0 2px var(--mw-accent)}
${R} .mw-bar-zero{position:absolute;left:50%;top:0;bottom:0;width:1px;background:var(--mw-fg2)}
${R} .mw-bar{position:absolute;top:3px;bottom:3px}
${R} .mw-dot{position:absolute;top:50%;width:6px;height:6px;margin:-3px 0 0 -3px;border-radius:50%;background:var(--mw-fg);opacity:.7;border:1px solid var(--mw-bg)}
${R} .mw-bar-value{font-variant-numeric:tabular-nums;color:var(--mw-fg2)}
${R} .mw-panel{flex:1 1 300px;min-width:240px;border:1px solid var(--mw-border);border-radius:4px;padding:6px 8px}
${R} .mw-panel-title{font-weight:600;margin:0 0 4px;overflow-wrap:anywhere;unicode-bidi:isolate}
${R} .mw-panel-prompt{font-size:12px;color:var(--mw-fg2);margin:0 0 4px}
${R} .mw-metrics{display:flex;gap:12px;font-size:12px;margin:0 0 6px;font-variant-numeric:tabular-nums}
${R} .mw-metric-value{font-weight:600}
${topkCss(R, "flex:1 1 110px;min-width:100px")}
${R} .mw-tooltip{position:absolute;z-index:10;pointer-events:none;background:var(--mw-bg);border:1px solid var(--mw-border);
  border-radius:4px;padding:4px 8px;box-shadow:0 2px 8px rgba(0,0,0,.15);font-size:12px;max-width:28em;overflow-wrap:anywhere;white-space:pre-line}
${R} .mw-tt-label{font-weight:600}
${R} .mw-tt-value{font-variant-numeric:tabular-nums}
`;
