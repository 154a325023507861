"""The execution engine (mi_widgets.core.interventions.engine, batching): batch size and prefix
reuse change nothing, interrupts leave no hooks and an unchanged model, progress counts batches."""

from __future__ import annotations

import functools

import pytest
import torch
from _patching_reference import (
    CLEAN,
    CORRUPT,
    _hook_state,
    _sites,
    gap_metric,
    last_logits,
    reference_patching,
)

from mi_widgets.core.interventions import batching as B
from mi_widgets.core.interventions import engine as E
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.core.interventions.patching import activation_patching

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def test_batch_size_does_not_change_the_grid(models):
    model = models["gpt2"]
    metric = gap_metric(model)
    a = activation_patching(
        model, CLEAN, CORRUPT, metric, site="head_out", positions="each", progress=False
    )
    b = activation_patching(
        model,
        CLEAN,
        CORRUPT,
        metric,
        site="head_out",
        positions="each",
        batch_size=1,
        progress=False,
    )
    assert (a.values - b.values).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prefix_reuse_is_used_and_changes_nothing(models, monkeypatch, family):
    """Per-position batches start at their first patched position with the base run's keys and
    values before it; the grid is the same as without (and as the reference)."""
    model = models[family]
    metric = gap_metric(model)
    seen = []
    real = E._DirectEngine.forward

    def spy(self, *a, **k):
        seen.append(k.get("prefix"))
        return real(self, *a, **k)

    monkeypatch.setattr(E._DirectEngine, "forward", spy)
    monkeypatch.setattr(B, "_BAND_TOKENS", 8)  # band even these tiny grids
    for site in _sites(model):
        seen.clear()
        on = activation_patching(
            model, CLEAN, CORRUPT, metric, site=site, positions="each", progress=False
        )
        assert any(p is not None and p[1] > 0 for p in seen), site
        seen.clear()
        off = activation_patching(
            model, CLEAN, CORRUPT, metric, site=site, positions="each", prefix=False, progress=False
        )
        assert all(p is None for p in seen)
        assert (on.values - off.values).abs().max() <= 1e-5, site
        ref = reference_patching(model, CLEAN, CORRUPT, metric, site, True, "denoise")
        assert (off.values - ref).abs().max() <= 1e-4, site


@pytest.mark.parametrize("engine", ["direct", "nnsight"])
def test_interrupt_inside_a_sweep_leaves_no_hooks_behind(models, monkeypatch, engine):
    model = models["gpt2"]
    metric = gap_metric(model)
    before = _hook_state(model)
    logits_before = last_logits(model, CLEAN)
    sweep = functools.partial(
        activation_patching, model, CLEAN, CORRUPT, metric, site="head_out", positions="each", engine=engine,
        progress=False,
    )
    expected = sweep()
    calls = {"n": 0}
    real_apply = E._apply

    def flaky_apply(*a, **k):  # raises inside a patched forward, with the write hooks in place
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_apply(*a, **k)

    monkeypatch.setattr(E, "_apply", flaky_apply)
    with pytest.raises(KeyboardInterrupt):
        sweep()
    monkeypatch.setattr(E, "_apply", real_apply)
    assert _hook_state(model) == before
    torch.testing.assert_close(last_logits(model, CLEAN), logits_before, atol=0, rtol=0)
    again = sweep()
    torch.testing.assert_close(again.values, expected.values, atol=1e-6, rtol=0)


def test_interrupt_between_batches_and_metric_errors_leave_the_model_unchanged(models):
    model = models["llama"]
    before = _hook_state(model)
    logits_before = last_logits(model, CLEAN)
    calls = {"n": 0}

    def metric(logits):
        calls["n"] += 1
        if calls["n"] > 3:  # after the baselines and one batch
            raise KeyboardInterrupt
        return logits[:, 1] - logits[:, 2]

    with pytest.raises(KeyboardInterrupt):
        activation_patching(model, CLEAN, CORRUPT, metric, positions="each", progress=False)
    with pytest.raises(RuntimeError):
        ablate(
            model,
            CLEAN,
            lambda lg: (_ for _ in ()).throw(RuntimeError("boom")),
            "0.1",
            progress=False,
        )
    assert _hook_state(model) == before
    torch.testing.assert_close(last_logits(model, CLEAN), logits_before, atol=0, rtol=0)
    out = model.run(model.to_tokens(CLEAN), [("resid_post", 2)])
    assert out[("resid_post", 2)].shape == (6, model.d_model)


def test_progress_bar_counts_batches(models, capsys):
    model = models["gpt2"]
    activation_patching(
        model,
        CLEAN,
        CORRUPT,
        gap_metric(model),
        positions="each",
        batch_size=4,
        prefix=False,
        progress=True,
    )
    err = capsys.readouterr().err
    assert "patching resid_pre" in err and "/6" in err  # 3 layers x 6 rows in batches of 4
