# ruff: noqa: F811  (fixtures imported from _circuit_tasks are redefined as arguments)
"""ACDC: the batched pruning equals the sequential algorithm, and finds the planted circuits."""

from __future__ import annotations

import pytest
import torch
from _circuit_tasks import (  # noqa: F401 (fixtures)
    IOI_PLANTED,
    induction_model,
    induction_task,
    ioi_model,
    ioi_task,
    is_decoy_edge,
    roc_auc,
    small_gpt2,
)

from mi_widgets.core.circuits import acdc


def _sequential_acdc(task, prior: torch.Tensor, threshold: float) -> torch.Tensor:
    """Conmy et al.'s loop, one edge per forward: the reference for the batched version."""
    g = task.graph
    removed = torch.zeros(g.n_edges, dtype=torch.bool)
    base = float(task.evaluate(task.keep_masks(~removed[None]))[0])
    for r in range(g.n_receivers - 1, -1, -1):
        node = g.receivers[r][0]
        incoming = (g.edge_r == r).nonzero()[:, 0]
        if node != "logits" and bool(removed[g.edge_s == g.sender_index(node)].all()):
            removed[incoming] = True
            continue
        for e in incoming[torch.argsort(prior[incoming].abs(), stable=True)].tolist():
            trial = removed.clone()
            trial[e] = True
            v = float(task.evaluate(task.keep_masks(~trial[None]))[0])
            if abs(v - base) < threshold:
                removed, base = trial, v
    return ~removed


def test_batched_acdc_equals_the_sequential_algorithm(small_gpt2):
    model, clean, corrupt, metric = small_gpt2
    c = acdc(model, clean, corrupt, metric, threshold=0.02, order="eap", curve=False, progress=False)
    kept = int(c.in_circuit.sum())
    assert 3 < kept < c.n_edges - 10  # a threshold that keeps some edges and prunes others
    ref = _sequential_acdc(c.task, c.info["prior_scores"], 0.02)
    assert torch.equal(c.in_circuit, ref)


def test_zoo_ioi_acdc_recovers_the_planted_circuit(ioi_model, ioi_task):
    clean, corrupt, metric = ioi_task
    c = acdc(ioi_model, clean, corrupt, metric, threshold=0.5, progress=False, curve=False)
    found = {e for e, k in zip(c.edge_ids, c.in_circuit.tolist()) if k}
    assert {"a0.h1->a1.h2<k>", "a1.h2->a2.h3<q>", "a2.h3->logits"} <= found
    assert found == set(IOI_PLANTED)
    assert not any(is_decoy_edge(e) for e in found)
    assert len(found) <= 0.05 * c.n_edges
    assert c.faithfulness() >= 0.9  # >= 90 % of the logit difference with the circuit alone
    assert c.faithfulness(knockout=True) <= 0.1  # complete: without it the task is gone
    planted = torch.tensor([e in IOI_PLANTED for e in c.edge_ids])
    assert roc_auc(c.scores, planted) >= 0.95


def test_zoo_induction_acdc_finds_previous_token_to_induction_key(induction_model, induction_task):
    clean, corrupt, metric = induction_task
    c = acdc(induction_model, clean, corrupt, metric, threshold=0.5, progress=False, curve=False)
    found = {e for e, k in zip(c.edge_ids, c.in_circuit.tolist()) if k}
    assert "a0.h1->a1.h2<k>" in found
    assert "a1.h2->logits" in found
    decoys = ("a0.h0", "a0.h2", "a0.h3", "a1.h0", "a1.h1", "a1.h3")
    assert not any(d in e for e in found for d in decoys)
    assert c.faithfulness() >= 0.9


def test_bad_threshold_and_order_raise(small_gpt2):
    model, clean, corrupt, metric = small_gpt2
    with pytest.raises(ValueError, match="threshold"):
        acdc(model, clean, corrupt, metric, threshold=-1)
    with pytest.raises(ValueError, match="threshold"):
        acdc(model, clean, corrupt, metric, threshold="0.1")
    with pytest.raises(ValueError, match="order"):
        acdc(model, clean, corrupt, metric, threshold=0.1, order="random")
