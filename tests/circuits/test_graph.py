# ruff: noqa: F811  (fixtures imported from _circuit_tasks are redefined as arguments)
"""The edge graph's vocabulary and the functional forward it runs on."""

from __future__ import annotations

import torch
from _circuit_tasks import ioi_model, small_gpt2  # noqa: F401 (fixtures)

from mi_widgets.core.circuits._graph import Net, build_graph, count_edges


def test_gpt2_small_has_32491_edges():
    # 12 layers x 12 heads: the figure EAP-IG / auto-circuit report for gpt2-small
    assert count_edges(12, 12) == 32491
    assert build_graph(12, 12).n_edges == 32491


def test_edge_count_formula_matches_the_enumeration():
    for L in range(1, 5):
        for H in range(1, 5):
            assert build_graph(L, H).n_edges == count_edges(L, H)


def test_senders_precede_receivers():
    g = build_graph(3, 4)
    assert g.n_edges == 262
    for s, r in zip(g.edge_s.tolist(), g.edge_r.tolist()):
        node, kind = g.receivers[r]
        sender = g.senders[s]
        if node == "logits":
            continue
        if node.startswith("a"):  # a head hears input, earlier layers' heads and MLPs
            layer = int(node[1:].split(".")[0])
            assert sender == "input" or int(sender[1:].split(".")[0]) < layer
        else:  # an MLP also hears its own layer's heads
            layer = int(node[1:])
            assert sender == "input" or (sender.startswith("a") and int(sender[1:].split(".")[0]) <= layer) or int(sender[1:]) < layer
    assert g.edge_index("a0.h1", "a1.h2", "k") >= 0


def test_functional_forward_matches_hugging_face(small_gpt2, ioi_model):
    for model in (small_gpt2[0], ioi_model):
        net = Net(model)
        ids = model.to_tokens(small_gpt2[1][0]) if model is small_gpt2[0] else model.to_tokens(
            "When Mary and John went to the store, John gave a drink to"
        )
        with torch.no_grad():
            ref = model.hf(ids).logits[:, -1]
        mine, outs = net.run(net.embed(ids), record=True)
        torch.testing.assert_close(mine, ref, atol=1e-4, rtol=1e-4)
        # the residual stream is the sum of the sender outputs plus the constant biases
        assert outs.shape == (1, net.graph.n_senders, ids.shape[1], net.d)
