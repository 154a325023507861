/// <reference types="node" />
// Markup must never be parsed from data: no HTML-string sinks anywhere in js/src.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = join(dirname(fileURLToPath(import.meta.url)), "..", "src");
const SINKS = ["inner" + "HTML", "outer" + "HTML", "insertAdjacent" + "HTML", "document." + "write", "create" + "ContextualFragment"];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

describe("source hygiene", () => {
  it("js/src uses no HTML-string sinks", () => {
    const all = files(SRC);
    expect(all.length).toBeGreaterThan(3);
    for (const f of all) {
      const text = readFileSync(f, "utf8");
      for (const sink of SINKS) expect(text.includes(sink), `${f} uses ${sink}`).toBe(false);
    }
  });
});
