"""Linear probes: the torch fitter against scikit-learn, one trace per text, and the zoo's
ground truth (sentiment and truth probes of zoo:tiny)."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.probes import ProbeDataset, auroc, fit_logistic, probe


def _planted(n=600, d=20, seed=0, signal=1.5):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    y = (torch.rand(n, generator=g) < 0.5).long()
    X = torch.randn(n, d, generator=g) * torch.linspace(0.5, 3.0, d) + 4.0
    X += signal * (2 * y[:, None] - 1) * u
    return X, y


@pytest.mark.parametrize("C", [0.01, 1.0])
@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_logistic_matches_sklearn(C, solver):
    sk = pytest.importorskip("sklearn.linear_model")
    X, y = _planted()
    tr, te = slice(0, 400), slice(400, None)
    fit = fit_logistic(X[tr], y[tr], C, newton_max_dim=256 if solver == "newton" else 0)
    Z = ((X.double() - fit.mean) / fit.scale).numpy()
    ref = sk.LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(Z[tr], y[tr].numpy())
    coef = torch.from_numpy(ref.coef_[0])
    assert torch.allclose(fit.coef, coef, rtol=1e-4, atol=1e-5), (fit.coef - coef).abs().max()
    assert abs(fit.intercept - float(ref.intercept_[0])) < 1e-4
    ours = float((fit.predict(X[te]) == y[te]).double().mean())
    theirs = float((torch.from_numpy(ref.predict(Z[te])) == y[te]).double().mean())
    assert abs(ours - theirs) <= 1 / 200
    assert ours > 0.7  # the planted direction is found
    # direction in activation units gives the same logits up to a constant
    z = X.double() @ fit.direction.double()
    assert torch.allclose(z - z[0], fit.decision(X) - fit.decision(X)[0], atol=1e-3)


def test_auroc_against_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(300, generator=g) < 0.4).long()
    s = torch.round(torch.randn(300, generator=g) + y, decimals=1)  # with ties
    assert abs(auroc(s, y) - metrics.roc_auc_score(y.numpy(), s.numpy())) < 1e-12


def test_one_trace_per_text(tiny):
    ds = ProbeDataset.from_lists(
        ["The food was wonderful. Overall the review is", "The food was awful. Overall the review is"] * 5,
        [1, 0] * 5,
    )
    ds.test_frac, ds.val_frac = 0.3, 0.2
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        r = probe(tiny, ds, layers="all", seeds=(0,), progress=False)
    finally:
        h.remove()
    assert len(calls) == len(ds)  # not len(ds) * n_layers
    assert [k for k in r.layers] == [("resid_pre", -1)] + [("resid_post", i) for i in range(tiny.n_layers)]


def test_errors_before_any_forward(tiny):
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="empty"):
            ProbeDataset.from_lists([], [])
        with pytest.raises(ValueError, match="one class"):
            ProbeDataset.from_lists(["a b", "c d"], [1, 1])
        with pytest.raises(ValueError, match="labels have 1"):
            ProbeDataset.from_lists(["a b", "c d"], [1])
        ds = ProbeDataset.from_lists(["a b c"] * 20, [0, 1] * 10)
        with pytest.raises(ValueError, match="out of range"):
            probe(tiny, ds, layers=[99], progress=False)
        with pytest.raises(ValueError, match="unknown site"):
            probe(tiny, ds, sites="resid_nope", progress=False)
        with pytest.raises(ValueError, match="no single vector"):
            probe(tiny, ds, sites="attn_pattern", progress=False)
        with pytest.raises(ValueError, match="read"):
            ProbeDataset.from_lists(["a b"] * 4, [0, 1] * 2, read="first")
    finally:
        h.remove()
    assert calls == []


@pytest.fixture(scope="module")
def sentiment(tiny):
    return probe(tiny, ProbeDataset.from_zoo("sentiment"), progress=False)


@pytest.fixture(scope="module")
def truth(tiny):
    return probe(tiny, ProbeDataset.from_zoo("truth"), progress=False)


def test_sentiment_ground_truth(tiny, sentiment):
    # ground_truth.json figures.sentiment_probe: 0.45 at the embedding, 1.00 from after block 0
    assert sentiment.accuracy("embed") <= 0.65
    for layer in range(tiny.n_layers):
        assert sentiment.accuracy(layer) >= 0.95, layer
        assert sentiment.accuracy(layer, "ood") >= 0.9, layer
        assert sentiment.selectivity(layer) >= 0.3, layer
        assert sentiment.accuracy(layer, "control") <= 0.65, layer
    df = sentiment.to_pandas()
    assert {"layer", "split", "accuracy", "auroc", "seed"} <= set(df.columns)
    assert set(df["seed"]) == {0, 1, 2}
    assert df[(df.layer == 0) & (df.split == "test")]["auroc"].min() >= 0.95


def test_truth_ground_truth(truth):
    # ground_truth.json figures.truth_probe: ~0.5 up to block 1, 0.92 after block 2
    assert truth.accuracy("embed") <= 0.65
    assert truth.accuracy(0) <= 0.65
    assert truth.accuracy(1) <= 0.65
    assert truth.accuracy(2) >= 0.85
    assert truth.selectivity(2) >= 0.3


def test_direction_colours_reviews(tiny, sentiment):
    import mi_widgets as mw

    texts = [
        "The food was wonderful and the staff were friendly. Overall the review is",
        "The food was awful and the staff were rude. Overall the review is",
    ]
    d = sentiment.direction(1)
    r = mw.token_activations(tiny, texts, site="resid_post", layer=1, direction=d)
    v = r.unit_values(d)
    pos_last = r.offsets[1] - 1
    neg_last = v.shape[0] - 1
    assert v[pos_last] > v[neg_last]
    fit = sentiment.fits[("resid_post", 1)]
    # sign as the probe: positive review above the decision threshold, negative below
    assert float(fit.decision(r.acts[[pos_last]])) > 0 > float(fit.decision(r.acts[[neg_last]]))


def test_plot(sentiment):
    import matplotlib

    matplotlib.use("Agg")
    fig = sentiment.plot()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"train", "test", "ood", "control", "baseline"} <= set(labels)
