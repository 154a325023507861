"""Ablation (mi_widgets.core.interventions.ablation): zero, mean and resample ablation of heads,
neurons and layers equal hand-written hooks; the planted IOI heads are found with the recorded
figures."""

from __future__ import annotations

import pytest
import torch
from _patching_reference import CLEAN, CORRUPT, _hf_cache

from mi_widgets.core import metrics as M
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.core.model import _get

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _hand(model, prompts, metric, edits):
    """Metric with hand-written hooks: ``edits`` maps (rel module, 'pre'|'post') at a layer to a
    function of the value."""
    blocks = _get(model.hf, model.arch.layers)
    out = []
    for p in prompts:
        hs = []
        try:
            for (layer, rel, kind), fn in edits.items():
                mod = _get(blocks[layer], rel)
                if kind == "pre":
                    hs.append(
                        mod.register_forward_pre_hook(lambda m, a, fn=fn: (fn(a[0]),) + a[1:])
                    )
                else:
                    hs.append(mod.register_forward_hook(lambda m, a, o, fn=fn: fn(o)))
            with torch.no_grad():
                lg = model.hf(model.to_tokens(p)).logits[:, -1]
        finally:
            for h in hs:
                h.remove()
        out.append(float(metric.bind(model)(lg)))
    return torch.tensor(out)


def _zero_head(model, h):
    def fn(z):
        z = z.clone()
        z[..., h * model.d_head : (h + 1) * model.d_head] = 0
        return z

    return fn


def test_ablation_engines_agree(models):
    model = models["llama"]
    comps = [
        "0.1",
        "2.3",
        "mlp.1",
        "resid_mid.2",
        ("mlp_post", 0, [1, 2]),
        "resid_pre.1",
        "resid_post.2",
    ]
    prompts = [CLEAN, CORRUPT, "The Colosseum was in"]
    for kind in ("zero", "mean", "resample"):
        ref = [CORRUPT, CLEAN, "The staff is in"] if kind == "resample" else None
        a = ablate(
            model, prompts, M.prob(" Paris"), comps, kind=kind, reference=ref, progress=False
        )
        b = ablate(
            model,
            prompts,
            M.prob(" Paris"),
            comps,
            kind=kind,
            reference=ref,
            engine="nnsight",
            progress=False,
        )
        torch.testing.assert_close(a.ablated, b.ablated, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_zero_ablating_a_head_equals_the_hand_computation(models, family):
    model = models[family]
    metric = M.logit_diff(" Paris", " Rome")
    prompts = [CLEAN, "The Colosseum was in"]
    res = ablate(model, prompts, metric, "1.2", progress=False)
    hand = _hand(model, prompts, metric, {(1, model.arch.o_proj, "pre"): _zero_head(model, 2)})
    torch.testing.assert_close(res.ablated, hand, atol=1e-4, rtol=0)
    clean = _hand(model, prompts, metric, {})
    torch.testing.assert_close(res.clean, clean, atol=1e-4, rtol=0)
    assert res.components == ["1.2"] and res.kind == "zero"
    # two heads and a whole MLP together
    res2 = ablate(model, prompts, metric, ["0.1", "2.3", "mlp.1"], progress=False)
    mlp = model.arch.reads["mlp_out"].module
    hand2 = _hand(
        model,
        prompts,
        metric,
        {
            (0, model.arch.o_proj, "pre"): _zero_head(model, 1),
            (2, model.arch.o_proj, "pre"): _zero_head(model, 3),
            (1, mlp, "post"): torch.zeros_like,
        },
    )
    torch.testing.assert_close(res2.ablated, hand2, atol=1e-4, rtol=0)


def test_neuron_and_attention_layer_ablation(models):
    model = models["gpt2"]
    metric = M.logit_diff(" Paris", " Rome")

    def zero_neurons(x):
        x = x.clone()
        x[..., [3, 7]] = 0
        return x

    res = ablate(model, CLEAN, metric, ("mlp_post", 0, [3, 7]), progress=False)
    hand = _hand(model, [CLEAN], metric, {(0, "mlp.act", "post"): zero_neurons})
    torch.testing.assert_close(res.ablated, hand, atol=1e-4, rtol=0)
    res = ablate(model, CLEAN, metric, "attn.2", progress=False)
    hand = _hand(
        model, [CLEAN], metric, {(2, "attn", "post"): lambda o: (torch.zeros_like(o[0]),) + o[1:]}
    )
    torch.testing.assert_close(res.ablated, hand, atol=1e-4, rtol=0)


def test_mean_and_resample_ablation_use_the_reference_prompts(models):
    model = models["gpt2"]
    metric = M.logit_diff(" Paris", " Rome")
    prompts = [CLEAN, "When Mary and John went"]
    reference = [CORRUPT, "The Colosseum is in the"]  # both 6 tokens
    zs = [_hf_cache(model, model.to_tokens(r))[0][("z", 1)][0] for r in reference]  # [T, H*dh]
    sl = slice(2 * model.d_head, 3 * model.d_head)
    mean = torch.cat(zs).mean(0)

    def set_head(values):
        def fn(z):
            z = z.clone()
            z[..., sl] = values[..., sl]
            return z

        return fn

    res = ablate(model, prompts, metric, "1.2", kind="mean", reference=reference, progress=False)
    hand = _hand(model, prompts, metric, {(1, "attn.c_proj", "pre"): set_head(mean)})
    torch.testing.assert_close(res.ablated, hand, atol=1e-4, rtol=0)
    res = ablate(
        model, prompts, metric, "1.2", kind="resample", reference=reference, progress=False
    )
    for i, p in enumerate(prompts):
        hand = _hand(model, [p], metric, {(1, "attn.c_proj", "pre"): set_head(zs[i])})
        assert abs(float(res.ablated[i] - hand[0])) <= 1e-4
    # mean over the prompts themselves when no reference is given
    own = torch.cat([_hf_cache(model, model.to_tokens(p))[0][("z", 1)][0] for p in prompts]).mean(0)
    res = ablate(model, prompts, metric, "1.2", kind="mean", progress=False)
    torch.testing.assert_close(
        res.ablated,
        _hand(model, prompts, metric, {(1, "attn.c_proj", "pre"): set_head(own)}),
        atol=1e-4,
        rtol=0,
    )


def test_ablating_separately_equals_one_call_per_component(models):
    model = models["llama"]
    metric = M.prob(" Paris")
    comps = ["0.0", "1.3", ("mlp_post", 2, 5), "resid_mid.1"]
    res = ablate(model, [CLEAN, CORRUPT], metric, comps, separately=True, progress=False)
    assert res.ablated.shape == (4, 2)
    for i, c in enumerate(comps):
        one = ablate(model, [CLEAN, CORRUPT], metric, c, progress=False)
        torch.testing.assert_close(res.ablated[i], one.ablated, atol=1e-6, rtol=1e-4)
    assert res.components == ["0.0", "1.3", "mlp_post.2[5]", "resid_mid.1"]


def test_ablation_errors(models, no_forward):
    model, metric = models["gpt2"], M.logit_diff(" Paris", " Rome")
    with pytest.raises(ValueError, match="head 4 is out of range"):
        ablate(model, CLEAN, metric, "1.4")
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        ablate(model, CLEAN, metric, "5.0")
    with pytest.raises(ValueError, match="neuron 128 is out of range"):
        ablate(model, CLEAN, metric, ("mlp_post", 0, 128))
    with pytest.raises(ValueError, match="cannot read component 'mlp'"):
        ablate(model, CLEAN, metric, "mlp")
    with pytest.raises(ValueError, match="needs reference prompts"):
        ablate(model, CLEAN, metric, "1.0", kind="resample")
    with pytest.raises(ValueError, match="kind must be"):
        ablate(model, CLEAN, metric, "1.0", kind="median")
    with pytest.raises(ValueError, match="different lengths, 6 vs 5"):
        ablate(model, CLEAN, metric, "1.0", kind="resample", reference="The staff is in")


def test_ioi_ablation_finds_the_planted_heads_with_the_recorded_figures(ioi):
    """Zero- and mean-ablating each head of zoo:ioi over the recorded 400 prompts gives the
    logit diffs ground_truth.json records (its own hooks on attn.c_proj): the duplicate-token and
    S-inhibition heads flip the sign, the name mover zeroes it, decoys leave it."""
    model, gt, prompts, _ = ioi
    texts = [p["text"] for p in prompts]
    metric = M.logit_diff([p["io"] for p in prompts], [p["s"] for p in prompts])
    heads = [f"{layer}.{h}" for layer in range(model.n_layers) for h in range(model.n_heads)]
    fig = gt["figures"]
    for kind in ("zero", "mean"):
        res = ablate(model, texts, metric, heads, kind=kind, separately=True, progress=False)
        assert abs(res.clean_mean - fig["logit_diff"]["mean"]) <= 2e-3
        means = dict(zip(res.components, res.ablated.mean(-1).tolist()))
        for h in heads:
            assert abs(means[h] - fig[f"{kind}_ablation"][h]["mean"]) <= 2e-3, (kind, h)
        comps = gt["components"]
        thr = gt["thresholds"]
        assert abs(means[comps["name_mover"]]) <= thr["name_mover_ablated_mean_abs_max"]
        for role in ("duplicate_token", "s_inhibition"):
            assert means[comps[role]] <= thr["s_inhibition_or_duplicate_ablated_mean_max"]
        for h in comps["decoys"]:
            assert abs(means[h] - res.clean_mean) <= thr["decoy_ablated_relative_change_max"] * abs(
                res.clean_mean
            )
