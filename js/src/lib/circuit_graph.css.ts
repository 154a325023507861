/** Styles for the CircuitGraph view, injected as a <style> element's textContent. */

import { CODE, errorCss, preamble, statusCss } from "./base.css";

const R = ".mw-circuit-graph";

export const CSS = `${preamble(R)}
${R} .mw-header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 12px;margin:0 0 6px}
${R} .mw-title{font-weight:600;unicode-bidi:isolate}
${R} .mw-control{display:inline-flex;align-items:center;gap:4px;color:var(--mw-fg2);font-size:12px}
${R} select,${R} button,${R} input[type=number]{font:inherit;font-size:12px;color:var(--mw-fg);background:var(--mw-bg);
  border:1px solid var(--mw-border);border-radius:3px;padding:1px 6px}
${R} input[type=number]{width:5.5em}
${R} input[type=range]{width:180px}
${R} select:disabled,${R} button:disabled{opacity:.6;cursor:not-allowed}
${R} button[aria-pressed=true]{background:var(--mw-bg2)}
${R} .mw-threshold,${R} .mw-faith{font-size:12px;font-variant-numeric:tabular-nums;color:var(--mw-fg2)}
${R} .mw-faith[data-state=ok]{color:var(--mw-fg);font-weight:600}
${R} .mw-faith[data-state=error]{color:var(--mw-err)}
${R} .mw-legend{display:inline-flex;align-items:center;gap:4px;font-size:11px;color:var(--mw-fg2)}
${R} .mw-legend-bar{display:inline-block;width:96px;height:10px;border-radius:2px;border:1px solid var(--mw-border)}
${R} .mw-static-note{font-size:11px;color:var(--mw-fg2);margin:0 0 4px}
${statusCss(R, "running")}
${errorCss(R)}
${R} .mw-body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
${R} .mw-graph{position:relative;flex:3 1 480px;min-width:320px;overflow:hidden;border:1px solid var(--mw-border);border-radius:4px}
${R} .mw-edges{position:absolute;left:0;top:0;pointer-events:none}
${R} .mw-node{position:absolute;transform:translate(-50%,-50%);font-family:${CODE};font-size:10px;line-height:1;
  padding:3px 4px;border-radius:4px;border:1px solid var(--mw-border);background:var(--mw-bg);color:var(--mw-fg);
  cursor:pointer;white-space:pre;max-width:90px;overflow:hidden;text-overflow:ellipsis;unicode-bidi:isolate;touch-action:none;z-index:1}
${R} .mw-node.mw-inactive{opacity:.35}
${R} .mw-node.mw-group{border-style:dashed;border-width:2px;font-weight:600}
${R} .mw-node.mw-pinned{box-shadow:0 0 0 2px var(--mw-fg2)}
${R} .mw-node.mw-multi{background:var(--mw-bg2);border-color:var(--mw-accent)}
${R} .mw-node.mw-selected{border-color:var(--mw-accent);box-shadow:0 0 0 2px var(--mw-accent);z-index:2}
${R} .mw-row-label{position:absolute;left:4px;transform:translateY(-50%);font-size:10px;color:var(--mw-fg2);font-family:${CODE};pointer-events:none}
${R} .mw-node-panel{flex:1 1 260px;min-width:240px;border:1px solid var(--mw-border);border-radius:4px;padding:6px 8px}
${R} .mw-panel-title{font-weight:600;font-family:${CODE};overflow-wrap:anywhere;unicode-bidi:isolate}
${R} .mw-panel-kind,${R} .mw-note{font-size:11px;color:var(--mw-fg2)}
${R} .mw-panel-buttons{display:flex;gap:6px;margin:4px 0}
${R} .mw-edge-list{margin:6px 0 0}
${R} .mw-edge-head{font-size:11px;color:var(--mw-fg2)}
${R} .mw-edge-row{display:flex;justify-content:space-between;gap:6px;font-size:12px;font-family:${CODE};cursor:pointer}
${R} .mw-edge-row:not(.mw-kept){opacity:.55}
${R} .mw-edge-name{white-space:pre;overflow:hidden;text-overflow:ellipsis;unicode-bidi:isolate}
${R} .mw-edge-score{font-variant-numeric:tabular-nums}
${R} .mw-attn{margin:6px 0 0}
${R} .mw-attn-canvas{display:block;image-rendering:pixelated;border:1px solid var(--mw-border)}
${R} .mw-attn-tokens{display:flex;flex-wrap:wrap;gap:2px;font-family:${CODE};font-size:11px;margin:2px 0 0}
${R} .mw-attn-tok{background:var(--mw-bg2);border-radius:2px;padding:0 2px;white-space:pre;unicode-bidi:isolate}
${R}.mw-full{position:fixed;inset:0;z-index:10000;background:var(--mw-bg0);padding:10px;overflow:auto}
`;
