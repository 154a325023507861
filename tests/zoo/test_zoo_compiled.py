"""The compiled zoo models (``induction``, ``ioi``): their circuits do what ``ground_truth.json`` says.

Fresh seeded prompts (not the ones the recorded figures used), plain torch (output_attentions and
hooks on ``attn.c_proj``), and a rebuild that must reproduce the shipped weights byte for byte.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from mi_widgets import zoo
from mi_widgets.zoo import compiled as C

NAMES = ("induction", "ioi")
THR = C.THRESHOLDS


@pytest.fixture(scope="module")
def models():
    out = {}
    for name in NAMES:
        d = zoo.path(name)
        model = GPT2LMHeadModel.from_pretrained(str(d), attn_implementation="eager").eval()
        tok = AutoTokenizer.from_pretrained(str(d))
        out[name] = (model, tok)
    return out


@pytest.fixture(scope="module")
def ind_figures(models):
    model, _ = models["induction"]
    return C.measure_induction(model, n=24, seq_len=20, seed=12345, ablations=True)


@pytest.fixture(scope="module")
def ioi_prompts():
    return C.ioi_prompts(n=40, seed=777)


@pytest.fixture(scope="module")
def ioi_base(models, ioi_prompts):
    model, tok = models["ioi"]
    return C.ioi_logit_diffs(model, tok, ioi_prompts)


def _heads(name):
    return C.INDUCTION_HEADS if name == "induction" else C.IOI_HEADS


# --------------------------------------------------------------------------------------------
# Loading, tokenizer, config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_loads_as_plain_hf_dir(models, name):
    model, tok = models[name]
    cfg = model.config
    assert cfg.model_type == "gpt2" and cfg.n_positions >= 64
    assert cfg.bos_token_id == cfg.eos_token_id == cfg.pad_token_id == 0 < cfg.vocab_size
    assert not cfg.tie_word_embeddings
    raw = json.loads((zoo.path(name) / "config.json").read_text())
    assert raw["attn_implementation"] == "eager"
    tcfg = json.loads((zoo.path(name) / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    # lm_head is its own matrix (untied), loaded from the checkpoint
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    assert model.lm_head.weight.abs().sum() > 0
    assert tok.bos_token_id == 0 and tok.convert_ids_to_tokens(0) == C.EOT


def test_tokenizers_roundtrip(models):
    _, tok = models["ioi"]
    text = "When Mary and John went to the store, John gave a drink to"
    ids = tok(text)["input_ids"]
    assert ids[0] == 0 and C.UNK not in tok.convert_ids_to_tokens(ids)
    pieces = [tok.decode([i]) for i in ids]
    assert pieces == [C.EOT, "When", " Mary", " and", " John", " went", " to", " the", " store", ",",
                      " John", " gave", " a", " drink", " to"]  # fmt: skip
    assert tok.decode(ids[1:]) == text
    _, itok = models["induction"]
    ids = itok(" apple river apple")["input_ids"]
    assert [itok.decode([i]) for i in ids] == [C.EOT, " apple", " river", " apple"]
    assert itok("zzz")["input_ids"] == [0, 1]  # unknown word -> <|unk|>


# --------------------------------------------------------------------------------------------
# The weight-setting claims
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_structural_claims(models, name):
    model, _ = models[name]
    L = C.layout(name)
    sd = {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
    dh = model.config.n_embd // model.config.n_head
    ref = L.idx("ref")
    dec = L.sl("decoy")
    for layer in range(model.config.n_layer):
        p = f"transformer.h.{layer}."
        for part in (
            "mlp.c_fc.weight",
            "mlp.c_fc.bias",
            "mlp.c_proj.weight",
            "mlp.c_proj.bias",
            "attn.c_proj.bias",
        ):
            assert not sd[p + part].any(), p + part
        for ln in ("ln_1", "ln_2"):
            assert (sd[p + ln + ".weight"] == 1).all() and not sd[p + ln + ".bias"].any()
        w_attn, w_o = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_proj.weight"]
        # every read sums to zero (so LayerNorm's mean subtraction drops out); no read of the decoy block
        assert np.abs(w_attn.sum(0)).max() < 1e-3 * np.abs(w_attn).max()
        assert not w_attn[dec].any()
        assert not w_o[:, ref].any()  # nothing writes the ref dimension
        for h in range(model.config.n_head):
            rows = w_o[h * dh : (h + 1) * dh]
            name_h = f"{layer}.{h}"
            written = {b for b in L.blocks if rows[:, L.sl(b)].any()}
            if name_h in _heads(name)["decoys"]:
                assert written <= {"decoy"}, (
                    name_h,
                    written,
                )  # decoys write nothing the circuit reads
            else:
                assert len(written) == 1 and "decoy" not in written, (name_h, written)
    lm = sd["lm_head.weight"]
    read = {b for b in L.blocks if lm[:, L.sl(b)].any()}
    assert read == {"ref", "anchor", "answer"}, read
    assert (
        not sd["transformer.wte.weight"][:, ref].any()
        and not sd["transformer.wpe.weight"][:, ref].any()
    )
    # LayerNorm divides every (token, position) embedding by the same number at layer 0
    emb = sd["transformer.wte.weight"][:, None, :] + sd["transformer.wpe.weight"][None, :, :]
    std = np.sqrt(emb.var(-1))
    assert np.ptp(std) < 1e-5 * std.mean()
    assert np.ptp(emb.sum(-1)) < 1e-4
    assert C._pos_kernel_sidelobe() < 0.32  # position codes: i-1 (or i) wins by the stated margin


def test_mlps_output_zero(models):
    model, tok = models["ioi"]
    outs = []
    hooks = [
        blk.mlp.register_forward_hook(lambda m, i, o: outs.append(o)) for blk in model.transformer.h
    ]
    try:
        with torch.no_grad():
            model(
                torch.tensor(
                    [tok("When Mary and John went to the store, John gave a drink to")["input_ids"]]
                )
            )
    finally:
        for hk in hooks:
            hk.remove()
    assert len(outs) == model.config.n_layer and all(not o.any() for o in outs)


# --------------------------------------------------------------------------------------------
# induction
# --------------------------------------------------------------------------------------------


def test_induction_accuracy(ind_figures):
    assert ind_figures["induction_accuracy"] >= THR["induction"]["induction_accuracy_min"]
    assert ind_figures["induction_loss"] < 0.05


def test_induction_planted_heads_rank_first(ind_figures):
    t = THR["induction"]
    prev, ind = ind_figures["previous_token_score"], ind_figures["induction_score"]
    p_head, i_head = C.INDUCTION_HEADS["previous_token"], C.INDUCTION_HEADS["induction"]
    assert max(prev, key=prev.get) == p_head and prev[p_head] >= t["planted_score_min"]
    assert max(ind, key=ind.get) == i_head and ind[i_head] >= t["planted_score_min"]
    for h in C.INDUCTION_HEADS["decoys"]:
        assert prev[h] <= t["decoy_score_max"] and ind[h] <= t["decoy_score_max"], h
    assert ind[p_head] <= t["decoy_score_max"] and prev[i_head] <= t["decoy_score_max"]


def test_induction_ablations(ind_figures):
    t = THR["induction"]
    abl = ind_figures["zero_ablation"]
    for h in (C.INDUCTION_HEADS["previous_token"], C.INDUCTION_HEADS["induction"]):
        assert abl[h]["accuracy"] <= t["ablated_planted_accuracy_max"], h
    for h in C.INDUCTION_HEADS["decoys"]:
        assert abl[h]["accuracy"] >= t["ablated_decoy_accuracy_min"], h


def test_induction_is_content_based(models):
    """Same positions, different words: the prediction follows the words, not the positions."""
    model, _ = models["induction"]
    ids = C.induction_prompts(n=8, seq_len=12, seed=99)
    # shuffle the second half: the induction head must follow the (new) earlier occurrences
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    ids = torch.cat([ids[:, :13], ids[:, 1:13][:, perm]], dim=1)
    with torch.no_grad():
        logits = model(ids).logits
    hits = 0
    for b in range(len(ids)):
        first = {int(t): i for i, t in enumerate(ids[b, :13])}
        for i in range(13, 25):
            cur = int(ids[b, i])
            hits += int(logits[b, i].argmax()) == int(ids[b, first[cur] + 1])
    assert hits == 12 * len(ids)


# --------------------------------------------------------------------------------------------
# IOI
# --------------------------------------------------------------------------------------------


def test_ioi_prompts_are_varied(ioi_prompts):
    assert {p["order"] for p in ioi_prompts} == {"ABBA", "BABA"}
    assert len({p["template"] for p in ioi_prompts}) == len(C.IOI_TEMPLATES) >= 5
    for t in range(len(C.IOI_TEMPLATES)):
        assert {p["order"] for p in ioi_prompts if p["template"] == t} == {"ABBA", "BABA"}
    assert len({p["io"] for p in ioi_prompts}) >= 20


def test_ioi_logit_diff(ioi_base, ioi_prompts):
    t = THR["ioi"]
    assert (ioi_base > t["logit_diff"]).float().mean() >= t["frac_above_threshold_min"]
    for order in ("ABBA", "BABA"):
        sel = ioi_base[[p["order"] == order for p in ioi_prompts]]
        assert sel.mean() > t["logit_diff"], order


def test_ioi_answer_is_top_token(models):
    model, tok = models["ioi"]
    for text, ans in [
        ("When Mary and John went to the store, John gave a drink to", " Mary"),
        ("When John and Mary went to the store, John gave a drink to", " Mary"),
        ("When Mary and John went to the store, Mary gave a drink to", " John"),
    ]:
        with torch.no_grad():
            logits = model(torch.tensor([tok(text)["input_ids"]])).logits[0, -1]
        assert tok.decode([int(logits.argmax())]) == ans, text


def test_ioi_attention_scores(models):
    model, tok = models["ioi"]
    figs = C.measure_ioi(model, tok, n=30, seed=31, ablations=False)["attention_scores"]
    t = THR["ioi"]
    planted = {
        "duplicate_token (S2 -> S1)": C.IOI_HEADS["duplicate_token"],
        "s_inhibition (END -> S2)": C.IOI_HEADS["s_inhibition"],
        "name_mover (END -> IO)": C.IOI_HEADS["name_mover"],
    }
    for score, head in planted.items():
        s = figs[score]
        assert max(s, key=s.get) == head and s[head] >= t["planted_score_min"], score
        for h in C.IOI_HEADS["decoys"]:
            assert s[h] <= t["decoy_score_max"], (score, h)
    assert figs["end_to_s (END -> S1 + S2)"][C.IOI_HEADS["name_mover"]] < 0.05


def test_ioi_ablations(models, ioi_prompts, ioi_base):
    model, tok = models["ioi"]
    t = THR["ioi"]
    base = ioi_base.mean().item()

    def mean_diff(heads):
        return C.ioi_logit_diffs(model, tok, ioi_prompts, heads).mean().item()

    nm = C.IOI_HEADS["name_mover"]
    assert abs(mean_diff({nm: None})) < t["name_mover_ablated_mean_abs_max"]
    for h in (C.IOI_HEADS["s_inhibition"], C.IOI_HEADS["duplicate_token"]):
        assert mean_diff({h: None}) < t["s_inhibition_or_duplicate_ablated_mean_max"], h
    for h in C.IOI_HEADS["decoys"]:
        assert abs(mean_diff({h: None}) - base) < t["decoy_ablated_relative_change_max"] * base, h
    # mean-ablating the name mover (its mean output over these prompts' positions) also kills it
    mean_nm = C.ioi_head_means(model, tok, ioi_prompts)[nm]
    assert abs(mean_diff({nm: mean_nm})) < t["name_mover_ablated_mean_abs_max"]


# --------------------------------------------------------------------------------------------
# Ground truth and reproducibility
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_ground_truth_record(name):
    gt = zoo.ground_truth(name)
    heads = _heads(name)
    comp = gt["components"]
    assert sorted(comp["decoys"]) == sorted(heads["decoys"])
    for role, head in heads.items():
        if role != "decoys":
            assert comp[role] == head
    assert gt["thresholds"] == THR[name]
    assert gt["commands"]["measure"] == f"python -m mi_widgets.zoo.compiled --measure {name}"
    f, t = gt["figures"], gt["thresholds"]
    if name == "induction":
        assert f["induction_accuracy"] >= t["induction_accuracy_min"]
    else:
        assert f["logit_diff"]["frac_above_threshold"] >= t["frac_above_threshold_min"]
        assert f["zero_ablation"][heads["name_mover"]]["mean"] == pytest.approx(0.0, abs=0.5)


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_is_byte_identical(tmp_path, name):
    C.build(name, tmp_path / name)
    shipped = zoo.path(name)
    assert (tmp_path / name / "model.safetensors").read_bytes() == (
        shipped / "model.safetensors"
    ).read_bytes()
    new_vocab = json.loads((tmp_path / name / "tokenizer.json").read_text())["model"]["vocab"]
    assert new_vocab == json.loads((shipped / "tokenizer.json").read_text())["model"]["vocab"]
