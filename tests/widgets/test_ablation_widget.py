"""Ablation view (mi_widgets/widgets/ablation.py): the heatmap / bars data, the panel's
re-run of one ablation (checked against a hand-written hook on the HF model and against the
result's own metric values), bad requests, selection from Python, static export.

On zoo:ioi (compiled by hand, docs/zoo_compiled.md): head 0.1 is the duplicate-token head, 1.2
the S-inhibition head, 2.3 the name mover; every other head is a decoy. Needs the built bundle.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import traitlets

from mi_widgets import wire
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.core.metrics import kl_to_clean, logit_diff
from mi_widgets.core.model import load
from mi_widgets.widgets.ablation import Ablation, UnsupportedResult, component_spec

IOI = "When Mary and John went to the store, John gave a drink to"
IOI2 = "When Anna and Paul went to the store, Paul gave a drink to"
ABC = "When Anna and Paul went to the store, Emma gave a drink to"


@pytest.fixture(scope="module")
def ioi():
    return load("zoo:ioi")


@pytest.fixture(scope="module")
def metric():
    return logit_diff(" Mary", " John")


@pytest.fixture(scope="module")
def heads(ioi):
    return [f"{layer}.{h}" for layer in range(ioi.n_layers) for h in range(ioi.n_heads)]


@pytest.fixture(scope="module")
def zero_all(ioi, metric, heads):
    return ablate(ioi, [IOI], metric, heads, kind="zero", separately=True, progress=False)


def hand_logits(model, text: str, head: tuple[int, int] | None, kind: str = "zero", reference=None):
    """Final-position logits of a plain HF forward with one head's input to the output
    projection (c_proj) replaced: by 0, by its mean over every token of ``reference``, or by its
    value on ``reference`` (one prompt of the same length). Independent of the library's engines."""
    toks = model.to_tokens(text)
    if head is None:
        with torch.no_grad():
            return model.hf(toks).logits[0, -1].float()
    layer, h = head
    dh = model.d_head
    proj = model.hf.transformer.h[layer].attn.c_proj
    sl = slice(h * dh, (h + 1) * dh)
    if kind == "zero":
        src = None
    else:
        seen = []
        hk = proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0][..., sl].detach().clone()))
        try:
            with torch.no_grad():
                for r in reference:
                    model.hf(model.to_tokens(r))
        finally:
            hk.remove()
        src = torch.cat([s.reshape(-1, dh) for s in seen]).mean(0) if kind == "mean" else seen[0]

    def pre(_m, args):
        x = args[0].clone()
        x[..., sl] = 0.0 if src is None else src
        return (x,)

    hk = proj.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            return model.hf(toks).logits[0, -1].float()
    finally:
        hk.remove()


def top_ids(logits: torch.Tensor, k: int) -> list[int]:
    return logits.topk(k).indices.tolist()


# -- the chart --------------------------------------------------------------------------------


def test_heads_separately_give_a_layers_by_heads_grid_of_mean_effects(zero_all, ioi):
    w = Ablation.from_result(zero_all)
    assert w.view == "heads"
    assert w.grid_layers == [0, 1, 2] and w.n_heads == ioi.n_heads
    index = wire.decode(w.grid_index)
    assert index.shape == (3, 4)
    # every cell points at its head's row, layer-major
    for layer in range(3):
        for h in range(4):
            assert w.components[index[layer, h]] == f"{layer}.{h}"
    assert torch.allclose(w.effects(), zero_all.effect.mean(-1).float(), atol=1e-5)
    assert torch.allclose(torch.from_numpy(wire.decode(w.clean)), zero_all.clean.float())
    # ground truth: the planted circuit heads have the three largest |effects| (zero ablation of
    # 0.1 or 1.2 leaves the name mover split over three names: logit diff about -10/3; of 2.3, 0)
    top3 = {w.components[i] for i in w.effects().abs().argsort(descending=True)[:3].tolist()}
    assert top3 == {"0.1", "1.2", "2.3"}
    eff = dict(zip(w.components, w.effects().tolist()))
    assert eff["2.3"] == pytest.approx(-float(zero_all.clean[0]), abs=0.05)
    assert max(abs(eff[c]) for c in eff if c not in top3) < 0.1


def test_a_subset_of_heads_leaves_the_other_cells_empty(ioi, metric):
    r = ablate(ioi, [IOI], metric, ["2.3", "0.1"], separately=True, progress=False)
    w = Ablation(r)
    assert w.view == "heads" and w.grid_layers == [0, 2]
    index = wire.decode(w.grid_index)
    assert (index >= 0).sum() == 2
    assert w.components[index[1, 3]] == "2.3" and w.components[index[0, 1]] == "0.1"


def test_other_components_give_bars_and_labels_round_trip(ioi, metric):
    comps = ["mlp.0", ("mlp_post", 1, [3, 4]), "1.2", "resid_post.1"]
    r = ablate(ioi, [IOI, IOI2], metric, comps, kind="mean", separately=True, progress=False)
    w = Ablation(r)
    assert w.view == "bars" and w.grid_layers == []
    assert w.components == ["mlp.0", "mlp_post.1[3,4]", "1.2", "resid_post.1"]
    assert component_spec("mlp_post.1[3,4]") == ("mlp_post", 1, [3, 4])
    assert component_spec("2.3") == "2.3"
    assert torch.allclose(w.effects(), r.effect.mean(-1).float(), atol=1e-5)
    # the panel re-runs each label's ablation: its metric on the captured logits is the result's
    for i, c in enumerate(w.components):
        for p in range(2):
            _, abl = w.component_logits(c, p)
            assert float(metric.bind(ioi)(abl[None])[0]) == pytest.approx(float(r.ablated[i, p]), abs=1e-4), (c, p)


# -- the panel --------------------------------------------------------------------------------


def test_panel_topk_equals_a_hand_hook_zero_ablation(zero_all, ioi, metric):
    w = Ablation(zero_all, k=5)
    panel = w.select("2.3")
    assert w.selected_component == "2.3" and w.panel == panel and w.status == "ready"
    want_clean = top_ids(hand_logits(ioi, IOI, None), 5)
    want_abl = top_ids(hand_logits(ioi, IOI, (2, 3)), 5)
    assert [t["id"] for t in panel["clean_topk"]] == want_clean
    clean_l, abl_l = w.component_logits("2.3")
    assert torch.allclose(abl_l, hand_logits(ioi, IOI, (2, 3)), atol=1e-4)
    assert [t["id"] for t in panel["ablated_topk"]] == top_ids(abl_l, 5)
    assert set(want_abl) == {t["id"] for t in panel["ablated_topk"]}  # ties may order differently
    assert panel["clean_topk"][0]["token"] == " Mary"
    assert panel["clean_metric"] == pytest.approx(float(zero_all.clean[0]))
    assert panel["ablated_metric"] == pytest.approx(float(zero_all.ablated[11, 0]))
    assert float(metric.bind(ioi)(abl_l[None])[0]) == pytest.approx(panel["ablated_metric"], abs=1e-4)
    assert all(t["token"] == ioi.tokenizer.decode([t["id"]]) for t in panel["ablated_topk"])


def test_panel_mean_and_resample_match_hand_hooks(ioi, metric):
    r = ablate(ioi, [IOI, IOI2], metric, ["1.2", "0.1"], kind="mean", separately=True, progress=False)
    w = Ablation(r)
    _, abl = w.component_logits("1.2", prompt=1)
    assert torch.allclose(abl, hand_logits(ioi, IOI2, (1, 2), "mean", [IOI, IOI2]), atol=1e-4)
    assert float(metric.bind(ioi)(abl[None])[0]) == pytest.approx(float(r.ablated[0, 1]), abs=1e-4)

    rs = ablate(ioi, [IOI], metric, ["1.2"], kind="resample", reference=[ABC], separately=True, progress=False)
    assert rs.reference == [ABC] and Ablation(rs).can_run  # the result carries its reference
    _, abl = Ablation(rs).component_logits("1.2")
    assert torch.allclose(abl, hand_logits(ioi, IOI, (1, 2), "resample", [ABC]), atol=1e-4)
    assert float(metric.bind(ioi)(abl[None])[0]) == pytest.approx(float(rs.ablated[0, 0]), abs=1e-4)
    # a result without its reference (e.g. built by hand) cannot re-run until one is given
    bare = dataclasses.replace(rs, reference=None)
    assert not Ablation(bare).can_run
    with pytest.raises(ValueError, match="reference"):
        Ablation(bare).component_logits("1.2")
    _, abl2 = Ablation(bare, reference=[ABC]).component_logits("1.2")
    assert torch.equal(abl2, abl)


def test_components_ablated_together_are_one_row(ioi):
    m = kl_to_clean()
    r = ablate(ioi, [IOI], m, ["1.2", "2.3"], separately=False, progress=False)
    w = Ablation(r)
    assert w.view == "bars" and w.components == ["1.2+2.3"]
    panel = w.select("1.2+2.3")
    assert panel["ablated_metric"] == pytest.approx(float(r.ablated[0]))
    clean_l, abl_l = w.component_logits("1.2+2.3")
    kl = m.bind(ioi)(abl_l[None], clean_logits=clean_l[None])
    assert float(kl[0]) == pytest.approx(float(r.ablated[0]), abs=1e-4)


def test_selection_from_python_is_observed_and_reverted_when_invalid(zero_all):
    w = Ablation(zero_all, k=3)
    w.selected_component = "0.1"
    assert w.panel["component"] == "0.1" and len(w.panel["ablated_topk"]) == 3
    with pytest.raises(traitlets.TraitError, match="selected_component must be one of .*'9.9'"):
        w.selected_component = "9.9"
    assert w.selected_component == "0.1" and w.panel["component"] == "0.1"
    w.k = 4
    assert len(w.panel["ablated_topk"]) == 4
    w.selected_component = ""
    assert w.panel == {}
    w2 = Ablation(zero_all, component="2.3")
    assert w2.panel["component"] == "2.3"


def test_bad_requests_give_clear_errors_before_any_forward(zero_all):
    w = Ablation(zero_all)
    w.select("1.2")
    before = dict(w.panel)
    with pytest.raises(ValueError, match=r"'mlp\.7' is not in this ablation; choose one of: 0\.0"):
        w.request("select", {"component": "mlp.7"})
    with pytest.raises(ValueError, match=r"prompt 3 is out of range: this ablation has 1 prompts"):
        w.request("select", {"component": "2.3", "prompt": 3})
    with pytest.raises(ValueError, match="component must be a label string"):
        w.request("select", {"component": 5})
    with pytest.raises(ValueError, match="prompt must be an int"):
        w.request("select", {"component": "2.3", "prompt": "0"})
    assert w.selected_component == "1.2" and w.panel == before
    # over the wire: an ok:false reply naming the problem
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    w._on_custom_msg(w, {"kind": "mw-request", "id": "x", "name": "select", "msg": {"component": "7.7"}}, [])
    assert sent[-1]["ok"] is False and "'7.7' is not in this ablation" in sent[-1]["error"]
    with pytest.raises(ValueError, match="k must be a positive int"):
        Ablation(zero_all, k=0)
    with pytest.raises(UnsupportedResult):
        Ablation("not a result")  # type: ignore[arg-type]


def test_no_model_attached_says_so(zero_all):
    import dataclasses

    bare = dataclasses.replace(zero_all, model=None)
    w = Ablation(bare)
    assert not w.can_run and w.n_heads == 4
    with pytest.raises(ValueError, match="no model attached"):
        w.select("2.3")


# -- static export ------------------------------------------------------------------------------


def _state(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="[^"]+-state">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def test_static_export_carries_the_largest_effects_panels(zero_all):
    w = Ablation(zero_all, k=4)
    w.select("1.1")
    page = w.to_html()
    st = _state(page)
    assert st["static"] is True and st["view"] == "heads"
    cache = st["panel_cache"]
    assert {"0.1|0", "1.2|0", "2.3|0", "1.1|0"} <= set(cache)
    assert cache["2.3|0"] == w.component_panel("2.3", 0)
    assert "b64" in st["ablated"] and "buffer" not in st["ablated"]


def test_hostile_prompts_stay_inside_the_json(tiny):
    hostile = "</script><script>window.__pwned=3</script> <!--<script> &amp;"
    r = ablate(tiny, [hostile], kl_to_clean(), ["0.1", "mlp.0"], separately=True, progress=False)
    w = Ablation(r, k=2)
    page = w.to_html()
    assert "</script><script>window" not in page and "<!--<script>" not in page
    assert page.count("<script") == 3  # state, bundle, boot: none from the data
    st = _state(page)
    assert st["prompts"] == [hostile]
    assert st["view"] == "bars"
