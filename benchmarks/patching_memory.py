"""Peak memory of a resid_pre layers × positions patching sweep with P = 256 tokens.

Claim (issue 4): on a gpt2-small-shaped model (random init, CPU) the sweep stays under 4 GB
peak RSS, because it is chunked and never materialises full-vocabulary logits for every row.
Baseline in the same run: the peak RSS of the process after loading the model and running one
plain forward over the same prompt (what any method must pay), so the table shows what the
sweep adds. Peak RSS is the kernel's ``ru_maxrss`` of a fresh child process per measurement.

A full 12-layer grid at P = 256 takes many minutes on 2 CPU cores; memory does not depend on
how many layers are swept (each layer is its own sequence of batches), so the default sweeps
layers 0 and 11 (the longest and shortest suffixes). ``--layers all`` sweeps every layer.

Run: ``python benchmarks/patching_memory.py`` (writes the "patching memory" section of RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

def measure(mode: str, p: int, layers: list[int]) -> dict:
    from _harness import peak_rss

    sweep = """
        r = mw.activation_patching(model, clean, corrupt, mw.logit_diff(1, 2), site="resid_pre",
                                   positions="each", layers=args, progress=False)
        assert r.values.shape == (len(args), P)
    """
    return peak_rss(mode, p, sweep, args=layers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--p", type=int, default=256)
    ap.add_argument("--layers", default="0,11", help="comma-separated layers or 'all'")
    args = ap.parse_args()
    layers = list(range(12)) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    from _harness import Run

    t0 = time.perf_counter()
    with Run("patching memory") as run:
        base = measure("forward", args.p, layers)
        sweep = measure("sweep", args.p, layers)
    body = "\n".join([
        run.header(),
        "",
        f"gpt2-small shape (12 layers, d 768, vocab 50257, random init, float32, CPU, 2 threads), "
        f"P = {args.p} tokens, resid_pre, positions='each', layers {layers}. Peak RSS of a fresh "
        "process (`ru_maxrss`).",
        "",
        "| run | peak RSS (MB) | time (s) |",
        "|---|---:|---:|",
        f"| baseline: load + one plain forward | {base['peak_mb']:.0f} | {base['seconds']:.1f} |",
        f"| mi_widgets sweep | {sweep['peak_mb']:.0f} | {sweep['seconds']:.1f} |",
        "",
        f"Sweep / baseline peak: {sweep['peak_mb'] / base['peak_mb']:.2f}×; target: under 4,096 MB "
        f"({'met' if sweep['peak_mb'] < 4096 else 'NOT met'}). Total benchmark time {time.perf_counter() - t0:.0f} s.",
    ])
    from _harness import publish

    publish("patching memory", body)


if __name__ == "__main__":
    main()
