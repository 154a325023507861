"""Regenerate the measured figures in README.md and docs/*.md from the files scripts write.

A figure that describes a measurement lives in a marked block::

    <!-- gen:KEY -->
    ...generated text...
    <!-- /gen -->

and KEY names a generator below, which reads its source: benchmarks/RESULTS.md (written by
benchmarks/*.py), the zoo's ground_truth.json files (written by ``python -m mi_widgets.zoo.measure``
and ``python -m mi_widgets.zoo.compiled``), the built bundles in mi_widgets/static/ (written by the
JS build). ``python scripts/gen_docs.py`` rewrites every block; ``--check`` only reports blocks
whose text differs from what their source gives (tests/test_docs.py runs that).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
ZOO = ROOT / "mi_widgets" / "zoo" / "models"
STATIC = ROOT / "mi_widgets" / "static"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- gen:(?P<key>[\w:.-]+) -->)(?P<body>.*?)(<!-- /gen -->)", re.S)


class SourceMissing(Exception):
    """The file a block is generated from does not exist here (e.g. bundles not built)."""


# -- sources --------------------------------------------------------------------------------


def results_section(name: str) -> str:
    if not RESULTS.exists():
        raise SourceMissing(str(RESULTS))
    text = RESULTS.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not m:
        raise SourceMissing(f"section '## {name}' of {RESULTS}")
    return m.group(1)


def results_table(name: str) -> list[dict[str, str]]:
    """The first Markdown table of a RESULTS.md section, as rows keyed by header."""
    lines = [ln for ln in results_section(name).splitlines() if ln.startswith("|")]
    if len(lines) < 3:
        raise SourceMissing(f"a table in '## {name}'")
    cells = lambda ln: [c.strip() for c in ln.strip().strip("|").split("|")]  # noqa: E731
    head = cells(lines[0])
    return [dict(zip(head, cells(ln))) for ln in lines[2:]]


def ground_truth(model: str) -> dict:
    p = ZOO / model / "ground_truth.json"
    if not p.exists():
        raise SourceMissing(str(p))
    return json.loads(p.read_text(encoding="utf-8"))


def _num(cell: str) -> float:
    return float(re.sub(r"[^0-9.eE+-]", "", cell.split(" ")[0].replace("*", "")))


# -- generators: KEY -> text ------------------------------------------------------------------


def gen_bench_patching() -> str:
    """One sentence for README's patching paragraph, from the ``## patching`` table."""
    rows = results_table("patching")
    ps = [r["P"] for r in rows]
    def span(col: str) -> str:
        vals = [_num(r[col]) for r in rows if r.get(col, "—") not in ("—", "")]
        if not vals:
            return "—"
        lo, hi = min(vals), max(vals)
        return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"

    diff = max(float(x.split()[-1]) for r in rows for x in r["max abs diff vs ours"].split(","))
    parts = [f"{span('ours / (a)')}× the time of batched hooks with last-position logits"]
    if span("ours / TL classic") != "—":
        parts.append(f"{span('ours / TL classic')}× that of TransformerLens' `HookedTransformer`")
    if span("ours / TL Bridge") != "—":
        parts.append(f"{span('ours / TL Bridge')}× that of its `TransformerBridge`")
    parts.append(f"{span('ours / (c)')}× the causal limit")
    return (
        f"Exact grids match hand-written hooks to {diff:.0e} (tested at 1e-4). On a gpt2-small "
        f"shape on CPU (full 12-layer grid, P = {' and '.join(ps)} tokens) a grid takes "
        + ", ".join(parts[:-1]) + f" and {parts[-1]} (medians; `benchmarks/RESULTS.md`, which "
        "records the machine's load)."
    )


def gen_bundles() -> str:
    files = sorted(p for p in STATIC.glob("*.js") if not p.name.endswith(".iife.js"))
    if not files:
        raise SourceMissing(f"built bundles in {STATIC} (run the JS build)")
    sizes = [len(gzip.compress(p.read_bytes(), 9)) / 1000 for p in files]
    return f"{min(sizes):.0f}–{max(sizes):.0f} KB gzipped per view"


def _compiled_arch_table() -> str:
    a, b = ground_truth("induction")["architecture"], ground_truth("ioi")["architecture"]

    def params(x: dict) -> str:
        return f"{x['n_params']:,} ({x['n_params'] * 4 / 1e6:.1f} MB float32)"

    rows = [
        ("layers × heads", f"{a['n_layer']} × {a['n_head']}", f"{b['n_layer']} × {b['n_head']}"),
        ("d_model / d_head / d_mlp", f"{a['d_model']} / {a['d_head']} / {a['d_mlp']}", f"{b['d_model']} / {b['d_head']} / {b['d_mlp']}"),
        ("n_positions", str(a["n_positions"]), str(b["n_positions"])),
        ("vocab", f"{a['vocab_size']}: `<\\|endoftext\\|>` (0 = BOS = EOS = pad), `<\\|unk\\|>` (1), {a['vocab_size'] - 2} words",
         f"{b['vocab_size']}: the two specials, 30 names, {b['vocab_size'] - 32} template words/punctuation"),
        ("parameters", params(a), params(b)),
        ("attention", "eager, `scale_attn_weights`", "same"),
        ("MLPs", "all weights and biases 0 (output 0)", "same"),
        ("LayerNorms", "weight 1, bias 0", "same"),
        ("unembedding", "untied `lm_head` (`tie_word_embeddings: false`)", "same"),
    ]  # fmt: skip
    lines = ["| | `induction` | `ioi` |", "|---|---|---|"] + [f"| {k} | {x} | {y} |" for k, x, y in rows]
    return "\n".join(lines)


def gen_zoo_tiny_truth() -> str:
    t = ground_truth("tiny")["figures"]["truth_probe"]["probe_test_accuracy"]
    head = "| | " + " | ".join(t) + " |"
    vals = [f"**{v:.2f}**" if v >= 0.9 else f"{v:.2f}" for v in t.values()]
    return "\n".join([head, "|---" * (len(t) + 1) + "|", "| probe | " + " | ".join(vals) + " |"])


def gen_zoo_tiny_says_true() -> str:
    v = ground_truth("tiny")["figures"]["truth_probe"]["says_true_false_accuracy"]
    return f"{100 * v:.1f}%"


GENERATORS: dict[str, Callable[[], str]] = {
    "bench:patching": gen_bench_patching,
    "bundles": gen_bundles,
    "zoo:compiled-arch": _compiled_arch_table,
    "zoo:tiny-truth-probe": gen_zoo_tiny_truth,
    "zoo:tiny-says-true": gen_zoo_tiny_says_true,
}


# -- rewrite / check --------------------------------------------------------------------------


def _render(key: str, old_body: str) -> str:
    if key not in GENERATORS:
        raise KeyError(f"unknown generated block '{key}'; known: {sorted(GENERATORS)}")
    text = GENERATORS[key]()
    # a block on one line stays inline; a block on its own lines keeps the newlines around it
    return f"\n{text}\n" if old_body.startswith("\n") else text


def process(check: bool, docs: list[Path] = DOCS) -> list[str]:
    """Rewrite (or, with ``check``, compare) every block; return the problems found."""
    problems = []
    for path in docs:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")

        def sub(m: re.Match, path: Path = path) -> str:
            key, body = m.group("key"), m.group("body")
            try:
                new = _render(key, body)
            except SourceMissing as e:
                problems.append(f"{path.relative_to(ROOT)} [{key}]: source missing: {e}")
                return m.group(0)
            if new != body:
                problems.append(f"{path.relative_to(ROOT)} [{key}]: says {body.strip()!r}, its source gives {new.strip()!r}")
            return m.group(1) + new + m.group(4)

        new_text = BLOCK.sub(sub, text)
        if not check and new_text != text:
            path.write_text(new_text, encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="report stale blocks; change nothing")
    a = ap.parse_args(argv)
    problems = process(check=a.check)
    for p in problems:
        print(p)
    if a.check:
        return 1 if any("source missing" not in p for p in problems) else 0
    print(f"regenerated the marked blocks in {len(DOCS)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
