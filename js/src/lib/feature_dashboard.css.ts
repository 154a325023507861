/** Styles for the FeatureDashboard view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble, statusCss } from "./base.css";

const R = ".mw-feature-dashboard";

export const CSS = `${preamble(R)}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 12px;margin:0 0 6px}
${R} .mw-title{font-weight:600}
${statusCss(R, "running", 80)}
${R} button,${R} input,${R} select{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 6px}
${R} button{cursor:pointer}
${R} button:disabled,${R} input:disabled{opacity:.5;cursor:not-allowed}
${errorCss(R)}
${R} .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:10px}
${R} .mw-list-pane{flex:0 0 250px;max-width:100%;border:1px solid var(--mw-border);border-radius:4px;padding:6px;box-sizing:border-box}
${R} .mw-list-controls{display:flex;gap:4px;margin:0 0 4px}
${R} .mw-search{flex:1 1 auto;min-width:0}
${R} .mw-feature-list{max-height:34em;overflow:auto}
${R} .mw-feature-row{display:grid;grid-template-columns:minmax(0,1fr) 52px 52px;gap:4px;width:100%;text-align:left;
  border:0;border-radius:3px;padding:2px 4px;margin:0;background:none}
${R} .mw-feature-row:hover,${R} .mw-feature-row:focus-visible{background:var(--mw-bg2);outline:none}
${R} .mw-feature-row.mw-selected{background:var(--mw-bg2);box-shadow:inset 3px 0 0 var(--mw-accent);font-weight:600}
${R} .mw-fname{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
${R} .mw-num{text-align:right;font-family:${CODE};font-variant-numeric:tabular-nums;font-size:11.5px}
${R} .mw-list-head{color:var(--mw-fg2);font-size:11px;font-weight:400}
${R} .mw-note{color:var(--mw-fg2);font-size:12px;margin:4px 0}
${R} .mw-feature-pane{flex:1 1 460px;min-width:0}
${R} .mw-feature-title{font-weight:600;font-size:14px;overflow-wrap:anywhere}
${R} .mw-stats{color:var(--mw-fg2);font-size:12px;margin:0 0 6px}
${R} .mw-section{margin:8px 0 2px;font-weight:600;font-size:12px}
${R} .mw-row2{display:flex;flex-wrap:wrap;gap:12px}
${R} .mw-hist{display:flex;align-items:flex-end;gap:1px;height:60px;width:260px;border-bottom:1px solid var(--mw-border)}
${R} .mw-hist-bar{flex:1 1 0;background:rgb(178,24,43);min-height:0}
${R} .mw-hist-axis{display:flex;justify-content:space-between;width:260px;font-size:10.5px;color:var(--mw-fg2);font-family:${CODE}}
${R} .mw-logits{display:flex;gap:10px}
${R} .mw-logits-list,${R} .mw-topk-list{min-width:130px;font-size:12px}
${R} .mw-logit-row,${R} .mw-topk-row{display:grid;grid-template-columns:minmax(0,1fr) auto;gap:6px;padding:0 4px;border-radius:2px}
${R} .mw-tok{font-family:${CODE};white-space:pre;overflow:hidden;text-overflow:ellipsis;unicode-bidi:isolate}
${R} .mw-val,${R} .mw-prob{font-family:${CODE};font-variant-numeric:tabular-nums;text-align:right}
${R} .mw-example{font-family:${CODE};font-size:12px;line-height:1.85;padding:1px 0;border-bottom:1px dashed var(--mw-bg2);overflow-wrap:anywhere}
${R} .mw-ex-meta{display:inline-block;min-width:5.5em;font-family:var(--jp-ui-font-family,sans-serif);font-size:10.5px;color:var(--mw-fg2);margin-right:6px}
${R} .mw-token{display:inline-block;white-space:pre-wrap;white-space:break-spaces;unicode-bidi:isolate;min-width:.5em;padding:0 1px;
  margin-right:1px;border-radius:2px;line-height:1.45;box-shadow:inset 0 0 0 1px rgba(127,127,127,.2)}
${R} .mw-token.mw-center{outline:2px solid var(--mw-fg);outline-offset:0}
${R} .mw-token.mw-empty::before{content:"\\2205";opacity:.4}
${R} .mw-nl{opacity:.6}
${R} .mw-band-title{color:var(--mw-fg2);font-size:11.5px;margin:6px 0 0}
${R} .mw-steer{border:1px solid var(--mw-border);border-radius:4px;padding:6px;margin:8px 0 0}
${R} .mw-steer-controls{display:flex;flex-wrap:wrap;gap:6px;align-items:center}
${R} .mw-prompt{flex:1 1 220px;min-width:0}
${R} .mw-coef{width:6em}
${R} .mw-steer-panel{display:flex;gap:16px;margin:6px 0 0}
${R} .mw-topk-row .mw-up{color:rgb(178,24,43)}
${R} .mw-topk-row .mw-down{color:rgb(33,102,172)}
${R} .mw-fcell{display:flex;gap:4px;align-items:baseline;min-width:0}
${R} .mw-fcell .mw-fname{flex:1 1 auto;min-width:0}
${R} .mw-score-badge,${R} .mw-badge{flex:0 0 auto;font-family:${CODE};font-size:10.5px;font-weight:400;padding:0 4px;border-radius:8px;
  border:1px solid var(--mw-border);white-space:nowrap}
${R} .mw-beats{background:rgba(27,120,55,.14);border-color:rgba(27,120,55,.5)}
${R} .mw-fails{background:rgba(127,127,127,.12)}
${R} .mw-ai{border:1px solid var(--mw-border);border-radius:4px;padding:4px 6px;margin:0 0 8px}
${R} .mw-ai-head{display:flex;align-items:center;justify-content:space-between;gap:8px}
${R} .mw-ai-head .mw-section{margin:2px 0}
${R} .mw-ai-text{font-size:13px;overflow-wrap:anywhere;margin:2px 0}
${R} .mw-ai-text.mw-empty-expl{color:var(--mw-fg2);font-size:12px}
${R} .mw-ai-badges{display:flex;flex-wrap:wrap;gap:4px 10px;margin:2px 0}
${R} .mw-badge-wrap{display:inline-flex;gap:4px;align-items:baseline}
${R} .mw-badge-base{color:var(--mw-fg2);font-size:10.5px}
${R} .mw-ai-note{color:var(--mw-fg2);font-size:11.5px;min-height:0}
${R} .mw-tooltip{position:absolute;z-index:20;pointer-events:none;max-width:min(360px,95%);padding:4px 8px;background:var(--mw-bg0);
  border:1px solid var(--mw-border);border-radius:4px;box-shadow:0 2px 10px rgba(0,0,0,.2);font-size:12px}
${R} .mw-tt-token{font-family:${CODE};white-space:pre-wrap;overflow-wrap:anywhere;font-weight:600}
`;
