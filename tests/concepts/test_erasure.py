"""LEACE concept erasure: the eraser's guarantee on planted data, and on zoo:tiny erasing
sentiment where the model routes it removes the verdict behaviour while erasing where it does
not route leaves it intact."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.concepts.erasure import erase, fit_leace
from mi_widgets.core.concepts.probes import ProbeDataset, _acc, fit_logistic, fit_probe, probe


def _planted(n=800, d=16, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    centres = torch.randn(K, d, generator=g) * 2
    X = centres[y] + torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) * 0.5
    return X, y


@pytest.mark.parametrize("K", [2, 3])
def test_leace_guarantee(K):
    # LEACE's guarantee: after erasure the class-conditional means are equal, so no linear
    # classifier does better than the majority baseline (here: trained and scored on the fit data)
    X, y = _planted(K=K)
    before = fit_probe(X, y, X[:0], y[:0], n_classes=K)
    assert _acc(before.predict(X), y) >= 0.9
    E = fit_leace(X, y)(X)
    means = torch.stack([E[y == k].mean(0) for k in range(K)])
    assert (means - means.mean(0)).abs().max() < 1e-3
    after = fit_probe(E, y, E[:0], y[:0], n_classes=K)
    majority = float(torch.bincount(y).max()) / len(y)
    assert _acc(after.predict(E), y) <= majority + 0.03
    # the edit is minimal in the least-squares sense: far smaller than the data's spread
    assert float((E - X).norm(dim=1).mean()) < float((X - X.mean(0)).norm(dim=1).mean())


def test_leace_binary_logistic_loss_at_constant():
    X, y = _planted(K=2, seed=1)
    E = fit_leace(X, y)(X)
    fit = fit_logistic(E, y, C=1e4)
    z = fit.decision(E)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y.double())
    p = y.double().mean()
    const = -(p * p.log() + (1 - p) * (1 - p).log())
    assert float(loss) >= float(const) - 5e-3  # no linear predictor beats the constant one


@pytest.fixture(scope="module")
def sentiment():
    return ProbeDataset.from_zoo("sentiment", n=200, n_ood=0)


@pytest.fixture(scope="module")
def erased_block0(tiny, sentiment):
    return erase(tiny, sentiment, 0, progress=False)


def test_erasing_where_sentiment_is_read_removes_the_verdict(erased_block0):
    # ground_truth.json: sentiment is linearly readable at " is" from block 0 on and the model
    # answers " positive"/" negative" correctly; LEACE at resid_post 0 on that token
    r = erased_block0
    assert r.behaviour_accuracy_before >= 0.99
    assert r.behaviour_accuracy_after <= 0.6  # ~chance: the verdict no longer follows the review
    assert r.probe_before[("resid_post", 0)] >= 0.95
    assert r.probe_after[("resid_post", 0)] <= r.baseline + 0.05  # the guarantee, at the erased layer
    assert r.probe_after[("resid_pre", -1)] == r.probe_before[("resid_pre", -1)]  # upstream untouched
    assert abs(r.neutral_loss_change) < 0.05  # nats/token: the edit is surgical
    df = r.to_pandas()
    assert {"probe_accuracy", "behaviour_accuracy", "neutral_loss"} <= set(df["measure"])


def test_erasing_where_sentiment_is_not_routed_leaves_the_verdict(tiny, sentiment):
    # Block 0's attention moves the adjectives' sentiment into " is" (erasing attn_out 0 there
    # kills the verdict); block 2's attention output at " is" carries no sentiment the model
    # uses, and the embedding of " is" carries none at all: erasing either changes nothing.
    moved = erase(tiny, sentiment, 0, site="attn_out", probe_layers=[0], progress=False)
    assert moved.behaviour_accuracy_after <= 0.6
    for layer, site in ((2, "attn_out"), (-1, "resid_pre")):
        r = erase(tiny, sentiment, layer, site=site, probe_layers=[0], progress=False)
        assert r.behaviour_accuracy_after >= 0.95, (layer, site)
        assert abs(r.neutral_loss_change) < 0.05


def test_overlay_on_probe_result(tiny, sentiment, erased_block0):
    pr = probe(tiny, sentiment, seeds=(0,), progress=False)
    pr.add_overlay("erased at block 0", erased_block0.overlay)
    assert pr.overlays["erased at block 0"][("resid_post", 0)] <= erased_block0.baseline + 0.05
    # later layers re-read the adjectives: the probe recovers, the verdict does not
    assert pr.overlays["erased at block 0"][("resid_post", 2)] >= 0.95
    assert erased_block0.behaviour_accuracy_after <= 0.6
    # the same curve through the result's own .widget(): the probe-accuracy view with an overlay
    w = erased_block0.widget(pr)
    names, kinds, stats = type(w)._curves(w.result)
    j = names.index("erased at resid_post 0")
    assert kinds[j] == "overlay"
    assert float(stats[j, pr.layers.index(("resid_post", 0)), 0]) <= erased_block0.baseline + 0.05
    assert set(pr.overlays["erased at block 0"]) == set(pr.layers)


def test_plot(erased_block0):
    import matplotlib

    matplotlib.use("Agg")
    fig = erased_block0.plot()
    assert len(fig.axes) == 2
    assert "erased at resid_post 0" in repr(erased_block0)


def test_errors_before_any_forward(tiny, sentiment):
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="out of range"):
            erase(tiny, sentiment, 9, progress=False)
        with pytest.raises(ValueError, match="cannot be edited"):
            erase(tiny, sentiment, 1, site="mlp_post", progress=False)
        with pytest.raises(ValueError, match="positions"):
            erase(tiny, sentiment, 1, positions="first", progress=False)
        with pytest.raises(ValueError, match="single-token"):
            erase(tiny, sentiment, 1, answers=(" very bad", " good"), progress=False)
        custom = ProbeDataset.from_lists(sentiment.texts, sentiment.labels)
        with pytest.raises(ValueError, match="answers"):
            erase(tiny, custom, 1, progress=False)
        with pytest.raises(ValueError, match="ProbeDataset"):
            erase(tiny, ["a"], 1, progress=False)
    finally:
        h.remove()
    assert calls == []
