"""``zoo:ioi_backup`` and ``zoo:illusion``: the harder compiled models do what ``ground_truth.json`` says.

Planted by construction (``compiled._build_ioi_backup``): a backup name mover 3.0 that copies IO
only when the name mover 2.3 writes no 'moved' flag (self-repair), a suppression head 2.1 that
writes -0.3 x IO, and four attention look-alikes (0.2, 0.3, 1.3, 2.0) that write only into the
unread decoy block. Fresh seeded prompts (not the ones the recorded figures used), plain torch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from mi_widgets import zoo
from mi_widgets.zoo import compiled as C

H = C.IOI_BACKUP_HEADS
THR = C.THRESHOLDS["ioi_backup"]


@pytest.fixture(scope="module")
def mt():
    d = zoo.path("zoo:ioi_backup")
    model = GPT2LMHeadModel.from_pretrained(str(d), attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(str(d))


@pytest.fixture(scope="module")
def prompts():
    return C.ioi_prompts(n=40, seed=4242)


@pytest.fixture(scope="module")
def base(mt, prompts):
    return C.ioi_logit_diffs(*mt, prompts)


def _diff(mt, prompts, heads):
    return float(C.ioi_logit_diffs(*mt, prompts, heads).mean())


def test_ground_truth_names_every_planted_head():
    gt = zoo.ground_truth("ioi_backup")
    comp = gt["components"]
    assert comp["name_mover"] == "2.3" and comp["backup_name_mover"] == "3.0"
    assert comp["suppression"] == "2.1"
    assert comp["attention_decoys"] == ["0.2", "0.3", "1.3", "2.0"]
    assert gt["architecture"]["n_layer"] == 4
    fig = gt["figures"]
    # the recorded figures say what the tests below re-measure
    assert fig["zero_ablation"]["2.3"]["mean"] > fig["logit_diff"]["mean"] - 0.5
    assert fig["resample_ablation"]["2.3"]["mean"] < 0
    assert fig["name_mover_direct_effect"]["zero"]["mean"] < 0


def test_loads_through_mw_load():
    import mi_widgets as mw

    m = mw.load("zoo:ioi_backup")
    assert m.n_layers == 4 and m.n_heads == 4


def test_clean_logit_diff_is_ten_minus_suppression(base):
    # 2.3 writes +1 x IO (logit 10), 2.1 writes -0.3 x IO: 7
    assert float(base.min()) > THR["clean_logit_diff_min"]
    assert abs(float(base.mean()) - 10 * (1 - C.SUPPRESS)) < 0.1


def test_zero_ablating_the_name_mover_is_repaired_by_the_backup(mt, prompts, base):
    zero = _diff(mt, prompts, {"2.3": None})
    assert abs(zero - float(base.mean())) < THR["zero_ablated_name_mover_drop_max"]
    # ... and the repair is the backup's: ablate both and the answer is gone
    both = _diff(mt, prompts, {"2.3": None, "3.0": None})
    assert float(base.mean()) - both > THR["true_name_mover_drop_min"]


def test_backup_is_silent_while_the_name_mover_works(mt, prompts, base):
    assert abs(_diff(mt, prompts, {"3.0": None}) - float(base.mean())) < 0.05
    ids, io, _, pos = C.ioi_batch(mt[1], prompts)
    with torch.no_grad():
        att = mt[0](ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
    b = torch.arange(len(ids))
    assert float(att[3][b, 0, pos[:, 3], 0].mean()) > 0.99  # END -> BOS


def test_mean_and_resample_ablation_show_the_name_movers_real_role(mt, prompts, base):
    means = C.ioi_head_means(*mt, prompts)
    ref = C.ioi_reference(prompts, seed=99)
    ref_out = C.ioi_head_outputs(*mt, ref)
    clean = float(base.mean())
    assert clean - _diff(mt, prompts, {"2.3": means["2.3"]}) > THR["true_name_mover_drop_min"]
    assert clean - _diff(mt, prompts, {"2.3": ref_out["2.3"]}) > THR["true_name_mover_drop_min"]


def test_direct_effect_with_later_heads_frozen_shows_the_real_role(mt, prompts, base):
    clean_out = C.ioi_head_outputs(*mt, prompts)
    frozen = {h: clean_out[h] for h in ("3.0", "3.1", "3.2", "3.3")}
    assert (
        float(base.mean()) - _diff(mt, prompts, {"2.3": None, **frozen})
        > THR["true_name_mover_drop_min"]
    )


def test_suppression_head_lowers_the_right_answer(mt, prompts, base):
    assert _diff(mt, prompts, {"2.1": None}) - float(base.mean()) > THR["suppression_rise_min"]


def test_look_alikes_have_the_planted_patterns_and_no_effect(mt, prompts, base):
    ids, _, _, pos = C.ioi_batch(mt[1], prompts)
    with torch.no_grad():
        att = mt[0](ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
    b = torch.arange(len(ids))
    p_io, p_s1, p_s2, p_end = pos.T

    def score(head, q, k):
        layer, h = (int(x) for x in head.split("."))
        return float(att[layer][b, h, q, k].mean())

    for planted, look_alike, q, k in (
        ("0.1", "0.2", p_s2, p_s1),  # duplicate-token
        ("1.2", "1.3", p_end, p_s2),  # S-inhibition
        ("2.3", "2.0", p_end, p_io),  # name mover
    ):
        assert score(planted, q, k) > THR["planted_score_min"]
        assert score(look_alike, q, k) >= score(planted, q, k) - 1e-4, look_alike
    t = ids.shape[1]
    i = torch.arange(1, t)
    real = i[None, :] <= p_end[:, None]
    prev = att[0][:, 3][:, i, i - 1][real].mean()
    assert float(prev) > THR["look_alike_score_min"]  # 0.3: a previous-token head
    for h in H["attention_decoys"]:
        assert (
            abs(_diff(mt, prompts, {h: None}) - float(base.mean()))
            < THR["decoy_ablated_abs_change_max"]
        ), h


@pytest.mark.parametrize("name", ["ioi_backup", "illusion"])
def test_weights_are_a_pure_function_of_the_source(tmp_path, name):
    C.build(name, tmp_path / "m")
    shipped = (zoo.path(name) / "model.safetensors").read_bytes()
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == shipped
    rec = json.loads((zoo.path(name) / "ground_truth.json").read_text())
    assert rec["residual_layout"] == C.layout(name).as_json()
    if name == "ioi_backup":
        assert np.isclose(rec["figures"]["logit_diff"]["mean"], 7.0, atol=0.1)


# --------------------------------------------------------------------------------------------
# zoo:illusion: a direction that interchange calls causal through a dormant pathway
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def illusion():
    d = zoo.path("illusion")
    model = GPT2LMHeadModel.from_pretrained(str(d), attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(str(d))


def test_illusion_interchange_by_construction(illusion):
    fig = C.measure_illusion(*illusion, n=60, seed=321)
    t = C.THRESHOLDS["illusion"]
    assert fig["accuracy"] >= t["accuracy_min"]
    iia = fig["interchange_accuracy_block1_input"]
    assert iia["true"] >= t["causal_iia_min"]  # the mechanism
    assert iia["u"] >= t["causal_iia_min"]  # the illusion: looks just as causal
    assert iia["shadow"] <= t["disconnected_iia_max"]  # its class-carrying part does nothing
    assert iia["dormant"] <= t["disconnected_iia_max"]  # its causal part carries no class


def test_illusion_parts_are_not_the_mechanism(illusion):
    model, tok = illusion
    prompts = C.illusion_prompts(40, seed=99)
    ids = torch.tensor([tok(p["text"])["input_ids"] for p in prompts])
    a, b = (tok.convert_tokens_to_ids(tok.tokenize(x))[0] for x in C.ILLUSION_ANSWERS)

    def margin(heads):
        with C.ablate(model, heads), torch.no_grad():
            lg = model(ids).logits[:, -1]
        sign = torch.tensor([1.0 if p["label"] else -1.0 for p in prompts])
        return float(((lg[:, a] - lg[:, b]) * sign).mean())

    clean = margin({})
    assert clean > 5
    assert abs(margin({"0.2": None}) - clean) < 0.1  # disconnected
    assert abs(margin({"1.0": None}) - clean) < 0.1  # dormant
    assert margin({"0.1": None}) < 0.5  # the mechanism


def test_mw_interchange_falls_for_the_illusion():
    """The library's interchange intervention (the method under test) finds u as causal as the
    mechanism; only splitting u into its parts exposes it."""
    import mi_widgets as mw
    from mi_widgets.core.concepts.interchange import interchange
    from mi_widgets.core.concepts.probes import ProbeDataset

    model = mw.load("zoo:illusion")
    P = C.illusion_prompts(80, seed=5)
    ds = ProbeDataset.from_lists([p["text"] for p in P], [p["label"] for p in P], "last")
    iia = {}
    for name, d in C.illusion_directions().items():
        r = interchange(model, ds, layers=[0], site="resid_post", n_pairs=40, progress=False,
                        directions=torch.tensor(d, dtype=torch.float32), answers=(" river", " apple"))  # fmt: skip
        iia[name] = r.iia(0)
    assert iia["u"] > 0.9 and iia["true"] > 0.9
    assert iia["shadow"] < 0.1 and iia["dormant"] < 0.1
