"""Benchmark: a resid_pre layers × positions activation-patching grid on a gpt2-small-shaped model.

Claim: ``mw.activation_patching(..., site="resid_pre", positions="each")`` computes the exact grid
(max |diff| <= 1e-4 against a hand-written baseline) in at most 1.15× the time of the causal
limit, at P = 20 and P = 64 tokens, full 12-layer grid.

Model: ``GPT2LMHeadModel(GPT2Config())`` (12 layers, d_model 768, 12 heads, vocab 50257), random
init with seed 0, eager attention, float32, CPU, no download. Prompts: P random tokens (a
word-level tokenizer maps "t<id>" to id, so a prompt of P words is exactly P tokens); clean and
corrupt differ in every position. Metric: logit difference between the two tokens whose logits
move most between the clean and corrupt runs; normalised (0 = corrupt, 1 = clean).

Contenders (benchmarks/_harness.py: same thread count, one untimed warm-up each, interleaved
repeats, median and min–max; end to end, the clean/corrupt runs included):

- ``mi_widgets``: ``activation_patching`` with the default (direct) engine.
- ``mi_widgets (nnsight engine)`` (P <= 32): one nnsight trace per batch.
- (a) ``hooks``: the strong hand-written baseline: batched torch forward pre-hooks, one batched
  forward per layer (one row per patched position), last-position logits only
  (``logits_to_keep=1``).
- (b) TransformerLens ``patching.get_act_patch_resid_pre`` (one forward per (layer, position)),
  on the classic ``HookedTransformer`` (TL 3.x, ``$TL_CLASSIC_VENV``, default
  ``/tmp/saelens-venv``, which sae-lens 6.54.12 pulls transformer_lens 3.9.0 into) and on TL 4's
  ``TransformerBridge`` (``$TL_VENV``, default ``/tmp/tl-venv``). Each venv reuses this project's
  torch and transformers through a ``.pth`` file, as TL's install docs allow (``pip install
  transformer_lens``)::

      python -m venv /tmp/tl-venv
      echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/tl-venv/lib/python3.11/site-packages/_main.pth
      /tmp/tl-venv/bin/pip install transformer_lens

  TL runs in a worker process per venv that builds its model once, warms up once, and then
  answers each repeat as it comes, interleaved with the others; its time is measured inside the
  worker (``Measured``). TL's full grid at P = 64 takes minutes, so it gets ``--tl-repeats``
  (default 1) there.
- (c) the causal limit: patching cell (l, p) changes only blocks >= l at positions >= p, so an
  exact grid must run at least sum_l sum_p (L - l)(P - p) token-blocks (plus one clean and one
  corrupt forward); (a) runs L × P × P token-blocks per layer. The limit's time is (a)'s median
  × that token-block fraction.

Run: ``PYTHONPATH=. python benchmarks/patching.py`` (writes the ``## patching`` section of
benchmarks/RESULTS.md; ``--no-write`` to only print, ``--no-tl`` to skip TransformerLens).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Measured, Run, compare, md_table, publish, ratio, setup  # noqa: E402
from _models import build_model  # noqa: E402

TL_VENV = Path(os.environ.get("TL_VENV", "/tmp/tl-venv"))
TL_CLASSIC_VENV = Path(os.environ.get("TL_CLASSIC_VENV", "/tmp/saelens-venv"))


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
def run_hooks(hf, clean: torch.Tensor, corrupt: torch.Tensor, a: int, b: int, layers: list[int]) -> torch.Tensor:
    """(a): batched forward pre-hooks, one batched forward per layer, last-position logits."""
    blocks = hf.transformer.h
    cache: dict[int, torch.Tensor] = {}
    hooks = [blk.register_forward_pre_hook(lambda m, args, i=i: cache.__setitem__(i, args[0])) for i, blk in enumerate(blocks)]
    try:
        lc = hf(clean, logits_to_keep=1).logits[0, -1]
    finally:
        for h in hooks:
            h.remove()
    lx = hf(corrupt, logits_to_keep=1).logits[0, -1]
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
            logits = hf(corrupt.expand(t, t), logits_to_keep=1).logits[:, -1]
        finally:
            hook.remove()
        grid[k] = (logits[:, a] - logits[:, b] - ld_x) / (ld_c - ld_x)
    return grid


def causal_fraction(n_layers: int, layers: list[int], p: int) -> float:
    """Token-blocks an exact grid must run over those (a) runs (both with the clean and corrupt
    forwards)."""
    base = 2 * n_layers * p
    limit = base + sum((n_layers - layer) * (p - q) for layer in layers for q in range(p))
    hooks = base + len(layers) * n_layers * p * p
    return limit / hooks


TL_WORKER = r"""
import json, sys, time, torch, warnings
warnings.filterwarnings("ignore")
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from transformers import AutoTokenizer, GPT2LMHeadModel
from transformer_lens import patching
d = args["model_dir"]
hf = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()
if args["mode"] == "bridge":
    from transformer_lens.model_bridge import TransformerBridge
    model = TransformerBridge.boot_transformers(d, hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(d))
else:  # classic HookedTransformer, built offline from the same weights (raw: no folding)
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
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    del hf
model.eval()
data = torch.load(args["data"])
from importlib.metadata import version
print(json.dumps({"version": version("transformer_lens")}), flush=True)
for line in sys.stdin:
    key = line.strip()
    item = data[key]
    clean, corrupt, a, b = item["clean"], item["corrupt"], item["a"], item["b"]
    t0 = time.perf_counter()
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupt_logits = model(corrupt)
        ld_c = (clean_logits[0, -1, a] - clean_logits[0, -1, b]).item()
        ld_x = (corrupt_logits[0, -1, a] - corrupt_logits[0, -1, b]).item()
        metric = lambda logits: (logits[0, -1, a] - logits[0, -1, b] - ld_x) / (ld_c - ld_x)
        g = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, metric)
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "grid": g.tolist()}), flush=True)
"""


class TLWorker:
    """A TransformerLens process in its own venv: model built once, one grid per request."""

    def __init__(self, venv: Path, mode: str, model_dir: str, data: str, threads: int):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        args = json.dumps({"model_dir": model_dir, "data": data, "threads": threads, "mode": mode})
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "python"), "-c", TL_WORKER, args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(self.proc.stderr.read()[-2000:])  # type: ignore[union-attr]
        self.version = json.loads(line)["version"]

    def __call__(self, key: str) -> Measured:
        self.proc.stdin.write(key + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(self.proc.stderr.read()[-2000:])  # type: ignore[union-attr]
        r = json.loads(line)
        return Measured(r["seconds"], torch.tensor(r["grid"]))

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tl-repeats-large", type=int, default=1, help="TransformerLens repeats for P > 32 (its full grid takes minutes)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-tl", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    setup(a.threads)
    sys.path.insert(0, str(ROOT))
    import mi_widgets as mw

    hf, tok = build_model()
    model = mw.wrap(hf, tok, "gpt2-small-random")
    n_layers = hf.config.n_layer
    layers = list(range(n_layers))
    items, rows = {}, []
    for p in a.sizes:
        clean_s, corrupt_s, clean, corrupt = prompts(p, hf.config.vocab_size)
        assert model.to_tokens(clean_s).shape[1] == p
        ans_a, ans_b = answer_tokens(hf, clean, corrupt)
        items[f"P{p}"] = {"clean": clean, "corrupt": corrupt, "a": ans_a, "b": ans_b, "s": (clean_s, corrupt_s)}
    tl_workers: dict[str, TLWorker | str] = {}
    with tempfile.TemporaryDirectory() as d, Run("patching") as run:
        if not a.no_tl:
            hf.save_pretrained(d)
            tok.save_pretrained(d)
            data = str(Path(d) / "data.pt")
            torch.save({k: {kk: v for kk, v in it.items() if kk != "s"} for k, it in items.items()}, data)
            for mode, venv in (("classic", TL_CLASSIC_VENV), ("bridge", TL_VENV)):
                if not (venv / "bin" / "python").exists():
                    tl_workers[mode] = f"not run: no venv at `{venv}`"
                    continue
                try:
                    tl_workers[mode] = TLWorker(venv, mode, d, data, a.threads)
                except RuntimeError as e:
                    tl_workers[mode] = f"failed to start: `{str(e).strip().splitlines()[-1]}`"
        for p in a.sizes:
            it = items[f"P{p}"]
            clean_s, corrupt_s = it["s"]
            fns = {
                "mi_widgets": partial(run_mi_widgets, model, clean_s, corrupt_s, it["a"], it["b"], layers, "auto"),
                "hooks": partial(run_hooks, hf, it["clean"], it["corrupt"], it["a"], it["b"], layers),
            }
            if p <= 32:
                fns["nnsight"] = partial(run_mi_widgets, model, clean_s, corrupt_s, it["a"], it["b"], layers, "nnsight")
            t = compare(fns, repeats=a.repeats, warmup=1)
            for mode, w in tl_workers.items():
                if isinstance(w, TLWorker):  # TL interleaved with a fresh round of ours
                    reps = a.repeats if p <= 32 else a.tl_repeats_large
                    try:
                        tt = compare({f"tl_{mode}": partial(w, f"P{p}"), f"mi_widgets_{mode}": fns["mi_widgets"]}, repeats=reps, warmup=1)
                    except RuntimeError as e:  # reported in the table's notes, not fatal
                        tl_workers[mode] = f"the run failed at P = {p}: `{str(e).strip().splitlines()[-1]}`"
                        continue
                    t[f"tl_{mode}"] = tt[f"tl_{mode}"]
                    t[f"mi_widgets_{mode}"] = tt[f"mi_widgets_{mode}"]
            frac = causal_fraction(n_layers, layers, p)
            ours = t["mi_widgets"]
            row = {"P": p, "t": t, "frac": frac, "limit": t["hooks"].median * frac}
            row["diff"] = {k: float((ours.output - v.output).abs().max()) for k, v in t.items() if k != "mi_widgets" and not k.startswith("mi_widgets_")}
            rows.append(row)
            print(
                f"P={p}: ours {ours.cell()}  hooks {t['hooks'].cell()}  ours/hooks {ratio(ours, t['hooks']):.2f}  "
                f"ours/limit {ours.median / row['limit']:.2f}  diffs {row['diff']}",
                flush=True,
            )
            if not a.no_write and p != a.sizes[-1]:  # a long run leaves its finished sizes behind
                from _harness import loadavg
                from _results import write_section

                run.load_after, run.seconds = loadavg(), time.perf_counter() - run.t0
                write_section("patching", report(rows, tl_workers, run, a) + f"\n\n_Partial: P = {', '.join(str(r['P']) for r in rows)} done; the run goes on._")
    for w in tl_workers.values():
        if isinstance(w, TLWorker):
            w.close()
    body = report(rows, tl_workers, run, a)
    publish("patching", body, write=not a.no_write)
    ok = all(d <= 1e-4 for r in rows for d in r["diff"].values())
    if not ok:
        print("GRIDS DISAGREE (max |diff| > 1e-4)", file=sys.stderr)
        sys.exit(1)


def report(rows: list[dict], tl: dict, run: Run, a: argparse.Namespace) -> str:
    lines = [
        '`activation_patching(model, clean, corrupt, logit_diff(a, b), site="resid_pre", positions="each")`, '
        "full 12-layer × P grid, on `GPT2LMHeadModel(GPT2Config())` (random init, seed 0, float32, eager, CPU). "
        "Seconds end to end: median (min–max) over the repeats, contenders interleaved after one untimed "
        "warm-up each (benchmarks/_harness.py). (a) = batched torch hooks, one batched forward per layer, "
        "`logits_to_keep=1`; (b) = TransformerLens `get_act_patch_resid_pre`; (c) = the causal limit, "
        "(a)'s median × the token-block fraction an exact grid must run. Ratios are of medians; "
        "ours / X below 1 means ours is faster. `PYTHONPATH=. python benchmarks/patching.py`.",
        "",
        run.header(),
        "",
    ]
    table = []
    for r in rows:
        t, ours = r["t"], r["t"]["mi_widgets"]
        nn = t["nnsight"].cell() if "nnsight" in t else "—"
        cells = []
        for mode in ("classic", "bridge"):
            k = f"tl_{mode}"
            if k in t:  # ours against TL from the same interleaved rounds
                cells += [f"{t[k].cell()} ×{len(t[k].seconds)}", f"{ratio(t[f'mi_widgets_{mode}'], t[k]):.3f}"]
            else:
                cells += ["—", "—"]
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in r["diff"].items())
        table.append(
            [r["P"], len(ours.seconds), ours.cell(), nn, t["hooks"].cell(), f"{ratio(ours, t['hooks']):.3f}", *cells,
             f"{r['frac']:.3f}", f"{r['limit']:.2f}", f"**{ours.median / r['limit']:.2f}**", diffs]
        )  # fmt: skip
    lines.append(
        md_table(
            ["P", "repeats", "mi_widgets (s)", "nnsight engine (s)", "(a) hooks (s)", "ours / (a)",
             "(b) TL HookedTransformer (s)", "ours / TL classic", "(b) TL Bridge (s)", "ours / TL Bridge",
             "(c) token-block fraction", "(c) limit (s)", "ours / (c)", "max abs diff vs ours"],
            table,
        )  # fmt: skip
    )
    met = [f"P = {r['P']}: {r['t']['mi_widgets'].median / r['limit']:.2f}×" for r in rows]
    ok = all(d <= 1e-4 for r in rows for d in r["diff"].values())
    lines += [
        "",
        f"Target ours ≤ 1.15× the causal limit: {'; '.join(met)} "
        f"({'met' if all(r['t']['mi_widgets'].median <= 1.15 * r['limit'] for r in rows) else 'not met'}). "
        f"Max abs difference ≤ 1e-4 against every other contender: {'met' if ok else '**not met**'}.",
        "",
    ]
    for mode, what in (("classic", "TL classic `HookedTransformer`"), ("bridge", "TL `TransformerBridge`")):
        w = tl.get(mode)
        if isinstance(w, TLWorker):
            how = (
                "built offline from the same random weights (`HookedTransformerConfig` for the gpt2-small shape, "
                "`convert_gpt2_weights`, `load_and_process_state_dict` with no folding or centring)"
                if mode == "classic"
                else "`TransformerBridge.boot_transformers` around the same HF model (raw weights)"
            )
            venv = TL_CLASSIC_VENV if mode == "classic" else TL_VENV
            lines.append(f"- {what}: transformer_lens {w.version} in `{venv}` (installed with `pip install`, torch and transformers reused from this project's venv), {how}; one worker process, warmed up once; its repeats are interleaved with a fresh round of ours, and its ratio is against those rounds.")
        elif w is None:
            lines.append(f"- {what}: not run (`--no-tl`).")
        else:
            lines.append(f"- {what}: {w}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
