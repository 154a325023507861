/**
 * CSS that every view shares, scoped to the view's root class (`R`, e.g. ".mw-patching-grid"):
 * the theme (below), the base font, `[hidden]` and the error box.
 *
 * Theme: each colour is the host's own where it has one (JupyterLab's `--jp-*`, then VS Code's
 * `--vscode-*`), else our palette for the root's `color-scheme` (`light-dark()`). That scheme
 * is the host's where it says (marker classes and attributes of JupyterLab, VS Code, marimo,
 * Colab, or an inherited `color-scheme`), else the OS preference; and once the view is in the
 * page, the background measured behind it (`followHostTheme` in colour.ts) overrides both.
 */

export const CODE = "var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,Consolas,monospace)";

/** Our palette: [light, dark] per role. Every text colour has a contrast of at least 4.5:1 on
 * every background of its scheme (js/test/lib_shared.test.ts checks it). */
export const PALETTE = {
  fg: ["#1f2328", "#e6edf3"],
  fg2: ["#59636e", "#9da7b3"],
  bg: ["#ffffff", "#1c2128"],
  bg0: ["#ffffff", "#161b22"],
  bg2: ["#eef0f3", "#2d333b"],
  border: ["#d0d7de", "#545d68"],
  accent: ["#1565c0", "#6cb6ff"],
  err: ["#c62828", "#ff938a"],
  /** text on the error colour (the status pill's "error") */
  onErr: ["#ffffff", "#1c2128"],
} as const;

/** The host variables each role reads first, in order. */
export const HOST_VARS: Record<keyof typeof PALETTE, string[]> = {
  fg: ["--jp-ui-font-color1", "--vscode-foreground"],
  fg2: ["--jp-ui-font-color2", "--vscode-descriptionForeground"],
  bg: ["--jp-layout-color1", "--vscode-editor-background"],
  bg0: ["--jp-layout-color0", "--vscode-editor-background"],
  bg2: ["--jp-layout-color2", "--vscode-editorWidget-background"],
  border: ["--jp-border-color2", "--vscode-widget-border"],
  accent: ["--jp-brand-color1", "--vscode-textLink-foreground"],
  err: ["--jp-error-color1", "--vscode-errorForeground"],
  onErr: [],
};

const cssName = (role: string) => `--mw-${role.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** `var(--a, var(--b, light-dark(L, D)))` for one role. */
export function themeValue(role: keyof typeof PALETTE): string {
  const [light, dark] = PALETTE[role];
  let out = `light-dark(${light},${dark})`;
  for (const v of [...HOST_VARS[role]].reverse()) out = `var(${v},${out})`;
  return out;
}

/** Where a host says dark or light (descendant selectors; `:host-context` for shadow roots). */
const DARK_HOSTS = [
  "[data-jp-theme-light=false]", ".vscode-dark", ".vscode-high-contrast:not(.vscode-high-contrast-light)",
  ".dark", ".dark-theme", "[data-theme=dark]", "[data-mode=dark]", "[theme=dark]",
];
const LIGHT_HOSTS = [
  "[data-jp-theme-light=true]", ".vscode-light", ".vscode-high-contrast-light",
  ".light", ".light-theme", "[data-theme=light]", "[data-mode=light]", "[theme=light]",
];

/** The root rule (theme variables, font) and `[hidden]`; `vars`: the view's own custom properties. */
export const preamble = (R: string, vars = ""): string => `
${R}{
  ${(Object.keys(PALETTE) as (keyof typeof PALETTE)[]).map((k) => `${cssName(k)}:${themeValue(k)};`).join("")}${vars}
  position:relative;color:var(--mw-fg);line-height:1.4;font-size:13px;
  font-family:var(--jp-ui-font-family,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);
}
@media (prefers-color-scheme:dark){${R}{color-scheme:dark}}
:where(${DARK_HOSTS.join(",")}) ${R}{color-scheme:dark}
:where(${LIGHT_HOSTS.join(",")}) ${R}{color-scheme:light}
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
${R} .mw-status{font-size:11px;padding:1px 7px;border-radius:9px;background:var(--mw-bg2);color:var(--mw-fg)}
${R} .mw-status:is([data-status=${busy}],[data-status=waiting]){color:var(--mw-accent)}
${R} .mw-status[data-status=error]{color:var(--mw-on-err);background:var(--mw-err)}
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
