/** Styles for the ProbeAccuracy view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble, statusCss } from "./base.css";

const R = ".mw-probe-accuracy";

export const CSS = `${preamble(R)}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin:0 0 6px}
${R} .mw-title{font-weight:600;unicode-bidi:isolate}
${R} .mw-control{display:inline-flex;align-items:center;gap:4px;color:var(--mw-fg2);font-size:12px}
${R} select{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 4px}
${R} select:disabled{opacity:.6;cursor:not-allowed}
${statusCss(R, "loading")}
${errorCss(R)}
${R} .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
${R} .mw-plot-wrap{flex:0 1 600px;min-width:320px}
${R} .mw-plot{display:block;width:100%;height:auto;overflow:visible;font-size:11px}
${R} .mw-plot text{fill:var(--mw-fg2)}
${R} .mw-grid-line{stroke:var(--mw-border);stroke-width:1}
${R} .mw-axis{stroke:var(--mw-fg2);stroke-width:1}
${R} .mw-layer-hit{fill:transparent;cursor:pointer}
${R} .mw-layer-hit:hover{fill:var(--mw-bg2)}
${R} .mw-layer-hit.mw-selected{fill:var(--mw-bg2);stroke:var(--mw-accent);stroke-width:1.5}
${R} .mw-x-label{cursor:pointer}
${R} .mw-x-label.mw-selected{fill:var(--mw-accent);font-weight:600}
${R} .mw-line{fill:none;stroke-width:2;pointer-events:none}
${R} .mw-band{stroke:none;opacity:.16;pointer-events:none}
${R} .mw-point{stroke:var(--mw-bg);stroke-width:1;cursor:pointer}
${R} .mw-point:hover{stroke:var(--mw-fg);stroke-width:2}
${R} .mw-legend{display:flex;flex-wrap:wrap;gap:4px 8px;margin:4px 0 0}
${R} .mw-curve-toggle{display:inline-flex;align-items:center;gap:4px;font:inherit;font-size:12px;color:var(--mw-fg);
  background:none;border:1px solid var(--mw-border);border-radius:10px;padding:0 8px;cursor:pointer}
${R} .mw-curve-toggle[aria-pressed=false]{opacity:.45;text-decoration:line-through}
${R} .mw-swatch{display:inline-block;width:16px;height:0;border-top:2px solid}
${R} .mw-layer-panel{flex:1 1 320px;min-width:260px;max-height:40em;overflow:auto;border:1px solid var(--mw-border);
  border-radius:4px;padding:6px 8px;box-sizing:border-box}
${R} .mw-panel-title{font-weight:600;margin:0 0 4px}
${R} .mw-note{font-size:11px;color:var(--mw-fg2);margin:2px 0}
${R} .mw-confusion{border-collapse:collapse;margin:4px 0 8px;font-variant-numeric:tabular-nums;font-size:12px}
${R} .mw-confusion th,${R} .mw-confusion td{border:1px solid var(--mw-border);padding:2px 8px;text-align:right}
${R} .mw-confusion th{font-weight:400;color:var(--mw-fg2)}
${R} .mw-example{display:flex;gap:8px;align-items:baseline;padding:2px 0;border-top:1px solid var(--mw-bg2)}
${R} .mw-ex-meta{flex:0 0 auto;font-family:${CODE};font-size:11px;color:var(--mw-fg2);white-space:nowrap;font-variant-numeric:tabular-nums}
${R} .mw-ex-meta.mw-wrong{color:var(--mw-err)}
${R} .mw-ex-text{flex:1 1 auto;min-width:0;font-family:${CODE};font-size:12px;line-height:1.8;overflow-wrap:anywhere;white-space:pre-wrap}
${R} .mw-token{white-space:pre-wrap;unicode-bidi:isolate;padding:0 1px;margin-right:1px;border-radius:2px;
  box-shadow:inset 0 0 0 1px rgba(127,127,127,.2)}
${R} .mw-token.mw-empty::before{content:"\\2205";opacity:.4}
${R} .mw-gap{text-align:center;color:var(--mw-fg2);font-size:11px}
${R} .mw-tooltip{position:absolute;z-index:10;pointer-events:none;background:var(--mw-bg);border:1px solid var(--mw-border);
  border-radius:4px;padding:4px 8px;box-shadow:0 2px 8px rgba(0,0,0,.15);font-size:12px;max-width:28em;overflow-wrap:anywhere}
${R} .mw-tt-label{unicode-bidi:isolate}
${R} .mw-tt-value{font-variant-numeric:tabular-nums;font-weight:600}
${R} svg .mw-guess{stroke:var(--mw-fg);stroke-dasharray:4 3;stroke-width:1.5}
${R} svg .mw-answer{stroke:var(--mw-accent);stroke-width:2}
`;
