/** Styles for the AttentionPatterns view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble } from "./base.css";

const R = ".mw-attention-patterns";

export const CSS = `${preamble(R)}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin:0 0 6px}
${R} .mw-title{font-weight:600}
${R} .mw-control{display:inline-flex;align-items:center;gap:4px;color:var(--mw-fg2);font-size:12px}
${R} select{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 4px}
${R} .mw-score-note{font-size:11px;color:var(--mw-fg2)}
${R} .mw-status{font-size:11px;padding:1px 7px;border-radius:9px;background:var(--mw-bg2);color:var(--mw-fg2);margin-left:auto}
${R} .mw-status[data-status=loading]{color:var(--mw-accent)}
${R} .mw-status[data-status=error]{color:#fff;background:var(--mw-err)}
${errorCss(R)}
${R} .mw-heads{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 8px;max-height:340px;overflow:auto}
${R} .mw-head{display:flex;flex-direction:column;align-items:center;gap:1px;padding:3px;margin:0;font:inherit;
  font-size:11px;color:var(--mw-fg);background:var(--mw-bg);border:1px solid var(--mw-border);border-radius:4px;cursor:pointer}
${R} .mw-head:hover{border-color:var(--mw-accent)}
${R} .mw-head.mw-selected{border-color:var(--mw-accent);box-shadow:0 0 0 2px var(--mw-accent)}
${R} .mw-thumb{width:64px;height:64px;image-rendering:pixelated;border:1px solid var(--mw-bg2);background:#fff}
${R} .mw-head-label{font-weight:600;font-variant-numeric:tabular-nums}
${R} .mw-head-score{color:var(--mw-fg2);font-variant-numeric:tabular-nums;font-size:10px}
${R} .mw-detail{border-top:1px solid var(--mw-border);padding-top:6px}
${R} .mw-detail-title{font-weight:600;margin:0 0 4px}
${R} .mw-note{color:var(--mw-fg2);font-size:12px;margin:2px 0}
${R} .mw-pattern{display:grid;grid-template-columns:auto auto;grid-template-rows:auto auto;justify-content:start;
  max-width:100%;max-height:720px;overflow:auto;position:relative}
${R} .mw-key-labels,${R} .mw-query-labels{position:relative;font-family:${CODE};color:var(--mw-fg2);overflow:hidden}
${R} .mw-key-labels{grid-column:2;grid-row:1}
${R} .mw-query-labels{grid-column:1;grid-row:2}
${R} .mw-canvas-wrap{grid-column:2;grid-row:2;position:relative;line-height:0}
${R} .mw-pattern-canvas{image-rendering:pixelated;cursor:crosshair;display:block}
${R} .mw-key-label,${R} .mw-query-label{position:absolute;white-space:pre;unicode-bidi:isolate;overflow:hidden}
${R} .mw-key-label{bottom:0;writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;max-height:88px}
${R} .mw-query-label{right:2px;text-align:right;max-width:110px}
${R} .mw-key-label.mw-hot,${R} .mw-query-label.mw-hot{color:var(--mw-fg);font-weight:700}
${R} .mw-hl{position:absolute;pointer-events:none;border:1px solid #e8710a;box-sizing:border-box}
${R} .mw-strip{font-family:${CODE};font-size:12px;line-height:1.9;margin-top:6px;max-height:220px;overflow:auto;
  padding:4px;border:1px solid var(--mw-border);border-radius:4px;white-space:pre-wrap;overflow-wrap:anywhere}
${R} .mw-token{unicode-bidi:isolate;border-radius:2px;padding:0 1px;cursor:default;white-space:pre}
${R} .mw-token.mw-empty::before{content:"∅";color:var(--mw-fg2)}
${R} .mw-token.mw-hovered{outline:2px solid var(--mw-fg);outline-offset:0}
${R} .mw-token.mw-linked{text-decoration:underline 2px var(--mw-accent);text-underline-offset:3px}
${R} .mw-token .mw-nl{color:var(--mw-fg2)}
${R} .mw-legend{font-size:11px;color:var(--mw-fg2);display:flex;gap:12px;margin-top:2px}
${R} .mw-swatch{display:inline-block;width:10px;height:10px;border-radius:2px;vertical-align:middle;margin-right:3px}
${R} .mw-tooltip{position:absolute;z-index:10;pointer-events:none;background:var(--mw-bg);color:var(--mw-fg);
  border:1px solid var(--mw-border);border-radius:4px;padding:3px 6px;font-size:12px;box-shadow:0 2px 6px rgba(0,0,0,.15);
  white-space:pre;unicode-bidi:isolate}
${R} .mw-tt-label{font-family:${CODE}}
${R} .mw-tt-value{font-variant-numeric:tabular-nums;color:var(--mw-fg2)}
`;
