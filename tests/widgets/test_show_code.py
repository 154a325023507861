"""Show the code (mi_widgets/widgets/code.py): each view's ``code()`` is plain nnsight code; run
as printed, in a fresh Python process, it gives the view's numbers (to 1e-4). On zoo:tiny and
zoo:ioi.

Why 1e-4: the printed program repeats the view's float32 computation, but not always with the
same batch shape or summation order (one trace per target layer where the view batches them, one
encoder column where the pass multiplies the whole matrix); each such difference moves a float32
result by a few units of 1.2e-7 relative per operation, about 1e-6 on these values (logits and
activations of magnitude below 100), so 1e-4 passes float32 noise with margin and fails any
wrong site, layer, position, scale or formula (those move the numbers by 1e-2 and more)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import mi_widgets as mw
from mi_widgets import wire
from mi_widgets.core.circuits import edge_attribution_patching
from mi_widgets.core.concepts.probes import ProbeDataset, probe
from mi_widgets.core.decomposition.features import LinearDictionary, default_texts
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.widgets.ablation import Ablation
from mi_widgets.widgets.attention_patterns import AttentionPatterns
from mi_widgets.widgets.circuit_graph import CircuitGraph
from mi_widgets.widgets.code import circuit_graph_code
from mi_widgets.widgets.feature_dashboard import FeatureDashboard
from mi_widgets.widgets.patchscope import Patchscope
from mi_widgets.widgets.probe_accuracy import ProbeAccuracy
from mi_widgets.widgets.steering import Steering
from mi_widgets.widgets.token_activations import TokenActivations
from mi_widgets.zoo import compiled
from mi_widgets.zoo.corpus import CITIES

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"
IOI = "When Mary and John went to the store, John gave a drink to"

# what each program's last lines name: the numbers its view draws
NAMES = {"tokens": ["values"], "lens": ["top_probs", "top_ids"], "lens_vocab": ["top_probs", "top_ids"], "attn": ["pattern"],
         "grid": ["grid"], "ablation": ["effect"], "probe": ["scores", "accuracy"],
         "steer": ["values"], "scope": ["first_probs"], "features": ["max_act", "frequency"],
         "ig": ["values"], "gxi": ["values"], "circuit": ["scores"]}

RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, runpy, sys
    import torch
    torch.set_num_threads(1)
    files, names = json.loads(sys.stdin.read())
    out = {}
    for key, path in files.items():
        with contextlib.redirect_stdout(io.StringIO()):
            scope = runpy.run_path(path, run_name="__main__")  # each program on its own, as printed
        out[key] = {n: torch.as_tensor(scope[n]).double().tolist() for n in names[key]}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def views(tiny):
    ioi = mw.load("zoo:ioi")
    heads = ["0.0", "0.1", "1.0", "1.1", f"{ioi.n_layers - 1}.0"]
    abl = ablate(ioi, [IOI], mw.logit_diff(" Mary", " John"), heads, kind="zero", separately=True, progress=False)
    attn = AttentionPatterns(tiny, CLEAN)
    attn.select(1, 2)
    probe_view = ProbeAccuracy(probe(tiny, ProbeDataset.from_zoo("sentiment", n=60, n_ood=0), seeds=(0,),
                                     progress=False), model=tiny)
    probe_view.select(1)
    steer = Steering(tiny, "The food was great. Overall the review is",
                     {"v": torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0))}, layer=1)
    steer.sweep(coefs=[-4.0, -1.0, 0.0, 2.0, 6.0])
    scope = Patchscope(tiny, CLEAN)
    scope.decode(1, 3)
    texts = default_texts(16)
    city = LinearDictionary.from_token_classes(tiny, texts, {"city": {" " + c for c in CITIES}},
                                               site="resid_pre", layer=1)
    dash = FeatureDashboard(tiny, city, texts, background=False)
    dash.select(0)
    p = compiled.ioi_prompts(1, seed=1)[0]
    others = [n for n in compiled.IOI_NAMES if " " + n not in (p["io"], p["s"])][:3]
    corrupt = compiled.IOI_TEMPLATES[p["template"]].format(A=others[0], B=others[1], S=others[2])
    circ = edge_attribution_patching(ioi, [p["text"]], [corrupt], mw.logit_diff(p["io"], p["s"]), curve=False,
                                     top_n=20, progress=False)
    return {
        "tokens": TokenActivations(tiny, [CLEAN, "The Colosseum is in"], "mlp_post", 1, unit=7),
        "lens": mw.logit_lens(tiny, CLEAN, k=3).widget(),
        "lens_vocab": mw.logit_lens(tiny, CLEAN, k=3, vocab=[" Paris", " Rome", " London", " the", " is"]).widget(),
        "attn": attn,
        "grid": mw.activation_patching(tiny, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"),
                                       positions="each", progress=False).widget(),
        "ablation": Ablation.from_result(abl),
        "probe": probe_view,
        "steer": steer,
        "scope": scope,
        "features": dash,
        "ig": mw.attribute(tiny, CLEAN, (" Paris", " Tokyo"), n_steps=16).widget(),
        "gxi": mw.attribute(tiny, CLEAN, " Paris", method="grad_x_input").widget(),
        "circuit": CircuitGraph(circ, n_edges_shown=circ.n_edges),
    }


@pytest.fixture(scope="module")
def ran(views, tmp_path_factory):
    programs = {key: v.code() for key, v in views.items()}
    where = tmp_path_factory.mktemp("show_code")
    files = {}
    for key, code in programs.items():
        files[key] = str(where / f"{key}.py")
        (where / f"{key}.py").write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps([files, NAMES]), capture_output=True,
        text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return programs, json.loads(proc.stdout.strip().splitlines()[-1])


def close(got, want) -> None:
    got, want = torch.tensor(got, dtype=torch.float64), torch.as_tensor(want).double()
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()


def test_the_code_imports_mi_widgets_only_to_load_the_model(ran):
    programs, _ = ran
    for key, code in programs.items():
        uses = [line for line in code.splitlines() if "mw." in line]
        assert uses == [line for line in code.splitlines() if line.startswith("model = mw.load(")], key
        assert "nn.trace(" in code, key


def test_token_activations_code_gives_the_colours(views, ran):
    w = views["tokens"]
    close(ran[1]["tokens"]["values"], wire.decode(w.values))
    assert "mlp.act.output" in ran[0]["tokens"] and "unit = 7" in ran[0]["tokens"]


def test_logit_lens_code_gives_every_cell(views, ran):
    r = views["lens"].result
    close(ran[1]["lens"]["top_probs"], r.top_probs[..., 0])
    assert ran[1]["lens"]["top_ids"] == r.top_ids[..., 0].tolist()


def test_restricted_logit_lens_code_gives_every_cell_and_the_view_keeps_the_restriction(views, ran):
    w = views["lens_vocab"]
    r = w.result
    close(ran[1]["lens_vocab"]["top_probs"], r.top_probs[..., 0])
    assert ran[1]["lens_vocab"]["top_ids"] == r.top_ids[..., 0].tolist()
    assert "vocab = torch.tensor(" in ran[0]["lens_vocab"]
    w.set_target(" Rome")  # recomputed: still over the five tokens
    assert w.result.vocab_ids == r.vocab_ids and set(w.result.top_ids.flatten().tolist()) <= set(r.vocab_ids)


def test_attention_code_gives_the_selected_heads_pattern(views, ran):
    close(ran[1]["attn"]["pattern"], views["attn"].result.patterns[1, 2])


def test_patching_code_gives_the_grid(views, ran):
    close(ran[1]["grid"]["grid"], views["grid"].result.values)


def test_ablation_code_gives_the_effects(views, ran):
    close(ran[1]["ablation"]["effect"], views["ablation"].effects())


def test_probe_code_gives_the_test_scores_and_accuracy(views, ran):
    w = views["probe"]
    key = (w.selected_site, 1)
    close(ran[1]["probe"]["scores"], w.result.test_scores[key])
    acc = [r["accuracy"] for r in w.result.rows if (r["site"], r["layer"]) == key and r["split"] == "test"][0]
    assert ran[1]["probe"]["accuracy"] == pytest.approx(acc, abs=1e-9)


def test_steering_code_gives_the_sweep(views, ran):
    w = views["steer"]
    close(ran[1]["steer"]["values"], w.sweep_result.mean)
    close(ran[1]["steer"]["values"], wire.decode(w.sweep_values))  # what the plot draws


def test_patchscope_code_gives_the_selected_cells_first_tokens(views, ran):
    w = views["scope"]
    close(ran[1]["scope"]["first_probs"], w.decoded_probs)
    assert "layer, position = 1, 3" in ran[0]["scope"]


def test_feature_dashboard_code_gives_the_features_max_and_frequency(views, ran):
    w = views["features"]
    close(ran[1]["features"]["max_act"], wire.decode(w.max_act)[0])
    close(ran[1]["features"]["frequency"], w.data.summary()["frequency"][0])
    assert w.data.summary()["n_fire"][0] > 0  # the planted city feature fires: a real comparison


def test_saliency_code_gives_the_attributions(views, ran):
    for key in ("ig", "gxi"):
        w = views[key]
        close(ran[1][key]["values"], w.attribution.values)
        close(ran[1][key]["values"], wire.decode(w.values))
    assert f"steps = {views['ig'].attribution.n_steps}" in ran[0]["ig"]


def test_circuit_code_gives_the_eap_scores_of_the_shown_mlp_and_logit_edges(views, ran):
    """EAP on zoo:ioi, one pair: the program's scores are the circuit's for every shown edge into
    an MLP or the logits (edges into a head's q/k/v are left out of the program, and said so)."""
    w = views["circuit"]
    c = w.result
    shown = [i for i in w.shown_edges() if c.kinds[i] == ""]
    assert len(shown) >= 20 and any(c.kinds[i] for i in w.shown_edges())
    close(ran[1]["circuit"]["scores"], torch.as_tensor(c.scores)[shown])
    with pytest.raises(ValueError, match="one prompt pair"):  # what it cannot write, it says
        circuit_graph_code(CircuitGraph(dataclasses.replace(c, method="eap-ig")))


def test_the_browser_asks_for_the_code(views):
    w = views["grid"]
    assert w.request("code") == {"code": w.code()}
    with pytest.raises(ValueError, match="takes no fields"):
        w.request("code", {"x": 1})


def test_views_it_cannot_write_say_so(tiny):
    w = mw.logit_lens(tiny, CLEAN, k=3).widget()
    w._result = w.result.__class__(**{**w.result.__dict__, "lens": "tuned"})
    with pytest.raises(ValueError, match="tuned lens"):
        w.code()
