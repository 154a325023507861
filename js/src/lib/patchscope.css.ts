/** Styles for the Patchscope view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble, statusCss } from "./base.css";

const R = ".mw-patchscope";

export const CSS = `${preamble(R, "--mw-done:rgba(46,160,67,.25);")}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin:0 0 6px}
${R} .mw-title{font-weight:600}
${statusCss(R, "loading")}
${errorCss(R)}
${R} .mw-target{font-size:12px;color:var(--mw-fg2);margin:0 0 6px;overflow-wrap:anywhere}
${R} .mw-tt{font-family:${CODE};white-space:pre-wrap;unicode-bidi:isolate}
${R} .mw-tt.mw-patched{outline:2px solid var(--mw-accent);border-radius:2px;color:var(--mw-fg)}
${R} .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
${R} .mw-grid-wrap{overflow:auto;max-width:100%;max-height:36em}
${R} .mw-grid{display:grid;gap:1px;font-size:11px}
${R} .mw-src-token{writing-mode:vertical-rl;transform:rotate(180deg);white-space:pre;font-family:${CODE};
  max-height:10em;overflow:hidden;text-overflow:ellipsis;align-self:end;justify-self:center;unicode-bidi:isolate;padding:2px 0}
${R} .mw-src-token:empty::before{content:"∅";color:var(--mw-fg2)}
${R} .mw-row-label{font-family:${CODE};color:var(--mw-fg2);padding:0 4px;align-self:center;text-align:right;white-space:nowrap}
${R} .mw-corner{font-size:10px;color:var(--mw-fg2);align-self:end}
${R} .mw-cell{min-width:26px;height:22px;border-radius:2px;cursor:pointer;outline:none;background:var(--mw-bg2)}
${R} .mw-cell.mw-done{background:var(--mw-done)}
${R} .mw-cell:hover,${R} .mw-cell:focus-visible{box-shadow:inset 0 0 0 2px var(--mw-fg2)}
${R} .mw-cell.mw-selected{box-shadow:inset 0 0 0 2px var(--mw-accent)}
${R}.mw-busy .mw-grid{opacity:.8}
${R} .mw-panel{flex:1 1 300px;min-width:240px;border:1px solid var(--mw-border);border-radius:4px;padding:6px 8px}
${R} .mw-panel-title{font-weight:600;margin:0 0 4px;overflow-wrap:anywhere;unicode-bidi:isolate}
${R} .mw-decoded-row{display:flex;gap:8px;align-items:baseline;font-size:12px}
${R} .mw-tl{color:var(--mw-fg2);min-width:5.5em;white-space:nowrap}
${R} .mw-text{font-family:${CODE};white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate;flex:1}
${R} .mw-prob{font-variant-numeric:tabular-nums;color:var(--mw-fg2)}
${R} .mw-baseline{font-size:11px;color:var(--mw-fg2);margin:6px 0 0}
${R} .mw-note{font-size:11px;color:var(--mw-fg2)}
`;
