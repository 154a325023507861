"""Metrics (mi_widgets.core.metrics): the metric objects compute what they say, and a callable gives
the same patching grid as the object."""

from __future__ import annotations

import pytest
import torch
from _patching_reference import CLEAN, CORRUPT, gap_metric

from mi_widgets.core import metrics as M
from mi_widgets.core.interventions.patching import activation_patching

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def test_metric_objects_compute_what_they_say(models):
    model = models["gpt2"]
    paris, rome = (M.token_id(model, t) for t in (" Paris", " Rome"))
    logits = torch.randn(3, model.d_vocab)
    ld = M.logit_diff(" Paris", " Rome").bind(model)
    torch.testing.assert_close(ld(logits), logits[:, paris] - logits[:, rome])
    torch.testing.assert_close(
        M.logit_diff(paris, rome)(logits), logits[:, paris] - logits[:, rome]
    )
    per = M.logit_diff([paris, rome, paris], [rome, paris, 0])
    torch.testing.assert_close(
        per(logits),
        torch.stack(
            [
                logits[0, paris] - logits[0, rome],
                logits[1, rome] - logits[1, paris],
                logits[2, paris] - logits[2, 0],
            ]
        ),
    )
    torch.testing.assert_close(
        per(logits[:2], pairs=torch.tensor([2, 2])), logits[:2, paris] - logits[:2, 0]
    )
    torch.testing.assert_close(
        M.prob(" Paris").bind(model)(logits), torch.softmax(logits, -1)[:, paris]
    )
    kl = M.kl_to_clean()
    assert kl(logits, clean_logits=logits).abs().max() < 1e-6
    other = torch.randn(3, model.d_vocab)
    p, q = torch.softmax(logits, -1), torch.softmax(other, -1)
    torch.testing.assert_close(
        kl(other, clean_logits=logits), (p * (p.log() - q.log())).sum(-1), atol=1e-5, rtol=1e-4
    )
    assert "Paris" in ld.name and kl.name == "kl_to_clean"
    with pytest.raises(ValueError, match="bind the metric"):
        M.logit_diff(" Paris", " Rome")(logits)
    with pytest.raises(ValueError, match="one number per row"):
        M.as_metric(lambda x: x)(logits)
    with pytest.raises(ValueError, match="metric must be"):
        M.as_metric(3)


def test_callable_metric_gives_the_same_grid_as_the_metric_object(models):
    model = models["gpt2"]
    metric = gap_metric(model)
    a, b = metric.correct[0], metric.wrong[0]
    res1 = activation_patching(model, CLEAN, CORRUPT, metric, positions="each", progress=False)
    res2 = activation_patching(
        model, CLEAN, CORRUPT, lambda lg: lg[:, a] - lg[:, b], positions="each", progress=False
    )
    torch.testing.assert_close(res1.values, res2.values)
