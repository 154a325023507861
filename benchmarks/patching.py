"""Benchmark: a resid_pre layers × positions activation-patching grid on a gpt2-small-shaped model.

Claim: ``mw.activation_patching(..., site="resid_pre", positions="each")`` is faster than the
usual hand-written approach (batched torch forward hooks, one full forward per layer with one row
per position, full logits) and gives the same grid (max |diff| <= 1e-4).

Model: ``GPT2LMHeadModel(GPT2Config())`` (12 layers, d_model 768, 12 heads, vocab 50257), random
init with seed 0, eager attention, float32, CPU, no download. Prompts: P random tokens (a
word-level tokenizer maps "t<id>" to id, so a prompt of P words is exactly P tokens); clean and
corrupt differ in every position. Metric: logit difference between the two tokens whose logits
move most between the clean and corrupt runs; normalised (0 = corrupt, 1 = clean).

Methods, each timed end to end (caching the clean run included), best of ``--repeats`` rounds
(``--repeats-large`` for P > 32; TransformerLens runs once):

- ``mi_widgets``: ``activation_patching`` with the default (direct) engine: each layer's batch
  starts at block l from the cached corrupt residual stream, batches of nearby positions start at
  their first patched position (earlier positions' keys/values come from the corrupt run), and
  only last-position logits are computed.
- ``mi_widgets (nnsight engine)``: one nnsight trace per batch (``.skip()`` over blocks before l,
  last-position logits; no key/value reuse).
- ``torch hooks``: the hand-written baseline described above.
- ``TransformerLens`` (optional, two columns): ``transformer_lens.patching.get_act_patch_resid_pre``,
  which runs one full forward per (layer, position), on

  * the classic ``HookedTransformer`` (what most TL users run): built offline from the same
    random weights, with a ``HookedTransformerConfig`` written out for the gpt2-small shape
    (act_fn ``gelu_new``, LN, n_ctx 1024, d_vocab 50257, eps 1e-5) and TL's
    ``pretrained.weight_conversions.convert_gpt2_weights``, loaded with
    ``load_and_process_state_dict(fold_ln=False, center_writing_weights=False,
    center_unembed=False, fold_value_biases=False)`` so that it is the same function (no hub
    access). TransformerLens 4 removed ``HookedTransformer``, so this uses the last 3.x release,
    in a venv at ``$TL_CLASSIC_VENV`` (default ``/tmp/tl3-venv``)::

        python -m venv /tmp/tl3-venv
        /tmp/tl3-venv/bin/pip install torch==2.13.0 transformer_lens==3.9.0

    (here it was installed with ``--no-deps`` plus ``better-abc``, reusing the 4.x venv's torch
    2.13 / transformers 5.24 through a ``.pth`` file; its ``HookedTransformer`` is the classic
    class, deprecated but unchanged in 3.x);
  * TL 4's ``TransformerBridge`` (``TransformerBridge.boot_transformers`` around the same HF
    model, raw weights: no compatibility-mode folding), in a venv at ``$TL_VENV`` (default
    ``/tmp/tl-venv``)::

        python -m venv /tmp/tl-venv
        /tmp/tl-venv/bin/pip install torch==2.13.0 transformer_lens

  Each column runs when its venv exists. TransformerLens is not a dependency of mi_widgets (it
  pins its own transformers/torch ranges and pulls in wandb, datasets, ...), so it lives in its
  own venvs and runs in subprocesses (one repeat; for a layer subset, TL's
  ``generic_activation_patch`` with an ``index_df`` of those cells).

For P = 64 a full 12-layer grid of the baselines takes minutes on a 2-core CPU, so P = 64 uses
layers 3 and 8 (their mean remaining depth, 6.5 blocks, equals the full grid's, so the ratio is
representative) and skips the nnsight-engine column; ``--full`` runs every layer.

Run: ``PYTHONPATH=. python benchmarks/patching.py`` (writes the ``## patching`` section of
benchmarks/RESULTS.md; ``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TL_VENV = Path(os.environ.get("TL_VENV", "/tmp/tl-venv"))
TL_CLASSIC_VENV = Path(os.environ.get("TL_CLASSIC_VENV", "/tmp/tl3-venv"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import build_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# --------------------------------------------------------------------------------------------
# Model and prompts
# --------------------------------------------------------------------------------------------


def prompts(p: int, vocab: int) -> tuple[str, str, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(p)
    clean = torch.randint(1, vocab, (p,), generator=g)
    corrupt = torch.randint(1, vocab, (p,), generator=g)
    text = lambda ids: " ".join(f"t{i}" for i in ids.tolist())  # noqa: E731
    return text(clean), text(corrupt), clean[None], corrupt[None]


def answer_tokens(hf, clean: torch.Tensor, corrupt: torch.Tensor) -> tuple[int, int]:
    with torch.no_grad():
        d = hf(clean).logits[0, -1] - hf(corrupt).logits[0, -1]
    return int(d.argmax()), int(d.argmin())


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def run_mi_widgets(
    model, clean: str, corrupt: str, a: int, b: int, layers: list[int], engine: str
) -> torch.Tensor:
    import mi_widgets.core.metrics as M
    from mi_widgets.core.interventions.patching import activation_patching

    res = activation_patching(
        model,
        clean,
        corrupt,
        M.logit_diff(a, b),
        site="resid_pre",
        positions="each",
        layers=layers,
        engine=engine,
        progress=False,
    )
    return res.values


@torch.no_grad()
def run_hooks(
    hf, clean: torch.Tensor, corrupt: torch.Tensor, a: int, b: int, layers: list[int]
) -> torch.Tensor:
    """The hand-written baseline: batched forward pre-hooks, full logits."""
    blocks = hf.transformer.h
    cache: dict[int, torch.Tensor] = {}
    hooks = [
        blk.register_forward_pre_hook(lambda m, args, i=i: cache.__setitem__(i, args[0]))
        for i, blk in enumerate(blocks)
    ]
    try:
        lc = hf(clean).logits[0, -1]
    finally:
        for h in hooks:
            h.remove()
    lx = hf(corrupt).logits[0, -1]
    ld_c, ld_x = lc[a] - lc[b], lx[a] - lx[b]
    t = clean.shape[1]
    rows = torch.arange(t)
    grid = torch.empty(len(layers), t)
    for k, layer in enumerate(layers):

        def patch(m, args, layer=layer):
            h = args[0].clone()
            h[rows, rows] = cache[layer][0, rows]
            return (h,) + args[1:]

        hook = blocks[layer].register_forward_pre_hook(patch)
        try:
            logits = hf(corrupt.expand(t, t)).logits  # [t, t, vocab]: full logits
        finally:
            hook.remove()
        ld = logits[:, -1, a] - logits[:, -1, b]
        grid[k] = (ld - ld_x) / (ld_c - ld_x)
    return grid


TL_SCRIPT = r"""
import json, sys, time, torch
import pandas as pd
from transformers import AutoTokenizer, GPT2LMHeadModel
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
import warnings
warnings.filterwarnings("ignore")
from transformer_lens import patching
d = args["model_dir"]
hf = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()
if args["mode"] == "bridge":
    from transformer_lens.model_bridge import TransformerBridge
    model = TransformerBridge.boot_transformers(d, hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(d))
else:  # classic HookedTransformer, built offline from the same weights
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions,
        act_fn="gelu_new", normalization_type="LN", eps=c.layer_norm_epsilon,
        positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False, device="cpu",
    )
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
        center_unembed=False, fold_value_biases=False,
    )
    del hf
model.eval()  # raw weights (no LayerNorm folding / centering): the same function as the HF model
data = torch.load(args["data"])
from importlib.metadata import version
out = {"version": version("transformer_lens"), "results": {}}
for key, item in data.items():
    clean, corrupt, a, b, layers = item["clean"], item["corrupt"], item["a"], item["b"], item["layers"]
    t = clean.shape[1]
    best, grid = None, None
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        with torch.no_grad():
            clean_logits, clean_cache = model.run_with_cache(clean)
            corrupt_logits = model(corrupt)
            ld_c = (clean_logits[0, -1, a] - clean_logits[0, -1, b]).item()
            ld_x = (corrupt_logits[0, -1, a] - corrupt_logits[0, -1, b]).item()
            metric = lambda logits: (logits[0, -1, a] - logits[0, -1, b] - ld_x) / (ld_c - ld_x)
            if layers is None:
                g = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, metric)
            else:  # a subset of layers: TL's own index_df form of the same sweep
                idx = pd.DataFrame([(l, p) for l in layers for p in range(t)], columns=["layer", "pos"])
                g = patching.generic_activation_patch(
                    model, corrupt, clean_cache, metric, patch_setter=patching.layer_pos_patch_setter,
                    activation_name="resid_pre", index_df=idx,
                )
                g = g.reshape(len(layers), t)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        grid = g
    out["results"][key] = {"seconds": best, "grid": grid.tolist()}
print(json.dumps(out))
"""


def run_transformer_lens(
    model_dir: str, items: dict, repeats: int, threads: int, mode: str = "bridge"
) -> dict | None:
    """``mode="bridge"``: TransformerBridge in ``$TL_VENV``; ``"classic"``: HookedTransformer in
    ``$TL_CLASSIC_VENV``. ``None`` when that venv does not exist."""
    py = (TL_VENV if mode == "bridge" else TL_CLASSIC_VENV) / "bin" / "python"
    if not py.exists():
        return None
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "data.pt"
        torch.save(items, data)
        args = json.dumps(
            {
                "model_dir": model_dir,
                "data": str(data),
                "repeats": repeats,
                "threads": threads,
                "mode": mode,
            }
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run(
            [str(py), "-c", TL_SCRIPT, args], capture_output=True, text=True, env=env
        )
    if proc.returncode != 0:
        print("TransformerLens run failed:\n" + proc.stderr[-3000:], file=sys.stderr)
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def best_of(fns: dict, repeats: int) -> dict[str, tuple[float, torch.Tensor]]:
    """Best time of each method over ``repeats`` rounds, the methods interleaved within a round
    (so that load from other processes on a shared machine hits them alike)."""
    best: dict[str, tuple[float, torch.Tensor]] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            if name not in best or dt < best[name][0]:
                best[name] = (dt, out)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 64])
    ap.add_argument("--repeats", type=int, default=2, help="rounds per method for P <= 32")
    ap.add_argument("--repeats-large", type=int, default=2, help="rounds per method for P > 32")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)"
    )
    ap.add_argument("--full", action="store_true", help="all 12 layers for every P")
    ap.add_argument(
        "--no-tl", action="store_true", help="skip TransformerLens even if its venv exists"
    )
    ap.add_argument("--no-nnsight", action="store_true", help="skip the nnsight-engine column")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(ROOT))
    import mi_widgets as mw

    t_start = time.perf_counter()
    hf, tok = build_model()
    model = mw.wrap(hf, tok, "gpt2-small-random")
    rows = []
    tl_items = {}
    for p in a.sizes:
        layers = list(range(12)) if (a.full or p <= 32) else [3, 8]
        clean_s, corrupt_s, clean, corrupt = prompts(p, hf.config.vocab_size)
        assert model.to_tokens(clean_s).shape[1] == p
        ans_a, ans_b = answer_tokens(hf, clean, corrupt)
        run_mi_widgets(model, clean_s, corrupt_s, ans_a, ans_b, [layers[-1]], "auto")  # warm-up
        fns = {
            "mi_widgets": partial(
                run_mi_widgets, model, clean_s, corrupt_s, ans_a, ans_b, layers, "auto"
            )
        }
        if not a.no_nnsight and p <= 32:
            fns["nnsight"] = partial(
                run_mi_widgets, model, clean_s, corrupt_s, ans_a, ans_b, layers, "nnsight"
            )
        fns["hooks"] = partial(run_hooks, hf, clean, corrupt, ans_a, ans_b, layers)
        reps = a.repeats if p <= 32 else a.repeats_large
        best = best_of(fns, reps)
        t_mw, g_mw = best["mi_widgets"]
        t_hk, g_hk = best["hooks"]
        t_nn, g_nn = best.get("nnsight", (None, None))
        row = {
            "P": p,
            "layers": layers,
            "repeats": reps,
            "mi_widgets": t_mw,
            "nnsight": t_nn,
            "hooks": t_hk,
            "diff_hooks": float((g_mw - g_hk).abs().max()),
            "diff_nnsight": float((g_nn - g_hk).abs().max()) if g_nn is not None else None,
            "grid": g_mw,
        }
        rows.append(row)
        tl_items[f"P{p}"] = {
            "clean": clean,
            "corrupt": corrupt,
            "a": ans_a,
            "b": ans_b,
            "layers": None if len(layers) == 12 else layers,
        }
        print(
            f"P={p:3d} layers={len(layers):2d}: mi_widgets {t_mw:7.2f}s"
            + (f"  nnsight engine {t_nn:7.2f}s" if t_nn is not None else "")
            + f"  torch hooks {t_hk:7.2f}s  ratio {t_hk / t_mw:5.2f}x  max|diff| {row['diff_hooks']:.1e}",
            flush=True,
        )
    tl: dict[str, dict | None] = {"classic": None, "bridge": None}
    if not a.no_tl:
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d)
            tok.save_pretrained(d)
            for mode in ("classic", "bridge"):
                tl[mode] = run_transformer_lens(d, tl_items, 1, a.threads, mode)
        for mode, res in tl.items():
            if not (res and "results" in res):
                continue
            for row in rows:
                r = res["results"][f"P{row['P']}"]
                row[f"tl_{mode}"] = r["seconds"]
                row[f"diff_tl_{mode}"] = float((row["grid"] - torch.tensor(r["grid"])).abs().max())
                print(
                    f"P={row['P']:3d}: TransformerLens {mode} {r['seconds']:7.2f}s  "
                    f"ratio {r['seconds'] / row['mi_widgets']:5.2f}x  max|diff| {row[f'diff_tl_{mode}']:.1e}"
                )
    total = time.perf_counter() - t_start
    print(f"total {total:.0f}s")
    ok = all(
        r["diff_hooks"] <= 1e-4
        and (r["diff_nnsight"] is None or r["diff_nnsight"] <= 1e-4)
        and all(r.get(f"diff_tl_{m}", 0.0) <= 1e-4 for m in ("classic", "bridge"))
        for r in rows
    )
    if not ok:
        print("GRIDS DISAGREE (max |diff| > 1e-4)", file=sys.stderr)
    if not a.no_write:
        write_results(rows, tl, a, total, ok)
    if not ok:
        sys.exit(1)


def _tl_note(mode: str, res: dict | None) -> str:
    what = (
        "TransformerLens classic `HookedTransformer`"
        if mode == "classic"
        else "TransformerLens `TransformerBridge`"
    )
    venv = TL_CLASSIC_VENV if mode == "classic" else TL_VENV
    if res is None:
        return f"{what}: not run (no venv at `{venv}`; see the script docstring)."
    if "error" in res:
        return f"{what}: the run failed: `{res['error']}`."
    how = (
        "a `HookedTransformerConfig` for the gpt2-small shape (act_fn gelu_new, LN, n_ctx 1024, "
        "d_vocab 50257) and `convert_gpt2_weights` from the same random weights, loaded with "
        "`load_and_process_state_dict(fold_ln=False, center_writing_weights=False, "
        "center_unembed=False, fold_value_biases=False)` (no hub access)"
        if mode == "classic"
        else "`TransformerBridge.boot_transformers` around the same HF model (raw weights, "
        "no compatibility-mode folding)"
    )
    return f"{what}: transformer_lens {res['version']} in `{venv}`, {how}."


def write_results(
    rows: list[dict], tl: dict[str, dict | None], a: argparse.Namespace, total: float, ok: bool
) -> None:
    import nnsight
    import transformers
    from _results import write_section

    lines = [
        '`activation_patching(model, clean, corrupt, logit_diff(a, b), site="resid_pre", positions="each")` '
        "(layers × positions grid) against hand-written batched torch forward hooks (one full forward "
        "per layer, one row per position, full logits) and TransformerLens "
        "`patching.get_act_patch_resid_pre` (one full forward per (layer, position)) on the classic "
        "`HookedTransformer` and on TL 4's `TransformerBridge`, on a gpt2-small-shaped model "
        "(`GPT2Config()` defaults: 12 layers, d_model 768, vocab 50257; random init, seed 0, float32, eager "
        "attention) on CPU. Times are end to end (clean/corrupt caching included), best of the "
        "repeats shown; ratio = baseline time / mi_widgets time (higher is better for us). Produced by "
        "`PYTHONPATH=. python benchmarks/patching.py`.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__} with "
        f"{a.threads} thread(s), transformers {transformers.__version__}, nnsight {getattr(nnsight, '__version__', '?')}. "
        f"Total benchmark time {total:.0f} s.",
        "",
        "| P tokens | layers | repeats | mi_widgets (s) | nnsight engine (s) | torch hooks (s) | hooks / ours "
        "| TL HookedTransformer (s) | TL classic / ours | TL Bridge (s) | TL Bridge / ours | max abs diff vs hooks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        nn = f"{r['nnsight']:.2f}" if r["nnsight"] is not None else "—"
        cells = []
        for m in ("classic", "bridge"):
            k = f"tl_{m}"
            cells.append(f"{r[k]:.2f}" if k in r else "—")
            cells.append(f"{r[k] / r['mi_widgets']:.2f}×" if k in r else "—")
        diffs = f"{r['diff_hooks']:.1e}"
        if r["diff_nnsight"] is not None:
            diffs += f" (nnsight engine {r['diff_nnsight']:.1e})"
        for m, lab in (("classic", "TL classic"), ("bridge", "TL Bridge")):
            if f"diff_tl_{m}" in r:
                diffs += f" ({lab} {r[f'diff_tl_{m}']:.1e})"
        lay = "all 12" if len(r["layers"]) == 12 else ", ".join(map(str, r["layers"]))
        lines.append(
            f"| {r['P']} | {lay} | {r['repeats']} | {r['mi_widgets']:.2f} | {nn} | {r['hooks']:.2f} | "
            f"{r['hooks'] / r['mi_widgets']:.2f}× | {' | '.join(cells)} | {diffs} |"
        )
    lines += [
        "",
        "Grids agree within 1e-4 (normalised units)."
        if ok
        else "**Grids disagree by more than 1e-4.**",
        "",
        "How TransformerLens was set up (each in its own venv, run in a subprocess, one repeat; "
        "for a layer subset, `generic_activation_patch` with an `index_df` of those cells):",
        "",
        "- " + _tl_note("classic", tl.get("classic")),
        "- " + _tl_note("bridge", tl.get("bridge")),
        "",
        "P = 64 patches layers 3 and 8 unless run with `--full`: their mean remaining depth "
        "(6.5 blocks) equals the full grid's, and the full grid of the baselines takes minutes here. "
        "The mi_widgets, nnsight-engine and hooks columns run interleaved, `repeats` rounds each; "
        "the best round counts.",
    ]
    write_section("patching", "\n".join(lines))
    print(f"wrote the patching section of {RESULTS}")


if __name__ == "__main__":
    main()
