"""The subspace illusion check on zoo:illusion, whose illusion is planted by construction
(mi_widgets/zoo/compiled.py): ``u = (shadow + dormant) / sqrt(2)`` at the input of block 1 looks as
causal as the true mechanism under an interchange intervention, though ``shadow`` is read by
nothing and ``dormant`` carries no class. The check must flag ``u`` and clear ``true``."""

from __future__ import annotations

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.concepts.probes import ProbeDataset
from mi_widgets.core.validation.illusion import illusion_check, read_space
from mi_widgets.zoo import compiled as C

ANSWERS = (" river", " apple")


@pytest.fixture(scope="module")
def setup():
    model = mw.load("zoo:illusion")
    P = C.illusion_prompts(120, seed=5)
    ds = ProbeDataset.from_lists([p["text"] for p in P], [p["label"] for p in P], "last")
    dirs = {k: torch.tensor(v, dtype=torch.float32) for k, v in C.illusion_directions().items()}
    return model, ds, dirs


def test_the_planted_illusion_is_flagged(setup):
    model, ds, dirs = setup
    r = illusion_check(model, ds, 0, dirs["u"], answers=ANSWERS, n_pairs=40)
    assert r.iia_direction > 0.9  # what interchange alone reports: "causal"
    assert 0.5 - 1e-6 <= r.unread_fraction < 0.6  # shadow's half: read by nothing
    assert r.iia_read < 0.1 and r.iia_unread < 0.1  # dormant alone, shadow alone: nothing
    assert r.read_variation < 0.1  # the read half (dormant, up to a few % of other reads) barely moves on the data
    assert r.illusory and "neither of its parts does alone" in r.reasons[0]
    assert "ILLUSORY" in repr(r)


def test_the_true_mechanism_is_not_flagged(setup):
    model, ds, dirs = setup
    r = illusion_check(model, ds, 0, dirs["true"], answers=ANSWERS, n_pairs=40)
    assert r.iia_direction > 0.9 and r.iia_full > 0.9 and r.iia_read > 0.9
    assert r.unread_fraction < 1e-6
    assert not r.illusory and r.reasons == []
    assert list(r.to_pandas()["iia"]) == [r.iia_direction, r.iia_read, r.iia_unread, r.iia_full]


def test_read_space_leaves_out_what_nothing_reads(setup):
    """zoo:illusion's layout: the shadow block is written by head 0.2 and read by nothing; the
    dormant block is read by head 1.0. Hand-built: a GPT-2 whose later block reads only some
    coordinates."""
    model, _, dirs = setup
    span = read_space(model, "resid_post", 0)
    P = span.T @ span
    sh, dm = dirs["shadow"].double(), dirs["dormant"].double()
    assert (P @ sh).norm() < 1e-6  # nothing reads the shadow block
    assert (P @ dm).norm() > 0.95  # head 1.0 reads the dormant block (up to what other reads span)
    assert read_space(model, "resid_post", model.n_layers - 1).shape[0] <= model.d_model


def test_bad_inputs_are_refused_before_any_forward(setup):
    model, ds, dirs = setup
    calls = []
    h = model.hf.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(TypeError, match="direction must be a torch tensor"):
            illusion_check(model, ds, 0, [1.0] * model.d_model)
        with pytest.raises(ValueError, match="NaN or inf"):
            illusion_check(model, ds, 0, torch.full((model.d_model,), float("nan")))
        with pytest.raises(ValueError, match="drop must be a number in"):
            illusion_check(model, ds, 0, dirs["u"], drop=1.5)
        with pytest.raises(ValueError, match="site must be 'resid_pre' or 'resid_post'"):
            illusion_check(model, ds, 0, dirs["u"], site="mlp_out")
        with pytest.raises(TypeError, match="dataset must be a ProbeDataset"):
            illusion_check(model, ["a", "b"], 0, dirs["u"])
        with pytest.raises(TypeError, match="layer must be an int"):
            illusion_check(model, ds, "0", dirs["u"])
    finally:
        h.remove()
    assert not calls


def test_a_subspace_hypothesis_fails_on_the_illusion_and_passes_on_the_mechanism(setup):
    model, ds, dirs = setup
    pred = mw.SubspacePrediction(ds, answers=ANSWERS, n_pairs=40)
    bad = mw.validate(mw.Hypothesis(("resid_post", 0, dirs["u"]), "carries the first word's class", subspace=pred),
                      model, progress=False)
    good = mw.validate(mw.Hypothesis(("resid_post", 0, dirs["true"]), "carries the first word's class", subspace=pred),
                       model, progress=False)
    # interchange alone cannot tell them apart; the illusion check can
    assert bad.test("interchange (along the direction)").passed and good.test("interchange (along the direction)").passed
    ill = bad.test("illusion check (best part alone)")
    assert not ill.passed and ill.figure < 0.1 and ill.detail["reasons"]
    assert good.test("illusion check (best part alone)").passed and good.passed and not bad.passed
    with pytest.raises(ValueError, match="subspace prediction is about a direction"):
        mw.validate(mw.Hypothesis("0.1", "x", subspace=pred), model, progress=False)
    with pytest.raises(TypeError, match="dataset must be a ProbeDataset"):
        mw.SubspacePrediction(["a", "b"])
