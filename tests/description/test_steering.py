"""Steering: exactness against hand-written torch hooks, generation against a hand greedy loop,
a clean model afterwards (also after an interrupt), errors before compute, and the planted
sentiment concept of zoo:tiny flipping under steering."""

from __future__ import annotations

import threading

import pytest
import torch

from mi_widgets.core.description import steering as S
from mi_widgets.core.metrics import logit_diff, prob
from mi_widgets.zoo import corpus

NEUTRAL = "Overall the review is"  # no review at all: the verdict prompt alone
NEUTRAL_ADJ = "The food was red and the staff were small. Overall the review is"  # neutral adjectives


@pytest.fixture(scope="module")
def sentiment(tiny):
    """Mean difference of positive minus negative reviews, after block 0 (where the ground truth
    says sentiment becomes readable at the final token), read at the last token."""
    ex = corpus.sentiment_examples("id", n=40)
    pos = [e["text"] for e in ex if e["label"] == 1]
    neg = [e["text"] for e in ex if e["label"] == 0]
    return S.steering_vector(tiny, pos, neg, site="resid_post", layer=0, name="sentiment")


# -- hand reference ---------------------------------------------------------------------------


def _hook_module(model, site, layer):
    block = model.hf.transformer.h[layer]
    return {
        "resid_pre": (block, "pre"),
        "resid_mid": (block.ln_2, "pre"),
        "resid_post": (block, "out"),
        "attn_out": (block.attn, "out"),
        "mlp_out": (block.mlp, "out"),
    }[site]


class _hand_steer:
    """A plain torch hook that adds ``delta`` ([d_model]) at ``positions`` (absolute, or None
    for all) of a full-sequence forward (no KV cache)."""

    def __init__(self, model, site, layer, delta, positions=None):
        self.mod, self.kind = _hook_module(model, site, layer)
        self.delta, self.positions = delta, positions

    def _apply(self, h):
        if self.positions is None:
            h += self.delta
        else:
            h[:, self.positions] += self.delta

    def __enter__(self):
        if self.kind == "pre":
            def pre(mod, args):
                self._apply(args[0])  # in place, as the residual stream is shared with the skip
            self.handle = self.mod.register_forward_pre_hook(pre)
        else:
            def post(mod, args, out):
                self._apply(out[0] if isinstance(out, tuple) else out)
            self.handle = self.mod.register_forward_hook(post)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _logits(model, ids):
    with torch.no_grad():
        return model.hf(ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()


def _no_hooks(model):
    """No hooks left on the model's modules, except transformers' own output-capturing hooks
    (installed, for good, the first time anyone asks for hidden states or attentions)."""

    def ours(hooks):
        return [h for h in hooks.values() if getattr(h, "__module__", "") != "transformers.utils.output_capturing"]

    return all(not ours(m._forward_hooks) and not ours(m._forward_pre_hooks) for m in model.hf.modules())


# -- exactness --------------------------------------------------------------------------------


@pytest.mark.parametrize("site", S.STEER_SITES)
def test_steered_next_token_logits_equal_a_hand_hook(tiny, sentiment, site):
    ids = tiny.to_tokens(NEUTRAL_ADJ)
    coef, layer = 1.5, 1
    r = S.steer(tiny, NEUTRAL_ADJ, sentiment, site=site, layer=layer, coef=coef, k=5, metric=logit_diff(" positive", " negative"))
    with _hand_steer(tiny, site, layer, coef * sentiment.vector):
        ref = _logits(tiny, ids)
    base = _logits(tiny, ids)
    assert [t["id"] for t in r.steered_topk] == torch.topk(ref, 5).indices.tolist()
    torch.testing.assert_close(torch.tensor([t["logit"] for t in r.steered_topk]), torch.topk(ref, 5).values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor([t["logit"] for t in r.baseline_topk]), torch.topk(base, 5).values, atol=1e-4, rtol=1e-4)
    i, j = tiny.tokenizer(" positive")["input_ids"][-1], tiny.tokenizer(" negative")["input_ids"][-1]
    assert r.metric_steered == pytest.approx(float(ref[i] - ref[j]), abs=1e-3)
    assert r.metric_baseline == pytest.approx(float(base[i] - base[j]), abs=1e-3)
    lp, lq = torch.log_softmax(base, -1), torch.log_softmax(ref, -1)
    assert r.kl == pytest.approx(float((lp.exp() * (lp - lq)).sum()), abs=1e-4)
    assert _no_hooks(tiny)


def test_steering_chosen_positions_equals_hand_hook_at_those_positions(tiny, sentiment):
    ids = tiny.to_tokens(NEUTRAL_ADJ)
    r = S.steer(tiny, NEUTRAL_ADJ, sentiment, layer=0, coef=-2.0, positions=[3, -1], k=3)
    with _hand_steer(tiny, "resid_post", 0, -2.0 * sentiment.vector, [3, ids.shape[1] - 1]):
        ref = _logits(tiny, ids)
    torch.testing.assert_close(torch.tensor([t["logit"] for t in r.steered_topk]), torch.topk(ref, 3).values, atol=1e-4, rtol=1e-4)


def test_sweep_values_equal_steer_metric_per_coefficient(tiny, sentiment):
    md = logit_diff(" positive", " negative")
    sw = S.steering_sweep(tiny, [NEUTRAL, NEUTRAL_ADJ], sentiment, md, coefs=[-1.0, 0.0, 2.0])
    assert sw.values.shape == (3, 2)
    for i, c in enumerate(sw.coefs):
        for j, p in enumerate(sw.prompts):
            assert float(sw.values[i, j]) == pytest.approx(S.steer(tiny, p, sentiment, coef=c, metric=md).metric_steered, abs=1e-3)
    df = sw.to_pandas()
    assert list(df.columns) == ["coef", "prompt_index", "prompt", "value"] and len(df) == 6
    sw.plot()


def _hand_greedy(model, prompt, delta, site, layer, n):
    ids = model.to_tokens(prompt)
    out = []
    with _hand_steer(model, site, layer, delta):
        for _ in range(n):
            nxt = int(_logits(model, ids).argmax())
            out.append(nxt)
            if nxt == model.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return out


@pytest.mark.parametrize("coef", [0.0, 3.0, -4.0])
def test_greedy_generation_equals_a_hand_greedy_loop_with_the_hook(tiny, sentiment, coef):
    g = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=coef, max_new_tokens=12)
    assert g.steered_ids == _hand_greedy(tiny, "The food was", coef * sentiment.vector, "resid_post", 0, 12)
    assert g.baseline_ids == _hand_greedy(tiny, "The food was", 0 * sentiment.vector, "resid_post", 0, 12)
    assert g.steered_text == "".join(tiny.tokenizer.decode([i]) for i in g.steered_ids)
    assert _no_hooks(tiny)


def test_sampled_generation_is_reproducible_with_a_seed(tiny, sentiment):
    a = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=2.0, max_new_tokens=10, do_sample=True, seed=3)
    b = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=2.0, max_new_tokens=10, do_sample=True, seed=3)
    c = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=2.0, max_new_tokens=10, do_sample=True, seed=4)
    assert a.steered_ids == b.steered_ids and a.baseline_ids == b.baseline_ids
    assert (a.steered_ids, a.baseline_ids) != (c.steered_ids, c.baseline_ids)


def test_stream_yields_the_same_tokens_as_generate(tiny, sentiment):
    events = list(S.steer_stream(tiny, "The room was", sentiment, layer=0, coef=-3.0, max_new_tokens=10))
    g = S.steer_generate(tiny, "The room was", sentiment, layer=0, coef=-3.0, max_new_tokens=10)
    assert events[-1]["run"] == "done"
    assert [e["id"] for e in events if e["run"] == "steered"] == g.steered_ids
    assert [e["id"] for e in events if e["run"] == "baseline"] == g.baseline_ids
    assert events[-1]["result"].steered_ids == g.steered_ids


# -- the model is left clean ------------------------------------------------------------------


def test_model_is_unsteered_after_an_interrupt_mid_generation(tiny, sentiment):
    ids = tiny.to_tokens(NEUTRAL_ADJ)
    before = _logits(tiny, ids)
    vec, site, layer, coef, pids, pos = S._gen_args(tiny, "The food was", sentiment, None, 0, 5.0, "all", 30, False, 1.0, None, 0)

    def boom(_new):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        S._run_generation(tiny, pids, vec, site, layer, coef, pos, 30, False, 1.0, None, 0, boom, None)
    assert _no_hooks(tiny)
    torch.testing.assert_close(_logits(tiny, ids), before, atol=0, rtol=0)
    # and steering still works afterwards
    g = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=0.0, max_new_tokens=5)
    assert g.steered_ids == g.baseline_ids


def test_closing_or_cancelling_a_stream_stops_and_leaves_model_clean(tiny, sentiment):
    ids = tiny.to_tokens(NEUTRAL_ADJ)
    before = _logits(tiny, ids)
    it = S.steer_stream(tiny, "The food was", sentiment, layer=0, coef=8.0, max_new_tokens=60)
    first = [next(it) for _ in range(3)]
    assert all(e["run"] in ("baseline", "steered") for e in first)
    it.close()
    cancel = threading.Event()
    seen = []
    for e in S.steer_stream(tiny, "The food was", sentiment, layer=0, coef=8.0, max_new_tokens=60, cancel=cancel):
        seen.append(e)
        if len(seen) == 4:
            cancel.set()
    res = seen[-1]["result"]
    assert res.cancelled and len(res.steered_ids) < 60
    assert _no_hooks(tiny)
    torch.testing.assert_close(_logits(tiny, ids), before, atol=0, rtol=0)


# -- errors before compute --------------------------------------------------------------------


def test_bad_inputs_raise_before_any_forward(tiny, sentiment):
    with pytest.raises(ValueError, match="d_model=128"):
        S.steer(tiny, NEUTRAL, torch.zeros(7), layer=0)
    with pytest.raises(ValueError, match="1-D"):
        S.steer(tiny, NEUTRAL, torch.zeros(2, 128), layer=0)
    with pytest.raises(ValueError, match="out of range"):
        S.steer(tiny, NEUTRAL, sentiment, layer=9)
    with pytest.raises(ValueError, match="cannot be steered"):
        S.steer(tiny, NEUTRAL, sentiment, site="attn_pattern", layer=0)
    with pytest.raises(ValueError, match="position 50"):
        S.steer(tiny, NEUTRAL, sentiment, layer=0, positions=[50])
    with pytest.raises(ValueError, match="coef"):
        S.steer(tiny, NEUTRAL, sentiment, layer=0, coef=float("nan"))
    with pytest.raises(ValueError, match="give layer"):
        S.steer(tiny, NEUTRAL, torch.zeros(128))
    with pytest.raises(ValueError, match="max_new_tokens"):
        S.steer_generate(tiny, NEUTRAL, sentiment, max_new_tokens=0)
    with pytest.raises(ValueError, match="context"):
        S.steer_generate(tiny, NEUTRAL, sentiment, max_new_tokens=500)
    with pytest.raises(ValueError, match="not exactly one token"):
        S.steering_sweep(tiny, NEUTRAL, sentiment, logit_diff(" positively", " negative"))
    with pytest.raises(ValueError, match="NaN"):
        S.as_steering_vector(torch.full((128,), float("nan")))
    assert _no_hooks(tiny)


def test_vectors_from_a_tensor_a_list_and_a_probe(tiny):
    from mi_widgets.core.concepts.probes import ProbeDataset, probe

    assert S.as_steering_vector([0.0] * 128, tiny).vector.shape == (128,)
    ds = ProbeDataset.from_zoo("sentiment", n=120, n_ood=0)
    pr = probe(tiny, ds, layers=[0], seeds=(0,), progress=False)
    pv = S.steering_from_probe(pr, 0)
    assert (pv.site, pv.layer, pv.source) == ("resid_post", 0, "probe")
    torch.testing.assert_close(pv.vector, pr.direction(0))
    # the probe direction steers too (cosine ~0.6 with the mean difference, whose norm is ~39):
    # a unit probe direction times ±40 flips the bare verdict prompt's preference
    sw = S.steering_sweep(tiny, NEUTRAL, pv.normalized(), logit_diff(" positive", " negative"), coefs=[-40, 0, 40])
    assert float(sw.values[0, 0]) < 0 < float(sw.values[1, 0]) < float(sw.values[2, 0])


# -- ground truth: the planted sentiment concept ----------------------------------------------


def test_sentiment_direction_flips_the_verdict_on_neutral_prompts(tiny, sentiment):
    """zoo:tiny's sentiment becomes readable at the final ' is' after block 0 (ground truth
    'sentiment_direction'). Adding the positive-minus-negative mean difference there moves the
    ' positive' vs ' negative' preference monotonically with the coefficient, and its sign
    follows the coefficient's sign on the bare verdict prompt (unsteered: barely positive)."""
    md = logit_diff(" positive", " negative")
    coefs = [-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0]
    sw = S.steering_sweep(tiny, [NEUTRAL, NEUTRAL_ADJ], sentiment, md, coefs=coefs)
    for j in range(2):
        col = sw.values[:, j]
        assert (col[1:] > col[:-1]).all(), f"not monotone on {sw.prompts[j]!r}: {col.tolist()}"
    bare = sw.values[:, 0]
    assert 0 < float(bare[4]) < 3  # unsteered: ' positive' by a small margin
    for c, v in zip(coefs, bare.tolist()):
        if c != 0:
            assert (v > 0) == (c > 0), (c, v)
    # with neutral adjectives the unsteered answer is ' positive'; a negative push flips it
    adj = sw.values[:, 1]
    assert float(adj[4]) > 5 and float(adj[coefs.index(-1.0)]) < -5 and float(adj[coefs.index(1.0)]) > float(adj[4])
    # the greedy answer itself flips
    neg = S.steer_generate(tiny, NEUTRAL_ADJ, sentiment, coef=-1.0, max_new_tokens=1)
    pos = S.steer_generate(tiny, NEUTRAL_ADJ, sentiment, coef=1.0, max_new_tokens=1)
    assert neg.baseline_tokens == [" positive"] and neg.steered_tokens == [" negative"]
    assert pos.steered_tokens == [" positive"]
    p = S.steering_sweep(tiny, NEUTRAL_ADJ, sentiment, prob(" negative"), coefs=[-1.0, 0.0])
    assert float(p.values[0, 0]) > 0.99 > 0.01 > float(p.values[1, 0])


def test_greedy_generation_at_chosen_prompt_positions_equals_the_hand_loop(tiny, sentiment):
    """Positions are absolute prompt positions: steered at step 0 (the prompt forward) only;
    later tokens are not steered, but they attend to the steered prompt's cached keys/values."""
    ids = tiny.to_tokens("The food was")
    g = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=-6.0, positions=[1, 2], max_new_tokens=8)
    out = []
    cur = ids
    with _hand_steer(tiny, "resid_post", 0, -6.0 * sentiment.vector, [1, 2]):
        for _ in range(8):
            nxt = int(_logits(tiny, cur).argmax())
            out.append(nxt)
            if nxt == 0:
                break
            cur = torch.cat([cur, torch.tensor([[nxt]])], 1)
    assert g.steered_ids == out


def test_every_causal_family_steers_and_bert_is_refused(family_model):
    family, model = family_model
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    if not model.causal:
        with pytest.raises(ValueError, match="not a causal"):
            S.steer(model, "The food was", v, layer=1)
        return
    for site in model.sites:
        if site not in S.STEER_SITES:
            continue
        r0 = S.steer(model, "The food was", v, site=site, layer=1, coef=0.0, k=3)
        assert r0.kl == pytest.approx(0.0, abs=1e-6)
        r = S.steer(model, "The food was", v, site=site, layer=1, coef=20.0, k=3)
        assert r.kl > 1e-4, site
    g = S.steer_generate(model, "The food was", v, layer=1, coef=0.0, max_new_tokens=4)
    assert g.steered_ids == g.baseline_ids and len(g.steered_ids) >= 1
    assert _no_hooks(model)
