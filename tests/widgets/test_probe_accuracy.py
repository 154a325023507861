"""ProbeAccuracy (mi_widgets/widgets/probe_accuracy.py): curves, the "layer" request's confusion
matrix, ranking and token colouring, traits, static export. On the embedded trained model
(zoo:tiny) with a small sentiment probe; needs the built JS bundle."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import traitlets

from mi_widgets import wire
from mi_widgets.core.concepts.probes import ProbeDataset, ProbeResult, probe
from mi_widgets.core.decomposition.activations import token_activations
from mi_widgets.widgets.probe_accuracy import ProbeAccuracy


@pytest.fixture(scope="module")
def result(tiny):
    r = probe(tiny, ProbeDataset.from_zoo("sentiment", n=120, n_ood=40), seeds=(0, 1), progress=False)
    return r.add_overlay("after erasure", {0: 0.5, 1: 0.55})


@pytest.fixture
def view(result, tiny):
    return ProbeAccuracy.from_result(result, model=tiny)


def hand_confusion(result, key):
    """Confusion counts from the raw test scores and labels, by loops (row = true, col = pred)."""
    lo, hi = result.classes
    m = [[0, 0], [0, 0]]
    for j, i in enumerate(result.test_index):
        pred = hi if float(result.test_scores[key][j]) > 0 else lo
        m[result.classes.index(result.labels[i])][result.classes.index(pred)] += 1
    return m


def test_curves_are_mean_min_max_sd_over_seeds_plus_overlays(view, result):
    assert view.curve_names == ["train", "validation", "test", "ood", "control", "baseline", "after erasure"]
    assert view.curve_kinds[-1] == "overlay" and set(view.curve_kinds[:-1]) == {"split"}
    assert view.hidden_curves == ["validation"]
    stats = wire.decode(view.stats)
    assert stats.shape == (7, len(result.layers), 4)
    for li, key in enumerate(result.layers):
        v = [r["accuracy"] for r in result.rows if (r["site"], r["layer"]) == key and r["split"] == "ood"]
        assert len(v) == 2
        m = sum(v) / 2
        assert stats[3, li].tolist() == pytest.approx([m, min(v), max(v), abs(v[0] - v[1]) / 2], abs=1e-6)
    over = stats[6, :, 0]
    assert math.isnan(over[0]) and over[1] == pytest.approx(0.5) and over[2] == pytest.approx(0.55)
    assert all(math.isnan(x) for x in over[3:])
    assert [k["name"] for k in view.layers] == ["embed", "resid_post 0", "resid_post 1", "resid_post 2", "resid_post 3"]


def test_confusion_matches_hand_count_and_the_probes_test_accuracy(view, result):
    for key in result.layers:
        view.request("layer", {"site": key[0], "layer": key[1]})
        assert (view.selected_site, view.selected_layer) == key
        conf = wire.decode(view.panel["confusion"]).tolist()
        assert conf == hand_confusion(result, key)
        assert sum(map(sum, conf)) == len(result.test_index) == view.panel["n_test"]
        acc0 = next(r["accuracy"] for r in result.rows if (r["site"], r["layer"]) == key and r["split"] == "test" and r["seed"] == 0)
        assert view.panel["accuracy"] == pytest.approx(acc0)
    # the planted sentiment is read at every block (zoo:tiny), not from the embedding of " is"
    assert wire.decode(view.layer_panel(2)["confusion"]).trace() == len(result.test_index)
    assert view.layer_panel("embed")["accuracy"] < 0.7


def test_examples_are_ranked_by_probe_score_both_ways(view, result):
    key = ("resid_post", 1)
    scores = result.test_scores[key]
    view.request("layer", {"site": "resid_post", "layer": 1})
    ex = view.panel["examples"]
    assert len(ex) == len(result.test_index)  # 36 test examples <= max_examples
    got = [e["score"] for e in ex]
    assert got == sorted(got, reverse=True)
    for e in ex:
        j = result.test_index.index(e["index"])
        assert e["score"] == pytest.approx(float(scores[j]))
        assert e["label"] == result.labels[e["index"]]
        assert e["pred"] == (1 if float(scores[j]) > 0 else 0)
    assert [e["rank"] for e in ex] == list(range(len(ex)))
    assert view.panel["texts"] == [result.texts[e["index"]] for e in ex]
    # ranked for the other class: the order reverses and scores are negated
    view.request("layer", {"site": "resid_post", "layer": 1, "rank_class": 0})
    assert view.rank_class == 0
    assert [e["index"] for e in view.panel["examples"]] == [e["index"] for e in sorted(ex, key=lambda e: e["score"])]
    # more examples than max_examples: the highest and the lowest halves, with their ranks
    view.rank_class = 1
    view.max_examples = 10
    ex10 = view.panel["examples"]
    assert [e["rank"] for e in ex10] == [0, 1, 2, 3, 4, 31, 32, 33, 34, 35]
    assert [e["index"] for e in ex10] == [ex[r]["index"] for r in (0, 1, 2, 3, 4, 31, 32, 33, 34, 35)]


def test_token_colouring_is_the_direction_projection(view, result, tiny):
    view.select(2)
    p = view.panel
    assert p["tokens"] is True and p["centre"] == "boundary"
    ref = token_activations(tiny, p["texts"], "resid_post", 2, direction=result.direction(2))
    values = torch.from_numpy(wire.decode(p["values"]).copy())
    assert torch.allclose(values, ref.unit_values(result.direction(2)), atol=1e-5)
    assert p["str_tokens"] == ref.str_tokens
    # at the read (last) token, projection - offset is the probe's own decision value
    ends = torch.tensor([len(t) for t in ref.str_tokens]).cumsum(0) - 1
    got = values[ends] - p["offset"]
    want = torch.tensor([e["score"] for e in p["examples"]])
    assert torch.allclose(got, want, atol=2e-3), (got - want).abs().max()
    # the embedding row reads resid_pre of block 0
    view.select("embed")
    ref0 = token_activations(tiny, view.panel["texts"], "resid_pre", 0, direction=result.direction("embed"))
    assert torch.allclose(torch.from_numpy(wire.decode(view.panel["values"]).copy()), ref0.unit_values(result.direction("embed")), atol=1e-5)


def test_selected_layer_is_settable_and_observable(view):
    seen = []
    view.observe(lambda c: seen.append(c["new"]), "selected_layer")
    view.selected_layer = 3
    assert view.panel["name"] == "resid_post 3" and view.status == "ready"
    view.selected_layer = -1
    assert view.panel["name"] == "embed" and view.selected_site == "resid_pre"
    view.selected_layer = 1  # from the embedding back to a block: the plotted site
    assert view.panel["name"] == "resid_post 1"
    with pytest.raises(traitlets.TraitError, match="selected_layer must be one of .*got 9"):
        view.selected_layer = 9
    assert view.selected_layer == 1 and view.panel["name"] == "resid_post 1"
    view.selected_layer = None
    assert view.panel == {}
    assert seen[:3] == [3, -1, 1]


def test_bad_requests_and_arguments_are_clear(view, result):
    with pytest.raises(ValueError, match="no probe at layer 7"):
        view.request("layer", {"site": "resid_post", "layer": 7})
    with pytest.raises(ValueError, match="rank_class must be one of"):
        view.request("layer", {"layer": 1, "rank_class": 5})
    with pytest.raises(ValueError, match="ProbeResult"):
        ProbeAccuracy.from_result("not a result")
    with pytest.raises(ValueError, match="band"):
        ProbeAccuracy.from_result(result, band="iqr")
    with pytest.raises(ValueError, match="max_examples"):
        ProbeAccuracy.from_result(result, max_examples=1)


def test_without_a_model_the_panel_has_no_token_colouring(result):
    w = result.widget()
    assert isinstance(w, ProbeAccuracy) and w.has_model is False
    w.select(1)
    assert w.panel["tokens"] is False and "values" not in w.panel
    assert wire.decode(w.panel["confusion"]).tolist() == hand_confusion(result, ("resid_post", 1))


def test_multiclass_scores_confusion_and_ranking():
    """A [n_test, K] score matrix: argmax predictions, ranking by the chosen class's column."""
    g = torch.Generator().manual_seed(0)
    n, K, d = 30, 3, 8
    labels = [i % K for i in range(60)]
    test_index = list(range(0, 60, 2))
    scores = torch.randn(n, K, generator=g)
    r = ProbeResult(
        model_name="m", dataset="colours", rows=[
            {"site": "resid_post", "layer": 0, "name": "resid_post 0", "seed": 0, "split": "test", "accuracy": 0.5, "auroc": float("nan"), "C": 1.0}
        ],
        layers=[("resid_post", 0)], directions={("resid_post", 0): torch.randn(K, d, generator=g)},
        texts=[f"text {i}" for i in range(60)], labels=labels, test_index=test_index,
        test_scores={("resid_post", 0): scores},
    )
    w = ProbeAccuracy.from_result(r)
    assert w.classes == [0, 1, 2] and w.rank_class == 2
    w.select(0)
    want = torch.zeros(K, K, dtype=torch.long)
    for j, i in enumerate(test_index):
        want[labels[i], int(scores[j].argmax())] += 1
    assert wire.decode(w.panel["confusion"]).tolist() == want.tolist()
    w.rank_class = 1
    assert [e["index"] for e in w.panel["examples"]] == [test_index[j] for j in torch.argsort(scores[:, 1], descending=True).tolist()]


def test_static_export_carries_panels_and_keeps_hostile_text_literal(result, tiny, tmp_path):
    hostile = "</script><script>window.__pwned=3</script> <!--<script>"
    texts = list(result.texts)
    for i in result.test_index[:3]:
        texts[i] = hostile + texts[i]
    r = ProbeResult(**{**result.__dict__, "texts": texts})
    w = ProbeAccuracy.from_result(r, model=tiny)
    html = w.to_html(tmp_path / "probe.html").read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in html
    state = json.loads(re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', html, re.S).group(1))
    assert state["static"] is True
    cache = state["panel_cache"]
    assert set(cache) == {f"{s}|{layer}" for s, layer in result.layers}
    best = w.best_layer()
    assert state["static_layer"] == {"site": best[0], "layer": best[1]}
    assert cache[f"{best[0]}|{best[1]}"]["tokens"] is True
    assert cache["resid_pre|-1"]["tokens"] is False
    shown = [t for p in cache.values() for t in p["texts"]]
    assert any(t.startswith(hostile) for t in shown)
    for key in result.layers:
        p = cache[f"{key[0]}|{key[1]}"]
        assert wire.decode(p["confusion"]).tolist() == hand_confusion(result, key)
    # the copy kept in a notebook's outputs computes no token colouring of its own
    small = ProbeAccuracy.from_result(r, model=tiny)._static_extra(32)["panel_cache"]
    assert not any(p["tokens"] for p in small.values())
