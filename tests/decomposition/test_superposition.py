"""Toy model of superposition: an SAE on its hidden layer recovers the planted features."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.decomposition.superposition import (
    RecoveryCurve,
    ToyModel,
    max_cosines,
    toy_recovery,
)


def test_sae_recovers_at_least_90_percent_of_planted_features_when_sparse():
    """20 features in 5 dimensions, each active with probability 5%: the toy model embeds all of
    them (in superposition) and a TopK SAE finds each one's direction with cosine ≥ 0.9."""
    r = toy_recovery(0.95, n_features=20, d_hidden=5, seed=0)
    assert float(r.represented.float().mean()) == 1.0
    assert r.recovered >= 0.9, r.cosines
    df = r.to_pandas()
    assert len(df) == 20 and df["recovered"].mean() == r.recovered


def test_dense_features_are_not_recovered():
    """At 50% activity the model keeps only about d_hidden features (no superposition) and the
    SAE cannot recover the rest: the curve rises with sparsity."""
    r = toy_recovery(0.5, n_features=20, d_hidden=5, seed=0)
    assert r.recovered < 0.5
    curve = RecoveryCurve([r, toy_recovery(0.98, seed=0)])
    df = curve.to_pandas()
    assert list(df.columns[:2]) == ["sparsity", "recovered"]
    assert df["recovered"].iloc[1] > df["recovered"].iloc[0]
    fig = curve.plot()
    assert fig.axes[0].get_xlabel().startswith("feature probability")


def test_max_cosines_is_exact_for_permuted_scaled_directions():
    w = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    dec = 3 * w[[5, 2, 0, 1, 4, 3]]
    assert torch.allclose(max_cosines(dec, w), torch.ones(6), atol=1e-6)


def test_bad_toy_arguments():
    with pytest.raises(ValueError, match="d_hidden < n_features"):
        ToyModel(5, 5, 0.9)
    with pytest.raises(ValueError, match="sparsity"):
        ToyModel(10, 5, 1.0)
