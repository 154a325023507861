"""Shared by the intervention tests: the prompts, a metric with a large gap on random models, and
``reference_patching``: a plain implementation with torch forward hooks on the Hugging Face modules,
one full forward (full logits) per layer, written independently of the library's engines (it patches
head_out by adding the head's projected write difference to the attention output, and resid_mid by
setting attn_out = target - resid_pre)."""

from __future__ import annotations

import json

import torch

from mi_widgets.core import metrics as M
from mi_widgets.core.interventions.checks import PATCH_SITES
from mi_widgets.core.model import _get

CLEAN = "The Eiffel Tower is in"  # 6 tokens with the test BPE tokenizer (BOS included)


CORRUPT = "The staff was kind and"  # 6 tokens


PAIRS = [(CLEAN, CORRUPT), ("When Mary and John went", "The food was kind and")]


def last_logits(model, text):
    with torch.no_grad():
        return model.hf(model.to_tokens(text)).logits[0, -1]


def gap_metric(model, pairs=((CLEAN, CORRUPT),)):
    """logit_diff over the token ids whose logit moves most between clean and corrupt (so that
    the random models' normalisation denominators are not tiny)."""
    correct, wrong = [], []
    for c, x in pairs:
        d = last_logits(model, c) - last_logits(model, x)
        correct.append(int(d.argmax()))
        wrong.append(int(d.argmin()))
    return M.logit_diff(correct, wrong)


def _hf_cache(model, toks):
    hf, arch = model.hf, model.arch
    blocks = _get(hf, arch.layers)
    st: dict = {}
    hs = []
    try:
        for layer, b in enumerate(blocks):
            hs.append(
                b.register_forward_pre_hook(
                    lambda m, a, i=layer: st.__setitem__(("resid_pre", i), a[0])
                )
            )
            hs.append(
                b.register_forward_hook(
                    lambda m, a, o, i=layer: st.__setitem__(("resid_post", i), o)
                )
            )
            hs.append(
                _get(b, arch.reads["attn_out"].module).register_forward_hook(
                    lambda m, a, o, i=layer: st.__setitem__(("attn_out", i), o[0])
                )
            )
            hs.append(
                _get(b, arch.reads["mlp_out"].module).register_forward_hook(
                    lambda m, a, o, i=layer: st.__setitem__(("mlp_out", i), o)
                )
            )
            if "resid_mid" in arch.reads:
                hs.append(
                    _get(b, arch.reads["resid_mid"].module).register_forward_pre_hook(
                        lambda m, a, i=layer: st.__setitem__(("resid_mid", i), a[0])
                    )
                )
            hs.append(
                _get(b, arch.o_proj).register_forward_pre_hook(
                    lambda m, a, i=layer: st.__setitem__(("z", i), a[0])
                )
            )
        with torch.no_grad():
            logits = hf(toks).logits[:, -1]
    finally:
        for h in hs:
            h.remove()
    return st, logits


def reference_patching(
    model, clean, corrupt, metric, site, each, direction, normalize=True, eps=None
):
    """[L] / [L, T] / [L, H] / [L, H, T] grid for one prompt pair. With ``eps`` the patched value
    is ``base + eps * (source - base)`` instead of ``source`` (for finite differences)."""
    hf, arch = model.hf, model.arch
    blocks = _get(hf, arch.layers)
    metric = metric.bind(model)
    ct, xt = model.to_tokens(clean), model.to_tokens(corrupt)
    cs, cl = _hf_cache(model, ct)
    xs, xl = _hf_cache(model, xt)
    base, src = (xt, cs) if direction == "denoise" else (ct, xs)
    if eps is not None:
        here = xs if direction == "denoise" else cs
        src = {k: here[k] + eps * (src[k] - here[k]) for k in src}
    t = ct.shape[1]
    h_, dh = model.n_heads, model.d_head
    m_clean = float(metric(cl, clean_logits=cl))
    m_corrupt = float(metric(xl, clean_logits=cl))
    grid = []
    for layer, b in enumerate(blocks):
        if site == "head_out":
            cfgs = [(h, p) for h in range(h_) for p in (range(t) if each else [None])]
        else:
            cfgs = [(None, p) for p in (range(t) if each else [None])]
        n = len(cfgs)
        mask = torch.zeros(n, t, 1, dtype=torch.bool)
        for r, (_, p) in enumerate(cfgs):
            mask[r, slice(None) if p is None else p] = True
        ctx: dict = {}
        hs = []

        def sel(cur, s, mask=mask):
            return torch.where(mask, s.expand_as(cur), cur)

        attn = _get(b, arch.reads["attn_out"].module)
        if site == "resid_pre":
            hs.append(
                b.register_forward_pre_hook(
                    lambda m, a, layer=layer: (sel(a[0], src[("resid_pre", layer)]),) + a[1:]
                )
            )
        elif site == "resid_post":
            hs.append(
                b.register_forward_hook(
                    lambda m, a, o, layer=layer: sel(o, src[("resid_post", layer)])
                )
            )
        elif site == "attn_out":
            hs.append(
                attn.register_forward_hook(
                    lambda m, a, o, layer=layer: (sel(o[0], src[("attn_out", layer)]),) + o[1:]
                )
            )
        elif site == "mlp_out":
            mlp = _get(b, arch.reads["mlp_out"].module)
            hs.append(
                mlp.register_forward_hook(
                    lambda m, a, o, layer=layer: sel(o, src[("mlp_out", layer)])
                )
            )
        elif site == "resid_mid":
            hs.append(b.register_forward_pre_hook(lambda m, a, ctx=ctx: ctx.__setitem__("x", a[0])))
            hs.append(
                attn.register_forward_hook(
                    lambda m, a, o, layer=layer, mask=mask, ctx=ctx: (
                        (torch.where(mask, src[("resid_mid", layer)] - ctx["x"], o[0]),) + o[1:]
                    )
                )
            )
        elif site == "head_out":
            proj = _get(b, arch.o_proj)
            w = proj.weight if arch.o_proj_kind == "conv1d" else proj.weight.T
            wh = w.reshape(h_, dh, -1)
            hm = torch.zeros(n, t, h_, 1)
            for r, (h, p) in enumerate(cfgs):
                hm[r, slice(None) if p is None else p, h] = 1
            hs.append(
                proj.register_forward_pre_hook(lambda m, a, ctx=ctx: ctx.__setitem__("z", a[0]))
            )

            def fix(m, a, o, layer=layer, hm=hm, wh=wh, n=n, ctx=ctx):
                zc = ctx["z"].reshape(n, t, h_, dh)
                zs = src[("z", layer)].reshape(1, t, h_, dh)
                return (o[0] + torch.einsum("nthd,hdm->ntm", (zs - zc) * hm, wh),) + o[1:]

            hs.append(attn.register_forward_hook(fix))
        try:
            with torch.no_grad():
                lg = hf(base.expand(n, t)).logits[:, -1]
        finally:
            for h in hs:
                h.remove()
        v = metric(lg, pairs=torch.zeros(n, dtype=torch.long), clean_logits=cl.expand(n, -1))
        if normalize:
            v = (v - m_corrupt) / (m_clean - m_corrupt)
        grid.append(v.reshape(h_, -1) if site == "head_out" else v)
    g = torch.stack(grid)
    return g if each else g.squeeze(-1)


def _sites(model):
    return [s for s in PATCH_SITES if s in model.sites]


def _hook_state(model):
    return {
        name: (
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(getattr(m, "_forward_hooks_with_kwargs", {})),
            len(getattr(m, "_forward_pre_hooks_with_kwargs", {})),
        )
        for name, m in model.hf.named_modules()
    }


def _zoo(name):
    from mi_widgets import zoo

    d = zoo.MODELS_DIR / name
    assert (d / "model.safetensors").exists() and (d / "ground_truth.json").exists(), f"zoo:{name} is missing"
    return json.loads((d / "ground_truth.json").read_text(encoding="utf-8"))
