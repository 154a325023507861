"""Circuits as hypotheses on zoo:ioi, whose IOI circuit is planted by construction
(tests/circuits/_circuit_tasks.py IOI_PLANTED, checked against the weights there). IOI_PLANTED
lists the edges whose signal the ABC corruption changes; causal scrubbing resamples every other
edge from *any* prompt, and finds one more edge the mechanism needs: input -> a0.h1<v> (the value
the duplicate-token head writes as its flag is read from the token; ABC corruption, with no
duplicate, never moves it). With it the circuit passes every test: faithfulness, completeness,
the random baseline, and scrubbing with the names as the variable (resampling its edges from
prompts with the same names keeps the behaviour); with a wrong variable (the template) the
behaviour is lost; a circuit missing the name mover fails."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from circuits._circuit_tasks import IOI_PLANTED

import mi_widgets as mw
from mi_widgets.core.validation.circuit import causal_scrub
from mi_widgets.zoo import compiled as C

DUP_VALUE = "input->a0.h1<v>"


@pytest.fixture(scope="module")
def found():
    """EAP on zoo:ioi with ABC corruption; the circuit set to the planted edges."""
    model = mw.load("zoo:ioi")
    ps = C.ioi_prompts(8, seed=1)
    rng = random.Random(0)
    corrupt = []
    for p in ps:
        a, b, c = rng.sample([n for n in C.IOI_NAMES if " " + n not in (p["io"], p["s"])], 3)
        corrupt.append(C.IOI_TEMPLATES[p["template"]].format(A=a, B=b, S=c))
    metric = mw.logit_diff([p["io"] for p in ps], [p["s"] for p in ps])
    c = mw.edge_attribution_patching(model, [p["text"] for p in ps], corrupt, metric, curve=False, progress=False)
    keep = torch.tensor([e in IOI_PLANTED + [DUP_VALUE] for e in c.edge_ids])
    assert int(keep.sum()) == len(IOI_PLANTED) + 1
    return model, replace(c, in_circuit=keep)


@pytest.fixture(scope="module")
def scrub_set():
    """Four name pairs, each in every template and both orders (ABBA, BABA: the same length)."""
    rng = random.Random(3)
    prompts, ios, ss, names, templates = [], [], [], [], []
    for _ in range(4):
        io, s = rng.sample(C.IOI_NAMES, 2)
        for t, tpl in enumerate(C.IOI_TEMPLATES[:4]):
            for a, b in ((io, s), (s, io)):
                prompts.append(tpl.format(A=a, B=b, S=s))
                ios.append(" " + io), ss.append(" " + s), names.append((io, s)), templates.append(t)
    return prompts, mw.logit_diff(ios, ss), names, templates


def test_the_planted_circuit_passes_every_circuit_test(found, scrub_set):
    model, circuit = found
    prompts, metric, names, _ = scrub_set
    pred = mw.CircuitPrediction(prompts=prompts, metric=metric, variable=names)
    v = mw.validate(mw.Hypothesis(circuit, "the planted IOI circuit", circuit=pred), progress=False)
    assert [t.name for t in v.tests] == [
        "circuit faithfulness", "circuit completeness (knockout)", "circuit beats random circuits",
        "causal scrubbing (fraction kept)",
    ]
    assert v.passed, v
    assert v.test("circuit faithfulness").figure > 0.9 and v.test("circuit completeness (knockout)").figure < 0.1


def test_scrubbing_finds_the_edge_that_abc_corruption_hides(found, scrub_set):
    _, circuit = found
    prompts, metric, names, _ = scrub_set
    abc_only = replace(circuit, in_circuit=torch.tensor([e in IOI_PLANTED for e in circuit.edge_ids]))
    assert abc_only.faithfulness() > 0.9  # complete under the ABC corruption ...
    assert causal_scrub(abc_only, prompts, metric, names).fraction_kept < 0.5  # ... not under resampling
    assert causal_scrub(circuit, prompts, metric, names).fraction_kept > 0.95


def test_scrubbing_with_a_wrong_variable_loses_the_behaviour(found, scrub_set):
    _, circuit = found
    prompts, metric, names, templates = scrub_set
    right = causal_scrub(circuit, prompts, metric, names)
    wrong = causal_scrub(circuit, prompts, metric, templates)  # same template, other names
    assert right.fraction_kept > 0.9, right
    assert wrong.fraction_kept < 0.3, wrong
    assert right.clean_metric == pytest.approx(wrong.clean_metric)


def test_a_circuit_without_the_name_mover_fails(found, scrub_set):
    _, circuit = found
    prompts, metric, names, _ = scrub_set
    keep = circuit.in_circuit & torch.tensor(["a2.h3" not in e for e in circuit.edge_ids])
    broken = replace(circuit, in_circuit=keep)
    v = mw.validate(mw.Hypothesis(broken, "IOI without its name mover",
                                  circuit=mw.CircuitPrediction(prompts=prompts, metric=metric, variable=names)),
                    progress=False)  # fmt: skip
    assert not v.test("circuit faithfulness").passed
    assert not v.test("causal scrubbing (fraction kept)").passed


def test_bad_circuit_hypotheses_are_refused(found, scrub_set):
    _, circuit = found
    prompts, metric, names, _ = scrub_set
    with pytest.raises(ValueError, match="circuit hypothesis is tested by circuit="):
        mw.Hypothesis(circuit, "x", ablation=mw.AblationPrediction(mw.PromptTask(prompts, metric), 0.5))
    with pytest.raises(ValueError, match="give the Circuit as the unit"):
        mw.Hypothesis("0.1", "x", circuit=mw.CircuitPrediction())
    with pytest.raises(ValueError, match="needs prompts= and metric="):
        mw.CircuitPrediction(variable=names)
    with pytest.raises(ValueError, match="one per prompt"):
        causal_scrub(circuit, prompts, metric, names[:-1])
    with pytest.raises(TypeError, match="circuit must be a Circuit"):
        causal_scrub("0.1", prompts, metric, names)
    with pytest.raises(ValueError, match="no other prompt of the same token length"):
        causal_scrub(circuit, prompts, metric, list(range(len(prompts))))


def test_causal_scrubbing_refuses_a_remote_model_before_any_job(found, scrub_set):
    from mi_widgets.core.model.remote import record_jobs

    _, circuit = found
    prompts, metric, names, _ = scrub_set
    remote = mw.load("zoo:ioi", remote="local")
    with record_jobs() as jobs, pytest.raises(ValueError, match="runs on local models only"):
        causal_scrub(replace(circuit, model=remote), prompts, metric, names)
    assert jobs.count == 0
