"""Hand-written hook references for one edge of the circuit graph on any family's Hugging Face
modules, written out per family here (module names and column layouts), not taken from the
library. An edge ``s -> r`` is patched by adding ``scale * (out_s(corrupt) - out_s(clean))`` to
the residual stream where receiver ``r`` alone reads it:

- a head's q/k/v: run A recomputes that projection from ``norm(block input + delta)`` (for a
  grouped key/value head this changes the whole group), and the head's own attention result is
  read at the output projection's input; run B is the clean run with only that head's result
  replaced by run A's. Head h's result depends on nothing else in its layer, so this is the
  edge into head h alone, without ungrouping anything.
- an MLP: its input where it reads the stream (the norm before it, or the shared norm of a
  parallel block applied to ``block input + delta``);
- the logits: the last block's output.
"""

from __future__ import annotations

import torch

# family -> attention module, output projection, pre-attention norm, fused qkv module or None
_ATTN = {
    "gpt2": ("attn", "c_proj", "ln_1", "c_attn"),
    "neox": ("attention", "dense", "input_layernorm", "query_key_value"),
    "neox_sequential": ("attention", "dense", "input_layernorm", "query_key_value"),
    "gptj": ("attn", "out_proj", "ln_1", None),
    "opt": ("self_attn", "out_proj", "self_attn_layer_norm", None),
    "opt_pre_ln_proj": ("self_attn", "out_proj", "self_attn_layer_norm", None),
    "bloom": ("self_attention", "dense", "input_layernorm", "query_key_value"),
    "falcon_sequential_alibi": ("self_attention", "dense", "input_layernorm", "query_key_value"),
    "phi": ("self_attn", "dense", "input_layernorm", None),
}
# family -> (module whose input the MLP receiver changes, norm applied to the stream or None),
# module whose output is the MLP's write to the stream
_MLP = {
    "gpt2": (("ln_2", None), "mlp"),
    "neox": (("post_attention_layernorm", None), "mlp"),  # parallel: reads the block input
    "neox_sequential": (("post_attention_layernorm", None), "mlp"),
    "gptj": (("mlp", "ln_1"), "mlp"),  # parallel, one shared LayerNorm
    "phi": (("mlp", "input_layernorm"), "mlp"),
    "opt": (("final_layer_norm", None), "fc2"),
    "opt_pre_ln_proj": (("final_layer_norm", None), "fc2"),
    "bloom": (("post_attention_layernorm", None), "mlp.dense_4h_to_h"),  # BLOOM's mlp adds the residual
    "falcon_sequential_alibi": (("post_attention_layernorm", None), "mlp"),
}
PARALLEL = {"neox", "gptj", "phi"}


def _sub(root, path):
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def blocks_of(hf):
    for p in ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers"):
        try:
            return _sub(hf, p)
        except AttributeError:
            continue
    raise AssertionError(type(hf).__name__)


def spec(family, hf):
    """(attn, o_proj, attn_norm, qkv(kind, h) -> (module, raw columns), (mlp_in, mlp_norm), mlp_write)."""
    cfg = hf.config
    nh = cfg.num_attention_heads
    d = cfg.hidden_size
    dh = getattr(cfg, "head_dim", None) or d // nh
    n_kv = getattr(cfg, "num_key_value_heads", None) or nh
    attn, o, norm, fused = _ATTN.get(family, ("self_attn", "o_proj", "input_layernorm", None))
    mlp_in, mlp_write = _MLP.get(family, (("post_attention_layernorm", None), "mlp"))

    def cols(i):
        return slice(i * dh, (i + 1) * dh)

    def qkv(kind, h):
        i = "qkv".index(kind)
        if family == "gpt2":
            return f"{attn}.c_attn", slice(i * d + h * dh, i * d + (h + 1) * dh)
        if family == "phi3_mha":  # [q (all heads) | k | v], as many key/value heads as heads
            return f"{attn}.qkv_proj", cols(i * nh + h)
        if fused is not None:  # NeoX, BLOOM, Falcon (not multi-query): per head [q | k | v]
            return f"{attn}.{fused}", cols(3 * h + i)
        kv = h // (nh // n_kv)
        return f"{attn}.{kind}_proj", cols(h if kind == "q" else kv)

    return attn, f"{attn}.{o}", norm, qkv, mlp_in, mlp_write, dh


def _hidden(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


_CACHE: dict = {}


def sender_outputs(family, hf, ids):
    """``{"input", "a{L}.h{H}", "m{L}": [B, T, d]}`` of a run on ``ids`` (cached per model and ids)."""
    key = (id(hf), tuple(ids.flatten().tolist()))
    if key not in _CACHE:
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = _sender_outputs(family, hf, ids)
    return _CACHE[key]


def _sender_outputs(family, hf, ids):
    _, o, _, _, _, mlp_write, dh = spec(family, hf)
    blocks = blocks_of(hf)
    out, hooks = {}, []

    def pre0(_m, args, kwargs):
        out["input"] = _hidden(args, kwargs).detach().clone()

    def pre_o(layer):
        def fn(m, args):
            z = args[0]
            w = m.weight if type(m).__name__ == "Conv1D" else m.weight.T  # [H*dh, d]
            for h in range(z.shape[-1] // dh):
                out[f"a{layer}.h{h}"] = z[..., h * dh : (h + 1) * dh] @ w[h * dh : (h + 1) * dh]
        return fn

    try:
        hooks.append(blocks[0].register_forward_pre_hook(pre0, with_kwargs=True))
        for i, b in enumerate(blocks):
            hooks.append(_sub(b, o).register_forward_pre_hook(pre_o(i)))
            hooks.append(_sub(b, mlp_write).register_forward_hook(
                lambda _m, _a, r, i=i: out.__setitem__(f"m{i}", (r[0] if isinstance(r, tuple) else r).clone())))
        with torch.no_grad():
            hf(ids)
    finally:
        for h in hooks:
            h.remove()
    return out


def patched_logits(family, hf, clean_ids, delta, receiver, kind=""):
    """Final-position logits of the clean run where only ``receiver`` (``kind`` for a head) reads
    the stream plus ``delta`` (may require grad)."""
    _, o, norm, qkv, (mlp_in, mlp_norm), _, dh = spec(family, hf)
    blocks = blocks_of(hf)
    seen, hooks = {}, []

    def keep_resid(layer):
        def fn(_m, args, kwargs):
            seen[layer] = _hidden(args, kwargs)
        return fn

    def run():
        return hf(clean_ids).logits[:, -1]

    try:
        if receiver == "logits":
            def post_last(_m, _a, out):
                if isinstance(out, tuple):
                    return (out[0] + delta, *out[1:])
                return out + delta
            hooks.append(blocks[-1].register_forward_hook(post_last))
            return run()
        if receiver.startswith("m"):
            layer = int(receiver[1:])
            blk = blocks[layer]
            hooks.append(blk.register_forward_pre_hook(keep_resid(layer), with_kwargs=True))
            if mlp_norm is None:
                hooks.append(_sub(blk, mlp_in).register_forward_pre_hook(lambda _m, a: (a[0] + delta, *a[1:])))
            else:
                hooks.append(_sub(blk, mlp_in).register_forward_pre_hook(
                    lambda _m, a: (_sub(blk, mlp_norm)(seen[layer] + delta), *a[1:])))
            return run()
        layer, h = (int(x) for x in receiver[1:].split(".h"))
        blk = blocks[layer]
        mod, cols = qkv(kind, h)
        z = {}

        def post_proj(m, _a, out):
            out = out.clone()
            out[..., cols] = m.forward(_sub(blk, norm)(seen[layer] + delta))[..., cols]
            return out

        hooks.append(blk.register_forward_pre_hook(keep_resid(layer), with_kwargs=True))
        hooks.append(_sub(blk, mod).register_forward_hook(post_proj))
        hooks.append(_sub(blk, o).register_forward_pre_hook(lambda _m, a: z.__setitem__("a", a[0])))
        hf(clean_ids)  # run A: the head's result with its input patched
        for hk in hooks:
            hk.remove()
        hooks = []
        hs = slice(h * dh, (h + 1) * dh)

        def pre_o(_m, a):
            zz = a[0].clone()
            zz[..., hs] = z["a"][..., hs]
            return (zz, *a[1:])

        hooks.append(_sub(blk, o).register_forward_pre_hook(pre_o))
        return run()  # run B: clean, with only that head's result from run A
    finally:
        for hk in hooks:
            hk.remove()
