"""Benchmark: all-layer linear probing (13 layers, d = 768, 4,000 examples) against scikit-learn.

Claim: ``mi_widgets``' torch logistic probe (float32 L-BFGS with an analytic gradient on standardised features at d = 768, C chosen on the
validation split from ``C_GRID``, warm-started along the grid) reaches the same test accuracy as
a scikit-learn ``LogisticRegression`` loop over the same cached activations (within 1 point per
layer), and we report the time ratio.

Data (no model): per layer ``l`` of 13, Gaussian activations ``X ~ N(0, diag(s))`` (per-dim
scales 0.5..3) plus ``±signal_l * u`` along a planted unit direction ``u``, with
``signal_l`` growing linearly with depth (0 at the embedding to 0.15 at the last layer, times
each dimension's scale and sqrt(d)). Same seeded train/validation/test split (55/15/30) for both; both pick C
from the same grid by validation accuracy and report test accuracy. Timing: fitting only
(activations are cached for both), one seed, ``torch.set_num_threads(1)`` and sklearn on one
thread (``OMP_NUM_THREADS=1``), after one untimed warm-up of each, best of ``--repeats``.

Run: ``PYTHONPATH=. python benchmarks/probes.py`` (writes the ``probes`` section of
benchmarks/RESULTS.md; ``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mi_widgets.core.concepts.probes import C_GRID, fit_with_validation  # noqa: E402

N_LAYERS, D, N = 13, 768, 4000


def make_data(seed: int = 0, max_signal: float = 0.15):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(N, generator=g) < 0.5).long()
    u = torch.randn(D, generator=g)
    u /= u.norm()
    scales = torch.linspace(0.5, 3.0, D)
    layers = []
    for layer in range(N_LAYERS):
        signal = max_signal * layer / (N_LAYERS - 1)
        X = torch.randn(N, D, generator=g) * scales
        X += (signal * (2 * y[:, None] - 1) * u * scales * D**0.5).float()
        layers.append(X.float())
    perm = torch.randperm(N, generator=g)
    n_te, n_va = int(0.3 * N), int(0.15 * N)
    te, va, tr = perm[:n_te], perm[n_te : n_te + n_va], perm[n_te + n_va :]
    return layers, y, tr, va, te


def run_torch(layers, y, tr, va, te):
    accs = []
    for X in layers:
        fit = fit_with_validation(X[tr], y[tr], X[va], y[va], C_GRID)
        accs.append(float((fit.predict(X[te]) == y[te]).double().mean()))
    return accs


def run_sklearn(layers, y, tr, va, te):
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    accs = []
    yn = y.numpy()
    for X in layers:
        Xn = X.numpy().astype(np.float64)
        sc = StandardScaler().fit(Xn[tr])
        Ztr, Zva, Zte = sc.transform(Xn[tr]), sc.transform(Xn[va]), sc.transform(Xn[te])
        best, best_acc = None, -1.0
        for C in sorted(C_GRID):
            m = LogisticRegression(C=C, max_iter=1000).fit(Ztr, yn[tr])
            a = float((m.predict(Zva) == yn[va]).mean())
            if a > best_acc:
                best, best_acc = m, a
        accs.append(float((best.predict(Zte) == yn[te]).mean()))
    return accs


def main(argv=None):
    from _harness import Run, compare, ratio, setup

    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    setup(1)
    data = make_data()
    # first call in this process, one layer each, before anything else is timed: both libraries'
    # one-time costs (torch's first L-BFGS step imports torch._dynamo and sympy, seconds)
    small = (data[0][:1], *data[1:])
    t = time.perf_counter()
    run_torch(*small)
    cold_torch = time.perf_counter() - t
    t = time.perf_counter()
    run_sklearn(*small)
    cold_sk = time.perf_counter() - t
    with Run("probes") as run:
        # the same warm-up (one full untimed run each) and interleaved, rotated repeats
        tm = compare({"mi_widgets": lambda: run_torch(*data), "scikit-learn": lambda: run_sklearn(*data)}, repeats=a.repeats, warmup=1)
    acc_torch, acc_sk = tm["mi_widgets"].output, tm["scikit-learn"].output
    diff = max(abs(x - z) for x, z in zip(acc_torch, acc_sk))
    r = ratio(tm["mi_widgets"], tm["scikit-learn"])
    lines = [
        f"All-layer probing, {N_LAYERS} layers × d = {D} × {N} examples (synthetic, planted direction "
        "growing with depth), C from the same 5-value grid on validation; fitting time only, one CPU thread; "
        "benchmarks/_harness.py (one untimed full run each, interleaved repeats, median and min–max).",
        "",
        run.header(),
        "",
        "| layer | mi_widgets test acc | scikit-learn test acc |",
        "|---|---|---|",
    ]
    lines += [f"| {i} | {x:.3f} | {z:.3f} |" for i, (x, z) in enumerate(zip(acc_torch, acc_sk))]
    lines += [
        "",
        f"- max |test accuracy difference|: {diff * 100:.2f} points (target ≤ 1)",
        f"- mi_widgets (torch L-BFGS, float32, analytic gradient, tol 1e-4 as scikit-learn's default): {tm['mi_widgets'].cell()} s; "
        f"scikit-learn LogisticRegression (lbfgs) loop: {tm['scikit-learn'].cell()} s (median (min–max) of {a.repeats}); "
        f"ratio of medians mi_widgets / scikit-learn = {r:.2f}x ({'mi_widgets' if r < 1 else 'scikit-learn'} faster)",
        f"- first call in a fresh process (one layer, before the warm-up): mi_widgets {cold_torch:.2f} s, scikit-learn "
        f"{cold_sk:.2f} s; torch's first L-BFGS step pays a one-time import (torch._dynamo, sympy) of a few seconds",
        "- run: `PYTHONPATH=. python benchmarks/probes.py`",
    ]
    from _harness import publish

    publish("probes", "\n".join(lines), write=not a.no_write)


if __name__ == "__main__":
    main()
