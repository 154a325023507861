/** Styles for the TokenActivations view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble, statusCss } from "./base.css";

export const CSS = `${preamble(".mw-token-activations")}
.mw-token-activations .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin:0 0 6px}
.mw-token-activations .mw-unit-label{font-weight:600;unicode-bidi:isolate}
.mw-token-activations .mw-control{display:inline-flex;align-items:center;gap:4px;color:var(--mw-fg2);font-size:12px}
.mw-token-activations select{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 4px;max-width:16em}
.mw-token-activations select:disabled{opacity:.6;cursor:not-allowed}
.mw-token-activations .mw-legend{display:inline-flex;align-items:center;gap:4px;font-size:11px;color:var(--mw-fg2);font-variant-numeric:tabular-nums}
.mw-token-activations .mw-legend-bar{display:inline-block;width:96px;height:10px;border-radius:2px;border:1px solid var(--mw-border)}
${statusCss(".mw-token-activations", "loading")}
${errorCss(".mw-token-activations")}
.mw-token-activations .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:10px}
.mw-token-activations .mw-texts{flex:1 1 420px;min-width:0;max-height:30em;overflow:auto;padding:6px 8px;
  border:1px solid var(--mw-border);border-radius:4px;font-family:${CODE};font-size:12.5px;outline:none}
.mw-token-activations .mw-texts:focus-visible{box-shadow:0 0 0 2px var(--mw-accent)}
.mw-token-activations.mw-busy .mw-texts{opacity:.55;transition:opacity .2s}
.mw-token-activations .mw-text{margin:0 0 8px;line-height:1.9}
.mw-token-activations .mw-text:last-child{margin-bottom:0}
.mw-token-activations .mw-block.mw-pending{display:block}
.mw-token-activations .mw-static-note{margin:0 0 6px;font-size:11px;color:var(--mw-fg2)}
.mw-token-activations .mw-text-label{font-family:var(--jp-ui-font-family,sans-serif);font-size:10px;color:var(--mw-fg2);
  margin-right:6px;user-select:none;-webkit-user-select:none}
.mw-token-activations .mw-token{display:inline-block;max-width:100%;box-sizing:border-box;
  white-space:pre-wrap;white-space:break-spaces;overflow-wrap:anywhere;unicode-bidi:isolate;min-width:.5em;line-height:1.45;padding:0 1px;margin-right:1px;border-radius:2px;cursor:pointer;
  background:rgb(200,200,200);color:#000;box-shadow:inset 0 0 0 1px rgba(127,127,127,.2)}
.mw-token-activations .mw-token:hover{box-shadow:inset 0 0 0 1px currentColor}
.mw-token-activations .mw-token.mw-selected{outline:2px solid var(--mw-accent);outline-offset:1px}
.mw-token-activations .mw-token.mw-empty::before{content:"\\2205";opacity:.4}
.mw-token-activations .mw-nl{opacity:.6}
.mw-token-activations .mw-topk{flex:0 0 240px;max-width:100%;max-height:30em;overflow:auto;box-sizing:border-box;
  border:1px solid var(--mw-border);border-radius:4px;padding:6px;font-size:12px}
.mw-token-activations .mw-topk-title{font-weight:600;margin:0 0 4px;overflow-wrap:anywhere}
.mw-token-activations .mw-topk-title .mw-tt-token{font-weight:400}
.mw-token-activations .mw-topk-hint{color:var(--mw-fg2)}
.mw-token-activations .mw-topk-row{display:grid;grid-template-columns:minmax(0,1fr) 56px 58px;gap:6px;align-items:center;
  width:100%;box-sizing:border-box;text-align:left;background:none;border:0;border-radius:3px;padding:2px 4px;margin:0;
  font:inherit;color:inherit;cursor:pointer}
.mw-token-activations .mw-topk-row:hover,.mw-token-activations .mw-topk-row:focus-visible{background:var(--mw-bg2);outline:none}
.mw-token-activations .mw-topk-row.mw-active{background:var(--mw-bg2);box-shadow:inset 3px 0 0 var(--mw-accent);font-weight:600}
.mw-token-activations .mw-topk-row:disabled{opacity:.45;cursor:not-allowed}
.mw-token-activations .mw-topk-name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.mw-token-activations .mw-topk-bar{height:8px;border-radius:2px;background:var(--mw-bg2);overflow:hidden}
.mw-token-activations .mw-topk-fill{display:block;height:100%}
.mw-token-activations .mw-topk-value{text-align:right;font-family:${CODE};font-variant-numeric:tabular-nums}
.mw-token-activations .mw-tooltip{position:absolute;z-index:20;pointer-events:none;box-sizing:border-box;max-width:min(380px,95%);
  padding:5px 8px;background:var(--mw-bg0);color:var(--mw-fg);border:1px solid var(--mw-border);border-radius:4px;
  box-shadow:0 2px 10px rgba(0,0,0,.2);font-size:12px;line-height:1.45}
.mw-token-activations .mw-tt-token{font-family:${CODE};white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate;font-weight:600}
.mw-token-activations .mw-tt-meta{color:var(--mw-fg2)}
.mw-token-activations .mw-tt-value{font-family:${CODE};font-variant-numeric:tabular-nums}
`;
