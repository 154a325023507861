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
from _families import ALL_FAMILIES

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


# Every causal family with a built-in map, written out by hand (not taken from the library): the
# attention output projection (its output is where the reference freezes heads) and, for query
# head h, the module whose output holds its query / key / value and the columns of them (key and
# value: of its key/value head, which grouped- and multi-query attention share across a group).
CAUSAL = [f for f in ALL_FAMILIES if f not in ("bert", "roberta")]
_SEPARATE_O = {"gptj": ("attn", "out_proj"), "phi": ("self_attn", "dense"), "opt": ("self_attn", "out_proj")}


def _hand_spec(family, model, h):
    cfg = model.hf.config
    nh, dh, d = model.n_heads, model.d_head, model.d_model
    kv_heads = getattr(cfg, "num_key_value_heads", None) or nh
    kv = h // (nh // kv_heads)

    def cols(start):
        return slice(start * dh, (start + 1) * dh)

    if family == "gpt2":
        return "attn.c_proj", {p: ("attn.c_attn", slice(i * d + h * dh, i * d + (h + 1) * dh))
                               for i, p in enumerate("qkv")}
    if family in ("neox", "neox_sequential", "bloom", "falcon_sequential_alibi"):
        attn, o, qkv = {
            "bloom": ("self_attention", "dense", "query_key_value"),
            "falcon_sequential_alibi": ("self_attention", "dense", "query_key_value"),
        }.get(family, ("attention", "dense", "query_key_value"))
        return f"{attn}.{o}", {p: (f"{attn}.{qkv}", cols(3 * h + i)) for i, p in enumerate("qkv")}
    if family == "falcon":  # multi-query: [q_0 .. q_H-1 | k | v]
        m = "self_attention.query_key_value"
        return "self_attention.dense", {"q": (m, cols(h)), "k": (m, cols(nh)), "v": (m, cols(nh + 1))}
    if family.startswith("falcon_new"):  # per key/value group g: [q_g0 .. q_g(r-1) | k_g | v_g]
        r = nh // cfg.num_kv_heads
        g = h // r
        m = "self_attention.query_key_value"
        return "self_attention.dense", {"q": (m, cols(g * (r + 2) + h % r)), "k": (m, cols(g * (r + 2) + r)),
                                        "v": (m, cols(g * (r + 2) + r + 1))}
    if family == "phi3":  # [q (nh heads) | k (kv heads) | v (kv heads)]
        m = "self_attn.qkv_proj"
        return "self_attn.o_proj", {"q": (m, cols(h)), "k": (m, cols(nh + kv)), "v": (m, cols(nh + kv_heads + kv))}
    attn, o = _SEPARATE_O.get(family.split("_")[0], ("self_attn", "o_proj"))
    spec = {"q": (f"{attn}.q_proj", cols(h)), "k": (f"{attn}.k_proj", cols(kv)), "v": (f"{attn}.v_proj", cols(kv))}
    if family in ("olmo2", "olmo3"):  # one RMSNorm over all heads' queries (keys) after the projection
        spec.update(q=(f"{attn}.q_norm", cols(h)), k=(f"{attn}.k_norm", cols(kv)))
    return f"{attn}.{o}", spec


def _sub(block, path):
    for part in path.split("."):
        block = getattr(block, part)
    return block


_COLLECTED: dict = {}  # the clean and corrupt runs of the last (model, pair)


def reference_path_any(family, model, clean, corrupt, metric_fn, sender, receivers, which):
    """Path patching one pair by the projection-output route: freeze every attention output
    projection's *output* to its clean value plus (in the sender's layer) the sender's write
    difference through that projection's weight, record the receivers' query/key/value module
    outputs in that run, and patch their columns into a clean run."""
    hf = model.hf
    blocks = _sub(hf, model.arch.layers)
    dh = model.d_head
    ci, xi = model.to_tokens(clean), model.to_tokens(corrupt)
    o_mod, _ = _hand_spec(family, model, 0)

    def collect(ids):
        z, out, hs = {}, {}, []
        for i, b in enumerate(blocks):
            hs.append(_sub(b, o_mod).register_forward_pre_hook(lambda m, a, i=i: z.__setitem__(i, a[0].clone())))
            hs.append(_sub(b, o_mod).register_forward_hook(lambda m, a, o, i=i: out.__setitem__(i, o.clone())))
        with torch.no_grad():
            hf(ids)
        for hk in hs:
            hk.remove()
        return z, out

    key = (id(model), clean, corrupt)
    if key not in _COLLECTED:
        _COLLECTED.clear()
        _COLLECTED[key] = collect(ci), collect(xi)
    (cz, cout), (xz, _) = _COLLECTED[key]
    sl, sh = sender
    proj = _sub(blocks[sl], o_mod)
    c = slice(sh * dh, (sh + 1) * dh)
    dz = xz[sl][..., c] - cz[sl][..., c]
    delta = dz @ (proj.weight[c] if type(proj).__name__ == "Conv1D" else proj.weight[:, c].T)
    wanted = {}
    for rl, rh in receivers:
        for p in {"resid": "qkv"}.get(which, which):
            mod, cols = _hand_spec(family, model, rh)[1][p]
            wanted.setdefault((rl, mod), []).append(cols)
    rec, hs = {}, []
    for i, b in enumerate(blocks):
        new = cout[i] + (delta if i == sl else 0)
        hs.append(_sub(b, o_mod).register_forward_hook(lambda m, a, o, new=new: new))
    for rl, mod in wanted:
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


_SHARPEN = ("q_proj", "k_proj", "query_key_value", "qkv_proj", "c_attn", "q_norm", "k_norm")
_STRENGTHEN = ("o_proj", "attention.dense", "self_attention.dense", "self_attn.dense", "out_proj", "attn.c_proj")


@pytest.fixture(scope="module", params=CAUSAL)
def any_family(request, bpe_tokenizer):
    from _families import _family_model

    import mi_widgets as mw

    hf = _family_model(request.param, len(bpe_tokenizer))
    # sharpen attention and strengthen the heads' writes, as for `gpt2` (configs initialised with
    # std 0.02 more than those at 0.1)
    small = getattr(hf.config, "initializer_range", 0.02) < 0.05
    with torch.no_grad():
        for name, mod in hf.named_modules():
            w = getattr(mod, "weight", None)
            if w is None or not isinstance(w, torch.Tensor):
                continue
            if name.endswith(_SHARPEN):
                w.mul_(8 if small else 3)
            elif name.endswith(_STRENGTHEN):
                w.mul_(6 if small else 3)
    return request.param, mw.wrap(hf, bpe_tokenizer, request.param)


@pytest.mark.parametrize("which", PP.RECEIVER_INPUTS)
def test_every_causal_family_matches_the_hook_reference(any_family, which):
    family, model = any_family
    c, x = PAIRS[0]
    metric = gap_metric(model, PAIRS[:1]).bind(model)
    res = PP.path_patching(model, c, x, metric, "all", ["2.1", "2.2"], which, progress=False)
    mk = lambda lg: metric(lg, pairs=torch.zeros(lg.shape[0], dtype=torch.long))  # noqa: E731
    m_c, m_x = float(mk(_last(model, c)[None])[0]), float(mk(_last(model, x)[None])[0])
    worst, moved = 0.0, 0.0
    for sl, sh in ((0, 1), (0, 2), (1, 0), (1, 3)):
        ref = reference_path_any(family, model, c, x, mk, (sl, sh), [(2, 1), (2, 2)], which)
        got = float(res.per_pair[0, sl, sh])
        worst = max(worst, abs(got - (ref - m_x) / (m_c - m_x)) * abs(m_c - m_x))  # metric units
        moved = max(moved, abs(ref - m_c))
    assert worst <= 1e-5 * max(1.0, abs(m_c - m_x)), (family, which, worst)
    # some path moves the metric by 100x the tolerance: the check is not vacuous
    assert moved > 1e-3 * max(1.0, abs(m_c - m_x)), (family, which, moved)


def test_a_model_type_without_a_known_attention_layout_is_refused_by_name(bpe_tokenizer):
    from _families import _family_model

    import mi_widgets as mw

    hf = _family_model("gpt2", len(bpe_tokenizer))
    model = mw.wrap(hf, bpe_tokenizer, "gpt2", components={
        "layers": "transformer.h", "embed": "transformer.wte", "final_norm": "transformer.ln_f",
        "unembed": "lm_head", "family": "mine",
        "sites": {"resid_pre": "input", "head_out": "attn.c_proj.input", "attn_out": "attn.output.0",
                  "resid_post": "output"}})
    hf.config.model_type = "mine"
    with pytest.raises(ValueError, match="mine"):
        PP.path_patching(model, CLEAN, CORRUPT, lambda lg: lg[:, 0], "0.1", "2.3", progress=False)


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
