"""Linear probes: the torch fitter against scikit-learn, one trace per text, and the zoo's
ground truth (sentiment and truth probes of zoo:tiny)."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.concepts.probes import (
    ProbeDataset,
    auroc,
    cache_activations,
    fit_logistic,
    fit_softmax,
    probe,
)


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
    import sklearn.linear_model as sk  # a declared [dev] dependency: missing means failing, not skipping
    X, y = _planted()
    tr, te = slice(0, 400), slice(400, None)
    fit = fit_logistic(X[tr], y[tr], C, newton_max_dim=256 if solver == "newton" else 0, tol=1e-9, dtype=torch.float64)
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
    import sklearn.metrics as metrics  # a declared [dev] dependency
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(300, generator=g) < 0.4).long()
    s = torch.round(torch.randn(300, generator=g) + y, decimals=1)  # with ties
    assert abs(auroc(s, y) - metrics.roc_auc_score(y.numpy(), s.numpy())) < 1e-12


def test_one_forward_per_batch(tiny):
    # same-length texts share one trace that reads every layer: not one per text, not one per layer
    texts = ["The food was wonderful. Overall the review is", "The food was awful. Overall the review is"] * 5
    texts += ["The film was boring and the music was rude. Overall the review is"] * 4
    ds = ProbeDataset.from_lists(texts, [1, 0] * 7)
    ds.test_frac, ds.val_frac = 0.3, 0.2
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        r = probe(tiny, ds, layers="all", seeds=(0,), progress=False)
    finally:
        h.remove()
    assert len({len(tiny.to_tokens(t)[0]) for t in texts}) == 2
    assert len(calls) == 2  # two token lengths -> two batches
    assert [k for k in r.layers] == [("resid_pre", -1)] + [("resid_post", i) for i in range(tiny.n_layers)]
    # batched caching reads the same values as one trace per text
    acts, _ = cache_activations(tiny, texts[:3], "last", [("resid_post", 2), ("resid_pre", -1)], progress=False)
    for i, t in enumerate(texts[:3]):
        ref = tiny.run(tiny.to_tokens(t), [("resid_post", 2), ("resid_pre", 0)])
        assert torch.allclose(acts[("resid_post", 2)][i], ref[("resid_post", 2)][-1], atol=1e-5)
        assert torch.allclose(acts[("resid_pre", -1)][i], ref[("resid_pre", 0)][-1], atol=1e-5)


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


def test_softmax_matches_sklearn():
    import sklearn.linear_model as sk  # a declared [dev] dependency: missing means failing, not skipping
    g = torch.Generator().manual_seed(3)
    K, d, n = 4, 10, 400
    centres = torch.randn(K, d, generator=g) * 1.2
    y = torch.randint(0, K, (n,), generator=g)
    X = centres[y] + torch.randn(n, d, generator=g) * torch.linspace(0.5, 2.0, d) + 3.0
    for C in (0.05, 1.0):
        fit = fit_softmax(X[:300], y[:300], C, n_classes=K, tol=1e-10)
        Z = ((X.double() - fit.mean) / fit.scale).numpy()
        ref = sk.LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(Z[:300], y[:300].numpy())
        coef = torch.from_numpy(ref.coef_).T  # [d, K]
        assert torch.allclose(fit.coef, coef, rtol=1e-4, atol=1e-4), (fit.coef - coef).abs().max()
        assert torch.allclose(fit.intercept, torch.from_numpy(ref.intercept_), atol=1e-4)
        ours = fit.predict(X[300:])
        theirs = torch.from_numpy(ref.predict(Z[300:]))
        assert (ours == theirs).double().mean() >= 0.99
        assert (ours == y[300:]).double().mean() > 0.6  # the planted classes are found
        assert fit.direction.shape == (K, d)


def test_multiclass_city_ground_truth(tiny):
    # docs/zoo.md: the fact prompts' city is readable after block 0 (logit lens top-1 = 1.0 there);
    # the read token is always " in", so the embedding has no information (20 classes: chance 0.05)
    ds = ProbeDataset.from_zoo("city")
    assert len(ds.classes) == 20
    r = probe(tiny, ds, layers=[0, 3], seeds=(0,), C_grid=(0.1, 1.0), progress=False)
    assert r.accuracy("embed") <= 0.15
    assert r.accuracy(0) >= 0.9 and r.accuracy(3) >= 0.9
    assert r.accuracy(0, "control") <= 0.3  # control task (token identity is constant: shuffled labels)
    assert r.accuracy(0, "baseline") <= 0.15
    scores = r.test_scores[("resid_post", 0)]
    assert scores.shape == (len(r.test_index), 20)
    assert r.directions[("resid_post", 0)].shape == (20, tiny.d_model)
    assert r.to_pandas().query("split == 'test' and layer == 0")["auroc"].iloc[0] >= 0.95
