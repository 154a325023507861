"""Input checks shared by the interventions (mi_widgets.core.interventions.checks): bad prompts,
pairs, sites and metrics raise clear errors before any forward pass."""

from __future__ import annotations

import pytest
import torch
from _patching_reference import CLEAN, CORRUPT

from mi_widgets.core import metrics as M
from mi_widgets.core.interventions.patching import activation_patching

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def test_pairs_of_different_token_lengths_name_both(models, no_forward):
    model = models["gpt2"]
    with pytest.raises(ValueError) as e:
        activation_patching(
            model, CLEAN, "The staff is in", M.logit_diff(" Paris", " Rome"), progress=False
        )
    msg = str(e.value)
    assert "6 vs 5 tokens" in msg and "' Eiffel'" in msg and "' staff'" in msg
    with pytest.raises(ValueError, match=r"clean\[1\] and corrupt\[1\]"):
        activation_patching(
            model,
            [CLEAN, CLEAN],
            [CORRUPT, "The staff is in"],
            M.logit_diff(" Paris", " Rome"),
            progress=False,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": 3}, "layer 3 is out of range: gpt2 has 3 layers"),
        ({"layers": [0, -1]}, "layer -1 is out of range"),
        ({"site": "head_out", "heads": [4]}, "head 4 is out of range: gpt2 has 4 heads"),
        ({"site": "resid_middle"}, "unknown site 'resid_middle'"),
        ({"site": "attn_pattern"}, "unknown site 'attn_pattern'"),
        ({"positions": [6]}, "position 6 is out of range"),
        ({"positions": "every"}, "positions must be"),
        ({"direction": "up"}, "direction must be"),
        ({"heads": [0]}, "heads= applies to site='head_out' only"),
    ],
)
def test_bad_arguments_raise_before_compute(models, no_forward, kwargs, match):
    with pytest.raises(ValueError, match=match):
        activation_patching(
            models["gpt2"],
            CLEAN,
            CORRUPT,
            M.logit_diff(" Paris", " Rome"),
            progress=False,
            **kwargs,
        )


def test_empty_and_unpaired_prompts_raise(models, no_forward):
    model, metric = models["gpt2"], M.logit_diff(" Paris", " Rome")
    with pytest.raises(ValueError, match="clean prompt is empty"):
        activation_patching(model, "", CORRUPT, metric)
    with pytest.raises(ValueError, match=r"corrupt\[1\] is empty"):
        activation_patching(model, [CLEAN, CLEAN], [CORRUPT, ""], metric)
    with pytest.raises(ValueError, match="2 clean and 1 corrupt"):
        activation_patching(model, [CLEAN, CLEAN], [CORRUPT], metric)
    with pytest.raises(ValueError, match="non-empty list"):
        activation_patching(model, [], [], metric)


def test_metric_token_that_is_not_one_token_is_named(models, no_forward):
    model = models["gpt2"]
    with pytest.raises(ValueError) as e:
        activation_patching(model, CLEAN, CORRUPT, M.logit_diff(" Paris", " Romeo and Juliet"))
    msg = str(e.value)
    assert "' Romeo and Juliet'" in msg and "tokenises to" in msg and "' and'" in msg
    with pytest.raises(ValueError, match="leading space"):
        activation_patching(model, CLEAN, CORRUPT, M.prob("Mary"))
    with pytest.raises(ValueError, match="lists 3 tokens but there are 1"):
        activation_patching(model, CLEAN, CORRUPT, M.logit_diff([" Paris"] * 3, " Rome"))
    with pytest.raises(ValueError, match="id 100000 is out of range"):
        activation_patching(model, CLEAN, CORRUPT, M.prob(100000))


def test_metric_equal_on_clean_and_corrupt_is_refused(models):
    model = models["gpt2"]
    with pytest.raises(ValueError, match="is the same on the clean and corrupt prompts"):
        activation_patching(
            model, CLEAN, CORRUPT, lambda logits: torch.zeros(logits.shape[0]), progress=False
        )
    res = activation_patching(
        model,
        CLEAN,
        CORRUPT,
        lambda logits: logits[:, 0],
        normalize=False,
        layers=0,
        progress=False,
    )
    assert not res.normalized
