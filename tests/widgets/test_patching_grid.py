"""PatchingGrid (mi_widgets/widgets/patching_grid.py): traits, the "cell", "sweep" and "cancel"
requests, static export. On the embedded trained model (zoo:tiny); needs the built JS bundle."""

from __future__ import annotations

import json
import re

import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets import wire

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"




@pytest.fixture(scope="module")
def metric():
    return mw.logit_diff(" Paris", " Tokyo")


@pytest.fixture(scope="module")
def result(tiny, metric):
    return mw.activation_patching(tiny, CLEAN, CORRUPT, metric, positions="each", progress=False)


@pytest.fixture
def grid(result):
    return result.widget()


def grid_values(w) -> torch.Tensor:
    return torch.from_numpy(wire.decode(w.values).copy())


def direct_topk(model, text: str, k: int, patch: tuple[int, int, torch.Tensor] | None = None):
    """Top-k next tokens of a plain HF forward, optionally with resid_pre[layer][position] set to
    ``value`` by a forward pre-hook on the block (independent of the library's engines)."""
    toks = model.to_tokens(text)
    blocks = model.hf.transformer.h
    handle = None
    if patch is not None:
        layer, pos, value = patch

        def pre(_mod, args, kwargs):
            hs = args[0].clone()
            hs[:, pos] = value
            return (hs, *args[1:]), kwargs

        handle = blocks[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model.hf(toks).logits[0, -1].float()
    finally:
        if handle is not None:
            handle.remove()
    p, ids = torch.softmax(logits, -1).topk(k)
    return ids.tolist(), p.tolist()


def resid_pre(model, text: str, layer: int, pos: int) -> torch.Tensor:
    seen = {}

    def pre(_mod, args, kwargs):
        seen["x"] = args[0][:, pos].clone()

    h = model.hf.transformer.h[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            model.hf(model.to_tokens(text))
    finally:
        h.remove()
    return seen["x"]


# --------------------------------------------------------------------------------------------


def test_traits_from_result(grid, result, tiny):
    assert grid.dims == ["layer", "position"]
    assert grid.layers == list(range(tiny.n_layers))
    assert grid.positions == list(range(6))
    assert grid.heads == []
    assert grid.clean_tokens == result.clean_tokens[0]
    assert grid.corrupt_tokens == result.corrupt_tokens[0]
    assert grid.site == "resid_pre" and grid.mode == "exact" and grid.direction == "denoise"
    assert grid.metric_name == "logit_diff(' Paris', ' Tokyo')"
    assert grid.values["dtype"] == "float32" and grid.values["shape"] == [tiny.n_layers, 6]
    assert torch.equal(grid_values(grid), result.values.float())
    assert wire.decode(grid.filled).all() and grid.n_filled == grid.n_cells == tiny.n_layers * 6
    assert grid.can_sweep and grid.status == "ready"
    assert grid.sites == list(mw.PATCH_SITES)
    # clean / corrupt top-k: plain forwards
    for rows, text in ((grid.clean_topk, CLEAN), (grid.corrupt_topk, CORRUPT)):
        ids, probs = direct_topk(tiny, text, grid.k)
        assert [r["id"] for r in rows] == ids
        assert [r["prob"] for r in rows] == pytest.approx(probs, abs=1e-5)
        assert [r["token"] for r in rows] == [tiny.tokenizer.decode([i]) for i in ids]
    assert grid.clean_topk[0]["token"] == " Paris" and grid.corrupt_topk[0]["token"] == " Tokyo"
    # JSON-able traits only (no vocabulary-sized arrays)
    json.dumps({"c": grid.clean_topk, "x": grid.corrupt_topk})


@pytest.mark.parametrize("layer,pos", [(0, 2), (1, 5), (3, 3)])
def test_cell_topk_equals_a_direct_patched_run(grid, tiny, result, layer, pos):
    out = grid.request("cell", {"layer": layer, "position": pos})
    value = resid_pre(tiny, CLEAN, layer, pos)
    ids, probs = direct_topk(tiny, CORRUPT, grid.k, patch=(layer, pos, value))
    assert [r["id"] for r in out["topk"]] == ids
    assert [r["prob"] for r in out["topk"]] == pytest.approx(probs, abs=1e-5)
    assert out["value"] == pytest.approx(float(result.values[layer, pos]))
    assert (out["row"], out["col"]) == (layer, pos)
    # the same cell by grid indices
    assert grid.request("cell", {"row": layer, "col": pos})["topk"] == out["topk"]


def test_subject_patch_restores_paris(grid):
    # layer 0 at the last subject token restores most of the clean answer (ground truth ~0.74)
    top = grid.request("cell", {"layer": 0, "position": 3})["topk"]
    assert top[0]["token"] in (" Paris", " Tokyo")
    top = grid.request("cell", {"layer": 1, "position": 5})["topk"]
    assert top[0]["token"] == " Paris"


def test_sweep_fills_values_equal_to_activation_patching(grid, tiny, metric, result):
    seen = []
    grid.observe(lambda ch: seen.append((ch["new"], grid.status)), "n_filled")
    grid.sweep("attn_out", "exact")
    ref = mw.activation_patching(tiny, CLEAN, CORRUPT, metric, site="attn_out", positions="each", progress=False)
    assert grid.status == "ready" and grid.error == ""
    assert grid.site == "attn_out" and grid.mode == "exact"
    torch.testing.assert_close(grid_values(grid), ref.values.float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grid.result.values, ref.values, atol=1e-5, rtol=1e-4)
    assert grid.result.layers == ref.layers
    # filled one layer (6 cells) at a time while running
    assert [n for n, s in seen if s == "running"] == [6, 12, 18, 24]
    assert grid.n_filled == 24


def test_sweep_attribution_and_heads(grid, tiny, metric):
    grid.sweep("resid_pre", "attribution")
    ref = mw.attribution_patching(tiny, CLEAN, CORRUPT, metric, positions="each")
    assert grid.status == "ready" and grid.mode == "attribution"
    torch.testing.assert_close(grid_values(grid), ref.values.float(), atol=1e-5, rtol=1e-4)
    # cells of an attribution grid still run the exact patch
    assert grid.request("cell", {"layer": 1, "position": 5})["topk"][0]["token"] == " Paris"
    grid.sweep("head_out", "exact")
    ref = mw.activation_patching(tiny, CLEAN, CORRUPT, metric, site="head_out", positions="each", progress=False)
    assert grid.dims == ["layer", "head", "position"] and grid.heads == list(range(tiny.n_heads))
    assert grid.values["shape"] == [tiny.n_layers * tiny.n_heads, 6]
    torch.testing.assert_close(grid_values(grid), ref.values.float().reshape(-1, 6), atol=1e-5, rtol=1e-4)
    out = grid.request("cell", {"layer": 2, "head": 1, "position": 5})
    assert (out["row"], out["col"]) == (2 * tiny.n_heads + 1, 5)
    assert out["value"] == pytest.approx(float(ref.values[2, 1, 5]), abs=1e-5)


def test_sweep_in_background_thread(grid, tiny, metric):
    assert grid.request("sweep", {"site": "mlp_out", "mode": "exact"})["started"] is True
    grid.wait(120)
    assert grid.status == "ready", grid.error
    ref = mw.activation_patching(tiny, CLEAN, CORRUPT, metric, site="mlp_out", positions="each", progress=False)
    torch.testing.assert_close(grid_values(grid), ref.values.float(), atol=1e-5, rtol=1e-4)


def test_cancel_leaves_the_previous_values(grid, result):
    before = {n: getattr(grid, n) for n in ("values", "filled", "n_filled", "site", "mode", "dims")}

    def cancel_after_first_batch(change):
        if change["new"] == 6:
            assert grid.request("cancel")["cancelled"] is True

    grid.observe(cancel_after_first_batch, "n_filled")
    grid.sweep("attn_out", "exact")
    assert grid.status == "cancelled"
    assert {n: getattr(grid, n) for n in before} == before
    assert grid.result is result
    # the grid works afterwards
    grid.unobserve(cancel_after_first_batch, "n_filled")
    grid.sweep("resid_pre", "exact")
    assert grid.status == "ready"
    torch.testing.assert_close(grid_values(grid), result.values.float(), atol=1e-5, rtol=1e-4)


def test_cancel_a_background_sweep(grid, result):
    before = grid.values
    started = []

    def slow(change):  # hold the first batch until the cancel has arrived
        if change["new"] == 6:
            started.append(1)
            grid._cancel.wait(10)

    grid.observe(slow, "n_filled")
    grid.request("sweep", {"site": "mlp_out"})
    grid.request("cancel")  # arrives while the thread runs: the kernel thread is free
    grid.wait(60)
    assert grid.status == "cancelled"
    assert grid.values == before and grid.site == "resid_pre"


def test_errors_are_reported(grid, tiny, reply):
    with pytest.raises(ValueError, match="site must be one of"):
        grid.request("sweep", {"site": "nope"})
    with pytest.raises(ValueError, match="mode must be one of"):
        grid.request("sweep", {"mode": "approx"})
    with pytest.raises(ValueError, match="layer 9 is not in this grid"):
        grid.request("cell", {"layer": 9, "position": 0})
    with pytest.raises(ValueError, match="needs 'position'"):
        grid.request("cell", {"layer": 0})
    with pytest.raises(ValueError, match="outside the"):
        grid.request("cell", {"row": 0, "col": 99})
    r = reply(grid, "sweep", {"site": "nope"})
    assert r["ok"] is False and "site must be one of" in r["error"]
    r = reply(grid, "cell", {"layer": "x", "position": 0})
    assert r["ok"] is False and "layer must be an int" in r["error"]
    assert grid.status == "ready"
    # a failure inside the sweep: status "error", message, previous grid kept
    before = grid.values
    bad = grid.result.widget(metric=lambda logits: logits[:, :2])  # wrong shape
    bad_before = bad.values
    bad.sweep("attn_out")
    assert bad.status == "error" and "one number per row" in bad.error
    assert bad.values == bad_before and bad.site == "resid_pre"
    assert grid.values == before


def test_busy_while_sweeping(grid):
    grid._lock.acquire()
    try:
        with pytest.raises(ValueError, match="already running"):
            grid.sweep("attn_out")
        with pytest.raises(ValueError, match="a sweep is running"):
            grid.request("cell", {"layer": 0, "position": 0})
    finally:
        grid._lock.release()


def test_metric_is_rebuilt_from_its_name(result, tiny):
    from mi_widgets.widgets.patching_grid import _metric_from_name

    m = _metric_from_name(result.metric_name)
    assert m is not None and m.bind(tiny).name == result.metric_name
    assert _metric_from_name("prob(' Paris')").name == "prob(' Paris')"
    assert _metric_from_name("kl_to_clean").name == "kl_to_clean"
    assert _metric_from_name("custom metric") is None
    assert _metric_from_name("__import__('os').system('x')") is None
    custom = mw.activation_patching(
        tiny, CLEAN, CORRUPT, lambda lg: lg[:, 466] - lg[:, 433], layers=[0, 1], progress=False
    )
    # the result carries its metric, so even a plain callable can sweep from the view
    assert custom.widget().can_sweep
    custom.metric = None  # e.g. a result saved without it: only a name is left
    w = custom.widget()
    assert not w.can_sweep and w.dims == ["layer"] and w.values["shape"] == [2, 1]
    with pytest.raises(ValueError, match="pass metric="):
        w.sweep("attn_out")
    assert w.request("cell", {"layer": 1})["topk"]
    w2 = custom.widget(metric=lambda lg: lg[:, 466] - lg[:, 433])
    assert w2.can_sweep


def test_static_html(grid, result):
    page = grid.to_html()
    m = re.search(r'<script type="application/json" id="mw-[0-9a-f]+-state">(.*?)</script>', page, re.S)
    state = json.loads(m.group(1))
    assert state["static"] is True
    cache = state["cell_cache"]
    assert len(cache) == 20
    top = torch.argsort(result.values.abs().reshape(-1), descending=True)[:20].tolist()
    assert set(cache) == {f"{i // 6},{i % 6}" for i in top}
    assert cache["1,5"] == grid.request("cell", {"layer": 1, "position": 5})["topk"]
    assert state["clean_topk"] == grid.clean_topk
    assert "b64" in state["values"]
    assert "MIWidgets" in page
    small = grid._repr_mimebundle_()
    data = small[0] if isinstance(small, tuple) else small
    assert "text/html" in data


def test_ablation_result_displays_as_its_view(tiny, metric):
    """An AblationResult shows the Ablation view in a notebook (its static copy included);
    without the widget machinery it falls back to a text table."""
    from mi_widgets.widgets.ablation import Ablation

    res = mw.ablate(tiny, CLEAN, metric, ["0.0"], progress=False)
    assert isinstance(res.widget(), Ablation)
    bundle = res._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data and "text/html" in data


# -------------------------------------------------------------------------------------------
# selection trait; Ctrl-C during a foreground sweep


def test_selected_cell_is_validated_and_normalised(grid, result):
    assert grid.selected_cell == {}
    grid.selected_cell = {"layer": 1, "position": 3}
    assert grid.selected_cell == {"layer": 1, "position": 3}
    grid.selected_cell = {"row": 2, "col": 0}  # grid indices are turned into model indices
    assert grid.selected_cell == {"layer": result.layers[2], "position": result.positions[0]}
    for bad in ({"layer": 99, "position": 0}, {"layer": 0}, {"layer": "x", "position": 1}, {"row": 0, "col": 99}):
        with pytest.raises(traitlets.TraitError):
            grid.selected_cell = bad
        assert grid.selected_cell == {"layer": result.layers[2], "position": result.positions[0]}
    grid.select(0, position=1)
    assert grid.selected_cell == {"layer": 0, "position": 1}
    grid.select(None)
    assert grid.selected_cell == {}


def test_selected_cell_from_the_browser_reaches_python(grid):
    # what ipywidgets does with a state update from the view
    grid.set_state({"selected_cell": {"layer": 2, "position": 4}})
    assert grid.selected_cell == {"layer": 2, "position": 4}
    assert grid.state()["selected_cell"] == {"layer": 2, "position": 4}


def test_selection_survives_a_sweep_only_if_the_cell_still_exists(grid):
    grid.selected_cell = {"layer": 1, "position": 2}
    grid.sweep("attn_out")  # same dims: kept
    assert grid.selected_cell == {"layer": 1, "position": 2}
    grid.sweep("head_out")  # layer × head × position: a cell needs a head now
    assert grid.status == "ready" and grid.dims == ["layer", "head", "position"]
    assert grid.selected_cell == {}


def test_ctrl_c_during_a_foreground_sweep_restores_the_grid(result, metric):
    state = {"armed": False}

    def interrupting(logits):
        # Ctrl-C arrives once the sweep has switched the view to head_out and filled a batch
        if state["armed"] and w.site == "head_out":
            raise KeyboardInterrupt
        state["calls"] = state.get("calls", 0) + 1
        return logits[:, 0] - logits[:, 1]

    w = result.widget(metric=interrupting)
    w.selected_cell = {"layer": 1, "position": 2}
    before = {n: getattr(w, n) for n in ("values", "filled", "n_filled", "n_cells", "dims", "heads", "site", "mode")}
    state["armed"] = True
    with pytest.raises(KeyboardInterrupt):
        w.sweep("head_out", background=False)
    assert state["calls"] > 0 and w.status == "cancelled" and w.progress == 1.0
    assert {n: getattr(w, n) for n in before} == before
    assert w.site == w.result.site == "resid_pre" and w.result is result
    assert w.selected_cell == {"layer": 1, "position": 2}
    state["armed"] = False
    w.sweep("attn_out")  # the sweep lock was released
    assert w.status == "ready" and w.site == "attn_out"


def test_waiting_for_the_model_while_another_job_holds_it(result):
    """A click or a sweep while another thread runs on the model: status "waiting" (the view
    says "waiting for the model"), then the job runs."""
    import threading

    w = result.widget()
    model = result.model
    seen: list[str] = []
    w.observe(lambda ch: seen.append(ch["new"]), "status")
    holding, release = threading.Event(), threading.Event()

    def other_job() -> None:
        with model.lock:
            holding.set()
            release.wait(30)

    for start in (
        lambda: w.request("cell", {"layer": 1, "position": 2}),
        lambda: w.sweep("attn_out", background=True),
    ):
        seen.clear()
        t = threading.Thread(target=other_job)
        t.start()
        holding.wait(10)
        job = threading.Thread(target=start)
        job.start()
        for _ in range(200):
            if w.status == "waiting":
                break
            threading.Event().wait(0.01)
        assert w.status == "waiting"
        release.set()
        job.join(30)
        w.wait(30)
        t.join(10)
        release.clear()
        holding.clear()
        assert w.status == "ready" and "waiting" in seen
    assert seen[: seen.index("waiting") + 1] == ["running", "waiting"] and seen[-1] == "ready"
