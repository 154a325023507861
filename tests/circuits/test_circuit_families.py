"""Circuits on every causal family: exact edge patching and EAP against hand-written hook
references on the Hugging Face modules (tests/circuits/_family_reference.py), the graph of
parallel-attention blocks, and the families that are refused by name."""

from __future__ import annotations

import pytest
import torch
from _families import ALL_FAMILIES, _family_model
from _family_reference import PARALLEL, patched_logits, sender_outputs
from _patching_reference import PAIRS, gap_metric

import mi_widgets as mw
from mi_widgets.core.circuits import acdc, edge_attribution_patching, edge_patching
from mi_widgets.core.circuits._graph import count_edges

#: families whose edge graph runs (gpt2 on the functional forward, the others on hooks)
SUPPORTED = ["gpt2", "llama", "neox", "neox_sequential", "gptj", "opt", "opt_pre_ln_proj", "bloom",
             "falcon_sequential_alibi", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma",
             "phi", "olmo", "qwen2_moe", "phi3_mha"]
#: refused by name, with the reason the message must give
REFUSED = {
    "gemma2": "not additive", "gemma3": "not additive", "olmo2": "not additive", "olmo3": "not additive",
    "opt_post_ln_proj": "post-LN", "falcon": "multi-query", "falcon_new": "grouped-query",
    "falcon_new_1ln": "grouped-query", "phi3": "grouped-query", "bert": "not a causal", "roberta": "not a causal",
}
assert sorted(SUPPORTED[:-1] + list(REFUSED)) == sorted(ALL_FAMILIES)

# every kind of edge: input/head/MLP senders into q, k, v (heads 1 and 2 sit in different
# key/value groups of the GQA configs), MLP and logits receivers
SAMPLE = [
    "input->a0.h0<q>", "input->a1.h3<k>", "a0.h1->a1.h2<v>", "a0.h2->a2.h1<k>", "m0->a1.h1<q>",
    "a1.h3->a2.h0<v>", "input->m0", "a1.h0->m2", "m0->m1", "m1->logits", "a2.h3->logits", "input->logits",
]
SAME_LAYER = "a1.h2->m1"  # exists only where attention and MLP are sequential


def _split(e):
    s, rest = e.split("->")
    return (s, rest[:-3], rest[-2]) if rest.endswith(">") else (s, rest, "")


@pytest.fixture(scope="module", params=SUPPORTED)
def fam(request, bpe_tokenizer):
    if request.param == "phi3_mha":  # Phi-3 mini's layout: fused qkv_proj, one key/value head per head
        import transformers as tf

        torch.manual_seed(0)
        cfg = tf.Phi3Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                            intermediate_size=64, max_position_embeddings=128, initializer_range=0.1,
                            vocab_size=len(bpe_tokenizer), bos_token_id=0, eos_token_id=0, pad_token_id=0)
        hf = tf.Phi3ForCausalLM(cfg)
        hf.config._attn_implementation = "eager"
        hf.eval()
    else:
        hf = _family_model(request.param, len(bpe_tokenizer))
    with torch.no_grad():  # sharper attention and stronger head writes: edges into q/k matter
        for name, mod in hf.named_modules():
            w = getattr(mod, "weight", None)
            if isinstance(w, torch.Tensor) and name.endswith(
                ("q_proj", "k_proj", "query_key_value", "c_attn", "qkv_proj", "o_proj", "out_proj", "attention.dense",
                 "self_attention.dense", "self_attn.dense", "attn.c_proj")
            ):
                w.mul_(3)
    model = mw.wrap(hf, bpe_tokenizer, request.param)
    metric = gap_metric(model, PAIRS)
    return request.param, model, [c for c, _ in PAIRS], [x for _, x in PAIRS], metric


def _reference(family, model, clean, corrupt, metric, edge, scale=1.0):
    """Mean over pairs of m(edge patched) - m(clean) with the delta scaled by ``scale``."""
    s, r, k = _split(edge)
    m = metric.bind(model)
    vals = []
    for i, (a, b) in enumerate(zip(clean, corrupt)):
        ca, cb = model.to_tokens(a), model.to_tokens(b)
        delta = sender_outputs(family, model.hf, cb)[s] - sender_outputs(family, model.hf, ca)[s]
        with torch.no_grad():
            base = m(model.hf(ca).logits[:, -1], pairs=torch.tensor([i]))
        vals.append(m(patched_logits(family, model.hf, ca, scale * delta, r, k), pairs=torch.tensor([i])) - base)
    return torch.stack(vals).mean()


def test_edge_patching_matches_the_hook_reference(fam):
    family, model, clean, corrupt, metric = fam
    edges = SAMPLE + ([] if family in PARALLEL else [SAME_LAYER])
    c = edge_patching(model, clean, corrupt, metric, edges=edges, progress=False, curve=False)
    got = torch.tensor([c.score(e) for e in edges])
    with torch.no_grad():
        ref = torch.stack([_reference(family, model, clean, corrupt, metric, e) for e in edges])
    assert float(ref.abs().max()) > 0.01, (family, "no edge moved the metric: the check would be vacuous")
    assert float((got - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max())), (family, got, ref)


def test_eap_scores_are_the_first_order_hook_reference(fam):
    """EAP score of edge e = d/d alpha of m(receiver hears clean_s + alpha (corrupt_s - clean_s))
    at alpha = 0, taken with torch autograd through the Hugging Face model and the hooks."""
    family, model, clean, corrupt, metric = fam
    c = edge_attribution_patching(model, clean, corrupt, metric, progress=False, curve=False)
    assert not any(p.grad is not None for p in model.hf.parameters())  # no gradient left on the model
    ref = []
    for e in SAMPLE:
        alpha = torch.zeros((), requires_grad=True)
        (g,) = torch.autograd.grad(_reference(family, model, clean, corrupt, metric, e, scale=alpha), alpha)
        ref.append(float(g))
    ref = torch.tensor(ref)
    got = torch.tensor([c.score(e) for e in SAMPLE])
    assert float(ref.abs().max()) > 0.01, family
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max()), (family, got, ref)


def test_parallel_blocks_have_no_edge_from_a_layers_heads_to_its_mlp(fam):
    family, model, clean, corrupt, metric = fam
    c = edge_patching(model, clean, corrupt, metric, edges=["m0->m1"], progress=False, curve=False)
    parallel = family in PARALLEL
    assert c.n_edges == count_edges(model.n_layers, model.n_heads, parallel)
    ids = set(c.edge_ids)
    assert (SAME_LAYER in ids) is not parallel
    assert ("a0.h1->m1" in ids) and ("m0->m1" in ids)  # earlier layers are heard either way
    if parallel:
        with pytest.raises(ValueError, match="not an edge"):
            edge_patching(model, clean, corrupt, metric, edges=[SAME_LAYER], progress=False)


def test_acdc_and_faithfulness_run_and_agree_at_the_ends(fam):
    family, model, clean, corrupt, metric = fam
    c = edge_patching(model, clean, corrupt, metric, edges=["m1->logits"], progress=False, curve=False)
    assert c.faithfulness(c.n_edges) == pytest.approx(1.0, abs=1e-4)  # every edge clean = clean run
    assert c.faithfulness(0) == pytest.approx(0.0, abs=1e-4)  # every edge corrupt = corrupt run
    if family in ("llama", "neox"):  # one sequential GQA and one parallel model, end to end
        gap = abs(c.clean_metric - c.corrupt_metric)
        a = acdc(model, clean, corrupt, metric, threshold=0.02 * gap, order="eap", progress=False, curve=False)
        assert 0 < int(a.in_circuit.sum()) < a.n_edges


@pytest.mark.parametrize("family", sorted(REFUSED))
def test_unsupported_families_are_refused_by_name_before_any_forward(family, bpe_tokenizer, monkeypatch):
    hf = _family_model(family, len(bpe_tokenizer))
    model = mw.wrap(hf, bpe_tokenizer, family)

    def boom(*a, **k):
        raise AssertionError("forward ran before the refusal")

    monkeypatch.setattr(hf, "forward", boom)
    for fn in (edge_attribution_patching, edge_patching):
        with pytest.raises(ValueError, match=REFUSED[family]) as e:
            fn(model, "a b", "a c", mw.logit_diff(1, 2), progress=False)
        assert model.family in str(e.value) or family.split("_")[0] in str(e.value)
