"""The ``palette`` trait (mi_widgets/widgets/palette.py) on every view: each palette name is
accepted and synced; anything else is refused with a TraitError that names the allowed values,
and the view keeps its palette. Views built cheaply on zoo:tiny; needs the built JS bundles."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
import traitlets

import mi_widgets as mw
import mi_widgets.widgets
from mi_widgets.widgets._base import MIWidget
from mi_widgets.widgets.palette import DEFAULT_PALETTE, PALETTES

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"
METRIC = (" Paris", " Tokyo")


def _circuit_graph(tiny):
    from mi_widgets.core.circuits.circuit import Circuit
    from mi_widgets.widgets.circuit_graph import CircuitGraph

    nodes = ["input", "a0.h0", "a0.h1", "m0", "logits"]
    senders = ["input", "input", "input", "a0.h0", "a0.h1", "m0"]
    receivers = ["a0.h0", "a0.h1", "m0", "m0", "logits", "logits"]
    kinds = ["q", "v", "", "", "", ""]
    circuit = Circuit(
        model_name="zoo:ioi", n_layers=1, n_heads=2, method="eap", metric_name="logit_diff",
        senders=senders, receivers=receivers, kinds=kinds, scores=torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0]),
        in_circuit=torch.tensor([True, True, False, True, False, True]), nodes=nodes,
        clean_metric=2.5, corrupt_metric=-1.0, curve_sizes=[2, 4], curve_values=[0.4, 0.8],
    )
    return CircuitGraph.from_result(circuit)


def _feature_dashboard(tiny):
    from mi_widgets.core.decomposition.features import LinearDictionary, default_texts
    from mi_widgets.widgets.feature_dashboard import FeatureDashboard
    from mi_widgets.zoo.corpus import CITIES

    texts = default_texts(16)
    d = LinearDictionary.from_token_classes(tiny, texts, {"city": {" " + c for c in CITIES}}, site="resid_pre", layer=0)
    return FeatureDashboard(tiny, d, texts, background=False, k=2)


def _hypothesis_card(tiny):
    from mi_widgets.core.validation import TestResult, Verdict
    from mi_widgets.widgets.hypothesis_card import HypothesisCard

    tests = [TestResult("ablation (zero)", 0.5, 0.1, ">=", True, "drop")]
    return HypothesisCard(Verdict("1.2", "previous-token head", "zoo:tiny", tests, []))


def _probe_accuracy(tiny):
    from mi_widgets.core.concepts.probes import ProbeDataset, probe

    return probe(tiny, ProbeDataset.from_zoo("sentiment", n=40, n_ood=0), seeds=(0,), progress=False).widget()


def _ablation(tiny):
    heads = [f"{layer}.{h}" for layer in range(tiny.n_layers) for h in range(tiny.n_heads)][:2]
    return mw.ablate(tiny, [CLEAN], mw.logit_diff(*METRIC), heads, kind="zero", separately=True, progress=False).widget()


def _steering(tiny):
    from mi_widgets.widgets.steering import Steering

    vec = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0))
    return Steering(tiny, "The food was", {"random": vec}, layer=0, coef=1.0, max_new_tokens=2)


def _patchscope(tiny):
    from mi_widgets.widgets.patchscope import Patchscope

    return Patchscope(tiny, "The cat sat", n_tokens=1)


#: one cheap instance of every view class, by class name
VIEWS = {
    "PatchingGrid": lambda t: mw.activation_patching(t, CLEAN, CORRUPT, mw.logit_diff(*METRIC), progress=False).widget(),
    "TokenActivations": lambda t: mw.TokenActivations(t, ["The cat sat"], site="mlp_post", layer=0),
    "TokenSaliency": lambda t: mw.attribute(t, CLEAN, " Paris", method="grad_x_input").widget(),
    "AttentionPatterns": lambda t: mw.attention(t, "The cat sat").widget(),
    "LogitLens": lambda t: mw.logit_lens(t, CLEAN, k=3).widget(),
    "Patchscope": _patchscope,
    "Ablation": _ablation,
    "Steering": _steering,
    "CircuitGraph": _circuit_graph,
    "FeatureDashboard": _feature_dashboard,
    "HypothesisCard": _hypothesis_card,
    "ProbeAccuracy": _probe_accuracy,
}


def _view_classes() -> set[str]:
    """Every MIWidget subclass the package defines."""
    for info in pkgutil.iter_modules(mi_widgets.widgets.__path__):
        importlib.import_module(f"mi_widgets.widgets.{info.name}")
    seen, todo = set(), [MIWidget]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("mi_widgets.") and sub.__name__ not in seen:
                seen.add(sub.__name__)
                todo.append(sub)
    return seen


def test_every_view_class_is_covered():
    assert _view_classes() == set(VIEWS)


@pytest.fixture(scope="module", params=sorted(VIEWS))
def view(request, tiny):
    w = VIEWS[request.param](tiny)
    assert type(w).__name__ == request.param
    yield w
    w.close()


def test_each_palette_name_is_accepted_and_synced(view):
    assert view.palette == DEFAULT_PALETTE == "blue_orange"
    assert view.trait_metadata("palette", "sync") is True
    for name in PALETTES:
        view.palette = name
        assert view.palette == name
        assert view.get_state("palette") == {"palette": name}
    view.palette = DEFAULT_PALETTE


@pytest.mark.parametrize("bad", ["jet", "Viridis", "", " classic", None, 3, ["greyscale"]])
def test_a_bad_palette_is_refused_naming_the_allowed_values(view, bad):
    view.palette = "greyscale"
    with pytest.raises(traitlets.TraitError) as info:
        view.palette = bad
    message = str(info.value)
    assert message.startswith("palette must be one of 'blue_orange', 'viridis', 'greyscale', 'classic'")
    assert repr(bad) in message or type(bad).__name__ in message
    assert view.palette == "greyscale"
    assert view.get_state("palette") == {"palette": "greyscale"}
    view.palette = DEFAULT_PALETTE


def test_the_static_copy_carries_the_palette(tiny):
    w = VIEWS["HypothesisCard"](tiny)
    w.palette = "viridis"
    assert '"palette":"viridis"' in w.to_html()
