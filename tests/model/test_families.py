"""Every family with a built-in component map (docs/models.md), checked against transformers
itself and against hand-written torch hooks: the hidden states, the residual algebra (sequential,
parallel, post-LN), heads and neurons through their projections, the unembedding path (final
norm, projections and soft-capping) against the model's logits, and an activation patching grid.

Each family's quirks (Gemma's embedding scale and (1+w) norms and soft-capping, tied embeddings,
GQA/MQA, partial rotary, ALiBi, OPT's projection dims and post-LN, BLOOM's fused qkv, Falcon's
parallel variants) are exercised by these algebra checks, not special-cased. The tables below are
the test's own, read off transformers' modeling files, independent of the package's maps."""

from __future__ import annotations

import pytest
import torch
from _families import ALL_FAMILIES, _family_model

import mi_widgets as mw
from mi_widgets.core.model import _get

TEXT = "When Mary and John went to the store, John gave a drink to Mary."
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"

_LLAMA = ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "phi3", "mixtral", "qwen3_moe", "qwen2_moe")
_SANDWICH = ("gemma2", "gemma3", "olmo2", "olmo3")
_OPT = ("opt", "opt_post_ln_proj", "opt_pre_ln_proj")
_FALCON_PARALLEL = ("falcon", "falcon_new", "falcon_new_1ln")
PARALLEL = ("neox", "gptj", "phi", *_FALCON_PARALLEL)
POST_LN = ("bert", "roberta", "opt_post_ln_proj")
ENCODERS = ("bert", "roberta")
MOE = ("mixtral", "qwen3_moe", "qwen2_moe")
CAUSAL = [f for f in ALL_FAMILIES if f not in ENCODERS]
SEQUENTIAL = [f for f in ALL_FAMILIES if f not in PARALLEL and f not in POST_LN]


def _table(**groups: tuple) -> dict:
    out = {}
    for value, fams in groups.values():
        for f in fams:
            out[f] = value
    return out


# block list, attention output projection, MLP down projection, final modules before lm_head
BLOCKS = _table(
    a=("transformer.h", ("gpt2", "gptj", "bloom", "falcon_sequential_alibi", *_FALCON_PARALLEL)),
    b=("model.layers", (*_LLAMA, *_SANDWICH, "phi")),
    c=("gpt_neox.layers", ("neox", "neox_sequential")),
    d=("model.decoder.layers", _OPT),
    e=("encoder.layer", ENCODERS),
)
O_PROJ = _table(
    a=("attn.c_proj", ("gpt2",)),
    b=("self_attn.o_proj", (*_LLAMA, *_SANDWICH)),
    c=("attention.dense", ("neox", "neox_sequential")),
    d=("attn.out_proj", ("gptj",)),
    e=("self_attn.out_proj", _OPT),
    f=("self_attention.dense", ("bloom", "falcon_sequential_alibi", *_FALCON_PARALLEL)),
    g=("self_attn.dense", ("phi",)),
    h=("attention.output.dense", ENCODERS),
)
DOWN = _table(
    a=("mlp.c_proj", ("gpt2",)),
    b=("mlp.down_proj", (*_LLAMA, *_SANDWICH)),
    c=("mlp.dense_4h_to_h", ("neox", "neox_sequential", "bloom", "falcon_sequential_alibi", *_FALCON_PARALLEL)),
    d=("mlp.fc_out", ("gptj",)),
    e=("fc2", _OPT),
    f=("mlp.fc2", ("phi",)),
    g=("output.dense", ENCODERS),
)
FINAL = _table(
    a=(("transformer.ln_f",), ("gpt2", "gptj", "bloom", "falcon_sequential_alibi", *_FALCON_PARALLEL)),
    b=(("model.norm",), (*_LLAMA, *_SANDWICH)),
    c=(("gpt_neox.final_layer_norm",), ("neox", "neox_sequential")),
    d=(("model.final_layernorm",), ("phi",)),
    e=(("model.decoder.final_layer_norm",), ("opt",)),
    f=(("model.decoder.project_out",), ("opt_post_ln_proj",)),
    g=(("model.decoder.final_layer_norm", "model.decoder.project_out"), ("opt_pre_ln_proj",)),
    h=((), ENCODERS),
)
# where what attention adds to the stream leaves a module: (path in the block, tuple item)
ATTN_OUT = _table(
    a=(("attn", 0), ("gpt2", "gptj")),
    b=(("self_attn", 0), (*_LLAMA, *_OPT, "phi")),
    c=(("post_attention_layernorm", None), _SANDWICH),
    d=(("attention", 0), ("neox", "neox_sequential")),
    e=(("self_attention.dense", None), ("bloom",)),
    f=(("self_attention", 0), ("falcon_sequential_alibi", *_FALCON_PARALLEL)),
)
MLP_OUT = _table(
    a=(("mlp", None), ("gpt2", "gptj", "phi", *_LLAMA, "neox", "neox_sequential", "falcon_sequential_alibi",
                       *_FALCON_PARALLEL)),
    b=(("post_feedforward_layernorm", None), _SANDWICH),
    c=(("fc2", None), _OPT),
    d=(("mlp.dense_4h_to_h", None), ("bloom",)),
)
POST_LN_NORMS = {
    "bert": ("attention.output.LayerNorm", "output.LayerNorm"),
    "roberta": ("attention.output.LayerNorm", "output.LayerNorm"),
    "opt_post_ln_proj": ("self_attn_layer_norm", "final_layer_norm"),
}

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

_MODELS: dict[str, tuple] = {}


@pytest.fixture
def fam(request, bpe_tokenizer):
    """(family, Model, the config's final logit soft-cap, transformers' hidden states and logits
    on TEXT, both taken before wrapping), built once per family;
    norm weights and biases are random so that (1+w) norms and biases are exercised."""
    name = request.param
    if name not in _MODELS:
        hf = _family_model(name, len(bpe_tokenizer))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for pname, p in hf.named_parameters():
                if p.ndim == 1 and pname.endswith("weight"):  # norm gains
                    p.add_(torch.randn(p.shape, generator=g) * 0.3)
        cap = getattr(hf.config, "final_logit_softcapping", None)
        ids = bpe_tokenizer(TEXT, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # transformers' own outputs, before mi-widgets touches the model
            out = hf(ids, output_hidden_states=True)
        logits = out.logits[0].float().clone() if name not in ENCODERS else None
        ref = ([h[0].clone() for h in out.hidden_states], logits)
        _MODELS[name] = (name, mw.wrap(hf, bpe_tokenizer, name), cap, ref)
    return _MODELS[name]


def _fams(names):
    return pytest.mark.parametrize("fam", list(names), indirect=True)


def _hand_tail(m, family, cap, h):
    """Logits from a final residual stream by hand: the final modules, lm_head, soft-cap."""
    with torch.no_grad():
        for p in FINAL[family]:
            h = _get(m.hf, p)(h)
        logits = torch.nn.functional.linear(h, m.hf.lm_head.weight, m.hf.lm_head.bias)
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
    return logits


def _hf_out(m, ids):
    with torch.no_grad():
        return m.hf(ids, output_hidden_states=True)


@_fams(ALL_FAMILIES)
def test_wrapping_leaves_the_models_outputs_unchanged(fam):
    """wrap() prepares some families (Gemma's soft-cap into lm_head, OPT's unflattened MLP,
    Falcon's copied MLP output): the model's hidden states and logits stay what they were."""
    _, m, _, (hs, logits) = fam
    out = _hf_out(m, m.to_tokens(TEXT))
    for a, b in zip(out.hidden_states, hs, strict=True):
        torch.testing.assert_close(a[0], b, atol=1e-6, rtol=1e-5)
    if logits is not None:
        torch.testing.assert_close(out.logits[0].float(), logits, atol=1e-6, rtol=1e-5)


@_fams(ALL_FAMILIES)
def test_resid_stream_matches_transformers_hidden_states(fam):
    family, m, _, (hs, _) = fam
    ids = m.to_tokens(TEXT)
    L = m.n_layers
    out = m.run(ids, [(s, layer) for layer in range(L) for s in ("resid_pre", "resid_post")])
    for layer in range(L):
        torch.testing.assert_close(out[("resid_pre", layer)], hs[layer], atol=1e-5, rtol=1e-5)
    for layer in range(L - 1):
        torch.testing.assert_close(out[("resid_post", layer)], hs[layer + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[("resid_pre", layer + 1)], out[("resid_post", layer)])
    # transformers' last hidden state is after the final norm (and OPT's project_out) in decoders
    last = out[("resid_post", L - 1)]
    with torch.no_grad():
        for p in FINAL[family]:
            last = _get(m.hf, p)(last)
    torch.testing.assert_close(last, hs[L], atol=1e-5, rtol=1e-5)


@_fams(SEQUENTIAL)
def test_sequential_blocks_add_attn_out_then_mlp_out(fam):
    _, m, _, _ = fam
    ids = m.to_tokens(TEXT)
    for layer in range(m.n_layers):
        o = m.run(ids, [(s, layer) for s in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")])
        pre, attn, mid, mlp, post = (o[(s, layer)] for s in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"))
        torch.testing.assert_close(mid - pre, attn, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(post - mid, mlp, atol=1e-5, rtol=1e-4)
        assert attn.abs().max() > 1e-3 and mlp.abs().max() > 1e-3


@_fams(PARALLEL)
def test_parallel_blocks_add_both_and_have_no_resid_mid(fam):
    _, m, _, _ = fam
    ids = m.to_tokens(TEXT)
    o = m.run(ids, [(s, 1) for s in ("resid_pre", "attn_out", "mlp_out", "resid_post")])
    torch.testing.assert_close(o[("resid_post", 1)] - o[("resid_pre", 1)], o[("attn_out", 1)] + o[("mlp_out", 1)],
                               atol=1e-5, rtol=1e-4)
    assert "resid_mid" not in m.sites
    with pytest.raises(ValueError, match="resid_mid.*not defined.*parallel residual.*no stream state"):
        m.run(ids, [("resid_mid", 0)])
    assert "parallel residual" in m.site_help("resid_mid")


@_fams(POST_LN)
def test_post_ln_blocks_normalise_after_each_add(fam):
    family, m, _, _ = fam
    ids = m.to_tokens(TEXT)
    o = m.run(ids, [(s, 1) for s in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")])
    blk = _get(m.hf, BLOCKS[family])[1]
    ln_a, ln_b = (_get(blk, p) for p in POST_LN_NORMS[family])
    with torch.no_grad():
        torch.testing.assert_close(o[("resid_mid", 1)], ln_a(o[("resid_pre", 1)] + o[("attn_out", 1)]),
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(o[("resid_post", 1)], ln_b(o[("resid_mid", 1)] + o[("mlp_out", 1)]),
                                   atol=1e-5, rtol=1e-4)


def _capture(module, kind="pre"):
    box = []
    if kind == "pre":
        h = module.register_forward_pre_hook(lambda _m, a: box.append(a[0].detach().clone()))
    else:
        h = module.register_forward_hook(
            lambda _m, a, o: box.append((o[0] if isinstance(o, tuple) else o).detach().clone())
        )
    return box, h


@_fams(ALL_FAMILIES)
def test_head_out_is_each_heads_write_through_the_output_projection(fam):
    """head_out equals z (a hook on the projection's input) per head times the projection's
    weight; the heads plus the bias sum to the projection's output, which is attn_out except
    behind a post-attention norm (Gemma 2/3, OLMo 2), where that norm of it is attn_out."""
    family, m, _, _ = fam
    ids = m.to_tokens(TEXT)
    proj = _get(_get(m.hf, BLOCKS[family])[2], O_PROJ[family])
    zbox, h1 = _capture(proj, "pre")
    obox, h2 = _capture(proj, "post")
    try:
        o = m.run(ids, [("head_out", 2), ("attn_out", 2)])
    finally:
        h1.remove()
        h2.remove()
    z = zbox[0].reshape(ids.shape[1], m.n_heads, -1)
    w = proj.weight.detach()
    w = w if type(proj).__name__ == "Conv1D" else w.T
    ref = torch.einsum("thd,hdm->thm", z[0] if z.ndim == 4 else z, w.reshape(m.n_heads, -1, w.shape[-1]))
    heads = o[("head_out", 2)]
    torch.testing.assert_close(heads, ref.reshape(heads.shape), atol=1e-5, rtol=1e-4)
    bias = proj.bias.detach() if proj.bias is not None else 0.0
    summed = heads.sum(1) + bias
    torch.testing.assert_close(summed, obox[0].reshape(summed.shape), atol=1e-5, rtol=1e-4)
    if family in _SANDWICH:
        norm = _get(m.hf, BLOCKS[family])[2].post_attention_layernorm
        with torch.no_grad():
            summed = norm(summed)
        assert "before the post-attention norm" in m.site_help("head_out")
    torch.testing.assert_close(summed, o[("attn_out", 2)], atol=1e-5, rtol=1e-4)


@_fams([f for f in ALL_FAMILIES if f not in MOE])
def test_mlp_post_through_the_down_projection_is_mlp_out(fam):
    """mlp_post is what the down projection reads (checked with a hook on it); projected, it is
    mlp_out, or for Gemma 2/3 and OLMo 2 the MLP output before post_feedforward_layernorm."""
    family, m, _, _ = fam
    ids = m.to_tokens(TEXT)
    blk = _get(m.hf, BLOCKS[family])[0]
    down = _get(blk, DOWN[family])
    box, h = _capture(down, "pre")
    try:
        o = m.run(ids, [("mlp_post", 0), ("mlp_out", 0)])
    finally:
        h.remove()
    post = o[("mlp_post", 0)]
    assert post.shape == (ids.shape[1], m.d_mlp)
    torch.testing.assert_close(post, box[0].reshape(post.shape), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        out = down(post)
        if family in _SANDWICH:
            out = blk.post_feedforward_layernorm(out)
    torch.testing.assert_close(out, o[("mlp_out", 0)], atol=1e-5, rtol=1e-4)


@_fams(MOE)
def test_moe_blocks_refuse_mlp_post_and_read_the_moe_output(fam):
    family, m, _, _ = fam
    ids = m.to_tokens(TEXT)
    with pytest.raises(ValueError, match="mlp_post.*not defined.*mixture-of-experts.*read mlp_out"):
        m.run(ids, [("mlp_post", 0)])
    blk = _get(m.hf, BLOCKS[family])[0]
    box, h = _capture(blk.mlp, "post")
    try:
        o = m.run(ids, [("mlp_out", 0)])
    finally:
        h.remove()
    torch.testing.assert_close(o[("mlp_out", 0)], box[0][0], atol=1e-6, rtol=1e-6)


@_fams(CAUSAL)
def test_unembedding_path_and_logit_lens_give_the_models_logits(fam):
    """The map's final norm and unembedding turn the last resid_post into the model's logits
    (soft-capped where the config says so), and the logit lens' rows equal a hand-written tail."""
    family, m, cap, (_, logits) = fam
    ids = m.to_tokens(TEXT)
    L = m.n_layers
    o = m.run(ids, [("resid_post", L - 1), ("resid_post", L - 2)])
    torch.testing.assert_close(_hand_tail(m, family, cap, o[("resid_post", L - 1)]), logits, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        via_map = _get(m.hf, m.arch.unembed)(_get(m.hf, m.arch.final_norm)(o[("resid_post", L - 1)]))
    torch.testing.assert_close(via_map, logits, atol=1e-5, rtol=1e-4)
    lens = mw.logit_lens(m, TEXT, k=3)
    for row, h in ((L - 1, o[("resid_post", L - 2)]), (L, o[("resid_post", L - 1)])):
        ref = torch.softmax(_hand_tail(m, family, cap, h), -1).topk(3)
        torch.testing.assert_close(lens.top_probs[row], ref.values, atol=1e-5, rtol=1e-4)


def _reference_patching(m, family, site, layers, positions):
    """logit_diff(' Mary', ' John') on CORRUPT with the clean value of ``site`` written at one
    (layer, position), by plain torch hooks on the transformers modules."""
    tok = m.tokenizer
    a, b = (tok(s, add_special_tokens=False)["input_ids"][0] for s in (" Mary", " John"))
    clean, corrupt = m.to_tokens(CLEAN), m.to_tokens(CORRUPT)
    blocks = _get(m.hf, BLOCKS[family])

    where = MLP_OUT[family] if site == "mlp_out" else ATTN_OUT.get(family)

    def module(layer):
        return blocks[layer] if site == "resid_pre" else _get(blocks[layer], where[0])

    item = None if site == "resid_pre" else where[1]
    cache = {}
    handles = []
    block_in = {}
    for layer in layers:
        if site != "resid_pre":  # the block's input, for resid_mid = resid_pre + attn_out
            handles.append(blocks[layer].register_forward_pre_hook(
                lambda _m, args, kw, layer=layer: block_in.__setitem__(layer, args[0] if args else kw["hidden_states"]),
                with_kwargs=True))
        if site == "resid_pre":
            handles.append(module(layer).register_forward_pre_hook(
                lambda _m, args, kw, layer=layer: cache.__setitem__(layer, (args[0] if args else kw["hidden_states"]).clone()),
                with_kwargs=True))
        else:
            handles.append(module(layer).register_forward_hook(
                lambda _m, _a, o, layer=layer: cache.__setitem__(
                    layer, (o if item is None else o[item]).clone() + (block_in[layer] if site == "resid_mid" else 0))))
    with torch.no_grad():
        m.hf(clean)
    for hd in handles:
        hd.remove()
    grid = torch.zeros(len(layers), len(positions))
    for i, layer in enumerate(layers):
        for j, p in enumerate(positions):
            src = cache[layer]

            def put(x, src=src, p=p):
                x = x.clone()
                x[:, p] = src[:, p]
                return x

            if site == "resid_pre":
                def pre(_m, args, kw):
                    if args:
                        return (put(args[0]), *args[1:]), kw
                    return args, {**kw, "hidden_states": put(kw["hidden_states"])}
                hd = module(layer).register_forward_pre_hook(pre, with_kwargs=True)
            else:
                here = {}
                hp = blocks[layer].register_forward_pre_hook(
                    lambda _m, args, kw, here=here: here.__setitem__("x", args[0] if args else kw["hidden_states"]),
                    with_kwargs=True)

                def post(_m, _a, o, src=src, p=p, here=here):
                    a = o if item is None else o[0]
                    new = a.clone()
                    # resid_mid: what attention adds becomes (clean resid_mid - this run's resid_pre)
                    new[:, p] = src[:, p] - (here["x"][:, p] if site == "resid_mid" else 0)
                    return new if item is None else (new, *o[1:])
                hd = module(layer).register_forward_hook(post)
            try:
                with torch.no_grad():
                    lg = m.hf(corrupt).logits[0, -1].float()
            finally:
                hd.remove()
                if site != "resid_pre":
                    hp.remove()
            grid[i, j] = lg[a] - lg[b]
    return grid


PATCHABLE = list(CAUSAL)
RESID_MID_PATCHABLE = ["llama", "gemma", "gemma2", "gemma3", "olmo", "olmo2", "olmo3", "phi3", "mixtral", "qwen3_moe", "qwen2_moe",
                       "falcon_sequential_alibi"]


@_fams(PATCHABLE)
@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "mlp_out"])
def test_activation_patching_grid_equals_a_torch_hook_reference(fam, site):
    family, m, _, _ = fam
    t = m.to_tokens(CLEAN).shape[1]
    positions = [1, t - 5, t - 1]
    res = mw.activation_patching(m, CLEAN, CORRUPT, mw.logit_diff(" Mary", " John"), site=site,
                                 positions=positions, normalize=False, progress=False)
    ref = _reference_patching(m, family, site, list(range(m.n_layers)), positions)
    torch.testing.assert_close(res.values.float(), ref, atol=1e-4, rtol=1e-4)


@_fams(RESID_MID_PATCHABLE)
def test_resid_mid_patching_equals_a_torch_hook_reference(fam):
    family, m, _, _ = fam
    t = m.to_tokens(CLEAN).shape[1]
    positions = [t - 5, t - 1]
    res = mw.activation_patching(m, CLEAN, CORRUPT, mw.logit_diff(" Mary", " John"), site="resid_mid",
                                 positions=positions, normalize=False, progress=False)
    ref = _reference_patching(m, family, "resid_mid", list(range(m.n_layers)), positions)
    torch.testing.assert_close(res.values.float(), ref, atol=1e-4, rtol=1e-4)


@_fams(ALL_FAMILIES)
def test_token_activations_construct_for_every_family(fam):
    _, m, _, _ = fam
    site = "mlp_post" if "mlp_post" in m.sites else "mlp_out"
    w = mw.TokenActivations(m, TEXT, site=site, layer=1)
    assert w is not None


def test_unmapped_families_and_unmodelled_config_fields_are_refused_by_name(bpe_tokenizer):
    import transformers as tf

    cfg = tf.GPTBigCodeConfig(n_embd=16, n_layer=1, n_head=2, vocab_size=len(bpe_tokenizer))
    hf = tf.GPTBigCodeForCausalLM(cfg)
    with pytest.raises(ValueError, match=r"gpt_bigcode.*no built-in component map.*components=\{"):
        mw.wrap(hf, bpe_tokenizer)
    cfg = tf.BloomConfig(hidden_size=16, n_layer=1, n_head=2, vocab_size=len(bpe_tokenizer),
                         apply_residual_connection_post_layernorm=True)
    with pytest.raises(ValueError, match="apply_residual_connection_post_layernorm=True.*components="):
        mw.wrap(tf.BloomForCausalLM(cfg), bpe_tokenizer)
    cfg = tf.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=len(bpe_tokenizer), add_cross_attention=True)
    with pytest.raises(ValueError, match="add_cross_attention=True.*cross-attention sublayer.*components="):
        mw.wrap(tf.GPT2LMHeadModel(cfg), bpe_tokenizer)


@pytest.mark.parametrize("fam", ["opt_pre_ln_proj", "opt_post_ln_proj", "gpt2"], indirect=True)
def test_causal_tracing_noises_the_embedding_at_its_own_width(fam):
    """OPT-350m's layout embeds tokens at word_embed_proj_dim (< d_model) and projects them in:
    the noise must have the embedding's width (it crashed with a size mismatch when drawn at
    d_model)."""
    _, model, _, _ = fam
    r = mw.causal_tracing(model, [TEXT], subject=TEXT.split()[1], sites=["resid_pre"], n_samples=2, progress=False)
    grid = r["resid_pre"].values
    assert grid.shape[0] == model.n_layers and torch.isfinite(grid).all()
