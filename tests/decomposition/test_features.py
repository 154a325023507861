"""Dictionary features over a dataset (mi_widgets/core/features.py): the streaming reductions
against brute force over every token, the dataset pass against unbatched forwards, a planted
city feature on zoo:tiny, logit effects, and steer/ablate against hand-written torch hooks."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from mi_widgets.core.decomposition.features import (
    FeatureStats,
    LinearDictionary,
    default_texts,
    feature_pass,
    logit_effects,
    steer_feature,
)
from mi_widgets.zoo.corpus import CITIES

CITY_TOKENS = {" " + c for c in CITIES}
SITE, LAYER = "resid_pre", 0  # token + position embeddings: the city class is linearly clean here


@pytest.fixture(scope="module")
def texts():
    return default_texts(96)


@pytest.fixture(scope="module")
def sae(tiny, texts):
    """Feature 0: the planted city class (mean difference, fires on city tokens); features 1..12:
    random directions with a threshold (fire on some fraction of tokens)."""
    city = LinearDictionary.from_token_classes(tiny, texts[:48], {"city": CITY_TOKENS}, site=SITE, layer=LAYER)
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(12, tiny.d_model, generator=g)
    rand = rand / rand.norm(dim=1, keepdim=True)
    W_enc = torch.cat([city.W_enc, rand.T], 1)
    b_enc = torch.cat([city.b_enc, torch.linspace(-0.2, 0.2, 12)])
    W_dec = torch.cat([city.W_dec, rand], 0)
    return LinearDictionary(W_enc, b_enc, W_dec, site=SITE, layer=LAYER)


@pytest.fixture(scope="module")
def data(tiny, sae, texts):
    return feature_pass(tiny, sae, texts, k=8, context=(5, 2), reservoir=24, batch_size=16)


def brute_acts(model, sae, texts, skip_bos=True):
    """Every counted token, unbatched: (acts [N, F], (text, position) per row, per-text acts)."""
    rows, where, per_text = [], [], []
    for ti, t in enumerate(texts):
        ids = model.to_tokens(t)
        a = sae.encode(model.run(ids, [(sae.site, sae.layer)])[(sae.site, sae.layer)])
        per_text.append((ids[0], a))
        start = 1 if skip_bos and ids[0, 0] == model.tokenizer.bos_token_id else 0
        rows.append(a[start:])
        where += [(ti, p) for p in range(start, ids.shape[1])]
    return torch.cat(rows), where, per_text


def brute_hist(col: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, float]:
    nz = col[col > 0]
    _, e = torch.frexp(nz.max())
    hi = float(2.0 ** int(e))
    b = torch.floor(nz / hi * n_bins).long()
    return torch.bincount(b, minlength=n_bins), hi


# ------------------------------------------------------------------------------ reducer


def test_streamed_reductions_equal_brute_force_over_all_tokens():
    """FeatureStats over ragged, padded batches whose scale grows (so histograms re-bin many
    times) equals statistics, histograms and sorted top-k over the concatenated tokens."""
    g = torch.Generator().manual_seed(1)
    F, n_bins, k = 7, 16, 5
    st = FeatureStats(F, k=k, context=(3, 2), n_bins=n_bins, reservoir=6, seed=0)
    all_acts, all_where, texts = [], [], {}
    ti = 0
    for batch in range(9):
        B, T = 3, 11
        lengths = torch.randint(4, T + 1, (B,), generator=g)
        scale = 0.3 * 2.0 ** (batch * 0.7)
        acts = torch.relu(torch.randn(B, T, F, generator=g) * scale)
        ids = torch.randint(0, 100, (B, T), generator=g)
        mask = torch.arange(T) < lengths[:, None]
        acts = acts * mask[..., None]
        counted = mask.clone()
        counted[:, 0] = False  # a BOS-like first token: in contexts only
        idx = torch.arange(ti, ti + B)
        st.update(acts, ids, lengths, idx, counted)
        for r in range(B):
            L = int(lengths[r])
            texts[ti + r] = (ids[r, :L], acts[r, :L])
            all_acts.append(acts[r, 1:L])
            all_where += [(ti + r, p) for p in range(1, L)]
        ti += B
    A = torch.cat(all_acts)
    assert st.n_tokens == A.shape[0]
    assert torch.equal(st.n_fire, (A > 0).sum(0))
    assert torch.equal(st.max_act, A.max(0).values)
    assert torch.allclose(st.act_sum, A.double().sum(0))
    for f in range(F):
        counts, hi = brute_hist(A[:, f], n_bins)
        assert torch.equal(st.hist[f], counts), f
        assert st.hist_edges(f)[-1].item() == hi
        # top-k: stable sort of all activations, descending
        order = torch.sort(A[:, f], descending=True, stable=True).indices[:k]
        assert st.top.act[f].tolist() == A[order, f].tolist()
        assert [(int(a), int(b)) for a, b in zip(st.top.text[f], st.top.pos[f])] == [all_where[i] for i in order]
        for j in range(k):  # context windows are the text's tokens and this feature's values
            t, p = int(st.top.text[f, j]), int(st.top.pos[f, j])
            tok, act = texts[t]
            lo, hi_ = max(0, p - 3), min(len(tok), p + 3)
            ctx = st.top.ctx_ids[f, j]
            w0 = lo - (p - 3)
            assert ctx[w0 : w0 + hi_ - lo].tolist() == tok[lo:hi_].tolist()
            assert (ctx[:w0] == -1).all() and (ctx[w0 + hi_ - lo :] == -1).all()
            assert torch.equal(st.top.ctx_act[f, j, w0 : w0 + hi_ - lo], act[lo:hi_, f])
        # the sample: distinct firing tokens with their true activations
        kept = [(int(a), int(b)) for a, b in zip(st.res.text[f], st.res.pos[f]) if a >= 0]
        assert len(kept) == len(set(kept)) == min(6, int((A[:, f] > 0).sum()))
        for (t, p), v in zip(kept, st.res.act[f]):
            assert texts[t][1][p, f].item() == v.item() > 0


def test_reservoir_sample_is_uniform_over_firings():
    """Each firing token is kept with probability R / n_fire (seeded chi-square-style check)."""
    hits = torch.zeros(40)
    for seed in range(300):
        st = FeatureStats(1, k=1, context=(0, 0), reservoir=4, seed=seed)
        for b in range(4):  # 4 batches of 10 tokens, all firing with increasing values
            acts = torch.arange(b * 10, b * 10 + 10, dtype=torch.float32).add(1).reshape(1, 10, 1)
            st.update(acts, torch.zeros(1, 10, dtype=torch.long), torch.tensor([10]), torch.tensor([b]),
                      torch.ones(1, 10, dtype=torch.bool))
        for t, p in zip(st.res.text[0].tolist(), st.res.pos[0].tolist()):
            hits[t * 10 + p] += 1
    expected = 300 * 4 / 40  # 30
    assert hits.sum() == 1200
    assert hits.min() > expected * 0.4 and hits.max() < expected * 1.75, hits


# ------------------------------------------------------------------------------ the pass


def test_pass_equals_unbatched_forwards(tiny, sae, texts, data):
    """The batched, padded pass gives the statistics of one unbatched forward per text."""
    A, where, per_text = brute_acts(tiny, sae, texts)
    st = data.stats
    assert data.complete and data.n_texts_done == len(texts)
    assert st.n_tokens == A.shape[0]
    assert torch.equal(st.n_fire, (A > 0).sum(0))
    assert torch.allclose(st.max_act, A.max(0).values, atol=1e-4)
    for f in range(sae.d_sae):
        order = torch.sort(A[:, f], descending=True, stable=True).indices[:8]
        assert torch.allclose(st.top.act[f], A[order, f], atol=1e-4)
        # the kept tokens are the top-8 of the unbatched run (up to ties within float rounding)
        row = {w: i for i, w in enumerate(where)}
        for t, p, v in zip(st.top.text[f].tolist(), st.top.pos[f].tolist(), st.top.act[f].tolist()):
            assert abs(A[row[(t, p)], f].item() - v) < 1e-4
        top_where = [where[i] for i in order]
        distinct = [w for w, v in zip(top_where, A[order, f].tolist()) if (A[:, f] - v).abs().lt(1e-4).sum() == 1]
        assert set(distinct) <= {(int(a), int(b)) for a, b in zip(st.top.text[f], st.top.pos[f])}
        counts, _ = brute_hist(A[:, f], st.n_bins)
        assert (st.hist[f] - counts).abs().sum() <= 1  # a value on a bin edge may round across
    info = data.feature(0)
    ex = info.top[0]
    ids, acts = per_text[ex.text]
    assert ex.token_ids[ex.center] == int(ids[ex.position])
    assert ex.tokens[ex.center] == tiny.tokenizer.decode([int(ids[ex.position])])
    assert abs(ex.activation - float(acts[ex.position, 0])) < 1e-4


def test_planted_city_feature_fires_on_city_tokens(tiny, data):
    """Ground truth (corpus.py plants city names in facts, claims and two-hop rows): every
    max-activating example of the mean-difference city feature is a city token, and the
    feature fires on nearly all city tokens and few others."""
    info = data.feature(0)
    assert len(info.top) == 8
    centers = [ex.tokens[ex.center] for ex in info.top]
    assert all(c in CITY_TOKENS for c in centers), centers
    A, where, per_text = brute_acts(tiny, data.sae, data.texts)
    toks = [tiny.tokenizer.decode([int(per_text[t][0][p])]) for t, p in where]
    is_city = torch.tensor([t in CITY_TOKENS for t in toks])
    fires = A[:, 0] > 0
    recall = float((fires & is_city).sum() / is_city.sum())
    precision = float((fires & is_city).sum() / fires.sum())
    print(f"city feature: recall {recall:.3f}, precision {precision:.3f}, frequency {info.frequency:.4f}")
    # measured: recall 1.000, precision 1.000 (embedding + position space separates the class)
    assert recall >= 0.99 and precision >= 0.95
    assert sum(info.hist_counts) == info.n_fire == int(fires.sum())


def test_band_examples_lie_in_their_bands(tiny, sae, texts, data):
    """Each band example's activation is the feature's activation at that token in an unbatched
    forward (not only the number the pass stored next to it) and lies in its band. (A band's
    fraction is over the reservoir sample of firings; test_reservoir_sample_is_uniform_over_firings
    checks that sample.)"""
    _, _, per_text = brute_acts(tiny, sae, texts)
    for f in range(data.d_sae):
        info = data.feature(f)
        for band in info.bands:
            for ex in band["examples"]:
                true = float(per_text[ex.text][1][ex.position, f])
                assert abs(ex.activation - true) < 1e-4, (f, ex.text, ex.position)
                assert band["lo"] < true <= band["hi"] + 1e-4
                assert ex.acts[ex.center] == ex.activation
        if info.bands:
            assert abs(sum(b["fraction"] for b in info.bands) - 1.0) < 1e-9


def test_background_pass_fills_partial_results_and_stops(tiny, sae, texts, data):
    seen = []
    bg = feature_pass(tiny, sae, texts, k=8, context=(5, 2), reservoir=24, batch_size=16, background=True)
    bg._listeners.append(lambda d: seen.append(d.n_texts_done))
    bg.wait(120)
    assert bg.complete and not bg.running
    assert torch.equal(bg.stats.n_fire, data.stats.n_fire)
    assert torch.equal(bg.stats.top.text, data.stats.top.text)
    # stopped after the first batch: partial, readable, not complete
    holder: list = []
    ready = threading.Event()

    def stop_after_first(done, total):
        ready.wait(30)
        holder[0].stop()

    part = feature_pass(tiny, sae, texts, batch_size=16, background=True, progress=stop_after_first)
    holder.append(part)
    ready.set()
    part.wait(60)
    assert not part.complete and part.n_texts_done == 16
    part.feature(0)  # readable


def test_interrupt_returns_partial_results(tiny, sae, texts):
    """Ctrl-C inside a trace (here: raised by the dictionary's encode on the 3rd batch) ends the
    pass with the batches done so far, a warning, and the model without hooks."""
    calls = []

    class Interrupting(LinearDictionary):
        def encode(self, x):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return super().encode(x)

    d = Interrupting(sae.W_enc, sae.b_enc, sae.W_dec, site=SITE, layer=LAYER)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = feature_pass(tiny, d, texts, batch_size=16, progress=lambda done, total: None)
    assert not out.complete and out.n_texts_done == 32
    assert any("interrupted" in str(x.message) for x in w)
    assert out.stats.n_tokens > 0 and out.feature(0).n_fire >= 0
    assert tiny.next_tokens("The Eiffel Tower is in", 1)[0][0] == " Paris"  # model still usable


def test_bad_input_raises_before_any_forward(tiny, sae, texts):
    bad_site = LinearDictionary(sae.W_enc, sae.b_enc, sae.W_dec, site="attn_pattern", layer=0)
    with pytest.raises(ValueError, match="site"):
        feature_pass(tiny, bad_site, texts)
    wrong_width = LinearDictionary(torch.zeros(64, 3), torch.zeros(3), torch.zeros(3, 64), site=SITE, layer=0)
    with pytest.raises(ValueError, match="d_in"):
        feature_pass(tiny, wrong_width, texts)
    with pytest.raises(ValueError, match="layer"):
        feature_pass(tiny, LinearDictionary(sae.W_enc, sae.b_enc, sae.W_dec, site=SITE, layer=9), texts)
    with pytest.raises(ValueError, match="lacks"):
        feature_pass(tiny, object(), texts)
    with pytest.raises(ValueError, match="texts"):
        feature_pass(tiny, sae, [])
    with pytest.raises(ValueError, match="feature"):
        steer_feature(tiny, sae, sae.d_sae, "The Eiffel Tower is in")
    with pytest.raises(ValueError, match="mode"):
        steer_feature(tiny, sae, 0, "The Eiffel Tower is in", mode="boost")


# ------------------------------------------------------------------------------ logit effects


def test_logit_effects_equal_direct_logit_attribution_with_frozen_norm_scale(tiny, sae):
    """W_dec[f] @ W_U with the final LayerNorm's linear part (centering, weight) equals the
    change of the real lm_head's logits when the direction is added to a real final residual
    stream and ln_f runs with its scale frozen at that stream's (direct logit attribution; the
    frozen scale 1/sigma multiplies every token's effect alike, so it is divided out)."""
    ids = tiny.to_tokens("The Eiffel Tower is in")
    h = tiny.run(ids, [("resid_post", tiny.n_layers - 1)])[("resid_post", tiny.n_layers - 1)][-1]
    ln = tiny.hf.transformer.ln_f
    sigma = torch.sqrt(h.var(unbiased=False) + ln.eps)

    def head(x):
        return tiny.hf.lm_head((x - x.mean()) / sigma * ln.weight + ln.bias)

    for f in (0, 3):
        pos, neg = logit_effects(tiny, sae, f, k=5)
        with torch.no_grad():
            delta = (head(h + sae.W_dec[f]) - head(h)) * sigma
        assert [r["id"] for r in pos] == torch.topk(delta, 5).indices.tolist()
        assert [r["id"] for r in neg] == torch.topk(-delta, 5).indices.tolist()
        assert [r["value"] for r in pos] == pytest.approx(torch.topk(delta, 5).values.tolist(), abs=1e-4)
        assert pos[0]["value"] > 0 > neg[0]["value"]


def test_city_feature_logit_effects_match_its_token_class(tiny, sae):
    """The city feature's direction at the embedding (tied embeddings in zoo:tiny) promotes
    city tokens: its top positive logit effects are cities."""
    pos, _ = logit_effects(tiny, sae, 0, k=5)
    print("city feature top logits:", [r["token"] for r in pos])
    assert sum(r["token"] in CITY_TOKENS for r in pos) >= 4


# ------------------------------------------------------------------------------ steering


def _hook_probs(model, prompt, site, layer, fn):
    """Next-token probabilities with ``fn`` applied by a plain torch forward hook."""
    blocks = model.hf.transformer.h
    handles = []
    state = {}
    if site == "resid_post":
        handles.append(blocks[layer].register_forward_hook(
            lambda m, i, o: (fn(o[0]), *o[1:]) if isinstance(o, tuple) else fn(o)))
    elif site == "resid_pre":
        handles.append(blocks[layer].register_forward_pre_hook(
            lambda m, args, kwargs: ((fn(args[0]), *args[1:]), kwargs) if args else
            (args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}), with_kwargs=True))
    elif site == "mlp_out":
        handles.append(blocks[layer].mlp.register_forward_hook(lambda m, i, o: fn(o)))
    elif site == "mlp_post":
        handles.append(blocks[layer].mlp.act.register_forward_hook(lambda m, i, o: fn(o)))
    elif site == "resid_mid":
        def keep(m, args, kwargs):
            state["h"] = args[0] if args else kwargs["hidden_states"]
        handles.append(blocks[layer].register_forward_pre_hook(keep, with_kwargs=True))

        def attn(m, i, o):
            a = o[0]
            cur = state["h"] + a
            return (a + (fn(cur) - cur), *o[1:])
        handles.append(blocks[layer].attn.register_forward_hook(attn))
    try:
        ids = model.to_tokens(prompt)
        with torch.no_grad():
            logits = model.hf(ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
    finally:
        for hd in handles:
            hd.remove()
    return torch.softmax(logits.float(), -1)


@pytest.mark.parametrize("site,layer", [("resid_post", 1), ("resid_post", 3), ("resid_pre", 2),
                                        ("resid_mid", 1), ("mlp_out", 0), ("mlp_post", 2)])
def test_steer_and_ablate_equal_hand_written_hooks(tiny, site, layer):
    prompt = "The Eiffel Tower is in"
    g = torch.Generator().manual_seed(layer)
    width = tiny.site_width(site)
    d = LinearDictionary.from_directions(torch.randn(4, width, generator=g), -0.2, site=site, layer=layer)
    f = 2
    dvec = d.W_dec[f]
    r = steer_feature(tiny, d, f, prompt, coef=30.0)
    ref = _hook_probs(tiny, prompt, site, layer, lambda x: x + 30.0 * dvec)
    base = _hook_probs(tiny, prompt, site, layer, lambda x: x)
    assert torch.allclose(r.probs_before, base, atol=1e-6)
    assert torch.allclose(r.probs_after, ref, atol=1e-6)
    assert (r.probs_after.log() - r.probs_before.log()).abs().max() > 0.05  # the intervention did something
    a = steer_feature(tiny, d, f, prompt, mode="ablate")
    ref = _hook_probs(tiny, prompt, site, layer, lambda x: x - d.encode(x)[..., f:f + 1] * dvec)
    assert torch.allclose(a.probs_after, ref, atol=1e-6)
    top = r.topk("after", 3)
    assert top[0]["prob"] == pytest.approx(float(r.probs_after.max()))
    assert top[0]["other"] == pytest.approx(float(r.probs_before[top[0]["id"]]))


# ------------------------------------------------------------------------------ with core/sae.py


def test_trained_sae_pass_equals_brute_force(tiny, texts):
    """A real SAE from mi_widgets.core.decomposition.sae.train_sae (briefly trained) runs through the pass:
    statistics equal the unbatched brute force."""
    from mi_widgets.core.decomposition.sae import train_sae

    sae = train_sae(tiny, "resid_post", 1, 64, tokens=4096, batch_size=512, progress=False)
    d = feature_pass(tiny, sae, texts[:32], k=5, batch_size=8, progress=False)  # bools work as elsewhere
    with torch.no_grad():
        A, where, _ = brute_acts(tiny, sae, texts[:32])
    assert d.stats.n_tokens == A.shape[0]
    assert torch.equal(d.stats.n_fire, (A > 0).sum(0))
    assert torch.allclose(d.stats.max_act, A.max(0).values, atol=1e-4)
    f = int(d.stats.max_act.argmax())
    ex = d.feature(f).top[0]
    row = where.index((ex.text, ex.position))
    assert abs(A[row, f].item() - A[:, f].max().item()) < 1e-4  # the top example is a maximum


def test_transcoder_ablation_reads_resid_mid_and_writes_mlp_out(tiny):
    """A transcoder (mi_widgets.core.decomposition.sae.Transcoder) ablates at its out_site: mlp_out minus
    f(resid_mid) * W_dec[f], against torch hooks (ln_2 pre-hook reads resid_mid, mlp hook edits)."""
    from mi_widgets.core.decomposition.sae import Transcoder

    tc = Transcoder(tiny.d_model, 16, layer=1, seed=0)
    f, prompt = 3, "The Eiffel Tower is in"
    block = tiny.hf.transformer.h[1]
    seen = {}
    h1 = block.ln_2.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    h2 = block.mlp.register_forward_hook(
        lambda m, i, o: o - tc.encode(seen["x"])[..., f : f + 1].detach() * tc.W_dec[f].detach())
    try:
        ids = tiny.to_tokens(prompt)
        with torch.no_grad():
            ref = torch.softmax(tiny.hf(ids, attention_mask=torch.ones_like(ids)).logits[0, -1], -1)
    finally:
        h1.remove()
        h2.remove()
    with torch.no_grad():
        r = steer_feature(tiny, tc, f, prompt, mode="ablate")
    assert torch.allclose(r.probs_after, ref, atol=1e-6)
    assert (r.probs_after.log() - r.probs_before.log()).abs().max() > 1e-4
