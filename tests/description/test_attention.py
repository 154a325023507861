"""Attention patterns and head scores: hand-computed scores on a small example, the patterns are
the model's eager attention, ground truth on zoo:induction, errors before any forward."""

from __future__ import annotations

import json

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.description.attention import (
    SCORE_KINDS,
    AttentionResult,
    attention,
    head_scores,
    repeated_tokens,
    score_patterns,
)


def test_scores_by_hand():
    # tokens: a b a b  (T = 4); one layer, two heads.
    toks = [7, 8, 7, 8]
    a = torch.zeros(1, 2, 4, 4)
    # head 0: attends to the previous token (position 0 to itself)
    a[0, 0, 0, 0] = 1
    for i in range(1, 4):
        a[0, 0, i, i - 1] = 1
    # head 1: a hand-made mixture
    a[0, 1, 0] = torch.tensor([1.0, 0, 0, 0])
    a[0, 1, 1] = torch.tensor([0.5, 0.5, 0, 0])
    a[0, 1, 2] = torch.tensor([0.2, 0.6, 0.2, 0])  # earlier 'a' at 0 -> dup 0.2, induction key 1: 0.6
    a[0, 1, 3] = torch.tensor([0.1, 0.3, 0.4, 0.2])  # earlier 'b' at 1 -> dup 0.3, induction key 2: 0.4
    s = score_patterns(a, toks)
    assert set(s) == set(SCORE_KINDS)
    torch.testing.assert_close(s["previous_token"][0], torch.tensor([1.0, (0.5 + 0.6 + 0.4) / 3]))
    torch.testing.assert_close(s["duplicate_token"][0], torch.tensor([0.0, (0.2 + 0.3) / 2]))
    torch.testing.assert_close(s["induction"][0], torch.tensor([1.0, (0.6 + 0.4) / 2]))
    torch.testing.assert_close(s["bos"][0], torch.tensor([1 / 3, (0.5 + 0.2 + 0.1) / 3]))
    # no repeated token: duplicate/induction undefined
    s = score_patterns(a, [1, 2, 3, 4])
    assert torch.isnan(s["induction"]).all() and torch.isnan(s["duplicate_token"]).all()


def test_patterns_are_the_models_attention(bpe_tokenizer):
    from _families import _family_model

    hf = _family_model("gpt2", len(bpe_tokenizer))
    model = mw.wrap(hf, bpe_tokenizer, "gpt2")
    text = "The cat sat. The cat sat."
    res = attention(model, text)
    ids = model.to_tokens(text)
    with torch.no_grad():
        ref = torch.stack(hf(ids, output_attentions=True).attentions)[:, 0]
    assert isinstance(res, AttentionResult)
    assert res.patterns.shape == (model.n_layers, model.n_heads, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(res.patterns, ref)
    torch.testing.assert_close(res.scores["induction"], score_patterns(ref, ids[0])["induction"])
    assert res.str_tokens == model.to_str_tokens(ids)


def test_table_plot_circuitsvis(tiny):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = attention(tiny, "The Eiffel Tower is in Paris. The Eiffel Tower is in")
    df = res.to_pandas()
    assert list(df.columns) == ["layer", "head", "score", "value"]
    assert len(df) == len(SCORE_KINDS) * tiny.n_layers * tiny.n_heads
    assert res.plot().axes
    plt.close("all")
    html = res.to_circuitsvis(layer=1)
    assert "html" in type(html).__name__.lower() or hasattr(html, "_repr_html_")
    with pytest.raises(ValueError, match="layer"):
        res.to_circuitsvis(layer=tiny.n_layers)


def test_errors_before_compute(tiny, monkeypatch):
    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("a forward ran before validation")

    monkeypatch.setattr(tiny.nn, "trace", boom)
    with pytest.raises(ValueError, match="empty"):
        attention(tiny, "")
    with pytest.raises(ValueError, match="kind"):
        head_scores(tiny, kind="copying")
    with pytest.raises(ValueError, match="seq_len"):
        head_scores(tiny, seq_len=0)
    with pytest.raises(ValueError, match="context"):
        head_scores(tiny, seq_len=tiny.n_ctx)


def test_repeated_tokens_are_bos_a_a(tiny):
    toks = repeated_tokens(tiny, n=3, seq_len=10, seed=1)
    assert toks.shape == (3, 21)
    assert (toks[:, 0] == tiny.tokenizer.bos_token_id).all()
    assert torch.equal(toks[:, 1:11], toks[:, 11:])
    for row in toks:
        assert len(set(row[1:11].tolist())) == 10
        for i in row[1:].tolist():  # each is a word: one token, decoding and encoding back to itself
            word = tiny.tokenizer.decode([i])
            assert word.startswith(" ") and word[1:].isalpha(), word
            assert tiny.tokenizer(word, add_special_tokens=False)["input_ids"] == [i]
    assert torch.equal(toks, repeated_tokens(tiny, n=3, seq_len=10, seed=1))


@pytest.fixture(scope="module")
def induction():
    return mw.load("zoo:induction")


def test_induction_zoo_ground_truth(induction):
    gt = json.loads((mw.zoo.path("zoo:induction") / "ground_truth.json").read_text())
    comps = gt["components"]
    hs = head_scores(induction, kind="induction", n=20, seq_len=30, seed=0)
    assert hs.values.shape == (2, 4)
    top = hs.top_heads(k=2)
    assert top[0][0] == comps["induction"] and top[0][1] > 0.99
    assert top[1][1] < 0.1  # decoys far below
    prev = hs.top_heads("previous_token", k=2)
    assert prev[0][0] == comps["previous_token"] and prev[0][1] > 0.99
    assert prev[1][1] < 0.1
    # same figures as the ground-truth record (which averages over the same kind of prompts)
    for kind, key in (("induction", "induction_score"), ("previous_token", "previous_token_score")):
        for head, v in gt["figures"][key].items():
            layer, h = map(int, head.split("."))
            assert abs(float(hs.scores[kind][layer, h]) - v) < 0.02, (kind, head)
    df = hs.to_pandas()
    assert len(df) == len(SCORE_KINDS) * 8


def test_attention_on_one_repeated_text_finds_planted_heads(induction):
    """zoo:induction's planted heads (docs/zoo_compiled.md: 0.1 previous-token, 1.2 induction)
    rank first by the scores of ``attention()`` on one random repeated sequence, and the
    result's ``widget()`` is the AttentionPatterns view of it."""
    ids = repeated_tokens(induction, n=1, seq_len=12, seed=7)[0]
    res = attention(induction, induction.tokenizer.decode(ids[1:]))
    assert res.token_ids == ids.tolist()
    top = res.top_heads("induction", k=2)
    assert top[0][0] == "1.2" and top[0][1] > 0.9 and top[1][1] < 0.2
    prev = res.top_heads("previous_token", k=2)
    assert prev[0][0] == "0.1" and prev[0][1] > 0.9 and prev[1][1] < 0.2
    from mi_widgets.widgets.attention_patterns import AttentionPatterns

    w = res.widget(sort_by="induction")
    assert isinstance(w, AttentionPatterns) and w.result is res
    assert w.sorted_heads()[0] == "1.2"
