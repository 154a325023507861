"""The fast approximations agree with exact activation patching on the planted fact of zoo:tiny.

Thresholds, measured on the shipped weights over 6 same-length pairs from the ground-truth
record: Pearson r of attribution vs exact patching 0.95 (resid_pre), 0.98 (attn_out), 0.95
(mlp_out); causal tracing vs exact patching on resid_pre of the Eiffel prompt ≥ 0.95. We assert
r ≥ 0.9 (0.85 for causal tracing, a different corruption) and that the strongest cells coincide.

Rank correlation (Spearman), measured: over all cells 0.82 / 0.60 / 0.74 (attribution: resid_pre /
attn_out / mlp_out) and 0.87 (causal tracing); over the cells that matter (|exact| ≥ 0.05: 5, 1
and 3 cells; 5 for causal tracing) the ranks are identical (1.00). We assert ≥ 0.55 over all
cells (most cells are ≈ 0, where ranks are noise) and ≥ 0.95 over the cells that matter
wherever there are at least 3 of them.
"""

from __future__ import annotations

import pytest
import torch

import mi_widgets as mw

SIGNIFICANT = 0.05  # |normalised exact effect| of a cell that matters


def ranks_agree(exact: torch.Tensor, approx: torch.Tensor) -> tuple[float, float | None]:
    """Spearman over all cells, and over the cells that matter (None if fewer than 3)."""
    m = exact.abs() >= SIGNIFICANT
    return spearman(exact, approx), (spearman(exact[m], approx[m]) if int(m.sum()) >= 3 else None)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1].item()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    def rank(x: torch.Tensor) -> torch.Tensor:
        return x.flatten().argsort().argsort().float()

    return pearson(rank(a), rank(b))


@pytest.fixture(scope="module")
def pairs(tiny):
    recorded = mw.zoo.ground_truth("tiny")["figures"]["patching"]["pairs"]
    six = [p for p in recorded if tiny.to_tokens(p[0]).shape[1] == 6 == tiny.to_tokens(p[1]).shape[1]][:6]
    assert len(six) == 6
    answers = [(tiny.next_tokens(c, 1)[0][0], tiny.next_tokens(k, 1)[0][0]) for c, k in six]
    metric = mw.logit_diff([a for a, _ in answers], [b for _, b in answers])
    return [c for c, _ in six], [k for _, k in six], metric


@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "mlp_out"])
def test_attribution_patching_agrees_with_exact(tiny, pairs, site, capsys):
    clean, corrupt, metric = pairs
    exact = mw.activation_patching(tiny, clean, corrupt, metric, site=site, positions="each", progress=False)
    approx = mw.attribution_patching(tiny, clean, corrupt, metric, site=site, positions="each")
    r = pearson(exact.values, approx.values)
    rho_all, rho_sig = ranks_agree(exact.values, approx.values)
    with capsys.disabled():
        print(f"\n[agreement] {site}: pearson {r:.3f}, spearman {rho_all:.3f} (cells that matter: {rho_sig})")
    assert r >= 0.9
    assert rho_all >= 0.55
    assert rho_sig is None or rho_sig >= 0.95
    assert exact.values.flatten().argmax() == approx.values.flatten().argmax()


def test_causal_tracing_agrees_with_exact_patching(tiny):
    clean = "The Eiffel Tower is in"
    corrupt = "The Senso Temple is in"
    exact = mw.activation_patching(
        tiny, clean, corrupt, mw.logit_diff(" Paris", " Tokyo"), site="resid_pre", positions="each", progress=False
    )
    traced = mw.causal_tracing(tiny, clean, subject="The Eiffel Tower", sites=("resid_pre",), progress=False)
    grid = traced["resid_pre"].values
    assert grid.shape == exact.values.shape
    assert pearson(grid, exact.values) >= 0.85
    rho_all, rho_sig = ranks_agree(exact.values, grid)
    assert rho_all >= 0.55 and rho_sig is not None and rho_sig >= 0.95
    # both put the fact in the subject's embedding at layer 0 and at the last token afterwards
    assert grid[0].argmax() == exact.values[0].argmax() == 2  # " Eiffel"
    assert (grid[1:, -1] > 0.9).all() and (exact.values[1:, -1] > 0.8).all()
