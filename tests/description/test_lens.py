"""Logit lens and tuned lens: exact against a hand computation, the last row is the model's
output, ground truth on zoo:tiny, the tuned lens beats the logit lens on held-out text, nothing
vocabulary-sized leaves the trace, errors before any forward, interrupt/save/load."""

from __future__ import annotations

import json

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.description.lens import (
    TunedLens,
    logit_lens,
    train_tuned_lens,
    tuned_lens,
)

TEXT = "The Eiffel Tower is in Paris."


@pytest.fixture(scope="module", params=["gpt2", "llama", "neox"])
def fam(request, bpe_tokenizer):
    from _families import _family_model

    hf = _family_model(request.param, len(bpe_tokenizer))
    return hf, mw.wrap(hf, bpe_tokenizer, request.param)


def _manual(hf, model, text, target_id):
    """Hidden states -> final norm -> unembedding -> softmax, by hand in torch."""
    ids = model.to_tokens(text)
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        base = hf.base_model
        norm = getattr(base, model.arch.final_norm.split(".")[-1])
        unembed = getattr(hf, model.arch.unembed)
        # hidden_states[-1] already went through the final norm in transformers; use logits.
        rows = [torch.softmax(unembed(norm(h))[0].float(), -1) for h in out.hidden_states[:-1]]
        rows.append(torch.softmax(out.logits[0].float(), -1))
    return torch.stack(rows), out.logits[0]


def test_lens_matches_manual_computation(fam):
    hf, model = fam
    tid = model.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    tid = tid[0] if len(tid) == 1 else 5
    res = logit_lens(model, TEXT, k=5, target=tid)
    probs, logits = _manual(hf, model, TEXT, tid)
    t = len(model.to_tokens(TEXT)[0])
    assert res.top_ids.shape == (model.n_layers + 1, t, 5)
    assert res.layer_names[0] == "embed" and res.layer_names[-1] == f"resid_post {model.n_layers - 1}"
    top = torch.topk(probs, 5, dim=-1)
    torch.testing.assert_close(res.top_probs, top.values, atol=1e-5, rtol=1e-4)
    # ids agree wherever the probabilities are not tied
    assert (res.top_ids[..., 0] == top.indices[..., 0]).float().mean() > 0.99
    # final row = the model's own output distribution
    final = torch.softmax(logits.float(), -1)
    torch.testing.assert_close(res.top_probs[-1], torch.topk(final, 5, -1).values, atol=1e-6, rtol=1e-5)
    assert torch.equal(res.top_ids[-1], torch.topk(final, 5, -1).indices)
    # KL(final || row): 0 on the last row, matches the hand computation elsewhere
    assert res.kl[-1].abs().max() == 0
    kl = (final * (final.log() - probs.log())).sum(-1)
    torch.testing.assert_close(res.kl, kl, atol=1e-4, rtol=1e-3)
    assert (res.kl >= 0).all() and res.kl[:-1].max() > 0
    # target probability and rank
    torch.testing.assert_close(res.target_prob, probs[..., tid], atol=1e-6, rtol=1e-4)
    rank = (probs > probs[..., tid : tid + 1]).sum(-1)
    assert (res.target_rank - rank).abs().max() <= 1  # float ties in the last bit at most
    assert (res.target_rank == rank).float().mean() > 0.99


def test_resid_mid_rows(fam):
    hf, model = fam
    if model.family == "neox":
        with pytest.raises(ValueError, match="resid_mid"):
            logit_lens(model, TEXT, sites="resid_mid")
        return
    res = logit_lens(model, TEXT, sites=["resid_post", "resid_mid"], k=3)
    assert res.layer_names[1:3] == ["resid_mid 0", "resid_post 0"]
    assert res.top_ids.shape[0] == 2 * model.n_layers + 1
    only_post = logit_lens(model, TEXT, k=3)
    torch.testing.assert_close(res.top_probs[2::2], only_post.top_probs[1:])


def test_nothing_vocabulary_sized_is_kept(fam):
    _, model = fam
    res = logit_lens(model, TEXT, k=4, target=3)
    t = len(res.str_tokens)
    rows = model.n_layers + 1
    tensors = {k: v for k, v in vars(res).items() if isinstance(v, torch.Tensor)}
    assert set(tensors) == {"top_ids", "top_probs", "kl", "target_prob", "target_rank", "final_prob"}
    for name, v in tensors.items():
        assert v.numel() <= rows * t * 4, name
        assert model.d_vocab not in v.shape, name
    assert len(res.vocab) <= rows * t * 4


def test_table_and_plot(fam):
    import matplotlib

    matplotlib.use("Agg")
    _, model = fam
    res = logit_lens(model, TEXT, k=2, target=3)
    df = res.to_pandas()
    assert {"layer", "position", "token", "rank", "pred_token", "prob"} <= set(df.columns)
    assert len(df) == res.top_ids.numel()
    assert df.iloc[0]["pred_token"] == res.vocab[int(res.top_ids[0, 0, 0])]
    fig = res.plot()
    assert fig.axes
    assert res.plot(value="target_prob").axes
    import matplotlib.pyplot as plt

    plt.close("all")


def test_errors_before_compute(bpe_tokenizer, monkeypatch):
    from _families import _family_model

    bert = mw.wrap(_family_model("bert", len(bpe_tokenizer)), bpe_tokenizer, "bert")
    with pytest.raises(ValueError, match="causal language model"):
        logit_lens(bert, TEXT)
    gpt = mw.wrap(_family_model("gpt2", len(bpe_tokenizer)), bpe_tokenizer, "gpt2")

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("a forward ran before validation")

    monkeypatch.setattr(gpt.nn, "trace", boom)
    with pytest.raises(ValueError, match="empty"):
        logit_lens(gpt, "")
    with pytest.raises(ValueError, match="one token"):
        logit_lens(gpt, TEXT, target=" Eiffel Tower Paris")
    with pytest.raises(ValueError, match="out of range"):
        logit_lens(gpt, TEXT, target=10**6)
    with pytest.raises(ValueError, match="site"):
        logit_lens(gpt, TEXT, sites="mlp_out")
    with pytest.raises(ValueError, match="k must"):
        logit_lens(gpt, TEXT, k=0)


def test_widget_is_lazy():
    """Computing a lens imports no view (nor anywidget); ``.widget()`` builds the LogitLens view
    on demand, showing this result. In a fresh process, so that other tests' imports do not count."""
    import subprocess
    import sys

    code = """
import sys
import mi_widgets as mw
from mi_widgets.core.description.lens import logit_lens
res = logit_lens(mw.load(), "The Eiffel Tower is in", k=1)
assert "mi_widgets.widgets.logit_lens" not in sys.modules and "anywidget" not in sys.modules, sorted(
    m for m in sys.modules if m.startswith(("mi_widgets.widgets", "anywidget")))
w = res.widget()
assert type(w).__name__ == "LogitLens" and type(w).__module__ == "mi_widgets.widgets.logit_lens", type(w)
assert "anywidget" in sys.modules
assert list(w.tokens) == list(res.str_tokens), (w.tokens, res.str_tokens)
print("OK")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


# -- ground truth on zoo:tiny -------------------------------------------------------------

FACTS = [
    ("The Eiffel Tower is in", " Paris"),
    ("The Colosseum is in", " Rome"),
    ("Big Ben is in", " London"),
    ("Red Square is in", " Moscow"),
    ("The Brandenburg Gate is in", " Berlin"),
]


def test_tiny_city_becomes_top1_from_the_recorded_layer(tiny):
    """Planted facts: the logit lens shows the city as top-1 from the layer the ground-truth
    record (figures.facts.train_templates.logit_lens_top1_by_layer) names, and not before."""
    gt = json.loads((mw.zoo.path("zoo:tiny") / "ground_truth.json").read_text())
    record = gt["figures"]["facts"]["train_templates"]["logit_lens_top1_by_layer"]
    names = list(record)  # "embed", "after block 0", ...
    assert names == ["embed"] + [f"after block {i}" for i in range(tiny.n_layers)]
    first = next(i for i, n in enumerate(names) if record[n] == 1.0)  # row index, 0 = embed
    assert all(record[n] == 1.0 for n in names[first:]) and all(record[n] < 0.5 for n in names[:first])
    recorded = set(gt["figures"]["facts"]["prompts_train"])
    for prompt, city in FACTS:
        assert prompt in recorded
        res = logit_lens(tiny, prompt, target=city)
        rank = res.target_rank[:, -1].tolist()
        assert all(r > 0 for r in rank[:first]), (prompt, rank)  # not top-1 before that layer
        assert rank[first:] == [0] * (len(rank) - first), (prompt, rank)  # top-1 from it on
        assert res.top1()[first][-1] == city
        assert res.kl[-1, -1] == 0 and res.kl[0, -1] > 1.0
        # the default target of the view: the final top-1 (the city) at every row
        torch.testing.assert_close(res.final_prob[:, -1], res.target_prob[:, -1])


# -- tuned lens ---------------------------------------------------------------------------


def _block_outputs(hf, model, text):
    """Embedding output (block 0's input) and every block's output, by forward hooks."""
    ids = model.to_tokens(text)
    blocks = getattr(hf.base_model, "h", None) or hf.base_model.layers
    seen = []
    hooks = [blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0][0].detach().clone()))]
    for b in blocks:
        hooks.append(b.register_forward_hook(lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o)[0].detach().clone())))
    try:
        with torch.no_grad():
            logits = hf(ids).logits[0].float()
    finally:
        for hk in hooks:
            hk.remove()
    return seen, logits


def _random_lens(model, seed=0):
    lens = TunedLens.identity(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lens.weight.copy_(0.2 * torch.randn(lens.weight.shape, generator=g) / model.d_model**0.5)
        lens.bias.copy_(0.1 * torch.randn(lens.bias.shape, generator=g))
    return lens


def test_tuned_lens_matches_manual_computation(fam):
    hf, model = fam
    lens = _random_lens(model)
    res = tuned_lens(model, TEXT, lens, k=4, target=7)
    assert res.lens == "tuned" and res.tuned is lens and res.layer_names == lens.rows
    hs, logits = _block_outputs(hf, model, TEXT)
    base = hf.base_model
    norm = getattr(base, model.arch.final_norm.split(".")[-1])
    unembed = getattr(hf, model.arch.unembed)
    with torch.no_grad():
        probs = torch.stack(
            [torch.softmax(unembed(norm(h + h @ lens.weight[i].T + lens.bias[i])).float(), -1) for i, h in enumerate(hs)]
        )
    final = torch.softmax(logits, -1)
    top = torch.topk(probs, 4, -1)
    torch.testing.assert_close(res.top_probs, top.values, atol=1e-5, rtol=1e-4)
    assert (res.top_ids[..., 0] == top.indices[..., 0]).float().mean() > 0.99
    kl = (final * (final.log() - probs.log())).sum(-1)
    torch.testing.assert_close(res.kl, kl.clamp_min(0), atol=1e-4, rtol=1e-3)
    assert res.kl[-1].max() > 0  # the last row goes through its (random) translator too
    torch.testing.assert_close(res.target_prob, probs[..., 7], atol=1e-6, rtol=1e-4)
    f1 = final.argmax(-1)
    torch.testing.assert_close(res.final_prob, probs.gather(-1, f1.expand(len(hs), -1)[..., None])[..., 0], atol=1e-6, rtol=1e-4)
    # an identity lens is the logit lens
    ident = tuned_lens(model, TEXT, TunedLens.identity(model), k=4)
    plain = logit_lens(model, TEXT, k=4)
    torch.testing.assert_close(ident.top_probs, plain.top_probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ident.kl, plain.kl, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(plain.final_prob[-1], plain.top_probs[-1, :, 0])


@pytest.fixture(scope="module")
def trained(tiny):
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in tiny.hf.state_dict().items()}
    lens = train_tuned_lens(tiny, steps=150, batch_tokens=256, n_texts=192, progress=False)
    after = tiny.hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "training changed the model"
    assert all(p.grad is None for p in tiny.hf.parameters())
    return lens


HELDOUT = [
    "Everyone knows that the Colosseum is in Rome.",
    "Last week my uncle visited the CN Tower in Toronto.",
    "The wine was awful and the room was dirty. Overall the review is negative.",
]


def test_tuned_lens_beats_logit_lens_on_heldout_text(tiny, trained):
    from mi_widgets.zoo import corpus

    assert trained.steps == 150 and not trained.interrupted
    assert trained.history[-1] < 0.2 * trained.history[0]
    # held out: corpus rows at a seed neither the model (0) nor the lens (1) trained on, and
    # held-out fact templates
    texts = corpus.training_rows(seed=2, n_rows=96) + HELDOUT
    table = trained.kl_table(tiny, texts)
    assert list(table.index) == ["embed"] + [f"resid_post {i}" for i in range(tiny.n_layers)]
    print("\nKL(final || row), nats/token, held-out text:\n" + table.to_string())
    last = table.index[-1]
    for name, row in table.iterrows():
        if name != last:
            assert row["tuned"] < row["logit"], (name, row.to_dict())
    assert table.loc["embed", "tuned"] < 0.25 * table.loc["embed", "logit"]
    # last layer: the logit lens is exact there (KL 0); the tuned translator stays ~identity
    assert table.loc[last, "logit"] < 1e-5
    assert table.loc[last, "tuned"] < 1e-3
    # the batched evaluation agrees with single-text results
    one = tuned_lens(tiny, HELDOUT[0], trained)
    torch.testing.assert_close(
        torch.tensor(trained.kl_table(tiny, [HELDOUT[0]])["tuned"].values, dtype=torch.float32),
        one.kl_by_layer(), atol=1e-4, rtol=1e-3,
    )
    per_text = one.kl_table()
    assert list(per_text.columns) == ["logit", "tuned"]
    torch.testing.assert_close(
        torch.tensor(per_text["logit"].values, dtype=torch.float32),
        logit_lens(tiny, HELDOUT[0]).kl_by_layer(),
    )
    # the planted fact is still read out by the tuned lens from after block 0
    res = tuned_lens(tiny, "Everyone knows that the Colosseum is in", trained, target=" Rome")
    assert res.target_rank[1:, -1].tolist() == [0] * tiny.n_layers


def test_training_can_be_interrupted(tiny):
    before = {k: v.clone() for k, v in tiny.hf.state_dict().items()}

    def stop(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted after 3 of 50 steps"):
        lens = train_tuned_lens(tiny, ["The Eiffel Tower is in Paris.", "Big Ben is in London."], steps=50, progress=False, callback=stop)
    assert lens.interrupted and lens.steps == 3 and len(lens.history) == 3
    assert lens.weight.abs().max() > 0  # partially trained
    after = tiny.hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    res = tuned_lens(tiny, "The Eiffel Tower is in", lens, target=" Paris")  # usable
    assert res.lens == "tuned" and torch.isfinite(res.kl).all()
    assert tiny.next_tokens("The Eiffel Tower is in", 1)[0][0] == " Paris"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_and_load(tiny, tmp_path, suffix):
    lens = _random_lens(tiny, seed=3)
    lens.steps = 7
    path = lens.save(tmp_path / f"lens{suffix}")
    back = TunedLens.load(path)
    assert back.rows == lens.rows and back.model_name == "zoo:tiny" and back.steps == 7
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)
    a, b = tuned_lens(tiny, TEXT, lens), tuned_lens(tiny, TEXT, back)
    assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.top_probs, b.top_probs)
    (tmp_path / "bad.pt").write_bytes(b"not a lens")
    with pytest.raises(ValueError, match="not a tuned lens"):
        TunedLens.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        TunedLens.load(tmp_path / "missing.safetensors")


def test_tuned_lens_errors_before_compute(tiny, bpe_tokenizer, monkeypatch):
    from _families import _family_model

    gpt = mw.wrap(_family_model("gpt2", len(bpe_tokenizer)), bpe_tokenizer, "gpt2")
    lens = TunedLens.identity(tiny)

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("a forward ran before validation")

    monkeypatch.setattr(tiny.nn, "trace", boom)
    monkeypatch.setattr(gpt.nn, "trace", boom)
    with pytest.raises(ValueError, match="trained for 'zoo:tiny'"):
        logit_lens(gpt, TEXT, lens=lens)
    with pytest.raises(ValueError, match="no translator for"):
        logit_lens(tiny, TEXT, sites=["resid_mid", "resid_post"], lens=lens)
    with pytest.raises(ValueError, match="must be a TunedLens"):
        logit_lens(tiny, TEXT, lens="tuned")
    with pytest.raises(ValueError, match="list of strings"):
        train_tuned_lens(tiny, "one string", progress=False)
    with pytest.raises(ValueError, match="texts is empty"):
        train_tuned_lens(tiny, [], progress=False)
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        train_tuned_lens(tiny, ["ok", ""], progress=False)
    with pytest.raises(ValueError, match="steps must"):
        train_tuned_lens(tiny, ["ok"], steps=-1, progress=False)
    with pytest.raises(ValueError, match="site"):
        train_tuned_lens(tiny, ["ok"], sites="mlp_out", progress=False)


def test_training_shows_a_progress_bar(tiny, capsys):
    lens = train_tuned_lens(tiny, ["The Eiffel Tower is in Paris."] * 3, steps=4, progress=True)
    err = capsys.readouterr().err
    assert "tuned lens" in err and "4/4" in err
    assert lens.steps == 4 and len(lens.history) == 4


# -- vocab= restriction -------------------------------------------------------------------


def _restricted_manual(hf, model, text, vocab_ids):
    """By hand: softmax over the restricted vocabulary of final-norm(resid) @ W_U[vocab].T
    (+ bias[vocab]) for every row but the last, and of the model's own logits[..., vocab] for
    the last (log-probabilities); plus the full-vocabulary probabilities of the same rows."""
    ids = model.to_tokens(text)
    V = torch.tensor(vocab_ids)
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        norm = getattr(hf.base_model, model.arch.final_norm.split(".")[-1])
        unembed = getattr(hf, model.arch.unembed)
        W = unembed.weight[V]
        b = unembed.bias[V] if unembed.bias is not None else 0.0
        rows = [torch.log_softmax((norm(h)[0] @ W.T + b).float(), -1) for h in out.hidden_states[:-1]]
        rows.append(torch.log_softmax(out.logits[0][:, V].float(), -1))
        full = [torch.softmax(unembed(norm(h))[0].float(), -1) for h in out.hidden_states[:-1]]
        full.append(torch.softmax(out.logits[0].float(), -1))
    return torch.stack(rows), torch.stack(full)


def _check_against_reference(res, ref_logp, full, vocab_ids, tid):
    V = torch.tensor(vocab_ids)
    ref = ref_logp.exp()
    # the reference is the full distribution sliced to vocab and renormalised
    sliced = full[..., V]
    torch.testing.assert_close(ref, sliced / sliced.sum(-1, keepdim=True), atol=1e-6, rtol=1e-4)
    assert res.vocab_ids == list(vocab_ids)
    top = torch.topk(ref, res.k, dim=-1)
    torch.testing.assert_close(res.top_probs, top.values, atol=1e-5, rtol=1e-4)
    # ids are the model's token ids (not columns of the restriction), equal where not tied
    assert set(res.top_ids.unique().tolist()) <= set(vocab_ids)
    assert (res.top_ids[..., 0] == V[top.indices[..., 0]]).float().mean() > 0.99
    final = ref[-1]
    kl = (final * (ref_logp[-1] - ref_logp)).sum(-1)
    torch.testing.assert_close(res.kl, kl.clamp_min(0), atol=1e-4, rtol=1e-3)
    assert res.kl[-1].abs().max() == 0
    col = vocab_ids.index(tid)
    torch.testing.assert_close(res.target_prob, ref[..., col], atol=1e-6, rtol=1e-4)
    rank = (ref > ref[..., col : col + 1]).sum(-1)
    assert (res.target_rank - rank).abs().max() <= 1 and (res.target_rank == rank).float().mean() > 0.99
    f1 = final.argmax(-1)
    assert res.final_ids == V[f1].tolist()
    torch.testing.assert_close(res.final_prob, ref.gather(-1, f1.expand(ref.shape[0], -1)[..., None])[..., 0], atol=1e-6, rtol=1e-4)
    # the table shows the token strings of those ids
    df = res.to_pandas()
    assert set(df["pred_id"]) <= set(vocab_ids)
    assert all(t == res.vocab[i] for t, i in zip(df["pred_token"], df["pred_id"]))


def test_vocab_restriction_matches_hand_reference(fam):
    hf, model = fam
    text_ids = list(dict.fromkeys(model.to_tokens(TEXT)[0].tolist()))
    g = torch.Generator().manual_seed(1)
    others = [i for i in torch.randperm(model.d_vocab, generator=g).tolist() if i not in text_ids][:40]
    vocab_ids = others[:20] + text_ids + others[20:]  # not sorted
    # strings and ids mixed: the text's tokens that spell back to themselves given as strings
    def spelled(i):
        s = model.token_str(i)
        return s if model.tokenizer(s, add_special_tokens=False)["input_ids"] == [i] else i

    given = others[:20] + [spelled(i) for i in text_ids] + others[20:]
    assert any(isinstance(v, str) for v in given)
    tid = others[3]
    res = logit_lens(model, TEXT, k=4, target=tid, vocab=given)
    ref, full = _restricted_manual(hf, model, TEXT, vocab_ids)
    _check_against_reference(res, ref, full, vocab_ids, tid)
    assert f"vocab restricted to {len(vocab_ids)} tokens" in repr(res)


def test_vocab_restriction_unembeds_only_those_rows(fam, monkeypatch):
    """The cost: with vocab=, every lens row multiplies by len(vocab) rows of W_U; the only
    full-vocabulary product left is the model's own forward (its logits give the last row).
    Counted on torch.nn.functional.linear, which nn.Linear (every family's unembedding) calls."""
    _, model = fam
    vocab_ids = list(range(5, model.d_vocab, 7))
    out_sizes = []
    linear = torch.nn.functional.linear

    def counting(x, w, b=None):
        out_sizes.append(w.shape[0])
        return linear(x, w, b)

    monkeypatch.setattr(torch.nn.functional, "linear", counting)
    logit_lens(model, TEXT, k=3)
    full_rows = out_sizes.count(model.d_vocab)
    out_sizes.clear()
    res = logit_lens(model, TEXT, k=3, vocab=vocab_ids)
    n_rows = len(res.layer_names)
    assert full_rows == n_rows  # the full lens: n_rows - 1 lens rows + the model's own forward
    assert out_sizes.count(model.d_vocab) == 1  # the model's own forward only
    assert out_sizes.count(len(vocab_ids)) == n_rows - 1  # every other row: the restricted rows


def test_vocab_of_every_token_is_the_full_lens(fam):
    """vocab = the whole vocabulary in a shuffled order renormalises nothing: the full lens."""
    _, model = fam
    perm = torch.randperm(model.d_vocab, generator=torch.Generator().manual_seed(0))
    res = logit_lens(model, TEXT, k=5, target=9, vocab=perm)
    full = logit_lens(model, TEXT, k=5, target=9)
    for name in ("top_probs", "target_prob", "final_prob"):
        torch.testing.assert_close(getattr(res, name), getattr(full, name), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(res.kl, full.kl, atol=1e-4, rtol=1e-3)  # float32 KL, as above
    assert torch.equal(res.target_rank, full.target_rank)
    # same top-1 ids wherever the top-1 is not tied (Llama's BOS embeds to zero: uniform row)
    untied = full.top_probs[..., 0] > full.top_probs[..., 1] * (1 + 1e-5)
    assert untied.float().mean() > 0.8
    assert torch.equal(res.top_ids[..., 0][untied], full.top_ids[..., 0][untied])
    assert res.vocab_ids == perm.tolist() and full.vocab_ids is None


def test_vocab_restriction_on_tiny_keeps_the_planted_answer_top1(tiny):
    """zoo:tiny's planted fact: " Paris" is top-1 after "The Eiffel Tower is in" in a restricted
    vocabulary holding it and its rival cities, equal to the hand reference (the full
    distribution sliced and renormalised); restricting can only raise its probability and its
    rank, never lower them."""
    gt = json.loads((mw.zoo.path("zoo:tiny") / "ground_truth.json").read_text())
    record = gt["figures"]["facts"]["train_templates"]["logit_lens_top1_by_layer"]
    first = next(i for i, n in enumerate(record) if record[n] == 1.0)
    prompt = "The Eiffel Tower is in"
    cities = [" Paris", " Rome", " London", " Moscow", " Berlin"]
    g = torch.Generator().manual_seed(2)
    city_ids = [tiny.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in cities]
    prompt_ids = tiny.to_tokens(prompt)[0].tolist()
    fill = [i for i in torch.randperm(tiny.d_vocab, generator=g).tolist() if i not in city_ids + prompt_ids][:200]
    vocab = fill[:100] + cities + fill[100:]
    vocab_ids = fill[:100] + city_ids + fill[100:]
    res = logit_lens(tiny, prompt, k=3, target=" Paris", vocab=vocab)
    full = logit_lens(tiny, prompt, k=3, target=" Paris")
    ref, full_p = _restricted_manual(tiny.hf, tiny, prompt, vocab_ids)
    _check_against_reference(res, ref, full_p, vocab_ids, city_ids[0])
    assert res.top1()[-1][-1] == " Paris"
    assert res.target_rank[first:, -1].tolist() == [0] * (len(res.layer_names) - first)
    assert (res.target_rank[:, -1] <= full.target_rank[:, -1]).all()
    # renormalised over fewer tokens: never less probable, and more where others had mass
    assert (res.target_prob[:, -1] >= full.target_prob[:, -1] * (1 - 1e-6)).all()
    assert res.target_prob[0, -1] > full.target_prob[0, -1]


def test_vocab_errors_before_compute(bpe_tokenizer, monkeypatch):
    from _families import _family_model

    gpt = mw.wrap(_family_model("gpt2", len(bpe_tokenizer)), bpe_tokenizer, "gpt2")

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("a forward ran before validation")

    monkeypatch.setattr(gpt.nn, "trace", boom)
    one = gpt.token_str(gpt.to_tokens(TEXT)[0, 1])  # a string that is one token
    with pytest.raises(TypeError, match=r"not a bare string.*vocab=\["):
        logit_lens(gpt, TEXT, vocab=one)
    with pytest.raises(TypeError, match="list of token strings or ids"):
        logit_lens(gpt, TEXT, vocab={1, 2})
    with pytest.raises(ValueError, match="vocab is empty"):
        logit_lens(gpt, TEXT, vocab=[])
    with pytest.raises(ValueError, match=rf"vocab\[1\] = {gpt.d_vocab} is out of range"):
        logit_lens(gpt, TEXT, vocab=[3, gpt.d_vocab])
    with pytest.raises(ValueError, match="out of range"):
        logit_lens(gpt, TEXT, vocab=[-1])
    with pytest.raises(ValueError, match=r"vocab\[1\] = ' Eiffel Tower Paris' is \d+ tokens"):
        logit_lens(gpt, TEXT, vocab=[3, " Eiffel Tower Paris"])
    with pytest.raises(ValueError, match="twice, at positions 0 and 2"):
        logit_lens(gpt, TEXT, vocab=[one, 5, int(gpt.to_tokens(TEXT)[0, 1])])
    with pytest.raises(TypeError, match=r"vocab\[0\] must be a token string or an int id"):
        logit_lens(gpt, TEXT, vocab=[True])
    with pytest.raises(TypeError, match=r"vocab\[1\] must be"):
        logit_lens(gpt, TEXT, vocab=[1, 2.0])
    with pytest.raises(ValueError, match="not in vocab"):
        logit_lens(gpt, TEXT, target=7, vocab=[1, 2, 3])
