"""Activation patching grids (mi_widgets.core.interventions.patching): every site and direction equals
the hook reference in tests/_patching_reference.py; normalisation, per-pair values, positions and
layer subsets, result tables; the recorded zoo figures."""

from __future__ import annotations

import pytest
import torch
from _patching_reference import (
    CLEAN,
    CORRUPT,
    PAIRS,
    _hook_state,
    _sites,
    _zoo,
    gap_metric,
    last_logits,
    reference_patching,
)

from mi_widgets.core import metrics as M
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.core.interventions.patching import activation_patching

# The direct engine warns and falls back to nnsight when it cannot reproduce a model's forward;
# here that must never happen silently.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _tiny_groups(t: int) -> dict[str, tuple[list[int], str]]:
    """Position groups of a "<BOS> <subject> is in" prompt and how a pair's cells in a group are
    reduced, as zoo/measure.py defines them (subject length = T - 3; "best token" is the max
    over the subject's tokens, the others the mean)."""
    subj = list(range(1, t - 2))
    return {
        "BOS": ([0], "mean"),
        "subject (not last)": (subj[:-1], "mean"),
        "subject last": ([subj[-1]], "mean"),
        "subject (best token)": (subj, "max"),
        "' is'": ([t - 2], "mean"),
        "' in' (final)": ([t - 1], "mean"),
    }


def _reduce(grid: torch.Tensor, pos: list[int], how: str) -> torch.Tensor:
    cells = grid[:, pos]
    return cells.max(1).values if how == "max" else cells.mean(1)


def _argmax_metric(model, pairs):
    """logit_diff(clean answer, corrupt answer), answers = each prompt's top token (zoo:tiny
    answers its facts; the recorded pairs are the ones it answers correctly)."""
    return M.logit_diff(
        [int(last_logits(model, c).argmax()) for c, _ in pairs],
        [int(last_logits(model, x).argmax()) for _, x in pairs],
    )


def _tiny_grids(model, pairs):
    """[n_layers + 1, T] grid per pair: resid_pre at every layer, then the final residual stream
    (resid_post of the last layer), the layout of the record's grids."""
    out = [None] * len(pairs)
    by_len: dict[int, list[int]] = {}
    for i, (c, _) in enumerate(pairs):
        by_len.setdefault(model.to_tokens(c).shape[1], []).append(i)
    for idx in by_len.values():
        ps = [pairs[i] for i in idx]
        metric = _argmax_metric(model, ps)
        cs, xs = [c for c, _ in ps], [x for _, x in ps]
        pre = activation_patching(model, cs, xs, metric, positions="each", progress=False)
        post = activation_patching(
            model,
            cs,
            xs,
            metric,
            site="resid_post",
            layers=model.n_layers - 1,
            positions="each",
            progress=False,
        )
        for k, i in enumerate(idx):
            out[i] = torch.cat([pre.per_pair[k], post.per_pair[k]])
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_patching_matches_hook_reference_for_every_site(models, family, direction):
    model = models[family]
    metric = gap_metric(model)
    for site in _sites(model):
        for each in (True, False):
            ref = reference_patching(model, CLEAN, CORRUPT, metric, site, each, direction)
            for engine in ("direct", "nnsight"):
                res = activation_patching(
                    model,
                    CLEAN,
                    CORRUPT,
                    metric,
                    site=site,
                    positions="each" if each else "all",
                    direction=direction,
                    engine=engine,
                    progress=False,
                )
                assert res.values.shape == ref.shape, (site, each, engine)
                err = (res.values - ref).abs().max().item()
                assert err <= 1e-4, (
                    f"{family} {site} {direction} each={each} {engine}: max |diff| {err:.2e}"
                )


def test_patching_matches_reference_on_sequential_neox(models):
    model = models["neox_sequential"]
    metric = gap_metric(model)
    for site in _sites(model):
        ref = reference_patching(model, CLEAN, CORRUPT, metric, site, True, "denoise")
        res = activation_patching(
            model, CLEAN, CORRUPT, metric, site=site, positions="each", progress=False
        )
        assert (res.values - ref).abs().max().item() <= 1e-4, site


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_kl_to_clean_matches_reference_raw(models, family):
    model = models[family]
    for site in ("resid_pre", "head_out", "resid_mid"):
        ref = reference_patching(
            model, CLEAN, CORRUPT, M.kl_to_clean(), site, True, "denoise", normalize=False
        )
        res = activation_patching(
            model,
            CLEAN,
            CORRUPT,
            M.kl_to_clean(),
            site=site,
            positions="each",
            normalize=False,
            progress=False,
        )
        torch.testing.assert_close(res.values, ref, atol=1e-6, rtol=1e-4)


def test_on_update_reports_a_filling_grid_and_can_stop_the_sweep(models):
    """on_update gets the partial grid after every batch: cells only ever go from NaN to their
    final value, the last update is the whole grid, and an exception from the callback stops
    the sweep (the model is left unchanged)."""
    model = models["gpt2"]
    metric = gap_metric(model)
    full = activation_patching(model, CLEAN, CORRUPT, metric, positions="each", progress=False)
    seen = []

    def update(part, done, total):
        seen.append((part.values.clone(), done, total))

    got = activation_patching(
        model, CLEAN, CORRUPT, metric, positions="each", progress=False, batch_size=2, on_update=update
    )
    assert (got.values - full.values).abs().max() <= 1e-5
    assert [d for _, d, _ in seen] == list(range(1, len(seen) + 1)) and seen[-1][1] == seen[-1][2] > 2
    filled = [int((~torch.isnan(v)).sum()) for v, _, _ in seen]
    assert filled == sorted(filled) and filled[0] > 0 and filled[-1] == full.values.numel()
    for v, _, _ in seen:
        ok = ~torch.isnan(v)
        assert (v[ok] - full.values[ok]).abs().max() <= 1e-5

    class Stop(Exception):
        pass

    def stop(part, done, total):
        if done == 2:
            raise Stop

    before = _hook_state(model)
    logits_before = last_logits(model, CLEAN)
    with pytest.raises(Stop):
        activation_patching(
            model, CLEAN, CORRUPT, metric, positions="each", progress=False, batch_size=2, on_update=stop
        )
    assert _hook_state(model) == before
    torch.testing.assert_close(last_logits(model, CLEAN), logits_before, atol=0, rtol=0)


def test_positions_list_and_layer_subset_select_cells_of_the_full_grid(models):
    model = models["gpt2"]
    metric = gap_metric(model)
    full = activation_patching(model, CLEAN, CORRUPT, metric, positions="each", progress=False)
    part = activation_patching(
        model, CLEAN, CORRUPT, metric, positions=[-1, 2], layers=[2, 0], progress=False
    )
    assert part.positions == [5, 2] and part.layers == [2, 0]
    torch.testing.assert_close(part.values, full.values[[2, 0]][:, [5, 2]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_normalisation_endpoints(models, family):
    model = models[family]
    metric = gap_metric(model)
    den = activation_patching(
        model, CLEAN, CORRUPT, metric, site="resid_pre", layers=0, progress=False
    )
    assert den.values.shape == (1,)
    assert abs(float(den.values[0]) - 1.0) <= 1e-5  # all of resid_pre[0] from clean = the clean run
    noi = activation_patching(
        model, CLEAN, CORRUPT, metric, site="resid_pre", layers=0, direction="noise", progress=False
    )
    assert abs(float(noi.values[0])) <= 1e-5  # all of it from corrupt = the corrupt run
    last = model.n_layers - 1
    post = activation_patching(
        model, CLEAN, CORRUPT, metric, site="resid_post", layers=last, progress=False
    )
    assert abs(float(post.values[0]) - 1.0) <= 1e-5
    # baselines are the raw metric of the unpatched runs
    bound = metric.bind(model)
    lc, lx = last_logits(model, CLEAN)[None], last_logits(model, CORRUPT)[None]
    assert abs(float(den.clean_baseline[0] - bound(lc))) <= 1e-4
    assert abs(float(den.corrupt_baseline[0] - bound(lx))) <= 1e-4
    assert not den.normalized or den.normalized is True


def test_per_pair_values_average_to_the_grid_and_equal_single_pair_runs(models):
    model = models["gpt2"]
    metric = gap_metric(model, PAIRS)
    res = activation_patching(model, [c for c, _ in PAIRS], [x for _, x in PAIRS], metric, positions="each", progress=False)
    assert res.per_pair.shape == (2, model.n_layers, 6)
    torch.testing.assert_close(res.per_pair.mean(0), res.values)
    for i, (c, x) in enumerate(PAIRS):
        single = activation_patching(model, c, x, M.logit_diff(metric.correct[i], metric.wrong[i]), positions="each", progress=False)
        torch.testing.assert_close(res.per_pair[i], single.values, atol=1e-5, rtol=0)
        ref = reference_patching(model, c, x, M.logit_diff(metric.correct[i], metric.wrong[i]), "resid_pre", True, "denoise")
        assert (res.per_pair[i] - ref).abs().max() <= 1e-4


def test_pairs_of_different_lengths_run_with_positions_all(models):
    model = models["gpt2"]
    pairs = [(CLEAN, CORRUPT), ("The Colosseum was in", "The staff is in")]  # 6 and 5 tokens
    metric = gap_metric(model, pairs)
    res = activation_patching(
        model, [c for c, _ in pairs], [x for _, x in pairs], metric, site="mlp_out", progress=False
    )
    for i, (c, x) in enumerate(pairs):
        ref = reference_patching(model, c, x, M.logit_diff(metric.correct[i], metric.wrong[i]), "mlp_out", False, "denoise")
        assert (res.per_pair[i] - ref).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="same token length"):
        activation_patching(
            model,
            [c for c, _ in pairs],
            [x for _, x in pairs],
            metric,
            positions="each",
            progress=False,
        )


def test_result_tables_plots_and_labels(models):
    import matplotlib

    matplotlib.use("Agg")
    model = models["gpt2"]
    metric = gap_metric(model)
    res = activation_patching(model, CLEAN, CORRUPT, metric, positions="each", progress=False)
    df = res.to_pandas()
    assert list(df.columns) == ["layer", "position", "token", "corrupt_token", "value"]
    assert len(df) == model.n_layers * 6
    row = df[(df.layer == 1) & (df.position == 2)].iloc[0]
    assert row.token == " Eiffel" and row.corrupt_token == " staff"
    assert abs(row.value - float(res.values[1, 2])) < 1e-6
    assert res.layer_labels == ["0", "1", "2"]
    assert res.str_tokens[2] == " Eiffel" and res.position_labels[2] == " Eiffel/ staff"
    fig = res.plot()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[2] == " Eiffel/ staff"
    assert "PatchingResult(gpt2, resid_pre, denoise" in repr(res)
    assert len(res.to_pandas(per_pair=True)) == len(df)

    heads = activation_patching(model, CLEAN, CORRUPT, metric, site="head_out", progress=False)
    assert heads.dims == ("layer", "head") and heads.values.shape == (3, 4)
    assert heads.head_labels[:2] == ["0.0", "0.1"]
    assert list(heads.to_pandas().columns) == ["layer", "head", "value"]
    heads.plot()
    hp = activation_patching(
        model, CLEAN, CORRUPT, metric, site="head_out", positions="each", layers=[1], progress=False
    )
    assert hp.dims == ("layer", "head", "position") and hp.values.shape == (1, 4, 6)
    assert len(hp.to_pandas()) == 24
    hp.plot()
    flat = activation_patching(model, CLEAN, CORRUPT, metric, progress=False)
    assert flat.dims == ("layer",) and list(flat.to_pandas().columns) == ["layer", "value"]
    flat.plot()

    abl = ablate(
        model, [CLEAN, CORRUPT], metric, ["0.0", "0.1", "1.3"], separately=True, progress=False
    )
    t = abl.to_pandas()
    assert list(t.columns) == ["component", "clean", "ablated", "effect"] and len(t) == 3
    assert len(abl.to_pandas(per_prompt=True)) == 6
    abl.plot()
    ablate(model, CLEAN, metric, ["0.0", "mlp.1"], progress=False).plot()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_widget_import_is_lazy():
    import subprocess
    import sys

    code = (
        "import sys, mi_widgets.core.interventions.patching as p, mi_widgets.core.metrics;"
        "print(any(m.startswith('mi_widgets.widgets') or m in ('anywidget', 'matplotlib', 'pandas') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_repr_mimebundle_falls_back_to_text_without_the_widget(models, monkeypatch):
    """Where the view cannot be built (no anywidget, no bundle), a result displays as its repr."""
    from mi_widgets.core import _views

    model = models["gpt2"]
    res = activation_patching(model, CLEAN, CORRUPT, gap_metric(model), layers=0, progress=False)

    def no_view(*_a, **_k):
        raise ImportError("no module named anywidget")

    monkeypatch.setattr(_views, "_finder", no_view)
    bundle = res._repr_mimebundle_()
    assert set(bundle) == {"text/plain"} and bundle["text/plain"].startswith("PatchingResult(")


def test_tiny_patching_reproduces_the_recorded_figures(tiny_model):
    """zoo:tiny's ground truth records where the city sits: per position group, the mean
    normalised effect of patching resid_pre[L] from a clean fact prompt into a same-length one
    about another subject (measured by zoo/measure.py with its own torch hooks). Our grids on the
    recorded pairs must give the same figures, hence the same cells >= 0.5."""
    gt = _zoo("tiny")["figures"]["patching"]
    model = tiny_model
    pairs = [tuple(p) for p in gt["pairs"]]
    grids = _tiny_grids(model, pairs)
    ex = gt["example"]
    k = pairs.index((ex["clean"], ex["corrupt"])) if (ex["clean"], ex["corrupt"]) in pairs else None
    if k is not None:
        torch.testing.assert_close(grids[k], torch.tensor(ex["grid"]), atol=2e-3, rtol=0)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for grid in grids:
        for g, (pos, how) in _tiny_groups(grid.shape[1]).items():
            if pos:
                sums[g] = sums.get(g, 0) + _reduce(grid, pos, how)
                counts[g] = counts.get(g, 0) + 1
    checked = [g for g, v in gt["mean_effect"].items() if v is not None and g in sums]
    assert {"subject last", "' in' (final)"} <= set(checked)
    for g in checked:
        recorded = gt["mean_effect"][g]
        mean = sums[g] / counts[g]
        torch.testing.assert_close(
            mean, torch.tensor(recorded, dtype=mean.dtype), atol=2e-3, rtol=0, msg=g
        )
        assert [L for L, v in enumerate(mean.tolist()) if v >= 0.5] == gt["cells_ge_0.5"][g], g


def test_tiny_eiffel_tower_localises_as_recorded(tiny_model):
    """ "The Eiffel Tower is in" against a same-length prompt about another subject: every cell
    the record finds clearly carrying the city (mean effect >= 0.7) restores at least half of the
    logit difference, and every cell it finds clearly not carrying it (<= 0.3) restores less."""
    rec = _zoo("tiny")["figures"]
    model = tiny_model
    clean = "The Eiffel Tower is in"
    t = model.to_tokens(clean).shape[1]
    answer = int(last_logits(model, clean).argmax())
    corrupt = next(
        p
        for p in rec["facts"]["prompts_train"]
        if p.endswith(" is in")
        and p != clean
        and model.to_tokens(p).shape[1] == t
        and int(last_logits(model, p).argmax()) != answer
    )
    grid = _tiny_grids(model, [(clean, corrupt)])[0]
    mean = rec["patching"]["mean_effect"]
    checked = 0
    for g, (pos, how) in _tiny_groups(t).items():
        if not pos or mean.get(g) is None:
            continue
        cell = _reduce(grid, pos, how)
        for layer, v in enumerate(mean[g]):
            if v >= 0.7:
                assert cell[layer] >= 0.5, (g, layer, float(cell[layer]))
                checked += 1
            elif v <= 0.3:
                assert cell[layer] < 0.5, (g, layer, float(cell[layer]))
                checked += 1
    assert checked >= 10


def test_ioi_head_patching_finds_the_name_mover_and_s_inhibition(ioi):
    """Clean IOI prompts against the same template with two other names. Denoising head_out:
    only the name mover restores the clean answer (it alone writes the answer, reading the names
    in context). Noising: the name mover and the S-inhibition head break it (the corrupt
    inhibition names someone absent, so the mover splits its attention); the duplicate-token
    head does not (the corrupt prompt repeats a name at the same position)."""
    import random

    model, gt, prompts, compiled = ioi
    rng = random.Random(0)
    clean, corrupt = [], []
    for p in prompts[:40]:
        others = [n for n in compiled.IOI_NAMES if " " + n not in (p["io"], p["s"])]
        io2, s2 = rng.sample(others, 2)
        a, b = (io2, s2) if p["order"] == "ABBA" else (s2, io2)
        clean.append(p["text"])
        corrupt.append(compiled.IOI_TEMPLATES[p["template"]].format(A=a, B=b, S=s2))
    metric = M.logit_diff([p["io"] for p in prompts[:40]], [p["s"] for p in prompts[:40]])
    comps = gt["components"]
    cell = lambda res, h: float(res.values[int(h.split(".")[0]), int(h.split(".")[1])])  # noqa: E731
    den = activation_patching(model, clean, corrupt, metric, site="head_out", progress=False)
    assert den.argmax() == {"layer": 2, "head": 3} and comps["name_mover"] == "2.3"
    assert cell(den, comps["name_mover"]) >= 0.9
    others = [h for h in den.head_labels if h != comps["name_mover"]]
    assert all(abs(cell(den, h)) <= 0.1 for h in others)
    noi = activation_patching(
        model, clean, corrupt, metric, site="head_out", direction="noise", progress=False
    )
    broken = {h for h in noi.head_labels if cell(noi, h) <= 0.5}
    assert broken == {comps["name_mover"], comps["s_inhibition"]}
    assert cell(noi, comps["duplicate_token"]) >= 0.9
