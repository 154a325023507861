"""Model: one component vocabulary across GPT-2, Llama, NeoX and BERT, checked against
transformers' own hidden states and against the algebra of the residual stream."""

from __future__ import annotations

import pytest
import torch

import mi_widgets as mw

TEXT = "The Eiffel Tower is in Paris."


def _hidden_states(model, ids):
    with torch.no_grad():
        out = model.hf(ids, output_hidden_states=True)
    return out.hidden_states


def test_dimensions_are_read_from_the_config(family_model):
    family, m = family_model
    assert (m.n_layers, m.n_heads, m.d_model, m.d_head, m.d_mlp) == (3, 4, 32, 8, 64 if family != "gpt2" else 128)
    assert m.family == family.split("_")[0]


def test_resid_pre_matches_transformers_hidden_states(family_model):
    _, m = family_model
    ids = m.to_tokens(TEXT)
    hs = _hidden_states(m, ids)
    out = m.run(ids, [("resid_pre", layer) for layer in range(m.n_layers)])
    for layer in range(m.n_layers):
        torch.testing.assert_close(out[("resid_pre", layer)], hs[layer][0].float(), atol=1e-5, rtol=1e-5)


def test_residual_algebra_holds_for_pre_norm_models(family_model):
    family, m = family_model
    ids = m.to_tokens(TEXT)
    layer = 1
    if family == "bert":  # post-LN: each residual add is followed by a LayerNorm
        out = m.run(ids, [(s, layer) for s in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")])
        blk = m.hf.encoder.layer[layer]
        with torch.no_grad():
            mid = blk.attention.output.LayerNorm(out[("resid_pre", layer)] + out[("attn_out", layer)])
            post = blk.output.LayerNorm(out[("resid_mid", layer)] + out[("mlp_out", layer)])
        torch.testing.assert_close(out[("resid_mid", layer)], mid, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[("resid_post", layer)], post, atol=1e-5, rtol=1e-5)
        return
    reads = [(s, layer) for s in ("resid_pre", "attn_out", "mlp_out", "resid_post")]
    if "resid_mid" in m.sites:
        reads.append(("resid_mid", layer))
    out = m.run(ids, reads)
    pre, attn, mlp, post = (out[(s, layer)] for s in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
    torch.testing.assert_close(post, pre + attn + mlp, atol=1e-5, rtol=1e-5)
    if "resid_mid" in m.sites:
        torch.testing.assert_close(out[("resid_mid", layer)], pre + attn, atol=1e-5, rtol=1e-5)


def test_head_out_sums_to_attn_out_minus_bias(family_model):
    _, m = family_model
    ids = m.to_tokens(TEXT)
    out = m.run(ids, [("head_out", 2), ("attn_out", 2)])
    heads, attn = out[("head_out", 2)], out[("attn_out", 2)]
    assert heads.shape == (ids.shape[1], m.n_heads, m.d_model)
    from mi_widgets.core.model import _get

    proj = _get(_get(m.hf, m.arch.layers)[2], m.arch.o_proj)
    bias = proj.bias.detach().float() if proj.bias is not None else 0.0
    torch.testing.assert_close(heads.sum(1) + bias, attn, atol=1e-5, rtol=1e-5)


def test_attention_patterns_are_probabilities_and_causal_where_expected(family_model):
    family, m = family_model
    ids = m.to_tokens(TEXT)
    pat = m.run(ids, [("attn_pattern", 0)])[("attn_pattern", 0)]
    t = ids.shape[1]
    assert pat.shape == (m.n_heads, t, t)
    torch.testing.assert_close(pat.sum(-1), torch.ones(m.n_heads, t), atol=1e-5, rtol=1e-5)
    upper = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    if family == "bert":
        assert pat[:, upper].max() > 0  # bidirectional
    else:
        assert pat[:, upper].abs().max() == 0  # causal


def test_mlp_post_feeds_mlp_out(family_model):
    """mlp_out is the down-projection of mlp_post (bias included): the neurons are the right ones."""
    family, m = family_model
    ids = m.to_tokens(TEXT)
    out = m.run(ids, [("mlp_post", 0), ("mlp_out", 0)])
    from mi_widgets.core.model import _get

    block = _get(m.hf, m.arch.layers)[0]
    down = {
        "gpt2": "mlp.c_proj", "llama": "mlp.down_proj", "neox": "mlp.dense_4h_to_h",
        "neox_sequential": "mlp.dense_4h_to_h", "bert": "output.dense",
    }[family]
    proj = _get(block, down)
    with torch.no_grad():
        expected = proj(out[("mlp_post", 0)])
    torch.testing.assert_close(out[("mlp_out", 0)], expected.float(), atol=1e-5, rtol=1e-5)


def _wrapped(family, tokenizer):
    from _families import _family_model

    return mw.wrap(_family_model(family, len(tokenizer)), tokenizer, family)


def test_parallel_residual_neox_has_no_resid_mid(bpe_tokenizer):
    m = _wrapped("neox", bpe_tokenizer)
    assert "resid_mid" not in m.sites
    with pytest.raises(ValueError, match="resid_mid.*not defined.*parallel residual"):
        m.check_site("resid_mid", 0)


@pytest.mark.parametrize(
    "site, layer, match",
    [
        ("mlp_pre", 0, "unknown site 'mlp_pre'"),
        ("resid_pre", 3, r"layer 3 is out of range.*3 layers \(0\.\.2\)"),
        ("resid_pre", -1, "layer -1 is out of range"),
        ("resid_pre", "1", "layer must be an int"),
    ],
)
def test_bad_site_or_layer_raises_before_any_forward(family_model, site, layer, match):
    _, m = family_model
    calls = []
    handle = m.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=match):
            m.run(m.to_tokens(TEXT), [(site, layer)])
        with pytest.raises(ValueError, match=match):
            mw.token_activations(m, TEXT, site=site, layer=layer)
    finally:
        handle.remove()
    assert calls == []
    # the model is still usable afterwards
    assert m.run(m.to_tokens(TEXT), [("resid_post", 0)])[("resid_post", 0)].shape[1] == m.d_model


def test_empty_text_and_too_long_text_are_refused(family_model):
    _, m = family_model
    with pytest.raises(ValueError, match="text is empty"):
        m.to_tokens("")
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        mw.token_activations(m, ["fine", ""])
    with pytest.raises(ValueError, match="takes at most 128"):
        m.to_tokens("Paris " * 300)


def test_to_str_tokens_round_trips(family_model):
    _, m = family_model
    toks = m.to_str_tokens(TEXT)
    assert toks[0] == "<|endoftext|>"
    assert "".join(toks[1:]) == TEXT


def test_real_minilm_bert_loads_from_a_local_directory(minilm_dir):
    m = mw.load(minilm_dir)
    assert (m.family, m.n_layers, m.n_heads, m.d_model, m.d_mlp) == ("bert", 6, 12, 384, 1536)
    ids = m.to_tokens("Interpretability inside Jupyter")
    assert m.to_str_tokens(ids)[0] == "[CLS]" and m.to_str_tokens(ids)[-1] == "[SEP]"
    hs = _hidden_states(m, ids)
    out = m.run(ids, [("resid_post", 5), ("resid_pre", 3), ("attn_pattern", 0)])
    torch.testing.assert_close(out[("resid_post", 5)], hs[6][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[("resid_pre", 3)], hs[3][0], atol=1e-4, rtol=1e-4)
    assert out[("attn_pattern", 0)].shape == (12, ids.shape[1], ids.shape[1])


def test_unknown_model_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"could not load model 'no-such-org/no-such-model'.*zoo name.*local directory"):
        mw.load("no-such-org/no-such-model")
    with pytest.raises(ValueError, match="unknown zoo model 'nope'"):
        mw.load("zoo:nope")


def test_directory_without_config_or_weights_is_explained(tmp_path, bpe_tokenizer):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mw.load(tmp_path)
    import transformers as tf

    cfg = tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(bpe_tokenizer))
    cfg.architectures = ["GPT2LMHeadModel"]
    cfg.save_pretrained(tmp_path)
    bpe_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="weights or tokenizer could not be loaded"):
        mw.load(tmp_path)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_saved_local_directory_loads_like_a_hub_model(tmp_path, family, bpe_tokenizer):
    m = _wrapped(family, bpe_tokenizer)
    m.hf.save_pretrained(tmp_path)
    bpe_tokenizer.save_pretrained(tmp_path)
    m2 = mw.load(tmp_path)
    ids = m.to_tokens(TEXT)
    a = m.run(ids, [("resid_post", 2)])[("resid_post", 2)]
    b = m2.run(ids, [("resid_post", 2)])[("resid_post", 2)]
    torch.testing.assert_close(a, b)


def test_unembedding_and_final_norm_paths_exist(family_model):
    family, m = family_model
    from mi_widgets.core.model import _get

    assert _get(m.hf, m.arch.embed).weight.shape[0] == m.d_vocab
    if family == "bert":
        assert m.arch.unembed is None and m.arch.final_norm is None
        return
    assert _get(m.hf, m.arch.unembed) is m.hf.get_output_embeddings()
    assert isinstance(_get(m.hf, m.arch.final_norm), torch.nn.Module)


def test_remote_builds_the_module_tree_on_meta_without_weights():
    """remote=True: the same component names, weights left to NDIF (nothing loaded here)."""
    m = mw.load("zoo:induction", remote=True)
    assert m.remote is True
    assert {p.device.type for p in m.hf.parameters()} == {"meta"}
    assert (m.family, m.n_layers, m.n_heads) == ("gpt2", 2, 4)
    local = mw.load("zoo:induction")
    text = "".join(local.to_str_tokens(local.to_tokens(" a b c"))[1:])
    assert m.to_str_tokens(text) == local.to_str_tokens(text)


def test_next_tokens_are_the_softmax_top_k(family_model):
    family, m = family_model
    if family == "bert":
        with pytest.raises(ValueError, match="not a causal language model"):
            m.next_tokens(TEXT)
        return
    ids = m.to_tokens(TEXT)
    with torch.no_grad():
        probs = torch.softmax(m.hf(ids).logits[0, -1], -1)
    top = m.next_tokens(TEXT, k=3)
    assert [t for t, _ in top] == m.to_str_tokens(torch.topk(probs, 3).indices)
    assert top[0][1] == pytest.approx(float(probs.max()), rel=1e-5)


# -- your own component map -------------------------------------------------------------------

_LLAMA_COMPONENTS = {
    "layers": "model.layers", "embed": "model.embed_tokens", "final_norm": "model.norm", "unembed": "lm_head",
    "sites": {
        "resid_pre": "input",
        "head_out": "self_attn.o_proj.input",
        "attn_out": "self_attn.output.0",
        "attn_pattern": "self_attn.output.1",
        "resid_mid": "post_attention_layernorm.input",
        "mlp_post": "mlp.down_proj.input",
        "mlp_out": "mlp.output",
        "resid_post": "output",
    },
}


def test_a_components_dict_reads_the_same_values_as_the_built_in_map(bpe_tokenizer):
    from _families import _family_model

    hf = _family_model("llama", len(bpe_tokenizer))
    built_in = mw.wrap(hf, bpe_tokenizer)
    own = mw.wrap(hf, bpe_tokenizer, components={**_LLAMA_COMPONENTS, "family": "mine"})
    assert own.family == "mine" and own.sites == built_in.sites
    assert (own.n_layers, own.d_head, own.d_mlp) == (built_in.n_layers, built_in.d_head, built_in.d_mlp)
    ids = own.to_tokens(TEXT)
    reads = [(s, 1) for s in own.sites]
    a, b = built_in.run(ids, reads), own.run(ids, reads)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_a_family_without_a_built_in_map_works_with_components(bpe_tokenizer):
    """GPTBigCode (StarCoder) has no built-in map: the error names components=, and a dict of its
    module paths gives sites that match transformers' hidden states and the residual algebra."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.GPTBigCodeConfig(n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=len(bpe_tokenizer))
    hf = tf.GPTBigCodeForCausalLM(cfg).eval()
    with pytest.raises(ValueError, match=r"'gpt_bigcode'.*no built-in component map.*components="):
        mw.wrap(hf, bpe_tokenizer)
    m = mw.wrap(hf, bpe_tokenizer, components={
        "layers": "transformer.h", "embed": "transformer.wte", "final_norm": "transformer.ln_f", "unembed": "lm_head",
        "sites": {"resid_pre": "input", "head_out": "attn.c_proj.input", "attn_out": "attn.output.0",
                  "resid_mid": "ln_2.input", "mlp_post": "mlp.c_proj.input", "mlp_out": "mlp.output",
                  "resid_post": "output"},
    })
    assert "attn_pattern" not in m.sites
    with pytest.raises(ValueError, match="attn_pattern.*not defined.*not given in components"):
        m.check_site("attn_pattern")
    ids = m.to_tokens(TEXT)
    hs = _hidden_states(m, ids)
    o = m.run(ids, [(s, 1) for s in m.sites] + [("resid_post", 0)])
    torch.testing.assert_close(o[("resid_pre", 1)], hs[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o[("resid_post", 0)], hs[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o[("resid_mid", 1)] - o[("resid_pre", 1)], o[("attn_out", 1)], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(o[("resid_post", 1)] - o[("resid_mid", 1)], o[("mlp_out", 1)], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        proj = hf.transformer.h[1].attn.c_proj
        torch.testing.assert_close(o[("head_out", 1)].sum(1) + proj.bias, o[("attn_out", 1)], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "components, error, match",
    [
        ([1], TypeError, "components must be a dict or an mw.Arch"),
        ({"layers": "model.layers"}, ValueError, "components needs 'embed'"),
        ({**_LLAMA_COMPONENTS, "heads": 4}, ValueError, r"unknown components key\(s\) \['heads'\]"),
        ({**_LLAMA_COMPONENTS, "layers": "model.blocks"}, ValueError, "layers 'model.blocks' is not a module"),
        ({**_LLAMA_COMPONENTS, "sites": {"resid_pre": "input"}}, ValueError, "needs 'resid_post'"),
        ({**_LLAMA_COMPONENTS, "sites": {"resid_pre": "input", "resid_post": "output", "mlp_in": "mlp.input"}},
         ValueError, r"unknown site\(s\) \['mlp_in'\]"),
        ({**_LLAMA_COMPONENTS, "sites": {"resid_pre": "input", "resid_post": "output", "mlp_out": "mlp"}},
         ValueError, "end it with .input or .output"),
        ({**_LLAMA_COMPONENTS, "sites": {"resid_pre": "input", "resid_post": "output", "mlp_out": "ffn.output"}},
         ValueError, "site 'mlp_out' reads 'ffn', which block 0 does not have"),
    ],
)
def test_a_bad_components_map_is_refused_by_name(bpe_tokenizer, components, error, match):
    from _families import _family_model

    hf = _family_model("llama", len(bpe_tokenizer))
    with pytest.raises(error, match=match):
        mw.wrap(hf, bpe_tokenizer, components=components)


def test_an_unsupported_model_type_is_refused_before_weights_load(tmp_path, bpe_tokenizer):
    import transformers as tf

    cfg = tf.GPTBigCodeConfig(n_embd=16, n_layer=1, n_head=2, vocab_size=len(bpe_tokenizer))
    cfg.architectures = ["GPTBigCodeForCausalLM"]
    cfg.save_pretrained(tmp_path)  # a config and no weights: the refusal must come first
    with pytest.raises(ValueError, match="no built-in component map.*components="):
        mw.load(tmp_path)


# -- devices and dtypes -----------------------------------------------------------------------


def test_bfloat16_loads_and_reads_float32_on_cpu_within_bf16_of_transformers(tmp_path, bpe_tokenizer):
    """dtype= reaches the weights; every value read comes back float32 on the CPU and equals the
    bf16 transformers model's own hidden states and logits (bf16 tolerance)."""
    from _families import _family_model

    _family_model("llama", len(bpe_tokenizer)).save_pretrained(tmp_path)
    bpe_tokenizer.save_pretrained(tmp_path)
    m = mw.load(tmp_path, dtype="bfloat16", device="cpu")
    assert m.hf.dtype == torch.bfloat16 and m.device.type == "cpu"
    ids = m.to_tokens(TEXT)
    out = m.run(ids, [(s, layer) for layer in range(m.n_layers) for s in m.sites])
    assert {(v.dtype, v.device.type) for v in out.values()} == {(torch.float32, "cpu")}
    with torch.no_grad():
        ref = m.hf(ids, output_hidden_states=True)
    for layer in range(m.n_layers):
        torch.testing.assert_close(out[("resid_pre", layer)], ref.hidden_states[layer][0].float(), atol=0, rtol=0)
    pre, attn, mid = (out[(s, 1)] for s in ("resid_pre", "attn_out", "resid_mid"))
    torch.testing.assert_close(mid, pre + attn, atol=2e-2, rtol=1.6e-2)  # the add itself rounds in bf16
    lens = mw.logit_lens(m, TEXT, k=3)
    probs = torch.softmax(ref.logits[0].float(), -1).topk(3).values
    torch.testing.assert_close(lens.top_probs[-1], probs, atol=1e-3, rtol=1.6e-2)
    with pytest.raises(ValueError, match="unknown dtype 'bfloat17'"):
        mw.load(tmp_path, dtype="bfloat17")
    with pytest.raises(TypeError, match="dtype must be a torch.dtype or its name"):
        mw.load(tmp_path, dtype=16)


@pytest.mark.parametrize("family", ["opt", "falcon"])
def test_remote_models_refuse_sites_that_need_local_preparation(tmp_path, bpe_tokenizer, family):
    """OPT's MLP sites and parallel Falcon's mlp_out are exact because wrapping prepares the local
    model; on NDIF transformers' own layers run, so a remote Model refuses them by name."""
    from _families import _family_model

    _family_model(family, len(bpe_tokenizer)).save_pretrained(tmp_path)
    bpe_tokenizer.save_pretrained(tmp_path)
    m = mw.load(tmp_path, remote=True)
    assert "mlp_out" not in m.sites and "resid_post" in m.sites
    with pytest.raises(ValueError, match="mlp_out.*not defined.*on NDIF.*remote='local'"):
        m.check_site("mlp_out")
    local = mw.load(tmp_path)
    assert "mlp_out" in local.sites
