// Bundle-size budget: every built widget (ESM and IIFE) must be <= 40 KB (40 000 bytes) minified.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const BUDGET = 40_000;
const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(here, "..", "mi_widgets", "static");
const stems = readdirSync(join(here, "src"))
  .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
  .map((f) => f.slice(0, -3));

let failed = false;
for (const stem of stems) {
  for (const file of [`${stem}.js`, `${stem}.iife.js`]) {
    const path = join(outDir, file);
    let bytes;
    try {
      bytes = statSync(path).size;
    } catch {
      console.error(`FAIL ${file}: missing (run \`npm run build\`)`);
      failed = true;
      continue;
    }
    const gz = gzipSync(readFileSync(path)).length;
    const ok = bytes <= BUDGET;
    if (!ok) failed = true;
    console.log(
      `${ok ? "ok  " : "FAIL"} ${file.padEnd(32)} ${String(bytes).padStart(7)} B minified, ${String(gz).padStart(6)} B gzip (budget ${BUDGET} B)`,
    );
  }
}
if (failed) {
  console.error(`\nBundle-size budget exceeded or bundle missing: each widget must be <= ${BUDGET} bytes minified.`);
  process.exit(1);
}
