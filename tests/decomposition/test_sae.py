"""Sparse dictionaries: training, metrics, splicing, SAELens I/O, and ground truth on zoo:tiny.

The zoo:tiny checks use the planted *cities*: every fact, claim and two-hop row ends in one of
20 city tokens (" Paris", " Rome", ...), so cities are the most frequent planted concept in the
corpus (about 7% of tokens) and share one role (the answer of a location statement). The
sentiment words are planted too but appear in only 12% of rows, too rarely for an SAE trained
on a few thousand tokens to give them a feature.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from mi_widgets.core.decomposition import sae as S
from mi_widgets.core.decomposition.activation_store import (
    ActivationStore,
    _batch_reads,
    tokenize_batch,
)
from mi_widgets.zoo import corpus

D = 128


def _city_ids(model) -> set[int]:
    return {model.tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in corpus.CITIES}


@pytest.fixture(scope="session")
def tiny_batches(tiny):
    """One activation pass (about 15k tokens of the corpus) reading four sites at once:
    resid_pre 0, resid_pre 1, resid_mid 0, mlp_out 0 -> [B, 4, 128] batches."""
    store = ActivationStore(
        tiny, reads=[("resid_pre", 0), ("resid_pre", 1), ("resid_mid", 0), ("mlp_out", 0)],
        batch_size=256, buffer_tokens=8192, max_tokens=256 * 60, progress=False,
    )  # fmt: skip
    return list(store)


@pytest.fixture(scope="session")
def city_sae(tiny, tiny_batches):
    """A TopK SAE (128 latents, k = 8) on resid_pre[1]: the residual after block 0, where the
    ground truth puts the fact read-out (logit lens top-1 = city from block 0 on)."""
    sae = S.SAE(D, 128, "topk", k=8, site="resid_pre", layer=1, model_name=tiny.name)
    sae.log = S.fit(sae, [b[:, 1] for b in tiny_batches], steps=60, progress=False)
    return sae


@pytest.fixture(scope="session")
def heldout(tiny):
    texts = S.eval_texts(300)
    ids, mask, keep = tokenize_batch(tiny, texts)
    return texts, ids, mask, keep


# -- dictionaries on synthetic data (no model) ---------------------------------------------


def _sparse_data(n=4096, d=16, n_feat=32, p=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n_feat, d, generator=g), dim=-1)
    coef = torch.rand(n, n_feat, generator=g) * (torch.rand(n, n_feat, generator=g) < p)
    return coef @ dirs + 0.3, dirs


def _recovery(sae, dirs) -> float:
    """Mean over the true directions of the best |cosine| with a decoder row."""
    w = torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)
    return float((w @ dirs.T).abs().max(0).values.mean())


@pytest.mark.parametrize("kind", ["relu", "topk", "jumprelu"])
def test_each_kind_trains_to_a_sparse_faithful_code_with_unit_decoder(kind):
    # data seed 1: with seed 0 the SAE's own initial decoder (seed 0) *is* the true dictionary
    x, dirs = _sparse_data(seed=1)
    sae = S.SAE(16, 64, kind, k=4 if kind == "topk" else None)
    untrained = _recovery(sae, dirs)
    log = S.fit(sae, (x[i : i + 256] for _ in range(25) for i in range(0, len(x), 256)), steps=400, l1_coefficient=1.0, progress=False)
    with torch.no_grad():
        f = sae.encode(x)
        fve = 1 - (sae.decode(f) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        l0 = (f > 0).sum(-1).float().mean()
    assert f.shape == (4096, 64) and (f >= 0).all()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-4)
    assert fve > 0.7, float(fve)
    assert l0 < 16, float(l0)
    if kind == "topk":
        assert ((f > 0).sum(-1) <= 4).all()
    assert log.rows and not log.interrupted
    # the true dictionary: each planted direction's best cosine with a decoder row, on average,
    # against the same SAE before training (measured at 400 steps: relu 0.75, topk 0.90,
    # jumprelu 0.92; untrained 0.57)
    trained = _recovery(sae, dirs)
    assert trained > untrained + {"relu": 0.1, "topk": 0.2, "jumprelu": 0.2}[kind], (untrained, trained)


def test_jumprelu_thresholds_receive_gradient_through_the_straight_through_estimator():
    sae = S.SAE(8, 16, "jumprelu")
    x = torch.randn(64, 8) * 3
    loss, _, _ = S._loss(sae, x, x, l1=0, l0=1.0, aux=0, dead=torch.zeros(16, dtype=torch.bool))
    loss.backward()
    assert sae.log_threshold.grad is not None and sae.log_threshold.grad.abs().sum() > 0


def test_topk_auxk_loss_trains_dead_latents():
    sae = S.SAE(8, 16, "topk", k=2)
    x = torch.randn(64, 8)
    dead = torch.zeros(16, dtype=torch.bool)
    dead[:8] = True
    loss_aux, _, _ = S._loss(sae, x, x, l1=0, l0=0, aux=1.0, dead=dead)
    loss_no, _, _ = S._loss(sae, x, x, l1=0, l0=0, aux=0.0, dead=dead)
    assert float(loss_aux.detach()) > float(loss_no.detach())
    loss_aux.backward()
    assert sae.W_enc.grad[:, :8].abs().sum() > 0  # the dead latents get a gradient


def test_relu_resampling_revives_dead_latents():
    x, _ = _sparse_data(n=2048)
    sae = S.SAE(16, 64, "relu")
    with torch.no_grad():
        sae.b_enc[:32] = -1e3  # half the latents can never fire
    S.fit(sae, (x[i : i + 256] for _ in range(10) for i in range(0, len(x), 256)), steps=80, dead_window=512, progress=False)
    with torch.no_grad():
        fired = (sae.encode(x) > 0).any(0)
    assert fired[:32].sum() >= 16


def test_ctrl_c_returns_a_consistent_partially_trained_sae():
    x, _ = _sparse_data()
    scale = float(x.pow(2).sum(-1).mean().sqrt() / 4)

    def batches():
        for i in range(10):
            if i == 6:
                raise KeyboardInterrupt
            yield x[i * 256 : (i + 1) * 256]

    sae = S.SAE(16, 64, "relu")
    log = S.fit(sae, batches(), steps=100, progress=False)
    assert log.interrupted and log.tokens == 6 * 256
    # the input scale was folded back: reconstructions are in raw units
    with torch.no_grad():
        assert abs(float(sae.decode(sae.encode(x)).mean() / x.mean()) - 1) < 0.3
        assert abs(float(sae.b_dec.norm()) / scale) > 0.5
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-4)


def test_checkpoints_are_saelens_directories(tmp_path):
    x, _ = _sparse_data(n=1024)
    sae = S.SAE(16, 32, "topk", k=3, site="mlp_out", layer=2)
    S.fit(sae, (x[i : i + 128] for i in range(0, 1024, 128)), steps=8, checkpoint_dir=tmp_path, checkpoint_every=4, progress=False)
    for name in ("step_4", "step_8", "final"):
        assert (tmp_path / name / "cfg.json").exists() and (tmp_path / name / "sae_weights.safetensors").exists()
    final = S.load_sae(tmp_path / "final")
    assert torch.allclose(final.encode(x), sae.encode(x), atol=1e-5)


# -- SAELens format ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["relu", "topk", "jumprelu"])
def test_saelens_round_trip(kind, tmp_path):
    from safetensors.torch import load_file

    sae = S.SAE(16, 48, kind, k=5 if kind == "topk" else None, site="resid_mid", layer=3, seed=1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    S.save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    w = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert cfg["architecture"] == {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}[kind]
    assert cfg["hook_name"] == "blocks.3.hook_resid_mid" and cfg["d_in"] == 16 and cfg["d_sae"] == 48
    assert w["W_enc"].shape == (16, 48) and w["W_dec"].shape == (48, 16)
    assert w["b_enc"].shape == (48,) and w["b_dec"].shape == (16,)
    if kind == "jumprelu":
        assert torch.allclose(w["threshold"], sae.threshold.detach())
    back = S.load_sae(tmp_path)
    assert (back.kind, back.site, back.layer, back.k) == (kind, "resid_mid", 3, sae.k)
    x = torch.randn(32, 16)
    assert torch.allclose(back.encode(x), sae.encode(x), atol=1e-6)
    assert torch.allclose(back(x), sae(x), atol=1e-6)


def test_loads_a_hand_written_saelens_directory(tmp_path):
    """A directory as SAELens writes it: keys and shapes, hook name blocks.1.hook_resid_post,
    the v6 'metadata' block; encode is ReLU((x - b_dec) W_enc + b_enc)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    W_enc, W_dec = torch.randn(8, 24, generator=g), torch.randn(24, 8, generator=g)
    b_enc, b_dec = torch.randn(24, generator=g), torch.randn(8, generator=g)
    save_file({"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}, str(tmp_path / "sae_weights.safetensors"))
    cfg = {
        "architecture": "standard", "d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"model_name": "gpt2", "hook_name": "blocks.1.hook_resid_post", "hook_head_index": None},
    }  # fmt: skip
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = S.load_sae(tmp_path)
    assert (sae.site, sae.layer, sae.d_in, sae.d_sae, sae.kind) == ("resid_post", 1, 8, 24, "relu")
    x = torch.randn(5, 8, generator=g)
    assert torch.allclose(sae.encode(x), torch.relu((x - b_dec) @ W_enc + b_enc), atol=1e-5)
    assert torch.allclose(sae.decode(sae.encode(x)), torch.relu((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec, atol=1e-5)
    # MLP neurons map too; unknown hooks are refused by name
    assert S.parse_hook_name("blocks.0.mlp.hook_post") == ("mlp_post", 0)
    with pytest.raises(ValueError, match="hook_attn_scores"):
        S.parse_hook_name("blocks.0.attn.hook_attn_scores")


def test_transcoder_round_trip_keeps_its_output_site(tmp_path):
    tc = S.Transcoder(16, 32, "topk", k=4, layer=2)
    S.save_sae(tc, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.2.hook_resid_mid" and cfg["hook_name_out"] == "blocks.2.hook_mlp_out"
    assert cfg["apply_b_dec_to_input"] is False
    back = S.load_sae(tmp_path)
    assert isinstance(back, S.Transcoder) and (back.site, back.out_site, back.layer) == ("resid_mid", "mlp_out", 2)
    x = torch.randn(4, 16)
    assert torch.allclose(back(x), tc(x), atol=1e-6)


def test_bad_arguments_are_refused_before_any_work(tiny):
    with pytest.raises(ValueError, match="kind"):
        S.train_sae(tiny, "resid_pre", 1, 64, kind="gated")
    with pytest.raises(ValueError, match="needs k"):
        S.train_sae(tiny, "resid_pre", 1, 64, kind="topk")
    with pytest.raises(ValueError, match="out of range"):
        S.train_sae(tiny, "resid_pre", 9, 64)
    with pytest.raises(ValueError, match="one vector per token"):
        S.train_sae(tiny, "attn_pattern", 0, 64)
    with pytest.raises(ValueError, match="d_in"):
        S.SAE(8, 16).encode(torch.zeros(3, 9))
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        S.load_sae("/nonexistent/sae")
    assert tiny.next_tokens("The Eiffel Tower is in", 1)[0][0] == " Paris"  # model untouched


# -- splicing ------------------------------------------------------------------------------


def _identity_sae(d, site, layer):
    """ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: x = relu(x) - relu(-x) exactly."""
    sae = S.SAE(d, 2 * d, "relu", site=site, layer=layer)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post"])
def test_splicing_a_perfect_dictionary_leaves_the_loss_unchanged(tiny, site):
    width = tiny.site_width(site)
    texts = S.eval_texts(16)
    m = S.evaluate(_identity_sae(width, site, 1), tiny, texts)
    assert m.ce_spliced == pytest.approx(m.ce_clean, abs=1e-4)
    assert m.fve == pytest.approx(1.0, abs=1e-5)
    assert m.ce_zero > m.ce_clean + 0.01
    assert m.ce_recovered == pytest.approx(1.0, abs=1e-3)


def test_zero_ablation_matches_a_plain_torch_hook(tiny):
    """ce_zero at mlp_out[0] equals the loss with a forward hook zeroing the MLP output at the
    real (non-BOS) tokens."""
    texts = S.eval_texts(8)
    m = S.evaluate(_identity_sae(D, "mlp_out", 0), tiny, texts)
    ids, mask, keep = tokenize_batch(tiny, texts)
    h = tiny.hf.transformer.h[0].mlp.register_forward_hook(lambda _m, _a, out: torch.where(keep[..., None], 0.0, out))
    try:
        with torch.no_grad():
            logits = tiny.hf(ids, attention_mask=mask).logits
    finally:
        h.remove()
    s = S._ce_sum(logits, ids, mask)
    assert m.ce_zero == pytest.approx(float(s[0] / s[1]), abs=1e-4)


# -- ground truth on zoo:tiny --------------------------------------------------------------


def test_city_feature_exists_and_its_top_examples_are_cities(tiny, city_sae, heldout):
    """Some latent's 20 strongest activations over 300 held-out corpus rows are ≥ 90% city
    tokens, and it fires on at least half of all city tokens."""
    _, ids, mask, keep = heldout
    x = _batch_reads(tiny, ids, mask, [("resid_pre", 1)])[0][keep]
    tok = ids[keep]
    is_city = torch.isin(tok, torch.tensor(sorted(_city_ids(tiny))))
    with torch.no_grad():
        f = city_sae.encode(x)
    best = None
    for j in range(city_sae.d_sae):
        a = f[:, j]
        if (a > 0).sum() < 20:
            continue
        precision = float(is_city[torch.topk(a, 20).indices].float().mean())
        recall = float(((a > 0) & is_city).sum() / is_city.sum())
        if best is None or (precision, recall) > best[:2]:
            best = (precision, recall, j)
    assert best is not None
    precision, recall, j = best
    assert precision >= 0.9, best
    assert recall >= 0.5, best
    tops = S.top_activations(city_sae, tiny, j, S.eval_texts(300), k=10)
    assert sum(t[1].strip() in corpus.CITIES for t in tops) >= 8, tops


def test_spliced_sae_keeps_the_planted_facts_and_most_of_the_loss(tiny, city_sae):
    """With the SAE's reconstruction in place of resid_pre[1], the model still answers ≥ 90% of
    the 700 training-template fact prompts (clean: 100%); zero-ablating the site answers none."""
    prompts = corpus.fact_prompts("train")
    p, a = [x["prompt"] for x in prompts], [x["answer"] for x in prompts]
    assert S.spliced_accuracy(city_sae, tiny, p, a, mode="clean") == 1.0
    acc = S.spliced_accuracy(city_sae, tiny, p, a)
    assert acc >= 0.9, acc
    assert S.spliced_accuracy(city_sae, tiny, p, a, mode="zero") < 0.1
    m = S.evaluate(city_sae, tiny, S.eval_texts(120))
    assert m.l0 == pytest.approx(8.0)
    assert m.fve > 0.75 and m.ce_recovered > 0.9, m
    assert 0 <= m.dead <= 0.5 and m.to_pandas().shape[0] == 1


def _heldout_reads(model, reads, n=60):
    ids, mask, keep = tokenize_batch(model, S.eval_texts(n))
    return [v[keep] for v in _batch_reads(model, ids, mask, reads)]


def _fve(pred, target):
    t, pred = target.reshape(len(target), -1), pred.reshape(len(target), -1)
    return float(1 - (pred - t).pow(2).sum() / (t - t.mean(0)).pow(2).sum())


def _rank_k_linear_fve(x_train, y_train, x_test, y_test, k):
    """Held-out FVE of the best rank-k affine map x -> y (least squares, then the fitted values
    projected on their top k principal directions: reduced-rank regression)."""
    one = lambda x: torch.cat([x, torch.ones(len(x), 1)], 1)  # noqa: E731
    W = torch.linalg.lstsq(one(x_train), y_train).solution
    fit = one(x_train) @ W
    mu = fit.mean(0)
    V = torch.linalg.svd(fit - mu, full_matrices=False).Vh[:k].T
    return _fve((one(x_test) @ W - mu) @ V @ V.T + mu, y_test)


def test_transcoder_predicts_the_mlp_output(tiny, tiny_batches):
    """Reference: the best affine map from resid_mid to mlp_out of rank 8 (the transcoder has
    k = 8 active latents) fitted on the same tokens; and the untrained transcoder. Measured:
    untrained -0.17, rank-8 map 0.49, transcoder after 40 steps 0.49."""
    tc = S.Transcoder(D, 128, "topk", k=8, layer=0, model_name=tiny.name)
    untrained = S.evaluate(tc, tiny, S.eval_texts(60), splice=False).fve
    S.fit(tc, [b[:, 2:4] for b in tiny_batches[:40]], steps=40, progress=False)
    m = S.evaluate(tc, tiny, S.eval_texts(60))
    x, y = torch.cat([b[:, 2] for b in tiny_batches[:40]]), torch.cat([b[:, 3] for b in tiny_batches[:40]])
    xe, ye = _heldout_reads(tiny, [("resid_mid", 0), ("mlp_out", 0)])
    ref = _rank_k_linear_fve(x, y, xe, ye, 8)
    assert m.fve > untrained + 0.4, (untrained, m)
    assert m.fve > 0.8 * ref, (ref, m)
    assert m.ce_recovered > 0.5, m


def test_crosscoder_reconstructs_both_layers(tiny, tiny_batches):
    """Reference: PCA with 8 components on the two layers concatenated (a rank-8 linear code,
    as many numbers per token as the crosscoder's k = 8 active latents), fitted on the same
    tokens; a 128-latent k-sparse code must beat it."""
    cc = S.Crosscoder(D, 128, [0, 1], "topk", site="resid_pre", k=8)
    untrained = S.evaluate(cc, tiny, S.eval_texts(60)).fve
    S.fit(cc, [b[:, 0:2] for b in tiny_batches[:40]], steps=40, progress=False)
    x = torch.randn(3, 2, D)
    assert cc.encode(x).shape == (3, 128) and cc.decode(cc.encode(x)).shape == (3, 2, D)
    m = S.evaluate(cc, tiny, S.eval_texts(60))
    xtr = torch.cat([b[:, 0:2] for b in tiny_batches[:40]]).reshape(-1, 2 * D)
    xte = torch.stack(_heldout_reads(tiny, [("resid_pre", 0), ("resid_pre", 1)]), 1).reshape(-1, 2 * D)
    ref = _rank_k_linear_fve(xtr, xtr, xte, xte, 8)
    assert m.fve > untrained + 0.5 and m.fve > ref, (untrained, ref, m)
    assert math.isnan(m.ce_recovered), m


def test_train_sae_end_to_end_streams_the_corpus(tiny):
    sae = S.train_sae(tiny, "mlp_out", 0, 64, "topk", k=4, tokens=2048, batch_size=256, progress=False)
    assert sae.log.tokens == 2048 and sae.site == "mlp_out" and sae.model_name == "zoo:tiny"
    assert sae.log.to_pandas()["l0"].iloc[-1] == 4


def test_widget_opens_the_feature_dashboard_on_this_dictionary(tiny):
    """SAE.widget(model, texts) is the FeatureDashboard over this SAE: its pass reads the SAE's
    own site and layer and reports one row per latent."""
    from mi_widgets.core.decomposition.features import default_texts
    from mi_widgets.widgets.feature_dashboard import FeatureDashboard

    sae = S.SAE(tiny.d_model, 24, "topk", site="resid_pre", layer=1, k=4)
    w = sae.widget(tiny, default_texts(8), background=False, progress=False)
    assert isinstance(w, FeatureDashboard)
    assert w.data.complete and len(w.data.to_pandas()) == 24


# -- SAELens cfg fields: each one that changes the math is applied exactly or refused by name --


def _write_saelens(path, cfg, tensors):
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))
    base = {"d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "reshape_activations": "none",
            "metadata": {"model_name": "gpt2", "hook_name": "blocks.1.hook_resid_post", "hook_head_index": None, "prepend_bos": True}}  # fmt: skip
    base.update(cfg)
    (path / "cfg.json").write_text(json.dumps(base))
    return path


def _weights(seed=3, d_in=8, d_sae=24, d_out=None):
    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    # decoder rows of varied norm (0.2 .. 3): the fields below only matter when norms are not 1
    W_dec = torch.randn(d_sae, d_out, generator=g)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * (0.2 + 2.8 * torch.rand(d_sae, 1, generator=g))
    return {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": W_dec,
            "b_enc": torch.randn(d_sae, generator=g), "b_dec": torch.randn(d_out, generator=g)}  # fmt: skip


def _saelens_topk(w, x, k, rescale, b_dec_in=True):
    """SAELens 6.54 TopKSAE.encode/decode, transcribed from sae_lens/saes/topk_sae.py."""
    sae_in = x - w["b_dec"] * b_dec_in
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    n = w["W_dec"].norm(dim=-1)
    if rescale:
        pre = pre * n
    top = torch.topk(pre, k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    out = (f / n if rescale else f) @ w["W_dec"] + w["b_dec"]
    return f, out


@pytest.mark.parametrize("rescale", [False, True])
def test_topk_rescale_acts_by_decoder_norm_matches_saelens(rescale, tmp_path):
    w = _weights()
    _write_saelens(tmp_path, {"architecture": "topk", "k": 4, "rescale_acts_by_decoder_norm": rescale}, w)
    sae = S.load_sae(tmp_path)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    f_ref, out_ref = _saelens_topk(w, x, 4, rescale)
    f = sae.encode(x)
    assert torch.equal(f != 0, f_ref != 0)  # the same features fire
    assert torch.allclose(f, f_ref, atol=1e-5) and torch.allclose(sae.decode(f), out_ref, atol=1e-4)
    # ignoring the field would pick other features: the test separates the two readings
    f_other, _ = _saelens_topk(w, x, 4, not rescale)
    assert not torch.equal(f_other != 0, f_ref != 0)


def test_apply_b_dec_to_input_false_is_honoured(tmp_path):
    w = _weights()
    _write_saelens(tmp_path, {"architecture": "topk", "k": 4, "apply_b_dec_to_input": False}, w)
    sae = S.load_sae(tmp_path)
    x = torch.randn(16, 8)
    f_ref, out_ref = _saelens_topk(w, x, 4, False, b_dec_in=False)
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5) and torch.allclose(sae(x), out_ref, atol=1e-4)


def test_expected_average_only_in_is_folded_with_its_factor_and_refused_without(tmp_path):
    w = _weights()
    x = torch.randn(16, 8)
    s = 2.5
    _write_saelens(tmp_path / "a", {"architecture": "standard", "normalize_activations": "expected_average_only_in", "norm_scaling_factor": s}, w)
    sae = S.load_sae(tmp_path / "a")
    # SAELens: fold_activation_norm_scaling_factor (W_enc * s, W_dec / s, b_dec / s)
    b_dec = w["b_dec"] / s
    f_ref = torch.relu((x - b_dec) @ (w["W_enc"] * s) + w["b_enc"])
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-4)
    assert torch.allclose(sae(x), f_ref @ (w["W_dec"] / s) + b_dec, atol=1e-4)
    _write_saelens(tmp_path / "b", {"architecture": "standard", "normalize_activations": "expected_average_only_in"}, w)
    with pytest.raises(ValueError, match="normalize_activations"):
        S.load_sae(tmp_path / "b")


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"architecture": "standard", "normalize_activations": "layer_norm"}, "normalize_activations"),
        ({"architecture": "standard", "normalize_activations": "constant_norm_rescale"}, "normalize_activations"),
        ({"architecture": "standard", "normalize_activations": "covariance_whitening"}, "normalize_activations"),
        ({"architecture": "standard", "normalize_activations": True}, "normalize_activations"),
        ({"architecture": "standard", "reshape_activations": "hook_z"}, "reshape_activations"),
        ({"architecture": "standard", "metadata": {"hook_name": "blocks.1.attn.hook_z"}}, "hook_z"),
        ({"architecture": "standard", "metadata": {"hook_name": "blocks.1.hook_resid_post", "hook_head_index": 3}}, "hook_head_index"),
        ({"architecture": "gated"}, "architecture"),
        ({"architecture": "abstopk", "k": 4}, "architecture"),
        ({"architecture": "skip_transcoder"}, "architecture"),
        ({"architecture": "something_new"}, "architecture"),
        ({"architecture": "topk"}, "field k"),
        ({"architecture": "standard", "rescale_acts_by_decoder_norm": True}, "rescale_acts_by_decoder_norm"),
        ({"architecture": "standard", "activation_fn": "tanh-relu"}, "activation_fn"),
        ({"architecture": "standard", "dtype": "int8"}, "dtype"),
        ({"architecture": "standard", "metadata": {"hook_name": "blocks.1.hook_resid_post", "model_from_pretrained_kwargs": {"center_writing_weights": True}}}, "center_writing_weights"),
        ({"architecture": "transcoder", "d_out": 8}, "hook_name_out"),
        ({"architecture": "standard", "hook_name_out": "blocks.1.hook_mlp_out"}, "apply_b_dec_to_input"),
    ],
)  # fmt: skip
def test_cfg_fields_that_change_the_math_are_refused_by_name(cfg, field, tmp_path):
    _write_saelens(tmp_path, cfg, _weights())
    with pytest.raises(ValueError, match=field):
        S.load_sae(tmp_path)


def test_unknown_weight_tensors_are_refused(tmp_path):
    _write_saelens(tmp_path, {"architecture": "standard"}, {**_weights(), "W_skip": torch.zeros(8, 8)})
    with pytest.raises(ValueError, match="W_skip"):
        S.load_sae(tmp_path)
    _write_saelens(tmp_path / "t", {"architecture": "standard"}, {**_weights(), "threshold": torch.ones(24)})
    with pytest.raises(ValueError, match="threshold"):
        S.load_sae(tmp_path / "t")


def test_pre_6_topk_activation_fn_and_finetuning_scaling_factor(tmp_path):
    """SAELens <= 5 wrote TopK as architecture 'standard' + activation_fn 'topk' and kept a
    per-feature decoder scaling_factor: decode(f) = (f * scaling_factor) @ W_dec + b_dec."""
    w = _weights()
    s = torch.linspace(0.5, 2.0, 24)
    _write_saelens(tmp_path, {"architecture": "standard", "activation_fn": "topk", "activation_fn_kwargs": {"k": 3}, "finetuning_scaling_factor": True}, {**w, "scaling_factor": s})
    sae = S.load_sae(tmp_path)
    assert (sae.kind, sae.k) == ("topk", 3)
    x = torch.randn(16, 8)
    f_ref, _ = _saelens_topk(w, x, 3, False)
    assert torch.allclose(sae.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(sae(x), (f_ref * s) @ w["W_dec"] + w["b_dec"], atol=1e-4)
    _write_saelens(tmp_path / "off", {"architecture": "standard", "finetuning_scaling_factor": False}, {**w, "scaling_factor": s})
    with pytest.raises(ValueError, match="finetuning_scaling_factor"):
        S.load_sae(tmp_path / "off")


@pytest.mark.parametrize(("name", "want"), [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("torch.float64", torch.float64)])
def test_cfg_dtype_is_the_parameters_dtype_unless_overridden(name, want, tmp_path):
    _write_saelens(tmp_path, {"architecture": "standard", "dtype": name}, _weights())
    assert S.load_sae(tmp_path).W_enc.dtype == want
    assert S.load_sae(tmp_path, dtype=torch.float32).W_dec.dtype == torch.float32


def test_saelens_transcoders_read_without_b_dec_and_prepend_bos_is_kept(tmp_path):
    """SAELens' Transcoder.process_sae_in never subtracts b_dec (it lives in the output space)."""
    w = _weights(d_out=6)
    w["threshold"] = torch.rand(24) * 0.5
    meta = {"hook_name": "blocks.1.hook_resid_mid", "hook_name_out": "blocks.1.hook_mlp_out", "prepend_bos": False}
    _write_saelens(tmp_path, {"architecture": "jumprelu_transcoder", "d_out": 6, "metadata": meta}, w)
    tc = S.load_sae(tmp_path)
    assert isinstance(tc, S.Transcoder) and (tc.site, tc.out_site, tc.kind) == ("resid_mid", "mlp_out", "jumprelu")
    assert tc.prepend_bos is False
    x = torch.randn(16, 8)
    pre = x @ w["W_enc"] + w["b_enc"]
    f_ref = torch.relu(pre) * (pre > w["threshold"])
    assert torch.allclose(tc.encode(x), f_ref, atol=1e-5)
    assert torch.allclose(tc(x), f_ref @ w["W_dec"] + w["b_dec"], atol=1e-4)
