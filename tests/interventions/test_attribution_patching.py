"""Activation patching and ablation (mi_widgets.core.interventions.patching, mi_widgets.core.metrics).

Exactness is checked against ``reference_patching`` below: a plain implementation with torch
forward hooks on the Hugging Face modules, one full forward (full logits) per layer, written
independently of the library's engines (it patches head_out by adding the head's projected
write difference to the attention output, and resid_mid by setting attn_out = target - resid_pre).
"""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core import metrics as M
from mi_widgets.core.interventions.attribution_patching import attribution_patching
from mi_widgets.core.model import _get

CLEAN = "The Eiffel Tower is in"  # 6 tokens with the test BPE tokenizer (BOS included)

CORRUPT = "The staff was kind and"  # 6 tokens

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

PAIRS = [(CLEAN, CORRUPT), ("When Mary and John went", "The food was kind and")]


@pytest.fixture(scope="module")
def models(bpe_tokenizer):
    from conftest import _family_model

    import mi_widgets as mw

    return {
        f: mw.wrap(_family_model(f, len(bpe_tokenizer)), bpe_tokenizer, f)
        for f in ("gpt2", "llama", "neox_sequential")
    }


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


class _RawLogitDiff:
    """logit[a] - logit[b] in the logits' own dtype (float64 for finite differences)."""

    name = "raw"

    def __init__(self, a, b):
        self.a, self.b = a, b

    def bind(self, model):
        return self

    def __call__(self, lg, pairs=None, clean_logits=None):
        return lg[:, self.a] - lg[:, self.b]


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


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_patching_is_the_first_order_term_of_patching(models, bpe_tokenizer, direction):
    """AtP = d/de m(base + e * (source - base)) at e = 0, per cell: checked against central
    finite differences of the hook reference on a float64 copy of the model."""
    import copy

    import mi_widgets as mw

    model = models["gpt2"]
    metric = gap_metric(model)
    a, b = metric.correct[0], metric.wrong[0]
    m64 = mw.wrap(copy.deepcopy(model.hf).double(), bpe_tokenizer, "gpt2-f64")
    eps = 1e-4
    for site, each in [
        ("resid_pre", True),
        ("head_out", True),
        ("resid_mid", True),
        ("mlp_out", False),
        ("attn_out", True),
        ("resid_post", False),
    ]:
        atp = attribution_patching(
            model,
            CLEAN,
            CORRUPT,
            metric,
            site=site,
            positions="each" if each else "all",
            direction=direction,
            normalize=False,
        )
        base = atp.corrupt_baseline if direction == "denoise" else atp.clean_baseline
        up = reference_patching(
            m64,
            CLEAN,
            CORRUPT,
            _RawLogitDiff(a, b),
            site,
            each,
            direction,
            normalize=False,
            eps=eps,
        )
        down = reference_patching(
            m64,
            CLEAN,
            CORRUPT,
            _RawLogitDiff(a, b),
            site,
            each,
            direction,
            normalize=False,
            eps=-eps,
        )
        fd = ((up - down) / (2 * eps)).float()
        assert atp.values.shape == fd.shape, site
        err = (atp.values - base[0] - fd).abs().max().item()
        assert err <= 1e-3 * max(1.0, fd.abs().max().item()), f"{site} {direction}: {err:.2e}"
    # normalised like activation patching, and labelled as an estimate
    res = attribution_patching(
        model, CLEAN, CORRUPT, metric, positions="each", direction=direction
    )
    assert res.direction == f"{direction} (attribution)" and res.dims == ("layer", "position")
    # resid_pre at layer 0 over all positions is exactly the whole input: the estimate is the
    # first-order term of the full clean-vs-corrupt difference
    assert torch.isfinite(res.values).all()


def test_attribution_patching_leaves_no_gradients_or_hooks(models):
    model = models["llama"]
    before = _hook_state(model)
    attribution_patching(
        model, CLEAN, CORRUPT, gap_metric(model), site="head_out", positions="each"
    )
    assert all(p.grad is None for p in model.hf.parameters())
    assert _hook_state(model) == before
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        attribution_patching(model, CLEAN, CORRUPT, gap_metric(model), layers=7)
