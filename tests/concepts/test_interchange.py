"""Interchange interventions (probe direction, DAS, full vector) and CCS: the causal tests a
probe cannot give, with zoo:tiny's planted sentiment and truth as ground truth."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.concepts._edits import edited_run, hooked_logits
from mi_widgets.core.concepts.interchange import interchange
from mi_widgets.core.concepts.probes import ProbeDataset

# token 6 of every zoo review ("<bos> The food was awful and the staff ...") is " the": unrelated
# to the verdict
UNRELATED = 6


@pytest.fixture(scope="module")
def sentiment():
    return ProbeDataset.from_zoo("sentiment", n=200, n_ood=0)


def test_edit_paths_agree(tiny):
    ids = torch.cat([tiny.to_tokens("The food was awful and the staff were rude. Overall the review is")] * 2)
    plain = tiny.hf(ids).logits[:, -1]
    lg, _ = edited_run(tiny, ids, "resid_post", 1, None)
    assert torch.allclose(lg, plain, atol=1e-4)

    def fn(h):
        h = h.clone()
        h[:, -1] = h[:, -1] * 0.5
        return h

    a, _ = edited_run(tiny, ids, "resid_post", 1, fn)
    with torch.no_grad():
        b = hooked_logits(tiny, ids, "resid_post", 1, fn)
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, plain, atol=1e-2)


def test_interchange_where_sentiment_is_read(tiny, sentiment):
    # zoo:tiny moves the review's sentiment into the last token (" is") in block 0; swapping the
    # class-mean-difference direction there makes the model give the source review's verdict
    r = interchange(tiny, sentiment, layers=[-1, 0, 3], n_pairs=60, progress=False)
    assert r.rows[0]["base_accuracy"] >= 0.99
    assert r.iia(0) >= 0.95 and r.iia(3) >= 0.95
    assert r.iia("embed") <= 0.05  # the embedding of " is" holds no sentiment to swap
    full = interchange(tiny, sentiment, layers=[0], kind="full", n_pairs=60, progress=False)
    assert full.iia(0) >= 0.95


def test_probe_direction_is_not_the_causal_direction(tiny, sentiment):
    # a logistic probe at block 0 separates perfectly, but its weight vector is not the
    # direction the model reads: swapping along it barely moves the verdict
    mean_diff = interchange(tiny, sentiment, layers=[0], n_pairs=60, progress=False)
    probe_dir = interchange(tiny, sentiment, layers=[0], directions="probe", n_pairs=60, progress=False)
    assert mean_diff.iia(0) - probe_dir.iia(0) >= 0.5


def test_interchange_at_unrelated_token_does_nothing(tiny, sentiment):
    r = interchange(tiny, sentiment, layers=[-1, 0], kind="full", position=UNRELATED, n_pairs=60, progress=False)
    assert r.iia("embed") <= 0.05 and r.iia(0) <= 0.05


def test_das_learns_the_sentiment_subspace(tiny, sentiment):
    r = interchange(tiny, sentiment, layers=[0], kind="das", das_dim=1, steps=25, batch_size=16, n_pairs=60, progress=False)
    assert r.iia(0) >= 0.9
    Q = r.rotations[0]
    assert Q.shape == (1, tiny.d_model)
    assert torch.allclose(Q @ Q.T, torch.eye(1), atol=1e-4)  # orthonormal basis
    wrong = interchange(tiny, sentiment, layers=[-1], kind="das", position=UNRELATED, steps=10, batch_size=16, n_pairs=40, progress=False)
    assert wrong.iia("embed") <= 0.05  # no subspace of an unrelated token's embedding carries it
    df = r.to_pandas()
    assert {"layer", "iia", "base_accuracy", "kind"} <= set(df.columns)


def test_interchange_errors_before_any_forward(tiny, sentiment):
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="kind"):
            interchange(tiny, sentiment, kind="magic", progress=False)
        with pytest.raises(ValueError, match="out of range"):
            interchange(tiny, sentiment, layers=[7], progress=False)
        with pytest.raises(ValueError, match="das_dim"):
            interchange(tiny, sentiment, kind="das", das_dim=0, progress=False)
        with pytest.raises(ValueError, match="directions"):
            interchange(tiny, sentiment, directions="pca", progress=False)
        with pytest.raises(ValueError, match="binary"):
            interchange(tiny, ProbeDataset.from_lists(["a b", "c d", "e f"] * 4, [0, 1, 2] * 4), progress=False)
        with pytest.raises(ValueError, match="position"):
            interchange(tiny, sentiment, position="first", progress=False)
    finally:
        h.remove()
    assert calls == []


def test_plots(tiny, sentiment):
    import matplotlib

    matplotlib.use("Agg")
    r = interchange(tiny, sentiment, layers=[0], kind="full", n_pairs=10, progress=False)
    assert r.plot().axes[0].get_ylabel() == "interchange-intervention accuracy"


def test_widget_draws_iia_on_the_probe_view(tiny, sentiment):
    """InterchangeResult.widget(probe_result): the IIA curve as an overlay on the probe view,
    at the layers both share; without a probe result, a clear error."""
    from mi_widgets.core.concepts.probes import probe

    pr = probe(tiny, sentiment, layers=[0, 3], seeds=(0,), progress=False)
    r = interchange(tiny, sentiment, layers=[-1, 0], kind="full", n_pairs=20, progress=False)
    w = r.widget(pr)
    assert pr.overlays["IIA (full)"] == {("resid_pre", -1): r.iia("embed"), ("resid_post", 0): r.iia(0)}
    names, kinds, _ = type(w)._curves(w.result)
    assert kinds[names.index("IIA (full)")] == "overlay"
    with pytest.raises(ValueError, match="ProbeResult"):
        r.widget()
    other = interchange(tiny, sentiment, layers=[1], kind="full", n_pairs=4, progress=False)
    with pytest.raises(ValueError, match="none of this result's layers"):
        other.widget(pr)
