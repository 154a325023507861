"""Show the code (mi_widgets/widgets/code.py): each view's ``code()`` is plain nnsight code; run
as printed, in a fresh Python process, it gives the view's numbers (to 1e-4). On zoo:tiny and
zoo:ioi."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import mi_widgets as mw
from mi_widgets import wire
from mi_widgets.core.concepts.probes import ProbeDataset, probe
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.widgets.ablation import Ablation
from mi_widgets.widgets.attention_patterns import AttentionPatterns
from mi_widgets.widgets.probe_accuracy import ProbeAccuracy
from mi_widgets.widgets.token_activations import TokenActivations

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"
IOI = "When Mary and John went to the store, John gave a drink to"

# what each program's last lines name: the numbers its view draws
NAMES = {"tokens": ["values"], "lens": ["top_probs", "top_ids"], "attn": ["pattern"],
         "grid": ["grid"], "ablation": ["effect"], "probe": ["scores", "accuracy"]}

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
    return {
        "tokens": TokenActivations(tiny, [CLEAN, "The Colosseum is in"], "mlp_post", 1, unit=7),
        "lens": mw.logit_lens(tiny, CLEAN, k=3).widget(),
        "attn": attn,
        "grid": mw.activation_patching(tiny, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"),
                                       positions="each", progress=False).widget(),
        "ablation": Ablation.from_result(abl),
        "probe": probe_view,
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
