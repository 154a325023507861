"""Causal tracing (mi_widgets.core.interventions.causal_tracing).

Exactness is checked against ``reference_trace`` below: plain torch forward hooks on the Hugging
Face modules, one full forward per (site, layer, position, noise sample), written independently
of the library (its own clean cache, its own noise hook, full logits)."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.interventions import causal_tracing as CT

PROMPT = "The Eiffel Tower is in"
SUBJECT = "Eiffel Tower"




@pytest.fixture(scope="module")
def gpt2(bpe_tokenizer):
    from _families import _family_model

    import mi_widgets as mw

    return mw.wrap(_family_model("gpt2", len(bpe_tokenizer)), bpe_tokenizer, "gpt2")


@pytest.fixture(scope="module")
def tiny():
    import mi_widgets as mw

    return mw.load("zoo:tiny")


def _hook_state(model):
    return {
        name: (len(m._forward_hooks), len(m._forward_pre_hooks))
        for name, m in model.hf.named_modules()
    }


# --------------------------------------------------------------------------------------------
# Reference: torch hooks, one full forward per cell and sample
# --------------------------------------------------------------------------------------------


def _mod(hf, site, layer):
    block = hf.transformer.h[layer]
    return {"resid_pre": block, "resid_post": block, "attn_out": block.attn, "mlp_out": block.mlp}[
        site
    ]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _with_first(out, x):
    return (x, *out[1:]) if isinstance(out, tuple) else x


def reference_trace(model, prompt, subj_pos, site, window, noise, answer_logit):
    """grid [layers, T] of the normalised metric; ``noise``: [n_samples, n_subj, d]."""
    hf = model.hf
    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
    t, n_l = ids.shape[1], len(hf.transformer.h)
    clean: dict = {}
    hooks = []
    for layer in range(n_l):
        if site == "resid_pre":
            hooks.append(
                _mod(hf, site, layer).register_forward_pre_hook(
                    lambda m, a, k, i=layer: clean.__setitem__(
                        i, (a[0] if a else k["hidden_states"]).clone()
                    ),
                    with_kwargs=True,
                )
            )
        else:
            hooks.append(
                _mod(hf, site, layer).register_forward_hook(
                    lambda m, a, o, i=layer: clean.__setitem__(i, _first(o).clone())
                )
            )
    with torch.no_grad():
        logits = hf(ids).logits[0, -1]
    for h in hooks:
        h.remove()
    metric = answer_logit

    def run(sample, restore):
        def add(m, a, o):
            o = o.clone()
            for j, p in enumerate(subj_pos):
                o[0, p] += noise[sample, j]
            return o

        hs = [hf.transformer.wte.register_forward_hook(add)]
        for layer, p in restore:
            if site == "resid_pre":

                def pre(m, a, k, layer=layer, p=p):
                    x = (a[0] if a else k["hidden_states"]).clone()
                    x[0, p] = clean[layer][0, p]
                    return ((x, *a[1:]), k) if a else (a, {**k, "hidden_states": x})

                hs.append(_mod(hf, site, layer).register_forward_pre_hook(pre, with_kwargs=True))
            else:

                def post(m, a, o, layer=layer, p=p):
                    x = _first(o).clone()
                    x[0, p] = clean[layer][0, p]
                    return _with_first(o, x)

                hs.append(_mod(hf, site, layer).register_forward_hook(post))
        try:
            with torch.no_grad():
                return float(metric(hf(ids).logits[:, -1])[0])
        finally:
            for h in hs:
                h.remove()

    n = noise.shape[0]
    m_clean = float(metric(logits[None])[0])
    m_corr = sum(run(k, []) for k in range(n)) / n
    grid = torch.zeros(n_l, t)
    w = 1 if site.startswith("resid") else window
    for layer in range(n_l):
        lays = [x for x in range(layer - w // 2, layer - w // 2 + w) if 0 <= x < n_l]
        for p in range(t):
            v = sum(run(k, [(x, p) for x in lays]) for k in range(n)) / n
            grid[layer, p] = (v - m_corr) / (m_clean - m_corr)
    return grid


def test_every_cell_matches_the_hook_reference(gpt2):
    model = gpt2
    ids = model.to_tokens(PROMPT)
    with torch.no_grad():
        answer = int(model.hf(ids).logits[0, -1].argmax())
    metric = lambda logits: logits[:, answer]  # noqa: E731
    n_samples, seed, scale, window = 3, 7, 1.5, 3
    res = CT.causal_tracing(
        model,
        PROMPT,
        SUBJECT,
        metric,
        sites=CT.TRACEABLE_SITES,
        noise=scale,
        n_samples=n_samples,
        window=window,
        seed=seed,
        progress=False,
        batch_size=7,
    )
    pos = res.subject_positions[0]
    toks = model.to_str_tokens(PROMPT)
    assert "".join(toks[p] for p in pos).strip() == SUBJECT
    noise = (
        torch.randn(
            n_samples, len(pos), model.d_model, generator=torch.Generator().manual_seed(seed)
        )
        * scale
    )
    for site in CT.TRACEABLE_SITES:
        ref = reference_trace(model, PROMPT, pos, site, window, noise, metric)
        torch.testing.assert_close(res[site].values, ref, atol=1e-4, rtol=1e-4, msg=site)
        assert res[site].dims == ("layer", "position") and res[site].values.shape == (
            3,
            ids.shape[1],
        )
    # window > 1 changes attn/mlp grids but not resid ones
    one = CT.causal_tracing(
        model,
        PROMPT,
        SUBJECT,
        metric,
        noise=scale,
        n_samples=n_samples,
        window=1,
        seed=seed,
        progress=False,
    )
    torch.testing.assert_close(one["resid_post"].values, res["resid_post"].values)
    assert not torch.allclose(one["mlp_out"].values, res["mlp_out"].values)


def test_default_metric_is_the_clean_top1_probability_and_seeds_reproduce(gpt2):
    model = gpt2
    kw = dict(sites=("resid_post",), noise=2.0, n_samples=2, progress=False)
    a = CT.causal_tracing(model, PROMPT, SUBJECT, **kw)
    b = CT.causal_tracing(model, PROMPT, SUBJECT, **kw)
    c = CT.causal_tracing(model, PROMPT, SUBJECT, seed=1, **kw)
    torch.testing.assert_close(a["resid_post"].values, b["resid_post"].values, rtol=0, atol=0)
    assert not torch.allclose(a["resid_post"].values, c["resid_post"].values)
    with torch.no_grad():
        p = torch.softmax(model.hf(model.to_tokens(PROMPT)).logits[0, -1], -1)
    assert a.answer == [model.tokenizer.decode([int(p.argmax())])]
    assert abs(float(a["resid_post"].clean_baseline[0]) - float(p.max())) < 1e-5
    # restoring the whole final-layer residual stream at the last position gives the clean run
    assert abs(float(a["resid_post"].values[-1, -1]) - 1.0) < 1e-4
    # default noise: 3 x the embedding std
    d = CT.causal_tracing(
        model, PROMPT, SUBJECT, sites=("resid_post",), n_samples=1, progress=False
    )
    assert abs(d.noise_scale - 3 * float(model.hf.transformer.wte.weight.detach().std())) < 1e-6


def test_zero_noise_is_a_clear_error(gpt2):
    with pytest.raises(ValueError, match="undefined.*larger noise"):
        CT.causal_tracing(gpt2, PROMPT, SUBJECT, noise=0.0, n_samples=2, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(subject="Big Ben"), "does not occur"),
        (dict(subject="eiffel tower"), "does not occur"),
        (dict(subject=""), "non-empty"),
        (dict(sites=("head_out",)), "unknown site"),
        (dict(n_samples=0), "n_samples"),
        (dict(window=0), "window"),
        (dict(noise=-1.0), "noise"),
        (
            dict(prompts=[PROMPT, "The food was wonderful and the staff were kind"]),
            "same token length",
        ),
        (dict(subject=["Eiffel", "Tower"]), "one subject or one per prompt"),
    ],
)
def test_bad_arguments_raise_before_compute(gpt2, monkeypatch, kwargs, match):
    def boom(*a, **k):
        raise AssertionError("a forward pass ran before validation")

    monkeypatch.setattr(CT, "_last_logits", boom)
    args = dict(prompts=PROMPT, subject=SUBJECT) | kwargs
    with pytest.raises(ValueError, match=match):
        CT.causal_tracing(gpt2, progress=False, **args)


def test_interrupt_leaves_no_hooks(gpt2, monkeypatch):
    model = gpt2
    before = _hook_state(model)
    calls = {"n": 0}

    def metric(logits):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return logits[:, 0]

    with pytest.raises(KeyboardInterrupt):
        CT.causal_tracing(model, PROMPT, SUBJECT, metric, noise=1.0, n_samples=2, progress=False)
    assert _hook_state(model) == before
    with torch.no_grad():
        ids = model.to_tokens(PROMPT)
        torch.testing.assert_close(model.hf(ids).logits, model.hf(ids).logits)


def test_tables_plots_and_several_prompts(gpt2):
    import matplotlib

    matplotlib.use("Agg")
    res = CT.causal_tracing(
        gpt2,
        [PROMPT, PROMPT],
        SUBJECT,
        noise=1.0,
        n_samples=2,
        progress=False,
    )
    assert res["attn_out"].per_pair.shape == (2, 3, 6)
    df = res.to_pandas()
    assert set(df["site"]) == set(CT.TRACE_SITES) and len(df) == 3 * 3 * 6
    assert df[df["subject"]]["position"].tolist()[:2] == res.subject_positions[0]
    assert res["resid_post"].position_labels[res.subject_positions[0][0]].endswith("*")
    fig = res.plot()
    assert len([a for a in fig.axes if a.get_title()]) == 3
    assert "resid_post" in repr(res)
    with pytest.raises(KeyError, match="no grid"):
        res["head_out"]
    w = res.widget()  # the resid_post grid, display only
    assert type(w).__name__ == "PatchingGrid" and w.site == "resid_post" and not w.can_sweep


# --------------------------------------------------------------------------------------------
# Ground truth: zoo:tiny
# --------------------------------------------------------------------------------------------


def test_tiny_eiffel_tower_recovers_where_the_record_says(tiny):
    """ground_truth.json figures.patching (resid_pre[L] patching): the city is read from the
    subject only at layer 0 (the embedding) and sits at the final position from layer 1 on.
    Causal tracing finds the same: restoring resid_pre at the subject recovers most at layer 0,
    and restoring the final position recovers the clean answer from layer 1 on (resid_post from
    block 0 on, since resid_post[L] = resid_pre[L + 1])."""
    import json
    from pathlib import Path

    import mi_widgets

    gt = json.loads(
        (Path(mi_widgets.__file__).parent / "zoo/models/tiny/ground_truth.json").read_text()
    )
    cells = gt["figures"]["patching"]["cells_ge_0.5"]
    res = CT.causal_tracing(
        tiny,
        PROMPT,
        "The Eiffel Tower",
        sites=("resid_pre", "resid_post"),
        n_samples=10,
        progress=False,
    )
    assert res.answer == [" Paris"]
    pre, post = res["resid_pre"].values, res["resid_post"].values
    subj = res.subject_positions[0]
    assert tiny.to_str_tokens(PROMPT)[subj[0] : subj[-1] + 1] == ["The", " Eiffel", " Tower"]
    last = pre.shape[1] - 1
    # final position: >= 0.5 exactly at the recorded layers (resid_pre 1..n_layers-1, here)
    assert [L for L in range(tiny.n_layers) if pre[L, last] >= 0.5] == [
        L for L in cells["' in' (final)"] if L < tiny.n_layers
    ]
    assert bool((post[:, last] >= 0.9).all())
    # subject: best at layer 0, and only there
    sub = pre[:, subj].max(1).values
    assert int(sub.argmax()) == 0 == cells["subject (best token)"][0]
    assert sub[0] >= 0.5 and bool((sub[1:] < 0.2).all())
    assert float(pre[0, subj].max()) == float(pre[0].max())
    assert bool((post[:, subj].abs() < 0.2).all())


@pytest.mark.parametrize("family", ["llama", "neox", "neox_sequential"])
def test_other_families_keep_the_exact_identities(bpe_tokenizer, family):
    """Family-independent identities: restoring the last layer's output at the last position
    gives the clean run (1); positions before the subject are untouched by the noise (causal
    attention), so restoring them at any site and layer changes nothing (0); nor does restoring
    a non-subject position's embedding (resid_pre, layer 0)."""
    from _families import _family_model

    import mi_widgets as mw

    model = mw.wrap(_family_model(family, len(bpe_tokenizer)), bpe_tokenizer, family)
    with torch.no_grad():
        answer = int(model.hf(model.to_tokens(PROMPT)).logits[0, -1].argmax())
    res = CT.causal_tracing(
        model,
        PROMPT,
        SUBJECT,
        lambda lg: lg[:, answer],
        sites=CT.TRACEABLE_SITES,
        noise=1.0,
        n_samples=2,
        window=2,
        progress=False,
    )
    first = res.subject_positions[0][0]
    assert first >= 1
    assert abs(float(res["resid_post"].values[-1, -1]) - 1) < 1e-4
    for site in CT.TRACEABLE_SITES:
        assert float(res[site].values[:, :first].abs().max()) < 1e-4, site
    others = [p for p in range(6) if p not in res.subject_positions[0]]
    assert float(res["resid_pre"].values[0, others].abs().max()) < 1e-4
    assert float(res["resid_pre"].values[0].max()) > 0.05


def test_remote_models_are_refused(gpt2, monkeypatch):
    monkeypatch.setattr(gpt2, "remote", True)
    with pytest.raises(ValueError, match="local models only"):
        CT.causal_tracing(gpt2, PROMPT, SUBJECT, progress=False)
