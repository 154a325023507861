"""Every view's user-settable traits refuse bad values on assignment from Python (issue 16):
``traitlets.TraitError`` naming the trait and the value, the view's whole state unchanged, and
a good assignment still works afterwards. One table per view; views on zoo:tiny (or hand-built
results where the view needs no model). TokenActivations' traits are tested with that view."""

from __future__ import annotations

import json
import math

import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets import wire
from mi_widgets.core.circuits.circuit import Circuit
from mi_widgets.core.concepts.probes import ProbeDataset, probe
from mi_widgets.core.decomposition.features import LinearDictionary
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.core.validation import TestResult, Verdict
from mi_widgets.widgets.ablation import Ablation
from mi_widgets.widgets.attention_patterns import AttentionPatterns
from mi_widgets.widgets.circuit_graph import CircuitGraph
from mi_widgets.widgets.feature_dashboard import FeatureDashboard
from mi_widgets.widgets.hypothesis_card import HypothesisCard
from mi_widgets.widgets.patchscope import Patchscope
from mi_widgets.widgets.steering import Steering

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"
NAN, INF = float("nan"), float("inf")


def _circuit() -> Circuit:
    nodes = ["input", "a0.h0", "a0.h1", "m0", "logits"]
    s = ["input", "input", "a0.h0", "a0.h1", "m0", "a0.h0"]
    r = ["a0.h0", "m0", "m0", "logits", "logits", "logits"]
    return Circuit(
        model_name="hand", n_layers=1, n_heads=2, method="eap", metric_name="m", senders=s, receivers=r,
        kinds=["q", "", "", "", "", ""], scores=torch.tensor([0.5, -1.0, 2.0, 0.1, -0.3, 0.7]),
        in_circuit=torch.zeros(6, dtype=torch.bool), nodes=nodes,
    )


def _verdict() -> Verdict:
    tests = [TestResult(f"test {i}", 0.5, 0.8, ">=", False, "acc") for i in range(4)]
    return Verdict("1.2", "previous-token head", "zoo:tiny", tests, [])


def _dashboard(tiny) -> FeatureDashboard:
    g = torch.Generator().manual_seed(0)
    sae = LinearDictionary.from_directions(torch.randn(3, tiny.d_model, generator=g), site="resid_pre", layer=0)
    return FeatureDashboard(tiny, sae, [CLEAN, "The Colosseum is in Rome."], background=False, k=5)


def _probe(tiny):
    r = probe(tiny, ProbeDataset.from_zoo("sentiment", n=40, n_ood=0), seeds=(0,), progress=False)
    return r.widget(model=tiny)


BUILD = {
    "AttentionPatterns": lambda m: AttentionPatterns(m, CLEAN),
    "LogitLens": lambda m: mw.logit_lens(m, CLEAN, k=3).widget(),
    "PatchingGrid": lambda m: mw.activation_patching(
        m, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False).widget(),
    "ProbeAccuracy": _probe,
    "Ablation": lambda m: Ablation.from_result(
        ablate(m, [CLEAN], mw.logit_diff(" Paris", " Tokyo"), ["0.0", "0.1"], kind="zero", separately=True, progress=False)),
    "CircuitGraph": lambda m: CircuitGraph(_circuit(), n_edges_shown=2),
    "FeatureDashboard": _dashboard,
    "HypothesisCard": lambda m: HypothesisCard(_verdict()),
    "Patchscope": lambda m: Patchscope(m, CLEAN),
    "Steering": lambda m: Steering(m, CLEAN, {"v": torch.ones(m.d_model)}, layer=0, coef=2.0),
}

# (view, trait, bad value): bool as int, float for int, NaN / inf, negative, out of range,
# unknown choice, wrong type (a string where a list or a number is meant)
BAD = [
    ("AttentionPatterns", "sort_by", "size"),
    ("AttentionPatterns", "sort_by", 3),
    ("AttentionPatterns", "selected_head", "9.9"),
    ("AttentionPatterns", "selected_head", "layer one"),
    ("AttentionPatterns", "selected_position", True),
    ("AttentionPatterns", "selected_position", 1.5),
    ("AttentionPatterns", "selected_position", NAN),
    ("AttentionPatterns", "selected_position", -2),
    ("AttentionPatterns", "selected_position", 99),
    ("AttentionPatterns", "selected_position", "2"),
    ("LogitLens", "k", 0),
    ("LogitLens", "k", True),
    ("LogitLens", "k", -1),
    ("LogitLens", "k", 4),  # the result holds the top 3
    ("LogitLens", "k", 2.5),  # (an integral float such as 2.0 is 2, as traitlets casts it)
    ("LogitLens", "selected_position", -5),
    ("LogitLens", "selected_position", 99),
    ("LogitLens", "lens", "tuned"),  # no tuned lens given
    ("LogitLens", "lens", "bogus"),
    ("PatchingGrid", "k", 0),
    ("PatchingGrid", "k", True),
    ("PatchingGrid", "k", 2.5),
    ("PatchingGrid", "mode", "fast"),
    ("PatchingGrid", "site", "mlp_post"),
    ("PatchingGrid", "selected_cell", {"layer": 99, "position": 0}),
    ("PatchingGrid", "selected_cell", {"layer": 0}),
    ("PatchingGrid", "selected_cell", "0,1"),
    ("ProbeAccuracy", "max_examples", 1),
    ("ProbeAccuracy", "max_examples", True),
    ("ProbeAccuracy", "max_examples", 2.5),
    ("ProbeAccuracy", "rank_class", 7),
    ("ProbeAccuracy", "rank_class", True),
    ("ProbeAccuracy", "selected_layer", 99),
    ("ProbeAccuracy", "selected_layer", "1"),
    ("ProbeAccuracy", "selected_site", "mlp_out"),
    ("ProbeAccuracy", "site", "mlp_out"),
    ("ProbeAccuracy", "band", "iqr"),
    ("ProbeAccuracy", "hidden_curves", "test"),
    ("ProbeAccuracy", "hidden_curves", ["nope"]),
    ("Ablation", "selected_component", "9.9"),
    ("Ablation", "selected_component", 3),
    ("Ablation", "selected_prompt", 1),
    ("Ablation", "selected_prompt", -1),
    ("Ablation", "selected_prompt", True),
    ("Ablation", "k", 0),
    ("Ablation", "k", NAN),
    ("CircuitGraph", "n_edges_shown", -1),
    ("CircuitGraph", "n_edges_shown", 7),
    ("CircuitGraph", "n_edges_shown", True),
    ("CircuitGraph", "n_edges_shown", 2.5),
    ("CircuitGraph", "selected_node", "a9.h9"),
    ("CircuitGraph", "selected_node", None),
    ("FeatureDashboard", "selected", 3),
    ("FeatureDashboard", "selected", -2),
    ("FeatureDashboard", "selected", True),
    ("FeatureDashboard", "k", 0),
    ("FeatureDashboard", "coef", NAN),
    ("FeatureDashboard", "coef", INF),
    ("FeatureDashboard", "coef", True),
    ("FeatureDashboard", "coef", "2"),
    ("FeatureDashboard", "prompt", ""),
    ("FeatureDashboard", "prompt", 5),
    ("HypothesisCard", "selected_test", 4),
    ("HypothesisCard", "selected_test", -2),
    ("HypothesisCard", "selected_test", True),
    ("HypothesisCard", "selected_test", 1.5),
    ("Patchscope", "selected_layer", 99),
    ("Patchscope", "selected_layer", -2),
    ("Patchscope", "selected_position", 99),
    ("Patchscope", "selected_position", True),
    ("Patchscope", "n_tokens", 0),
    ("Patchscope", "n_tokens", 65),
    ("Patchscope", "target_layers", []),
    ("Patchscope", "target_layers", [99]),
    ("Patchscope", "target_layers", [True]),
    ("Patchscope", "target_layers", "all"),
    ("Patchscope", "target_position", 99),
    ("Steering", "layer", 99),
    ("Steering", "layer", -1),
    ("Steering", "layer", True),
    ("Steering", "coef", NAN),
    ("Steering", "coef", True),
    ("Steering", "coef_min", -INF),
    ("Steering", "max_new_tokens", 0),
    ("Steering", "max_new_tokens", 10**6),
    ("Steering", "vector", "nope"),
    ("Steering", "site", "mlp_post"),
    ("Steering", "seed", -1),
    ("Steering", "seed", 1.5),
]

# (view, trait, good value, what the view then shows)
GOOD = {
    "AttentionPatterns": ("selected_position", 2),
    "LogitLens": ("k", 2),
    "PatchingGrid": ("selected_cell", {"layer": 1, "position": 2}),
    "ProbeAccuracy": ("hidden_curves", ["train"]),
    "Ablation": ("k", 3),
    "CircuitGraph": ("n_edges_shown", 6),
    "FeatureDashboard": ("coef", -2.5),
    "HypothesisCard": ("selected_test", 3),
    "Patchscope": ("target_layers", [0, 1]),
    "Steering": ("layer", 1),
}


@pytest.fixture(scope="module")
def views(tiny):
    return {name: build(tiny) for name, build in BUILD.items()}


def _snapshot(w) -> str:
    return json.dumps(wire.to_static(w.state()), sort_keys=True, default=repr)


@pytest.mark.parametrize(("view", "trait", "bad"), BAD, ids=[f"{v}.{t}={b!r}" for v, t, b in BAD])
def test_a_bad_value_is_refused_and_the_view_is_unchanged(views, view, trait, bad):
    w = views[view]
    before, value = _snapshot(w), getattr(w, trait)
    with pytest.raises(traitlets.TraitError) as err:
        setattr(w, trait, bad)
    msg = str(err.value)
    assert trait in msg, msg
    shown = ["nan" if isinstance(bad, float) and math.isnan(bad) else repr(bad), str(bad)]
    shown += [repr(x) for x in bad] if isinstance(bad, list) else []  # or the list item refused
    assert any(s in msg for s in shown), msg  # the value refused is named
    assert getattr(w, trait) == value
    assert _snapshot(w) == before


def test_every_view_has_a_table_and_each_trait_is_real(views):
    assert set(BUILD) == {v for v, _, _ in BAD} == set(GOOD)
    for view, trait, _ in BAD:
        assert views[view].has_trait(trait) and views[view].trait_metadata(trait, "sync"), (view, trait)


@pytest.mark.parametrize("view", sorted(GOOD))
def test_a_good_value_still_works_after_the_refusals(views, view):
    w = views[view]
    trait, good = GOOD[view]
    for v, t, bad in BAD:
        if v == view:
            with pytest.raises(traitlets.TraitError):
                setattr(w, t, bad)
    setattr(w, trait, good)
    assert getattr(w, trait) == good


def test_what_the_errors_say_is_allowed(views):
    cases = [
        (views["LogitLens"], "k", 0, "k must be an int in 1..3, got 0"),
        (views["CircuitGraph"], "n_edges_shown", 7, "n_edges_shown must be an int in 0..6, got 7"),
        (views["FeatureDashboard"], "selected", True, "selected must be an int, got True"),
        (views["FeatureDashboard"], "coef", NAN, "coef must be a finite number, got nan"),
        (views["Steering"], "vector", "nope", "vector must be one of ['v'], got 'nope'"),
        (views["HypothesisCard"], "selected_test", 4, "selected_test must be -1 (none) or an int in 0..3, got 4"),
    ]
    for w, trait, bad, message in cases:
        with pytest.raises(traitlets.TraitError) as err:
            setattr(w, trait, bad)
        assert str(err.value) == message
