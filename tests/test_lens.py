"""Logit lens: exact against a hand computation, the last row is the model's output, ground truth
on zoo:tiny, nothing vocabulary-sized leaves the trace, errors before any forward."""

from __future__ import annotations

import json

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.lens import LensResult, logit_lens

TEXT = "The Eiffel Tower is in Paris."


@pytest.fixture(scope="module", params=["gpt2", "llama", "neox"])
def fam(request, bpe_tokenizer):
    from conftest import _family_model

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
    assert set(tensors) == {"top_ids", "top_probs", "kl", "target_prob", "target_rank"}
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
    from conftest import _family_model

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


def test_widget_is_lazy(fam):
    _, model = fam
    res = logit_lens(model, TEXT, k=1)
    assert isinstance(res, LensResult)
    try:
        import mi_widgets.widgets.logit_lens  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            res.widget()


# -- ground truth on zoo:tiny -------------------------------------------------------------

FACTS = [
    ("The Eiffel Tower is in", " Paris"),
    ("The Colosseum is in", " Rome"),
    ("Big Ben is in", " London"),
    ("Red Square is in", " Moscow"),
    ("The Brandenburg Gate is in", " Berlin"),
]


def test_tiny_city_becomes_top1_after_block0(tiny):
    gt = json.loads((mw.zoo.path("zoo:tiny") / "ground_truth.json").read_text())
    record = gt["figures"]["facts"]["train_templates"]["logit_lens_top1_by_layer"]
    assert record["embed"] == 0.0 and record["after block 0"] == 1.0
    recorded = set(gt["figures"]["facts"]["prompts_train"])
    for prompt, city in FACTS:
        assert prompt in recorded
        res = logit_lens(tiny, prompt, target=city)
        rank = res.target_rank[:, -1].tolist()
        assert rank[0] > 0, (prompt, rank)  # not top-1 at the embedding
        assert rank[1:] == [0] * tiny.n_layers, (prompt, rank)  # top-1 from after block 0 on
        assert res.top1()[1][-1] == city
        assert res.kl[-1, -1] == 0 and res.kl[0, -1] > 1.0
