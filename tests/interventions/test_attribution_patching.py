"""Attribution patching (mi_widgets.core.interventions.attribution_patching): the first-order term
of activation patching, and no gradients or hooks left behind."""

from __future__ import annotations

import pytest
import torch
from _patching_reference import (
    CLEAN,
    CORRUPT,
    _hook_state,
    gap_metric,
    reference_patching,
)

from mi_widgets.core.interventions.attribution_patching import attribution_patching

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


class _RawLogitDiff:
    """logit[a] - logit[b] in the logits' own dtype (float64 for finite differences)."""

    name = "raw"

    def __init__(self, a, b):
        self.a, self.b = a, b

    def bind(self, model):
        return self

    def __call__(self, lg, pairs=None, clean_logits=None):
        return lg[:, self.a] - lg[:, self.b]


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_patching_is_the_first_order_term_of_patching(models, bpe_tokenizer, direction):
    """AtP = d/de m(base + e * (source - base)) at e = 0, per cell: checked against central
    finite differences of the hook reference on a float64 copy of the model."""
    import copy

    import mi_widgets as mw

    model = models["gpt2"]
    metric = gap_metric(model)
    a, b = metric.correct[0], metric.wrong[0]
    m64 = mw.wrap(copy.deepcopy(model.hf).double(), bpe_tokenizer, "gpt2-f64")
    eps = 1e-4
    for site, each in [
        ("resid_pre", True),
        ("head_out", True),
        ("resid_mid", True),
        ("mlp_out", False),
        ("attn_out", True),
        ("resid_post", False),
    ]:
        atp = attribution_patching(
            model,
            CLEAN,
            CORRUPT,
            metric,
            site=site,
            positions="each" if each else "all",
            direction=direction,
            normalize=False,
        )
        base = atp.corrupt_baseline if direction == "denoise" else atp.clean_baseline
        up, down = (
            reference_patching(m64, CLEAN, CORRUPT, _RawLogitDiff(a, b), site, each, direction, normalize=False, eps=e)
            for e in (eps, -eps)
        )
        fd = ((up - down) / (2 * eps)).float()
        assert atp.values.shape == fd.shape, site
        err = (atp.values - base[0] - fd).abs().max().item()
        assert err <= 1e-3 * max(1.0, fd.abs().max().item()), f"{site} {direction}: {err:.2e}"
    # normalised like activation patching, and labelled as an estimate
    res = attribution_patching(
        model, CLEAN, CORRUPT, metric, positions="each", direction=direction
    )
    assert res.direction == f"{direction} (attribution)" and res.dims == ("layer", "position")
    # the first-order term is linear in the patch: patching every position at once moves the
    # metric by the sum of the per-position moves, at every layer (raw metric units)
    raw_each = attribution_patching(
        model, CLEAN, CORRUPT, metric, positions="each", direction=direction, normalize=False
    )
    raw = attribution_patching(
        model, CLEAN, CORRUPT, metric, positions="all", direction=direction, normalize=False
    )
    base = raw.corrupt_baseline if direction == "denoise" else raw.clean_baseline
    torch.testing.assert_close(
        raw.values.reshape(-1) - base[0], (raw_each.values - base[0]).sum(-1), atol=1e-3, rtol=1e-4
    )
    # resid_pre at layer 0 over all positions is exactly the whole input: the estimate is the
    # derivative of the metric along the straight line from the base input to the source input
    fd = [
        reference_patching(
            m64, CLEAN, CORRUPT, _RawLogitDiff(a, b), "resid_pre", False, direction,
            normalize=False, eps=e,
        ).reshape(-1)[0]
        for e in (eps, -eps)
    ]  # fmt: skip
    slope = float((fd[0] - fd[1]) / (2 * eps))
    got = float(raw.values.reshape(-1)[0] - base[0])
    assert abs(got - slope) <= 1e-3 * max(1.0, abs(slope)), (got, slope)


def test_attribution_patching_leaves_no_gradients_or_hooks(models):
    model = models["llama"]
    before = _hook_state(model)
    attribution_patching(
        model, CLEAN, CORRUPT, gap_metric(model), site="head_out", positions="each"
    )
    assert all(p.grad is None for p in model.hf.parameters())
    assert _hook_state(model) == before
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        attribution_patching(model, CLEAN, CORRUPT, gap_metric(model), layers=7)
