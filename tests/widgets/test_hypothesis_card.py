"""HypothesisCard: the Python side (traits from a Verdict, the registry, the selection, static export)."""

from __future__ import annotations

import pytest

import mi_widgets  # noqa: F401  (installs the view finder)
from mi_widgets.core.validation import Counterexample, TestResult, Verdict
from mi_widgets.widgets.hypothesis_card import HypothesisCard


@pytest.fixture()
def verdict():
    ce = [
        Counterexample(
            "predicted, silent", 0, 1, " castle", "<|endoftext|>[[ castle]] apple", 3e-7, 1.0
        ),
        Counterexample("predicted, silent", 1, 1, "<b>x</b>", "[[<b>x</b>]]", 4e-7, 1.0),
    ]
    tests = [
        TestResult("activation: detection accuracy", 0.5, 0.8, ">=", False, "balanced acc", {}, ce),
        TestResult("ablation (zero)", -0.08, 5.0, ">=", False, "drop"),
        TestResult("ablation (resample)", 9.99, 5.0, ">=", True, "drop"),
        TestResult("replacement: metric kept", float("nan"), 0.9, ">=", False, "fraction"),
    ]
    return Verdict("1.2", "previous-token head", "zoo:induction", tests, ["kinds disagree"])


def test_card_holds_the_verdict(verdict):
    w = HypothesisCard(verdict)
    assert (w.model_name, w.unit, w.description, w.passed) == (
        "zoo:induction",
        "1.2",
        "previous-token head",
        False,
    )
    assert [t["name"] for t in w.tests] == [t.name for t in verdict.tests]
    assert [t["passed"] for t in w.tests] == [False, False, True, False]
    assert w.tests[3]["figure"] is None  # NaN is not JSON: sent as null
    assert [c["context"] for c in w.counterexamples] == [
        "<|endoftext|>[[ castle]] apple",
        "[[<b>x</b>]]",
    ]
    assert w.counterexamples[0]["test"] == "activation: detection accuracy"
    assert w.disagreements == ["kinds disagree"]
    assert HypothesisCard(verdict, max_counterexamples=1).counterexamples == w.counterexamples[:1]


def test_verdict_finds_its_card_through_the_registry(verdict):
    w = verdict.widget()
    assert isinstance(w, HypothesisCard) and w.result is verdict
    bundle = verdict._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data


def test_selected_test_is_checked(verdict):
    w = HypothesisCard(verdict)
    w.selected_test = 2
    assert w.selected_test == 2
    with pytest.raises(Exception, match="selected_test"):
        w.selected_test = 4


def test_bad_input():
    with pytest.raises(ValueError, match="Verdict"):
        HypothesisCard("not a verdict")
    with pytest.raises(ValueError, match="max_counterexamples"):
        HypothesisCard(Verdict("1.2", "x", "m", []), max_counterexamples=-1)


def test_static_export_is_self_contained(verdict, tmp_path):
    page = HypothesisCard(verdict).to_html()
    assert "hypothesis_card" in page or "HypothesisCard" in page or "mw-hypothesis-card" in page
    assert "<b>x</b>" not in page.replace("\\u003cb\\u003ex", "")  # data is escaped, never markup
    p = HypothesisCard(verdict).to_html(tmp_path / "card.html")
    assert p.exists()
