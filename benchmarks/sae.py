"""Benchmark: SAE training throughput on CPU, mi_widgets' trainer against SAELens' trainer.

Claim: ``mi_widgets.core.decomposition.sae.fit`` trains the same TopK SAE (d_in 128, d_sae 1024, k 16, AuxK on
dead latents, Adam lr 3e-4, batch 1024, unit-norm decoder) at a throughput comparable to SAELens'
``SAETrainer`` with ``TopKTrainingSAE``, on the same cached activations (zoo:tiny ``resid_pre[1]``
= ``blocks.1.hook_resid_pre`` over the embedded corpus). Both run on one thread, in separate
processes, timing only the training loop (the activations are cached for both), alternating
the two and keeping each one's fastest of ``--repeats`` runs. We also report
the activation store's end-to-end throughput (corpus text -> shuffled batches, nnsight traces)
against a plain batched ``model.hf`` forward over the same text.

SAELens setup (a separate venv that reuses this project's torch and transformers, so that both
trainers run the same torch 2.13 CPU build)::

    python -m venv /tmp/saelens-venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/saelens-venv/lib/python3.11/site-packages/_main_venv.pth
    /tmp/saelens-venv/bin/pip install sae-lens      # measured with sae-lens 6.54.12

Run: ``PYTHONPATH=. python benchmarks/sae.py`` (``--saelens-python PATH`` to point at another
interpreter, ``--tokens N``, ``--no-write`` to only print). Writes the ``sae`` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

D_SAE, K, BATCH, LR = 1024, 16, 1024, 3e-4

SAELENS_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import sae_lens
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
acts = torch.load(sys.argv[1])
d_sae, k, batch, lr = (int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
n_steps = acts.shape[0] // batch
# the same warm-up as mi_widgets' run: a 2-step fit of a tiny SAE (torch.optim's first use
# imports torch._dynamo), untimed
_w = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=8, k=2, aux_loss_coefficient=1 / 32))
_wc = SAETrainerConfig(total_training_samples=128, train_batch_size_samples=64, lr=lr, lr_end=lr, device="cpu",
                       dead_feature_window=2, feature_sampling_window=10**9)
SAETrainer(cfg=_wc, sae=_w, data_provider=iter([acts[:64], acts[64:128]])).fit()
torch.manual_seed(0)
sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=d_sae, k=k, aux_loss_coefficient=1 / 32))
cfg = SAETrainerConfig(total_training_samples=n_steps * batch, train_batch_size_samples=batch, lr=lr,
                       lr_end=lr, device="cpu", dead_feature_window=2, feature_sampling_window=10**9)
def provider():
    for i in range(n_steps):
        yield acts[i * batch:(i + 1) * batch]
trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider())
t0 = time.perf_counter()
trainer.fit()
dt = time.perf_counter() - t0
with torch.no_grad():
    x = acts[: 8 * batch]
    fve = 1 - (sae.decode(sae.encode(x)) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
print(json.dumps({"seconds": dt, "tokens": n_steps * batch, "fve": float(fve), "version": sae_lens.__version__}))
"""


def collect(model, n_tokens: int):
    from mi_widgets.core.decomposition.activation_store import ActivationStore, corpus_texts

    texts = corpus_texts()
    store = ActivationStore(model, "resid_pre", 1, texts, batch_size=BATCH, buffer_tokens=16 * BATCH, max_tokens=n_tokens, progress=False)
    t0 = time.perf_counter()
    acts = torch.cat(list(store))
    t_store = time.perf_counter() - t0
    n_texts = store.state_dict()["texts_read"] + 1
    # plain forward over (at least) the same texts, same batching, no reads
    from mi_widgets.core.decomposition.activation_store import tokenize_batch

    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n_texts, 64):
            ids, mask, _ = tokenize_batch(model, list(texts[i : i + 64]))
            model.hf(ids, attention_mask=mask)
    t_plain = time.perf_counter() - t0
    return acts, t_store, t_plain


def dashboard_pass(model, n_texts: int, batch_size: int = 32) -> dict:
    """The FeatureDashboard's dataset pass (``feature_pass``: encode inside the trace, keep
    per-feature counts, histograms, top-k and sampled examples) against a plain batched
    ``model.hf`` forward over the same texts, same batching; tokens/s of each."""
    from mi_widgets.core.decomposition.activation_store import tokenize_batch
    from mi_widgets.core.decomposition.features import default_texts, feature_pass
    from mi_widgets.core.decomposition.sae import SAE

    texts = default_texts(n_texts)
    sae = SAE(model.d_model, D_SAE, "topk", site="resid_pre", layer=1, k=K)
    t0 = time.perf_counter()
    data = feature_pass(model, sae, texts, batch_size=batch_size, progress=False)
    t_pass = time.perf_counter() - t0
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together, as the pass does
    n_tok = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids, mask, keep = tokenize_batch(model, [texts[j] for j in order[i : i + batch_size]])
            model.hf(ids, attention_mask=mask)
            n_tok += int(keep.sum())
    t_plain = time.perf_counter() - t0
    return {"texts": len(texts), "tokens": n_tok, "pass_s": t_pass, "plain_s": t_plain, "complete": data.complete}


def run_ours(acts: torch.Tensor) -> dict:
    from mi_widgets.core.decomposition.sae import SAE, fit

    fit(SAE(acts.shape[1], 8, "topk", k=2), [acts[:64]] * 2, steps=2, progress=False)  # warm-up: torch.optim's first use imports torch._dynamo (seconds)
    torch.manual_seed(0)
    sae = SAE(acts.shape[1], D_SAE, "topk", k=K, site="resid_pre", layer=1)
    n_steps = acts.shape[0] // BATCH
    batches = [acts[i * BATCH : (i + 1) * BATCH] for i in range(n_steps)]
    t0 = time.perf_counter()
    fit(sae, batches, steps=n_steps, lr=LR, aux_coefficient=1 / 32, progress=False, log_every=10**9)
    dt = time.perf_counter() - t0
    with torch.no_grad():
        x = acts[: 8 * BATCH]
        fve = 1 - (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    return {"seconds": dt, "tokens": n_steps * BATCH, "fve": float(fve)}


def run_saelens(acts: torch.Tensor, python: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.pt"
        torch.save(acts, path)
        script = Path(tmp) / "run_saelens.py"
        script.write_text(SAELENS_SCRIPT)
        out = subprocess.run(
            [python, str(script), str(path), str(D_SAE), str(K), str(BATCH), str(LR)],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
        )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"SAELens run failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64 * BATCH)
    ap.add_argument("--saelens-python", default="/tmp/saelens-venv/bin/python")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs per trainer; the median counts")
    ap.add_argument("--dashboard-texts", type=int, default=256, help="texts for the dashboard-pass measurement")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from _harness import setup

    setup(1)
    from mi_widgets.core.model import load

    model = load()
    acts, t_store, t_plain = collect(model, args.tokens)
    # the harness interleaves the two trainers; each times only its training loop, after the same
    # untimed warm-up (a 2-step fit of a tiny SAE) in its own process state
    from _harness import Measured, Run, compare

    def ours_fn():
        r = run_ours(acts)
        return Measured(r["seconds"], r)

    def theirs_fn():
        r = run_saelens(acts, args.saelens_python)
        return Measured(r["seconds"], r)

    contenders = {"ours": ours_fn}
    err = None
    try:
        theirs_fn()  # probe that SAELens runs at all (untimed)
        contenders["saelens"] = theirs_fn
    except (RuntimeError, FileNotFoundError, json.JSONDecodeError) as exc:
        err = str(exc)
    with Run("sae") as run:
        tm = compare(contenders, repeats=args.repeats, warmup=0)
    ours = {**tm["ours"].output, "seconds": tm["ours"].median}
    theirs = {**tm["saelens"].output, "seconds": tm["saelens"].median} if "saelens" in tm else None
    tps = ours["tokens"] / ours["seconds"]
    lines = [
        f"TopK SAE, d_in 128, d_sae {D_SAE}, k {K}, batch {BATCH}, Adam lr {LR}, {ours['tokens']:,} tokens of zoo:tiny "
        f"`resid_pre[1]` (cached), one thread, CPU; median of {args.repeats} interleaved runs each "
        f"(min–max: ours {tm['ours'].min:.2f}–{tm['ours'].max:.2f} s"
        + (f", SAELens {tm['saelens'].min:.2f}–{tm['saelens'].max:.2f} s" if "saelens" in tm else "")
        + "), training loop only, after the same untimed warm-up in each process.",
        "",
        run.header(),
        "",
        "| trainer | seconds | tokens/s | FVE (first 8k tokens) |",
        "|---|---|---|---|",
        f"| mi_widgets `fit` | {ours['seconds']:.2f} | {tps:,.0f} | {ours['fve']:.3f} |",
    ]
    if theirs is not None:
        tps2 = theirs["tokens"] / theirs["seconds"]
        lines.append(f"| SAELens {theirs['version']} `SAETrainer` + `TopKTrainingSAE` | {theirs['seconds']:.2f} | {tps2:,.0f} | {theirs['fve']:.3f} |")
        lines += ["", f"**Throughput ratio (mi_widgets / SAELens): {tps / tps2:.2f}x**"]
    else:
        lines += ["", f"SAELens could not be run ({err.splitlines()[0] if err else ''}); no ratio."]
    lines += [
        "",
        f"Activation store (corpus text -> shuffled `resid_pre[1]` batches, batched nnsight traces): "
        f"{acts.shape[0] / t_store:,.0f} tokens/s; a plain batched `model.hf` forward over the same texts "
        f"with no reads: {acts.shape[0] / t_plain:,.0f} tokens/s (store / plain time: {t_store / t_plain:.2f}x).",
    ]
    dp = None
    for _ in range(args.repeats):
        r = dashboard_pass(model, args.dashboard_texts)
        if dp is None:
            dp = r
        else:
            dp["pass_s"], dp["plain_s"] = min(dp["pass_s"], r["pass_s"]), min(dp["plain_s"], r["plain_s"])
    lines += [
        "",
        f"FeatureDashboard dataset pass (`feature_pass`, TopK SAE d_sae {D_SAE} on `resid_pre[1]`, top-20 examples with "
        f"context, 64-bin histograms, sampled band examples; {dp['texts']} corpus texts, {dp['tokens']:,} tokens, batches "
        f"of 32, fastest of {args.repeats}): {dp['tokens'] / dp['pass_s']:,.0f} tokens/s against a plain batched "
        f"`model.hf` forward over the same texts: {dp['tokens'] / dp['plain_s']:,.0f} tokens/s "
        f"(pass / plain time: {dp['pass_s'] / dp['plain_s']:.2f}x). On this 4-layer d 128 model the per-token "
        f"reductions over {D_SAE} features cost more than the forward itself.",
    ]
    from _harness import publish

    publish("sae", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
