/**
 * CSS that every view shares, scoped to the view's root class (`R`, e.g. ".mw-patching-grid"):
 * JupyterLab's theme variables with light fallbacks, the base font, `[hidden]` and the error box.
 */

export const CODE = "var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,Consolas,monospace)";

/** The root rule (theme variables, font) and `[hidden]`; `vars`: the view's own custom properties. */
export const preamble = (R: string, vars = ""): string => `
${R}{
  --mw-fg:var(--jp-ui-font-color1,#1f2328);--mw-fg2:var(--jp-ui-font-color2,#59636e);
  --mw-bg:var(--jp-layout-color1,#fff);--mw-bg0:var(--jp-layout-color0,#fff);
  --mw-bg2:var(--jp-layout-color2,#eef0f3);--mw-border:var(--jp-border-color2,#d0d7de);
  --mw-accent:var(--jp-brand-color1,#1a73e8);--mw-err:var(--jp-error-color1,#c62828);${vars}
  position:relative;color:var(--mw-fg);line-height:1.4;font-size:13px;
  font-family:var(--jp-ui-font-family,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);
}
${R} [hidden]{display:none!important}`;

/** The error box (`.mw-error`, role=alert): Python's and the view's errors, text kept as is. */
export const errorCss = (R: string): string =>
  `${R} .mw-error{color:var(--mw-err);border:1px solid currentColor;border-radius:4px;padding:4px 8px;margin:0 0 6px;
  font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}`;

/**
 * The header's status pill and progress bar (lib/status.ts); `busy`: the data-status value shown
 * in the accent colour ("running" or "loading"); `width`: the progress bar's width in px.
 */
export const statusCss = (R: string, busy: string, width = 64): string =>
  `${R} .mw-status-wrap{display:inline-flex;align-items:center;gap:6px;margin-left:auto}
${R} .mw-status{font-size:11px;padding:1px 7px;border-radius:9px;background:var(--mw-bg2);color:var(--mw-fg2)}
${R} .mw-status[data-status=${busy}]{color:var(--mw-accent)}
${R} .mw-status[data-status=error]{color:#fff;background:var(--mw-err)}
${R} .mw-progress{display:inline-block;width:${width}px;height:4px;border-radius:2px;background:var(--mw-bg2);overflow:hidden}
${R} .mw-progress>span{display:block;height:100%;width:0;background:var(--mw-accent);transition:width .15s}`;

/** Top-k lists side by side (lib/topk.ts); `list`: the flex basis and min-width of one list. */
export const topkCss = (R: string, list: string): string =>
  `${R} .mw-lists{display:flex;gap:10px;flex-wrap:wrap}
${R} .mw-topk-list{${list}}
${R} .mw-topk-head{font-size:11px;color:var(--mw-fg2);margin:0 0 2px}
${R} .mw-topk-row{display:flex;justify-content:space-between;gap:6px;font-size:12px}
${R} .mw-tok{font-family:${CODE};white-space:pre;overflow:hidden;text-overflow:ellipsis;unicode-bidi:isolate}
${R} .mw-prob{font-variant-numeric:tabular-nums;color:var(--mw-fg2)}
${R} .mw-note{font-size:11px;color:var(--mw-fg2)}`;
