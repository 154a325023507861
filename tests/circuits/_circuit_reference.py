"""A hand-written hook reference for one edge patch on a Hugging Face GPT-2, independent of
mi_widgets' functional forward: sender outputs are read with hooks on the real modules, and the
receiver input is replaced where the module reads it."""

from __future__ import annotations

import torch


def _hidden(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def sender_outputs(hf, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"input": wte+wpe, "a{L}.h{H}": z_h @ W_O[h], "m{L}": mlp output}``, each ``[B, T, d]``."""
    tr = hf.transformer
    H = hf.config.n_head
    d = hf.config.n_embd
    dh = d // H
    out: dict[str, torch.Tensor] = {}
    hooks = []

    def pre_block(_m, args, kwargs):
        out.setdefault("input", _hidden(args, kwargs).detach().clone())

    def pre_proj(layer):
        def fn(m, args):
            z = args[0]
            for h in range(H):
                out[f"a{layer}.h{h}"] = z[..., h * dh : (h + 1) * dh] @ m.weight[h * dh : (h + 1) * dh]
        return fn

    def post_mlp(layer):
        def fn(_m, _a, o):
            out[f"m{layer}"] = o.detach().clone()
        return fn

    try:
        hooks.append(tr.h[0].register_forward_pre_hook(pre_block, with_kwargs=True))
        for i, b in enumerate(tr.h):
            hooks.append(b.attn.c_proj.register_forward_pre_hook(pre_proj(i)))
            hooks.append(b.mlp.register_forward_hook(post_mlp(i)))
        with torch.no_grad():
            hf(ids)
    finally:
        for h in hooks:
            h.remove()
    return out


def patched_logits(hf, clean_ids, corrupt_ids, sender: str, receiver: str, kind: str = "", scale: float = 1.0):
    """Final-position logits of the clean run whose ``receiver`` input (``kind`` q/k/v for a head)
    hears ``clean_out_s + scale * (corrupt_out_s - clean_out_s)`` instead of ``clean_out_s``."""
    tr = hf.transformer
    H = hf.config.n_head
    d = hf.config.n_embd
    dh = d // H
    delta = scale * (sender_outputs(hf, corrupt_ids)[sender] - sender_outputs(hf, clean_ids)[sender])
    hooks = []
    try:
        if receiver == "logits":
            hooks.append(tr.ln_f.register_forward_pre_hook(lambda _m, a: (a[0] + delta, *a[1:])))
        elif receiver.startswith("m"):
            layer = int(receiver[1:])
            hooks.append(tr.h[layer].ln_2.register_forward_pre_hook(lambda _m, a: (a[0] + delta, *a[1:])))
        else:
            layer, h = (int(x) for x in receiver[1:].split(".h"))
            blk = tr.h[layer]
            seen = {}

            def pre_block(_m, args, kwargs):
                seen["resid"] = _hidden(args, kwargs)

            def post_attn(m, _a, o):
                cols = slice("qkv".index(kind) * d + h * dh, "qkv".index(kind) * d + (h + 1) * dh)
                x = blk.ln_1(seen["resid"] + delta)
                o = o.clone()
                o[..., cols] = x @ m.weight[:, cols] + m.bias[cols]
                return o

            hooks.append(blk.register_forward_pre_hook(pre_block, with_kwargs=True))
            hooks.append(blk.attn.c_attn.register_forward_hook(post_attn))
        with torch.no_grad():
            return hf(clean_ids).logits[:, -1].float()
    finally:
        for hk in hooks:
            hk.remove()
