"""Feature synthesis: gradient ascent on a soft prompt beats every real token, and on a planted
feature its nearest-token reading is the planted tokens."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.decomposition import sae as S
from mi_widgets.core.decomposition.activation_store import (
    ActivationStore,
    _batch_reads,
    tokenize_batch,
)
from mi_widgets.core.decomposition.synthesis import synthesize
from mi_widgets.zoo import corpus


@pytest.fixture(scope="session")
def embed_sae(tiny):
    """A TopK SAE on resid_pre[0] (token + position embedding), 10k corpus tokens: its
    features are groups of tokens, and one of them is the planted cities."""
    store = ActivationStore(tiny, "resid_pre", 0, batch_size=256, max_tokens=256 * 40, progress=False)
    sae = S.SAE(128, 64, "topk", k=4, site="resid_pre", layer=0)
    S.fit(sae, store, steps=40, progress=False)
    return sae


@pytest.fixture(scope="session")
def city_feature(tiny, embed_sae):
    texts = S.eval_texts(300)
    ids, mask, keep = tokenize_batch(tiny, texts)
    x = _batch_reads(tiny, ids, mask, [("resid_pre", 0)])[0][keep]
    cities = torch.tensor([tiny.tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in corpus.CITIES])
    is_city = torch.isin(ids[keep], cities)
    with torch.no_grad():
        f = embed_sae.encode(x)
    prec = torch.stack([is_city[torch.topk(f[:, j], 20).indices].float().mean() for j in range(f.shape[1])])
    j = int(prec.argmax())
    assert prec[j] >= 0.9, prec.max()
    return j


def test_soft_prompt_beats_the_best_single_real_token_for_a_neuron(tiny):
    r = synthesize(tiny, site="mlp_post", layer=0, unit=3, n_positions=3, steps=80)
    assert r.value > r.best_token_value > 0
    assert len(r.nearest) == 3 and len(r.nearest[0]) == 5 and len(r.projected_tokens) == 3
    assert r.history[-1] > r.history[0]
    assert list(r.to_pandas().columns) == ["position", "rank", "token", "cosine"]


def test_synthesised_input_for_the_city_feature_reads_as_cities(tiny, embed_sae, city_feature):
    texts = S.eval_texts(2000)
    r = synthesize(tiny, embed_sae, city_feature, n_positions=1, steps=80, vocab_texts=texts)
    assert r.value > r.best_token_value
    near = [tok.strip() for tok, _ in r.nearest[0]]
    assert sum(t in corpus.CITIES for t in near) >= 4, r.nearest
    assert r.best_token.strip() in corpus.CITIES
    assert r.projected_tokens[0].strip() in corpus.CITIES


def test_direction_target_and_bad_arguments(tiny):
    d = torch.zeros(128)
    d[5] = 1.0
    r = synthesize(tiny, site="resid_pre", layer=1, direction=d, steps=20)
    assert r.value > r.best_token_value
    with pytest.raises(ValueError, match="exactly one"):
        synthesize(tiny, site="resid_pre", layer=1, unit=1, direction=d)
    with pytest.raises(ValueError, match="out of range"):
        synthesize(tiny, site="mlp_post", layer=0, unit=512)
    with pytest.raises(ValueError, match="feature="):
        synthesize(tiny, S.SAE(128, 8, site="resid_pre", layer=0), 8)
