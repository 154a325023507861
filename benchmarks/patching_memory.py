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
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[4])
from _models import build_model
import mi_widgets as mw

mode, P, layers = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(2)
hf, tokenizer = build_model()
model = mw.wrap(hf, tokenizer, "gpt2-small-shape")
g = torch.Generator().manual_seed(1)
clean = " ".join(f"t{i}" for i in torch.randint(1, 50000, (P,), generator=g).tolist())
corrupt = " ".join(f"t{i}" for i in torch.randint(1, 50000, (P,), generator=g).tolist())
t0 = time.perf_counter()
if mode == "forward":
    with torch.no_grad():
        hf(model.to_tokens(clean))
else:
    r = mw.activation_patching(model, clean, corrupt, mw.logit_diff(1, 2), site="resid_pre",
                               positions="each", layers=layers, progress=False)
    assert r.values.shape == (len(layers), P)
seconds = time.perf_counter() - t0
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))
"""


def measure(mode: str, p: int, layers: list[int]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(p), json.dumps(layers), str(HERE)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    from _results import write_section

    write_section("patching memory", body)
    print(body)


if __name__ == "__main__":
    main()
