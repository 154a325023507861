"""Predict, then reveal (mi_widgets/widgets/predict.py) on PatchingGrid and ProbeAccuracy:
a question hides the result until a guess is recorded; ``guesses`` keeps the guess and the answer.
zoo:tiny's planted fact "The Eiffel Tower is in" -> " Paris" (figures.facts in its ground truth)."""

from __future__ import annotations

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.concepts.probes import ProbeDataset, probe
from mi_widgets.widgets.probe_accuracy import ProbeAccuracy

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"
Q = "Which layer carries the fact?"


@pytest.fixture(scope="module")
def patching(tiny):
    return mw.activation_patching(tiny, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"),
                                  positions="each", progress=False)


def test_a_question_hides_the_grid_until_a_click_records_a_guess(patching):
    w = patching.widget(predict=Q)
    assert w.predict == Q and not w.revealed and w.guesses == []
    rec = w.request("guess", {"layer": 0, "position": 1})  # as the browser's click sends it
    assert w.revealed
    assert w.guesses == [rec]
    v = patching.values
    best = divmod(int(v.abs().argmax()), v.shape[1])
    assert rec["question"] == Q
    assert (rec["layer"], rec["position"]) == (0, 1)
    assert rec["value"] == pytest.approx(float(v[0, 1]))
    assert rec["answer"] == {"layer": patching.layers[best[0]], "position": patching.positions[best[1]]}
    assert rec["answer_value"] == pytest.approx(float(v[best]))
    assert rec["correct"] is (best == (0, 1))
    # a new question hides it again until it has its own guess
    w.predict = "Which position carries the fact?"
    assert not w.revealed
    w.guess(layer=best[0], position=patching.positions[best[1]])
    assert w.revealed and w.guesses[-1]["correct"] is True and len(w.guesses) == 2


def test_a_guess_outside_the_grid_is_refused_and_changes_nothing(patching):
    w = patching.widget(predict=Q)
    with pytest.raises(ValueError, match="not in this grid"):
        w.request("guess", {"layer": 99, "position": 1})
    with pytest.raises(ValueError, match="must be >= 0"):
        w.request("guess", {"layer": 0, "position": -2})
    assert w.guesses == [] and not w.revealed
    w.predict = ""
    with pytest.raises(ValueError, match="no question"):
        w.guess(layer=0, position=1)


def test_probe_accuracy_guess_names_the_best_layer(tiny):
    r = probe(tiny, ProbeDataset.from_zoo("sentiment", n=60, n_ood=20), seeds=(0,), progress=False)
    w = ProbeAccuracy(r, predict="Where does the probe first read sentiment best?")
    assert not w.revealed
    rec = w.request("guess", {"layer": 0})
    site, layer = w.best_layer("test")
    assert rec["answer"] == {"layer": layer, "site": site}
    accs = torch.tensor([x["accuracy"] for x in r.rows if x["split"] == "test" and x["layer"] == 0 and x["site"] == rec["site"]])
    assert rec["value"] == pytest.approx(float(accs.mean()))
    assert rec["answer_value"] >= rec["value"]
    assert w.revealed and w.guesses == [rec]
    with pytest.raises(ValueError, match="no probe at layer"):
        w.guess(layer=42)
