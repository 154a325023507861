"""Attribution: exact values against hand autograd / edited inputs, IG completeness, and the
planted fact on zoo:tiny."""

from __future__ import annotations

import warnings

import pytest
import torch

from mi_widgets.core.description.attribution import Target, attribute
from mi_widgets.core.model import _get

PROMPT = "The Eiffel Tower is in"


def _embed(m, ids):
    with torch.no_grad():
        return _get(m.hf, m.arch.embed)(ids).float()


def _subject_span(m, prompt: str, subject: str) -> tuple[int, int]:
    i = prompt.lower().index(subject.lower())
    a = m.to_tokens(prompt[:i].rstrip()).shape[1] if i else 1
    b = m.to_tokens(prompt[: i + len(subject)]).shape[1]
    return a, b


# -- exactness ---------------------------------------------------------------------------------


def test_grad_x_input_matches_hand_autograd_on_every_family(family_model):
    """(x - 0) · ∂f/∂x for a direction on resid_post[0] at the last position, against
    ``inputs_embeds`` + ``output_hidden_states`` + torch.autograd in plain transformers."""
    family, m = family_model
    torch.manual_seed(1)
    v = torch.randn(m.d_model)
    text = "The food was wonderful."
    r = attribute(m, text, Target.direction("resid_post", 0, v), "grad_x_input", skip_bos=False)
    ids = m.to_tokens(text)
    x = _embed(m, ids).requires_grad_(True)
    out = m.hf(inputs_embeds=x, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    f = out.hidden_states[1][0, -1] @ v
    (g,) = torch.autograd.grad(f, x)
    torch.testing.assert_close(r.values, (x * g).sum(-1)[0].detach(), rtol=1e-4, atol=1e-5)
    assert r.f_input == pytest.approx(float(f.detach()), rel=1e-4, abs=1e-5)
    assert all(p.grad is None for p in m.hf.parameters())


def test_ig_completeness_and_occlusion_on_every_family(family_model):
    """Every layer row of IG sums to f(x) - f(baseline) (hooks on each family's blocks), and
    occlusion equals running ``inputs_embeds`` with one token's embedding zeroed.

    IG uses a token baseline and keeps BOS: the random Llama's BOS embedding is exactly zero
    (padding_idx 0), and a path that ends or starts at a zero vector passes through RMSNorm's
    x / sqrt(eps), whose gradient blows up there, so a few hundred steps do not converge
    (measured: 12.6% completeness error at 256 steps from the zero baseline); the result
    warns about it."""
    family, m = family_model
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(2))
    text = "The food was wonderful."
    tg = Target.direction("resid_post", m.n_layers - 1, v)
    r = attribute(m, text, tg, n_steps=16, tolerance=0.02, max_steps=256, layers=True, baseline=3)
    assert r.rel_error <= 0.02
    for li in range(m.n_layers + 1):
        assert float(r.layer_values[li].sum()) == pytest.approx(r.delta, rel=0.02, abs=1e-4), (family, li)
    occ = attribute(m, text, tg, "occlusion", skip_bos=False)
    ids = m.to_tokens(text)
    x = _embed(m, ids)
    last = _get(m.hf, m.arch.layers)[m.n_layers - 1]
    got = []
    h = last.register_forward_hook(lambda _m, a, o: got.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            def f(e):
                m.hf(inputs_embeds=e, attention_mask=torch.ones_like(ids))
                return float(got.pop()[0, -1] @ v)

            fx = f(x)
            want = []
            for p in range(ids.shape[1]):
                e = x.clone()
                e[0, p] = 0
                want.append(fx - f(e))
    finally:
        h.remove()
    torch.testing.assert_close(occ.values, torch.tensor(want), rtol=1e-4, atol=1e-4)


def test_grad_x_input_logit_matches_hand_autograd(tiny):
    r = attribute(tiny, PROMPT, " Paris", "grad_x_input", skip_bos=False)
    ids = tiny.to_tokens(PROMPT)
    x = _embed(tiny, ids).requires_grad_(True)
    paris = tiny.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    f = tiny.hf(inputs_embeds=x).logits[0, -1, paris]
    (g,) = torch.autograd.grad(f, x)
    torch.testing.assert_close(r.values, (x * g).sum(-1)[0].detach(), rtol=1e-4, atol=1e-5)


def test_logit_diff_is_the_difference_of_two_logit_attributions(tiny):
    """Gradient × input is linear in the target, so the shorthand pair equals the difference."""
    d = attribute(tiny, PROMPT, (" Paris", " Rome"), "grad_x_input")
    a = attribute(tiny, PROMPT, " Paris", "grad_x_input")
    b = attribute(tiny, PROMPT, " Rome", "grad_x_input")
    torch.testing.assert_close(d.values, a.values - b.values, rtol=1e-4, atol=1e-5)
    c = attribute(tiny, PROMPT, lambda lg: lg[:, -1, a.token_ids[0]] * 0 + lg[:, -1].max(-1).values, "grad_x_input")
    assert c.values.shape == a.values.shape


def test_occlusion_matches_running_the_edited_prompt(tiny):
    """Occlusion with a token baseline = the drop of the target when that token is replaced."""
    base = " the"
    r = attribute(tiny, PROMPT, " Paris", "occlusion", baseline=base)
    ids = tiny.to_tokens(PROMPT)
    paris = tiny.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    the = tiny.tokenizer(base, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        f_x = float(tiny.hf(ids).logits[0, -1, paris])
        expected = [0.0]  # BOS is kept (skip_bos)
        for p in range(1, ids.shape[1]):
            e = ids.clone()
            e[0, p] = the
            expected.append(f_x - float(tiny.hf(e).logits[0, -1, paris]))
    torch.testing.assert_close(r.values, torch.tensor(expected), rtol=1e-4, atol=1e-4)
    assert r.f_input == pytest.approx(f_x, abs=1e-4)


def test_occlusion_window_averages_the_windows_covering_a_token(tiny):
    ids = tiny.to_tokens(PROMPT)
    paris = tiny.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    r = attribute(tiny, PROMPT, " Paris", "occlusion", baseline="zero", window=2, skip_bos=False)
    x = _embed(tiny, ids)
    t = ids.shape[1]
    with torch.no_grad():
        f_x = float(tiny.hf(inputs_embeds=x).logits[0, -1, paris])
        drops = []
        for p in range(t - 1):
            e = x.clone()
            e[0, p : p + 2] = 0
            drops.append(f_x - float(tiny.hf(inputs_embeds=e).logits[0, -1, paris]))
    expected = [drops[0]] + [(drops[p - 1] + drops[p]) / 2 for p in range(1, t - 1)] + [drops[-1]]
    torch.testing.assert_close(r.values, torch.tensor(expected), rtol=1e-4, atol=1e-4)


# -- integrated gradients ----------------------------------------------------------------------


def test_ig_completeness_input_and_every_layer(tiny):
    r = attribute(tiny, PROMPT, " Paris", n_steps=32, tolerance=0.05, layers=True)
    assert r.rel_error is not None and r.rel_error <= 0.05
    assert float(r.values.sum()) == pytest.approx(r.delta, rel=0.05)
    assert r.delta > 5  # the baseline really removes the fact
    # each residual layer's row sums to the same f(x) - f(baseline): the residual stream at one
    # layer determines everything downstream
    assert r.layer_values.shape == (tiny.n_layers + 1, len(r.str_tokens))
    for li in range(tiny.n_layers + 1):
        assert float(r.layer_values[li].sum()) == pytest.approx(r.delta, rel=0.05), li
    # row 0 (resid_pre 0 = embedding + position) is the input attribution itself
    torch.testing.assert_close(r.layer_values[0], r.values, rtol=1e-3, atol=1e-3)
    # the last block's output feeds only the final position's logits
    assert float(r.layer_values[-1, :-1].abs().max()) < 1e-5


def test_ig_raises_steps_until_complete_and_warns_otherwise(tiny):
    r = attribute(tiny, PROMPT, " Paris", n_steps=1, tolerance=0.05, max_steps=64)
    assert r.n_steps > 1 and r.rel_error <= 0.05
    with pytest.warns(UserWarning, match="relative error"):
        attribute(tiny, PROMPT, " Paris", n_steps=1, tolerance=1e-6, max_steps=2)


def test_ig_is_exact_for_a_target_linear_in_the_embedding(tiny):
    """A direction on resid_pre[0] is linear in the input embedding: IG with 1 step is exact
    and equals gradient × input."""
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0))
    tg = Target.direction("resid_pre", 0, v, position=3)
    ig = attribute(tiny, PROMPT, tg, n_steps=1, tolerance=1e-4)
    gx = attribute(tiny, PROMPT, tg, "grad_x_input")
    assert ig.rel_error < 1e-4
    torch.testing.assert_close(ig.values, gx.values, rtol=1e-4, atol=1e-5)
    # only position 3 feeds resid_pre[0] at position 3
    assert float(ig.values[[0, 1, 2, 4, 5]].abs().max()) == 0.0


def test_neuron_and_feature_targets_agree(tiny):
    v = torch.zeros(tiny.d_mlp)
    v[7] = 1.0
    n = attribute(tiny, PROMPT, Target.neuron("mlp_post", 1, 7), "grad_x_input")
    d = attribute(tiny, PROMPT, Target.direction("mlp_post", 1, v), "grad_x_input")
    f = attribute(tiny, PROMPT, Target.feature("mlp_post", 1, lambda a: a[:, 7]), "grad_x_input")
    torch.testing.assert_close(n.values, d.values)
    torch.testing.assert_close(n.values, f.values)
    assert n.f_input == pytest.approx(float(tiny.run(tiny.to_tokens(PROMPT), [("mlp_post", 1)])[("mlp_post", 1)][-1, 7]), abs=1e-4)


# -- ground truth ------------------------------------------------------------------------------


def test_ig_puts_the_most_weight_on_the_subject_on_zoo_tiny(tiny):
    """Planted mechanism (ground_truth.json, factual_recall): the city is recalled from the
    subject tokens, never from the template (every template is used with every fact).

    IG of the answer logit against a content-free baseline (the ``<|endoftext|>`` embedding at
    every position; BOS kept) gives the subject span more |attribution| than any template token
    and than all template tokens together. Measured on all 1,050 fact prompts (32 steps):
    subject > every template token in 97.9% (700 training-template prompts) / 98.0% (350
    held-out), subject > all template tokens together in 94.9% / 87.7%, mean subject share of
    |attribution| 0.68 / 0.62. (With the zero baseline the final
    ' in' gets as much as the subject: zeroing it also removes "a city comes next".) Here a
    spread of 14 training and 7 held-out prompts."""
    from mi_widgets.zoo import corpus

    prompts = corpus.fact_prompts("train")[::50] + corpus.fact_prompts("heldout")[::50]
    wins = together = 0
    shares = []
    for f in prompts:
        r = attribute(tiny, f["prompt"], f["answer"], baseline=0, n_steps=16, tolerance=0.1)
        a, b = _subject_span(tiny, f["prompt"], f["subject"])
        v = r.values.abs()
        subj = float(v[a:b].sum())
        template = torch.cat([v[1:a], v[b:]])
        wins += subj > float(template.max())
        together += subj > float(template.sum())
        shares.append(subj / float(v.sum()))
    n = len(prompts)
    assert wins >= 0.9 * n, (wins, n)
    assert together >= 0.75 * n, (together, n)
    assert sum(shares) / n > 0.5


# -- errors before compute ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": " Eiffel Tower"}, "not exactly one token"),
        ({"target": Target.neuron("mlp_post", 0, 10_000)}, "neuron index 10000 is out of range"),
        ({"target": Target.neuron("mlp_post", 9, 0)}, "layer 9 is out of range"),
        ({"target": Target.neuron("attn_pattern", 0, 0)}, "target site 'attn_pattern' is not supported"),
        ({"target": Target.direction("resid_post", 0, torch.ones(3))}, "direction has 3 entries"),
        ({"target": Target.logit(" Paris", position=40)}, "target position"),
        ({"target": " Paris", "method": "saliency"}, "method must be one of"),
        ({"target": " Paris", "baseline": torch.ones(5)}, "baseline tensor must have shape"),
        ({"target": " Paris", "baseline": " Eiffel Tower"}, "baseline token"),
        ({"target": " Paris", "n_steps": 0}, "n_steps must be an int"),
        ({"target": " Paris", "method": "occlusion", "window": 99}, "window 99 is longer"),
        ({"target": object()}, "target .* is not understood"),
    ],
)
def test_bad_input_raises_before_any_forward(tiny, kwargs, match):
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=match):
            attribute(tiny, PROMPT, **kwargs)
    finally:
        h.remove()
    assert calls == []


def test_model_is_unchanged_after_an_interrupted_run(tiny):
    ids = tiny.to_tokens(PROMPT)
    with torch.no_grad():
        before = tiny.hf(ids).logits

    def boom(lg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        attribute(tiny, PROMPT, boom)
    with torch.no_grad():
        torch.testing.assert_close(tiny.hf(ids).logits, before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny.hf.modules())


# -- result views ------------------------------------------------------------------------------


def test_result_views(tiny):
    import matplotlib

    matplotlib.use("Agg")
    r = attribute(tiny, PROMPT, " Paris", "grad_x_input", layers=True)
    df = r.to_pandas()
    assert list(df.token) == r.str_tokens
    assert df.value.tolist() == pytest.approx(r.values.tolist())
    assert df.share.sum() == pytest.approx(1.0)
    dl = r.to_pandas(layers=True)
    assert len(dl) == (tiny.n_layers + 1) * len(r.str_tokens)
    fig = r.plot()
    assert len(fig.axes) >= 2
    assert "grad_x_input" in repr(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = r.widget()
    from mi_widgets import wire

    torch.testing.assert_close(torch.as_tensor(wire.decode(w.values)).float(), r.values)
    assert w.texts == [r.str_tokens]
    assert "grad_x_input" in w.unit_label
    html = w.to_html()
    assert "Eiffel" in html


@pytest.mark.parametrize("method", ["integrated_gradients", "grad_x_input", "occlusion"])
def test_progress_reaches_the_total(tiny, method):
    seen = []
    attribute(tiny, PROMPT, " Paris", method, layers=True, n_steps=8, tolerance=0.5, batch_size=3,
              progress=lambda d, t: seen.append((d, t)))
    assert len(seen) >= 2
    assert seen[-1][0] == seen[-1][1]
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))


def test_progress_takes_a_callable_or_false(tiny):
    """progress=False is silent (as in every long call), a callable sees (done, total) grow to
    the total, and neither changes the numbers."""
    seen = []
    a = attribute(tiny, "The Eiffel Tower is in", " Paris", progress=lambda d, t: seen.append((d, t)))
    b = attribute(tiny, "The Eiffel Tower is in", " Paris", progress=False)
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    torch.testing.assert_close(a.values, b.values)
