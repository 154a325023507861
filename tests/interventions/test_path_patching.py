"""Path patching (mi_widgets.core.interventions.path_patching).

Exactness is checked against ``reference_path`` below, written independently of the library with
plain torch hooks: it freezes heads at the level of the attention *output* (clean attn output plus
the sender's projected write difference), records the receivers' layer-norm input and computes
their q/k/v by hand from the c_attn weights, then patches those into a full clean forward.

Ground truth on zoo:ioi uses the ABC corruption of Wang et al. (2022): the same template with
IO, S1 and S2 replaced by three other distinct names. It removes the duplicated name, so both
the duplicate-token head 0.1 and the S-inhibition head 1.2 have a large total effect, and path
patching can show that 1.2 acts on the name mover 2.3 directly through its query while 0.1 does
not (its effect goes through 1.2)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from mi_widgets.core import metrics as M
from mi_widgets.core.interventions import path_patching as PP
from mi_widgets.core.interventions.patching import activation_patching

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The staff was kind and"
PAIRS = [(CLEAN, CORRUPT), ("When Mary and John went", "The food was kind and")]




@pytest.fixture(scope="module")
def gpt2(bpe_tokenizer):
    from _families import _family_model

    import mi_widgets as mw

    hf = _family_model("gpt2", len(bpe_tokenizer))
    # The random init (std 0.02) attends almost uniformly and its heads write little, so paths
    # into q or k would barely move the metric and a q/k mix-up could pass: sharpen attention
    # (query/key weights x8) and strengthen the heads' writes (value x4, output x6).
    d = hf.config.n_embd
    with torch.no_grad():
        for b in hf.transformer.h:
            b.attn.c_attn.weight[:, : 2 * d] *= 8
            b.attn.c_attn.weight[:, 2 * d :] *= 4
            b.attn.c_proj.weight *= 6
    return mw.wrap(hf, bpe_tokenizer, "gpt2")


def _last(model, text):
    with torch.no_grad():
        return model.hf(model.to_tokens(text)).logits[0, -1]


def gap_metric(model, pairs):
    correct, wrong = [], []
    for c, x in pairs:
        dl = _last(model, c) - _last(model, x)
        correct.append(int(dl.argmax()))
        wrong.append(int(dl.argmin()))
    return M.logit_diff(correct, wrong)


def _hook_state(model):
    return {
        n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.hf.named_modules()
    }


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def reference_path(model, clean, corrupt, metric_fn, sender, receivers, which):
    """Raw metric of path patching one pair: ``sender``/``receivers`` as (layer, head)."""
    hf = model.hf
    blocks = hf.transformer.h
    d, dh = model.d_model, model.d_head
    ci, xi = model.to_tokens(clean), model.to_tokens(corrupt)

    def collect(ids):
        z, attn, ln1 = {}, {}, {}
        hs = []
        for i, b in enumerate(blocks):
            hs.append(
                b.attn.c_proj.register_forward_pre_hook(
                    lambda m, a, i=i: z.__setitem__(i, a[0].clone())
                )
            )
            hs.append(
                b.attn.register_forward_hook(lambda m, a, o, i=i: attn.__setitem__(i, o[0].clone()))
            )
            hs.append(
                b.ln_1.register_forward_hook(lambda m, a, o, i=i: ln1.__setitem__(i, o.clone()))
            )
        with torch.no_grad():
            hf(ci if ids is None else ids)
        for h in hs:
            h.remove()
        return z, attn, ln1

    cz, cattn, _ = collect(ci)
    xz, _, _ = collect(xi)
    sl, sh = sender
    w_o = blocks[sl].attn.c_proj.weight  # [d (z), d (out)]
    c = slice(sh * dh, (sh + 1) * dh)
    delta = (xz[sl][..., c] - cz[sl][..., c]) @ w_o[c]
    # step 2: every attention output frozen to clean, plus the sender's write difference
    hs = []
    for i, b in enumerate(blocks):
        new = cattn[i] + (delta if i == sl else 0)
        hs.append(b.attn.register_forward_hook(lambda m, a, o, new=new: (new, *o[1:])))
    ln1 = {}
    for i, b in enumerate(blocks):
        hs.append(b.ln_1.register_forward_hook(lambda m, a, o, i=i: ln1.__setitem__(i, o.clone())))
    with torch.no_grad():
        hf(ci)
    for h in hs:
        h.remove()
    # receivers' inputs by hand
    parts = {"q": [0], "k": [1], "v": [2], "resid": [0, 1, 2]}[which]
    hs = []
    for rl, rh in receivers:
        attn = blocks[rl].attn.c_attn
        qkv = ln1[rl] @ attn.weight + attn.bias
        for p in parts:
            cols = slice(p * d + rh * dh, p * d + (rh + 1) * dh)

            def fn(m, a, o, cols=cols, v=qkv[..., cols]):
                o = o.clone()
                o[..., cols] = v
                return o

            hs.append(attn.register_forward_hook(fn))
    try:
        with torch.no_grad():
            logits = hf(ci).logits[:, -1]
    finally:
        for h in hs:
            h.remove()
    return float(metric_fn(logits)[0])


@pytest.mark.parametrize("which", PP.RECEIVER_INPUTS)
def test_sender_sweep_matches_the_hook_reference(gpt2, which):
    model = gpt2
    metric = gap_metric(model, PAIRS).bind(model)
    recs = [(2, 1), (2, 3)]
    res = PP.path_patching(
        model,
        [c for c, _ in PAIRS],
        [x for _, x in PAIRS],
        metric,
        "all",
        ["2.1", "2.3"],
        which,
        progress=False,
        batch_size=3,
    )
    assert res.dims == ("layer", "head") and res.layers == [0, 1] and res.heads == [0, 1, 2, 3]
    assert res.receivers == ["2.1", "2.3"] and res.receiver_input == which
    for k, (c, x) in enumerate(PAIRS):
        mk = lambda lg, k=k: metric(lg, pairs=torch.full((lg.shape[0],), k))  # noqa: E731
        m_c = float(mk(_last(model, c)[None])[0])
        m_x = float(mk(_last(model, x)[None])[0])
        for sl in range(2):
            for sh in range(4):
                ref = reference_path(model, c, x, mk, (sl, sh), recs, which)
                got = float(res.per_pair[k, sl, sh])
                assert abs(got - (ref - m_x) / (m_c - m_x)) < 1e-4, (which, k, sl, sh)
    assert torch.allclose(res.values, res.per_pair.mean(0))
    # the grid is not trivial: some path moves the metric
    assert float((1 - res.per_pair).abs().max()) > 0.01
    # a single sender gives the same cell as the sweep
    one = PP.path_patching(
        model,
        [c for c, _ in PAIRS],
        [x for _, x in PAIRS],
        metric,
        "1.2",
        ["2.1", "2.3"],
        which,
        progress=False,
    )
    assert one.values.shape == (1, 1)
    assert abs(float(one.values[0, 0]) - res.value("1.2")) < 1e-5


def test_normalize_false_gives_the_raw_metric(gpt2):
    """normalize=False reports the raw metric; normalising it by the baselines gives the
    normalised grid."""
    model = gpt2
    metric = gap_metric(model, PAIRS[:1])
    raw = PP.path_patching(
        model, CLEAN, CORRUPT, metric, "0.0", "1.0", "q", normalize=False, progress=False
    )
    norm = PP.path_patching(model, CLEAN, CORRUPT, metric, "0.0", "1.0", "q", progress=False)
    mc, mx = float(norm.clean_baseline[0]), float(norm.corrupt_baseline[0])
    assert abs(float(norm.values[0, 0]) - (float(raw.values[0, 0]) - mx) / (mc - mx)) < 1e-5
    assert not raw.normalized


def test_same_prompt_is_a_clear_error(gpt2):
    with pytest.raises(ValueError, match="undefined"):
        PP.path_patching(gpt2, CLEAN, CLEAN, lambda lg: lg[:, 1], "0.1", "2.3", progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sender="1.2", receivers="1.3"), "after the sender"),
        (dict(sender="2.0", receivers=["2.3", "1.1"]), "after the sender"),
        (dict(sender="all", receivers="0.3"), "layer 0"),
        (dict(sender="0.4", receivers="2.3"), "head 4 is out of range"),
        (dict(sender="3.0", receivers="2.3"), "layer 3 is out of range"),
        (dict(sender="one.two", receivers="2.3"), "'L.H'"),
        (dict(sender="1.2", receivers=[]), "at least one"),
        (dict(sender="1.2", receivers="2.3", receiver_input="o"), "receiver_input"),
        (
            dict(sender="1.2", receivers="2.3", corrupt="The food was wonderful and the staff"),
            "different lengths",
        ),
    ],
)
def test_bad_arguments_raise_before_compute(gpt2, monkeypatch, kwargs, match):
    def boom(*a, **k):
        raise AssertionError("forward ran before validation")

    monkeypatch.setattr(gpt2.hf, "forward", boom)
    args = dict(clean=CLEAN, corrupt=CORRUPT, metric=lambda lg: lg[:, 0]) | kwargs
    with pytest.raises(ValueError, match=match):
        PP.path_patching(gpt2, progress=False, **args)


def test_bert_is_refused(bpe_tokenizer):
    from _families import _family_model

    import mi_widgets as mw

    bert = mw.wrap(_family_model("bert", len(bpe_tokenizer)), bpe_tokenizer, "bert")
    with pytest.raises(ValueError, match="causal|language model|logits"):
        PP.path_patching(bert, CLEAN, CORRUPT, lambda lg: lg[:, 0], "0.1", "2.3", progress=False)


# Where each family computes a head's query/key/value: (attention module, output projection,
# [(projection, columns of head h (kv head for k/v))]) -- written out per family, not taken
# from the library.
def _qkv_spec(family, model, h):
    dh, nh = model.d_head, model.n_heads
    if family == "llama":
        kv = h // (nh // model.hf.config.num_key_value_heads)
        return (
            "self_attn",
            "self_attn.o_proj",
            {
                "q": [("self_attn.q_proj", slice(h * dh, (h + 1) * dh))],
                "k": [("self_attn.k_proj", slice(kv * dh, (kv + 1) * dh))],
                "v": [("self_attn.v_proj", slice(kv * dh, (kv + 1) * dh))],
            },
        )
    base = h * 3 * dh  # neox: per head [q | k | v]
    return (
        "attention",
        "attention.dense",
        {
            p: [("attention.query_key_value", slice(base + i * dh, base + (i + 1) * dh))]
            for i, p in enumerate("qkv")
        },
    )


def _sub(block, path):
    for part in path.split("."):
        block = getattr(block, part)
    return block


def reference_path_generic(family, model, clean, corrupt, metric_fn, sender, receivers, which):
    """Path patching by the attention-output route (as ``reference_path``) for Llama/NeoX:
    freeze every attention output to clean plus the sender's write difference through the
    output projection, record the receivers' projection outputs, patch them into a clean run."""
    hf = model.hf
    blocks = hf.model.layers if family == "llama" else hf.gpt_neox.layers
    dh = model.d_head
    ci, xi = model.to_tokens(clean), model.to_tokens(corrupt)
    attn_mod, o_mod, _ = _qkv_spec(family, model, 0)

    def collect(ids):
        z, attn, hs = {}, {}, []
        for i, b in enumerate(blocks):
            hs.append(_sub(b, o_mod).register_forward_pre_hook(lambda m, a, i=i: z.__setitem__(i, a[0].clone())))
            hs.append(_sub(b, attn_mod).register_forward_hook(lambda m, a, o, i=i: attn.__setitem__(i, o[0].clone())))
        with torch.no_grad():
            hf(ids)
        for hk in hs:
            hk.remove()
        return z, attn

    cz, cattn = collect(ci)
    xz, _ = collect(xi)
    sl, sh = sender
    w_o = _sub(blocks[sl], o_mod).weight  # linear: [d_out, n_heads*dh]
    c = slice(sh * dh, (sh + 1) * dh)
    delta = (xz[sl][..., c] - cz[sl][..., c]) @ w_o[:, c].T
    parts = {"q": "q", "k": "k", "v": "v", "resid": "qkv"}[which]
    wanted = {}
    for rl, rh in receivers:
        for p in parts:
            for mod, cols in _qkv_spec(family, model, rh)[2][p]:
                wanted.setdefault((rl, mod), []).append(cols)
    rec, hs = {}, []
    for i, b in enumerate(blocks):
        new = cattn[i] + (delta if i == sl else 0)
        hs.append(_sub(b, attn_mod).register_forward_hook(lambda m, a, o, new=new: (new, *o[1:])))
    for (rl, mod) in wanted:
        hs.append(_sub(blocks[rl], mod).register_forward_hook(lambda m, a, o, k=(rl, mod): rec.__setitem__(k, o.clone())))
    with torch.no_grad():
        hf(ci)
    for hk in hs:
        hk.remove()
    hs = []
    for (rl, mod), cl in wanted.items():
        def fn(m, a, o, cl=cl, v=rec[(rl, mod)]):
            o = o.clone()
            for cols in cl:
                o[..., cols] = v[..., cols]
            return o

        hs.append(_sub(blocks[rl], mod).register_forward_hook(fn))
    try:
        with torch.no_grad():
            logits = hf(ci).logits[:, -1]
    finally:
        for hk in hs:
            hk.remove()
    return float(metric_fn(logits)[0])


@pytest.fixture(scope="module", params=["llama", "neox"])
def other_family(request, bpe_tokenizer):
    from _families import _family_model

    import mi_widgets as mw

    hf = _family_model(request.param, len(bpe_tokenizer))
    with torch.no_grad():  # sharpen attention and strengthen writes, as for `gpt2`
        for name, p in hf.named_parameters():
            if any(k in name for k in ("q_proj.weight", "k_proj.weight", "query_key_value.weight")):
                p.mul_(8 if request.param == "llama" else 16)
            if any(k in name for k in ("o_proj.weight", "attention.dense.weight")):
                p.mul_(6 if request.param == "llama" else 12)
    return request.param, mw.wrap(hf, bpe_tokenizer, request.param)


@pytest.mark.parametrize("which", PP.RECEIVER_INPUTS)
def test_llama_and_neox_match_the_hook_reference(other_family, which):
    family, model = other_family
    c, x = PAIRS[0]
    metric = gap_metric(model, PAIRS[:1]).bind(model)
    res = PP.path_patching(model, c, x, metric, "all", ["2.1", "2.2"], which, progress=False)
    mk = lambda lg: metric(lg, pairs=torch.zeros(lg.shape[0], dtype=torch.long))  # noqa: E731
    m_c, m_x = float(mk(_last(model, c)[None])[0]), float(mk(_last(model, x)[None])[0])
    worst, moved = 0.0, 0.0
    for sl in range(2):
        for sh in range(4):
            ref = reference_path_generic(family, model, c, x, mk, (sl, sh), [(2, 1), (2, 2)], which)
            got = float(res.per_pair[0, sl, sh])
            worst = max(worst, abs(got - (ref - m_x) / (m_c - m_x)))
            moved = max(moved, abs(1 - got))
    assert worst < 1e-4, (family, which, worst)
    assert moved > 0.01, (family, which, "no path moved the metric: the check would be vacuous")


def test_interrupt_leaves_no_hooks(gpt2):
    before = _hook_state(gpt2)
    calls = {"n": 0}

    def metric(lg):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return lg[:, 0] - lg[:, 1]

    with pytest.raises(KeyboardInterrupt):
        PP.path_patching(gpt2, CLEAN, CORRUPT, metric, "all", "2.3", progress=False)
    assert _hook_state(gpt2) == before


def test_result_table_plot_and_repr(gpt2):
    import matplotlib

    matplotlib.use("Agg")
    res = PP.path_patching(
        gpt2, CLEAN, CORRUPT, gap_metric(gpt2, PAIRS[:1]), ["0.1", "1.2"], "2.3", progress=False
    )
    assert res.layers == [0, 1] and res.heads == [1, 2]
    assert torch.isnan(res.values[0, 1]) and torch.isnan(res.values[1, 0])
    df = res.to_pandas()
    assert len(df) == 4 and {"layer", "head", "value"} <= set(df.columns)
    res.plot()
    assert repr(res).startswith("PathPatchingResult(") and "2.3 (q)" in repr(res)
    assert res.strongest() in ("0.1", "1.2") and f"strongest path {res.strongest()}" in repr(res)
    with pytest.raises(KeyError):
        res.value("0.0")
    w = res.widget()  # display only: the grid's sweeps re-run activation patching
    assert type(w).__name__ == "PatchingGrid" and not w.can_sweep
    torch.testing.assert_close(res.effect, 1 - res.values, equal_nan=True)


# --------------------------------------------------------------------------------------------
# Ground truth: zoo:ioi
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ioi():
    import mi_widgets as mw
    from mi_widgets.zoo import compiled

    gt = json.loads((Path(mw.__file__).parent / "zoo/models/ioi/ground_truth.json").read_text())
    args = gt["prompts"]["args"]
    prompts = compiled.ioi_prompts(args["n"], args["seed"])[:40]
    rng = random.Random(0)
    corrupt = []
    for p in prompts:  # ABC: three other distinct names in the same template
        others = [n for n in compiled.IOI_NAMES if " " + n not in (p["io"], p["s"])]
        a, b, c = rng.sample(others, 3)
        corrupt.append(compiled.IOI_TEMPLATES[p["template"]].format(A=a, B=b, S=c))
    clean = [p["text"] for p in prompts]
    metric = M.logit_diff([p["io"] for p in prompts], [p["s"] for p in prompts])
    return mw.load("zoo:ioi"), gt["components"], clean, corrupt, metric


def test_ioi_s_inhibition_acts_through_the_name_movers_query(ioi):
    model, comps, clean, corrupt, metric = ioi
    s_inh, mover, dup = comps["s_inhibition"], comps["name_mover"], comps["duplicate_token"]
    total = activation_patching(
        model, clean, corrupt, metric, site="head_out", direction="noise", progress=False
    )
    cell = lambda r, h: float(r.values[int(h[0]), int(h[2])])  # noqa: E731
    total_effect = 1 - cell(total, s_inh)
    assert total_effect >= 1.0  # corrupting 1.2 alone flips the answer
    # the sender sweep into 2.3's query singles out 1.2 and carries (most of) its total effect
    sweep = PP.path_patching(model, clean, corrupt, metric, "all", mover, "q", progress=False)
    eff = {
        f"{layer}.{h}": 1 - float(sweep.values[layer, h])
        for layer in sweep.layers
        for h in sweep.heads
    }
    assert max(eff, key=eff.get) == s_inh == sweep.strongest()
    assert eff[s_inh] >= 0.9 * total_effect
    assert all(abs(v) <= 0.05 for h, v in eff.items() if h != s_inh)
    # 0.1 matters in total but not directly to 2.3's query (its effect goes through 1.2)
    total_effect = 1 - cell(total, dup)
    assert total_effect >= 1.0 and abs(eff[dup]) <= 0.05
    # 1.2 acts on the mover's query only: not its keys or values, nor the decoys' queries
    for which in ("k", "v"):
        r = PP.path_patching(model, clean, corrupt, metric, s_inh, mover, which, progress=False)
        assert abs(1 - float(r.values[0, 0])) <= 0.05, which
    decoys = [h for h in comps["decoys"] if int(h[0]) > int(s_inh[0])]
    assert decoys
    r = PP.path_patching(model, clean, corrupt, metric, s_inh, decoys, "q", progress=False)
    assert abs(1 - float(r.values[0, 0])) <= 0.05
    # through all of 2.3's input (q, k and v together) 1.2 carries all of its total effect
    r = PP.path_patching(model, clean, corrupt, metric, s_inh, mover, "resid", progress=False)
    assert abs((1 - float(r.values[0, 0])) - total_effect) <= 0.02 * total_effect
    # one step upstream: 0.1's dup flag reaches 1.2 through 1.2's keys, not its query
    k = PP.path_patching(model, clean, corrupt, metric, dup, s_inh, "k", progress=False)
    q = PP.path_patching(model, clean, corrupt, metric, dup, s_inh, "q", progress=False)
    through_keys = 1 - float(k.values[0, 0])
    assert through_keys >= 0.9 * (1 - cell(total, dup))
    assert abs(1 - float(q.values[0, 0])) <= 0.05


def test_remote_models_are_refused(gpt2, monkeypatch):
    monkeypatch.setattr(gpt2, "remote", True)
    with pytest.raises(ValueError, match="local models only"):
        PP.path_patching(gpt2, CLEAN, CORRUPT, lambda lg: lg[:, 0], "0.1", "2.3", progress=False)
