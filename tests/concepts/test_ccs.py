"""Interchange interventions (probe direction, DAS, full vector) and CCS: the causal tests a
probe cannot give, with zoo:tiny's planted sentiment and truth as ground truth."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.concepts.ccs import ContrastDataset, ccs, fit_ccs
from mi_widgets.core.concepts.probes import ProbeDataset

# token 6 of every zoo review ("<bos> The food was awful and the staff ...") is " the": unrelated
# to the verdict
UNRELATED = 6


def _planted_pairs(n=400, d=32, seed=0, signal=2.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    t = (torch.rand(n, generator=g) < 0.5).long()
    base = torch.randn(n, d, generator=g) * 3  # item content, shared by both sides
    s = (2 * t - 1).float()[:, None]
    Xp = base + signal * s * u + torch.randn(n, d, generator=g) * 0.3 + 5.0  # side offset: normalised away
    Xn = base - signal * s * u + torch.randn(n, d, generator=g) * 0.3 - 5.0
    return Xp, Xn, t, u


def test_ccs_recovers_a_planted_truth_direction():
    Xp, Xn, t, u = _planted_pairs()
    fit = fit_ccs(Xp[:300], Xn[:300], n_restarts=4, steps=300)
    c = fit.credence(Xp[300:], Xn[300:])
    acc = float(((c > 0.5).long() == t[300:]).double().mean())
    assert max(acc, 1 - acc) >= 0.95  # up to CCS's sign ambiguity
    cos = torch.nn.functional.cosine_similarity(fit.direction, u, dim=0)
    assert abs(float(cos)) >= 0.8


def test_ccs_finds_truth_on_zoo(tiny):
    # ground_truth.json truth_probe: ~0.5 up to block 1, 0.92-0.93 after blocks 2-3; CCS on the
    # true/false version of each claim (read at " is") finds the same, without labels (sign
    # oriented with the training labels; the label-free max(acc, 1-acc) is reported alongside)
    r = ccs(tiny, ContrastDataset.from_zoo("truth"), layers=[1, 2, 3], n_restarts=4, steps=300, progress=False)
    assert r.accuracy(1) <= 0.65
    assert r.accuracy(2) >= 0.85 and r.accuracy(3) >= 0.85
    assert r.accuracy(3, up_to_sign=True) >= r.accuracy(3) - 1e-9
    assert set(r.overlay) == {("resid_post", 1), ("resid_post", 2), ("resid_post", 3)}


def _last_token_resid_post(model, texts, layer):
    """resid_post[layer] at each text's last token, read with a plain forward hook on the block."""
    block = model.hf.transformer.h[layer]
    out = []
    h = block.register_forward_hook(lambda m, a, o: out.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            for t in texts:
                model.hf(model.to_tokens(t))
    finally:
        h.remove()
    return torch.stack([o[0, -1] for o in out]).double()


def _independent_probe_accuracy(model, data, layer, seed=0):
    """A supervised probe on x+ - x-, recomputed without the library's caching or probe:
    torch hooks and scikit-learn's LogisticRegression on the library's own split."""
    from sklearn.linear_model import LogisticRegression

    tr, va, te = data.split(seed)
    D = (_last_token_resid_post(model, data.pos, layer) - _last_token_resid_post(model, data.neg, layer)).numpy()
    y = torch.tensor(data.labels).numpy()
    clf = LogisticRegression(max_iter=2000).fit(D[tr + va], y[tr + va])
    return float((clf.predict(D[te]) == y[te]).mean())


def test_ccs_answer_token_construction_is_weaker_than_reading_the_claim(tiny):
    """Burns et al.'s construction (claim + " true" / " false", read at the answer) is weaker on
    zoo:tiny than the true/false claims read at " is": a supervised probe on x+ - x-, computed
    independently (torch hooks, scikit-learn), is worse there. Measured at resid_post 2: 0.79
    at the answer token, against the control printed below."""

    contrast = ContrastDataset.from_answers(ProbeDataset.from_zoo("truth"), (" false", " true"))
    answer_token = _independent_probe_accuracy(tiny, contrast, 2)
    control = _independent_probe_accuracy(tiny, ContrastDataset.from_zoo("truth"), 2)
    assert control >= 0.85, control
    assert answer_token <= control - 0.05, (answer_token, control)


def test_ccs_reports_the_supervised_probe_accuracy_an_independent_probe_gets(tiny):
    """CCS's supervised ceiling (C chosen on validation, refitted on train + validation) agrees
    with scikit-learn's LogisticRegression (C=1) on the same split, computed from torch hooks.
    With an empty validation set C stays at 1e-3 and the ceiling drops to 0.58 against 0.79."""
    data = ProbeDataset.from_zoo("truth")
    r = ccs(tiny, data, layers=[2], n_restarts=2, steps=100, progress=False)
    reported = r.to_pandas()["probe_accuracy"].iloc[0]
    independent = _independent_probe_accuracy(tiny, ContrastDataset.from_answers(data, (" false", " true")), 2)
    assert abs(reported - independent) <= 0.1, (reported, independent)


def test_ccs_errors_before_any_forward(tiny):
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="ContrastDataset"):
            ccs(tiny, ["a", "b"], progress=False)
        with pytest.raises(ValueError, match="residual-width"):
            ccs(tiny, ContrastDataset.from_zoo("truth"), site="attn_pattern", progress=False)
        with pytest.raises(ValueError, match="out of range"):
            ccs(tiny, ContrastDataset.from_zoo("truth"), layers=[8], progress=False)
        with pytest.raises(ValueError, match="same shape"):
            fit_ccs(torch.zeros(4, 3), torch.zeros(5, 3))
        with pytest.raises(ValueError, match="pos has"):
            ContrastDataset(["a"], ["b", "c"], [1])
    finally:
        h.remove()
    assert calls == []
