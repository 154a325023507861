/** Styles for the Steering view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble } from "./base.css";

const R = ".mw-steering";

export const CSS = `${preamble(R, "--mw-pos:#1f6fb2;--mw-neg:#b2431f;")}
${R} .mw-controls{display:flex;flex-wrap:wrap;align-items:center;gap:6px 12px;margin:0 0 6px}
${R} .mw-control{display:inline-flex;align-items:center;gap:4px;color:var(--mw-fg2);font-size:12px}
${R} textarea.mw-prompt{display:block;width:100%;box-sizing:border-box;font-family:${CODE};font-size:12px;
  color:var(--mw-fg);background:var(--mw-bg);border:1px solid var(--mw-border);border-radius:3px;padding:3px 6px;margin:0 0 6px;resize:vertical}
${R} select,${R} button,${R} input{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 6px}
${R} input.mw-coef{padding:0;width:140px}
${R} input.mw-max-tokens{width:4em}
${R} input.mw-metric-a,${R} input.mw-metric-b{width:7em;font-family:${CODE}}
${R} .mw-coef-value{font-variant-numeric:tabular-nums;min-width:3.5em;color:var(--mw-fg)}
${R} button.mw-generate{border-color:var(--mw-accent);color:var(--mw-accent)}
${R} select:disabled,${R} button:disabled,${R} input:disabled,${R} textarea:disabled{opacity:.6;cursor:not-allowed}
${R} .mw-status{font-size:11px;padding:1px 7px;border-radius:9px;background:var(--mw-bg2);color:var(--mw-fg2);margin-left:auto}
${R} .mw-status[data-status=running]{color:var(--mw-accent)}
${R} .mw-status[data-status=error]{color:#fff;background:var(--mw-err)}
${errorCss(R)}
${R} .mw-columns{display:flex;flex-wrap:wrap;gap:10px}
${R} .mw-column{flex:1 1 260px;min-width:220px;border:1px solid var(--mw-border);border-radius:4px;padding:6px 8px}
${R} .mw-column-head{font-size:11px;color:var(--mw-fg2);margin:0 0 4px;font-weight:600}
${R} .mw-text{font-family:${CODE};font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere;min-height:3em}
${R} .mw-prompt-text{color:var(--mw-fg2)}
${R} .mw-token{unicode-bidi:isolate;border-radius:2px}
${R} .mw-token:hover{background:var(--mw-bg2)}
${R} .mw-token.mw-empty::after{content:"∅";color:var(--mw-fg2)}
${R} .mw-column[data-run=steered] .mw-token{background:rgba(26,115,232,.08)}
${R} .mw-column:not(.mw-done) .mw-text::after{content:"▍";color:var(--mw-accent)}
${R} .mw-sweep{margin:8px 0 0}
${R} svg.mw-sweep-plot{display:block;max-width:100%;font-size:10px;font-family:inherit}
${R} svg.mw-sweep-plot .mw-axis{stroke:var(--mw-fg2);stroke-width:1}
${R} svg.mw-sweep-plot .mw-zero{stroke:var(--mw-border);stroke-dasharray:3 3}
${R} svg.mw-sweep-plot .mw-line{fill:none;stroke:var(--mw-accent);stroke-width:2}
${R} svg.mw-sweep-plot .mw-point{fill:var(--mw-accent)}
${R} svg.mw-sweep-plot .mw-current{stroke:var(--mw-neg);stroke-width:1.5}
${R} svg.mw-sweep-plot text{fill:var(--mw-fg2)}
`;
