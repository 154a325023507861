// Build every widget in src/*.ts (not src/lib/) into ../mi_widgets/static/:
//   <stem>.js       minified ES module, `export default { render }` (anywidget's _esm)
//   <stem>.iife.js  minified IIFE setting globalThis.MIWidgets.<stem> = { render, staticModel }
//                   (inlined by widget.to_html for the self-contained static export)
import * as esbuild from "esbuild";
import { mkdirSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const srcDir = join(here, "src");
const outDir = resolve(here, "..", "mi_widgets", "static");

// `node build.mjs [stem ...]` builds only the named widgets (all of them by default).
const only = process.argv.slice(2);
const stems = readdirSync(srcDir)
  .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
  .map((f) => f.slice(0, -3))
  .filter((stem) => only.length === 0 || only.includes(stem))
  .sort();
if (stems.length === 0) throw new Error(`no widget entry points in ${srcDir}`);
for (const stem of stems) {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(stem)) throw new Error(`widget file name must be an identifier: ${stem}.ts`);
}

mkdirSync(outDir, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  target: ["es2020"],
  platform: "browser",
  charset: "utf8",
  legalComments: "none",
  logLevel: "warning",
};

for (const stem of stems) {
  await esbuild.build({
    ...common,
    entryPoints: [join(srcDir, `${stem}.ts`)],
    format: "esm",
    outfile: join(outDir, `${stem}.js`),
  });
  await esbuild.build({
    ...common,
    stdin: {
      contents: [
        `import widget from "./${stem}.ts";`,
        `import { staticModel } from "./lib/static_model.ts";`,
        `const g = globalThis;`,
        `g.MIWidgets = g.MIWidgets || {};`,
        `g.MIWidgets[${JSON.stringify(stem)}] = { render: widget.render, staticModel };`,
      ].join("\n"),
      resolveDir: srcDir,
      sourcefile: `${stem}.iife-entry.ts`,
      loader: "ts",
    },
    format: "iife",
    outfile: join(outDir, `${stem}.iife.js`),
  });
  console.log(`built ${stem}.js, ${stem}.iife.js`);
}
