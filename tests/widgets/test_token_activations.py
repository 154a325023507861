"""TokenActivations: the core result and the widget's Python side (traits, requests, export)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import mi_widgets as mw
from mi_widgets import wire

TEXTS = ["The Eiffel Tower is in Paris.", "The food was wonderful."]


@pytest.fixture(scope="module")
def gpt2(bpe_tokenizer):
    """A random 3-layer GPT-2 (the widget's Python side; families are covered in test_model.py)."""
    from _families import _family_model

    return mw.wrap(_family_model("gpt2", len(bpe_tokenizer)), bpe_tokenizer, "gpt2")


def test_result_matches_a_direct_run(family_model):
    _, m = family_model
    r = mw.token_activations(m, TEXTS, site="mlp_post", layer=1)
    ids = [m.to_tokens(t) for t in TEXTS]
    direct = torch.cat([m.run(i, [("mlp_post", 1)])[("mlp_post", 1)] for i in ids])
    torch.testing.assert_close(r.acts, direct)
    assert r.offsets == [0, ids[0].shape[1]]
    assert r.str_tokens == [m.to_str_tokens(i) for i in ids]
    idx, vals = r.topk(5)
    torch.testing.assert_close(vals[:, 0], r.acts.max(1).values)
    assert int(idx[3, 0]) == int(r.acts[3].argmax())


def test_head_out_units_are_head_norms(family_model):
    _, m = family_model
    r = mw.token_activations(m, TEXTS[0], site="head_out", layer=0)
    heads = m.run(m.to_tokens(TEXTS[0]), [("head_out", 0)])[("head_out", 0)]
    torch.testing.assert_close(r.acts, heads.norm(dim=-1))
    assert r.n_units == m.n_heads and r.unit_kind == "head"


def test_direction_values_are_dot_products(gpt2):
    d = torch.randn(gpt2.d_model)
    r = mw.token_activations(gpt2, TEXTS, site="resid_post", layer=2, direction=d, direction_label="probe")
    torch.testing.assert_close(r.unit_values(d), r.acts @ d)
    with pytest.raises(ValueError, match="direction has 7 entries but resid_post has 32"):
        mw.token_activations(gpt2, TEXTS, site="resid_post", layer=2, direction=torch.randn(7))


class _Dictionary(torch.nn.Module):
    """A small real sparse dictionary (ReLU encoder, linear decoder) with the SAE interface."""

    def __init__(self, d_in: int, d_sae: int, site: str, layer: int):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.W_enc = torch.nn.Parameter(torch.randn(d_in, d_sae, generator=g))
        self.b_enc = torch.nn.Parameter(torch.randn(d_sae, generator=g) * 0.1)
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in, generator=g))
        self.d_in, self.d_sae, self.site, self.layer = d_in, d_sae, site, layer

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)


def test_dictionary_features_are_the_units(gpt2):
    """With dictionary=, each token's units are the dictionary's feature activations at its
    own site and layer; the widget labels them features and will not move to another layer."""
    sae = _Dictionary(gpt2.d_model, 48, "resid_post", 1)
    r = mw.token_activations(gpt2, TEXTS, site="resid_post", layer=1, dictionary=sae)
    ids = [gpt2.to_tokens(t) for t in TEXTS]
    raw = torch.cat([gpt2.run(i, [("resid_post", 1)])[("resid_post", 1)] for i in ids])
    with torch.no_grad():
        torch.testing.assert_close(r.acts, sae.encode(raw))
    assert r.n_units == 48 and r.unit_kind == "feature" and float(r.acts.min()) >= 0
    with pytest.raises(ValueError, match="reads resid_post at layer 1"):
        mw.token_activations(gpt2, TEXTS, site="resid_post", layer=2, dictionary=sae)
    with pytest.raises(ValueError, match="trained on another model"):
        mw.token_activations(gpt2, TEXTS, site="resid_post", layer=1,
                             dictionary=_Dictionary(16, 8, "resid_post", 1))
    w = mw.TokenActivations(gpt2, TEXTS, dictionary=sae, unit=5)
    assert (w.site, w.layer, w.unit_kind, w.n_units, w.selected_unit) == ("resid_post", 1, "feature", 48, 5)
    np.testing.assert_allclose(wire.decode(w.values), r.acts[:, 5].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="features of a dictionary"):
        w.layer = 2
    assert (w.layer, w.status) == (1, "error")


def test_attn_pattern_is_not_a_token_site(gpt2):
    with pytest.raises(ValueError, match="no per-token vector"):
        mw.token_activations(gpt2, TEXTS, site="attn_pattern", layer=0)


def test_to_pandas_and_plot(gpt2):
    r = mw.token_activations(gpt2, TEXTS, site="mlp_post", layer=0)
    df = r.to_pandas(unit=5)
    assert len(df) == r.acts.shape[0] and list(df.columns) == ["text", "position", "token", "value"]
    np.testing.assert_allclose(df["value"].to_numpy(), r.acts[:, 5].numpy(), rtol=1e-6)
    top = r.to_pandas(k=3)
    assert len(top) == 3 * r.acts.shape[0] and "neuron" in top.columns
    fig = r.plot(unit=5)
    assert "mlp_post layer 0" in fig.axes[0].get_title()
    assert r.top_tokens(5, k=1)[0][3] == pytest.approx(float(r.acts[:, 5].max()))


def test_widget_initial_state(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=1, unit=7)
    r = w.result
    assert w.texts == r.str_tokens
    assert (w.site, w.layer, w.n_layers, w.n_units, w.unit_kind) == ("mlp_post", 1, 3, 128, "neuron")
    assert w.selected_unit == 7 and w.unit_label == "neuron 7"
    np.testing.assert_allclose(wire.decode(w.values), r.acts[:, 7].numpy(), rtol=1e-6)
    idx = wire.decode(w.topk_indices)
    assert idx.shape == (r.acts.shape[0], 10) and w.topk_indices["dtype"] == "uint16"  # 128 units fit
    np.testing.assert_array_equal(idx, r.topk(10)[0].numpy())
    assert w.values["dtype"] == "float32" and isinstance(w.values["buffer"], bytes)
    assert "resid_mid" in w.sites and "attn_pattern" not in w.sites
    assert "render" in w._esm  # the built ES module, not a path


def test_default_unit_is_the_most_active(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS[0], site="mlp_post", layer=0)
    assert w.selected_unit == int(w.result.acts.max(0).values.argmax())


def test_setting_selected_unit_recolours(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=0)
    w.selected_unit = 42
    np.testing.assert_allclose(wire.decode(w.values), w.result.acts[:, 42].numpy(), rtol=1e-6)
    assert w.unit_label == "neuron 42"
    import traitlets

    with pytest.raises(traitlets.TraitError, match=r"selected_unit must be -1 \(none\) or an int in 0\.\.127"):
        w.selected_unit = 10_000  # out of range: refused on assignment, previous unit kept
    assert w.selected_unit == 42 and w.unit_label == "neuron 42"


def test_selected_token_is_validated_and_located(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=0)
    n0 = len(w.texts[0])
    w.selected_token = n0 + 1
    assert w.selected_position == (1, 1, w.texts[1][1])
    import traitlets

    with pytest.raises(traitlets.TraitError):
        w.selected_token = 10_000


def test_fetch_request_changes_layer_and_site_with_progress(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=0)
    seen = []
    w.observe(lambda c: seen.append(c["new"]), names="status")
    out = w._fetch({"site": "resid_post", "layer": 2}, lambda d, t: seen.append((d, t)))
    assert out == {"site": "resid_post", "layer": 2, "n_units": 32}
    assert (w.site, w.layer, w.unit_kind, w.status) == ("resid_post", 2, "dim", "ready")
    assert seen[0] == "loading" and (1, 2) in seen and (2, 2) in seen and seen[-1] == "ready"
    expected = mw.token_activations(gpt2, TEXTS, "resid_post", 2).acts
    np.testing.assert_allclose(wire.decode(w.values), expected[:, w.selected_unit].numpy(), rtol=1e-5)


def test_setting_layer_from_python_recomputes(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=0)
    w.layer = 2
    expected = mw.token_activations(gpt2, TEXTS, "mlp_post", 2).acts
    torch.testing.assert_close(w.result.acts, expected)


def test_bad_fetch_keeps_the_view_and_reports(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=1)
    before = bytes(w.values["buffer"])
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        w._fetch({"site": "mlp_post", "layer": 9}, lambda d, t: None)
    assert (w.site, w.layer, w.status) == ("mlp_post", 1, "error")
    assert "layer 9 is out of range" in w.error
    assert bytes(w.values["buffer"]) == before


def test_request_protocol_replies_with_ok_or_error(gpt2):
    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=0)
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    w._on_custom_msg(w, {"kind": "mw-request", "id": "a", "name": "fetch", "msg": {"site": "mlp_out", "layer": 1}}, [])
    assert [m["kind"] for m in sent] == ["mw-progress", "mw-progress", "mw-response"]
    assert sent[-1]["ok"] is True and sent[-1]["id"] == "a"
    sent.clear()
    w._on_custom_msg(w, {"kind": "mw-request", "id": "b", "name": "fetch", "msg": {"site": "nope"}}, [])
    assert sent[-1] == {"kind": "mw-response", "id": "b", "ok": False, "error": sent[-1]["error"]}
    assert "unknown site 'nope'" in sent[-1]["error"]
    sent.clear()
    w._on_custom_msg(w, {"kind": "mw-request", "id": "c", "name": "explode", "msg": {}}, [])
    assert sent[-1]["ok"] is False and "unknown request" in sent[-1]["error"]


def test_direction_widget_keeps_direction_across_layers(gpt2):
    d = torch.randn(gpt2.d_model)
    w = mw.TokenActivations(gpt2, TEXTS, site="resid_post", layer=0, unit=d, unit_label="probe")
    assert w.selected_unit == -1 and w.unit_label == "direction: probe"
    w.layer = 1
    r = mw.token_activations(gpt2, TEXTS, "resid_post", 1)
    np.testing.assert_allclose(wire.decode(w.values), (r.acts @ d).numpy(), rtol=1e-4, atol=1e-5)
    w.selected_unit = 3
    assert w.unit_label == "dim 3"
    w.selected_unit = -1
    assert w.unit_label == "direction: probe"


def test_result_widget_and_repr(gpt2):
    r = mw.token_activations(gpt2, TEXTS, site="mlp_post", layer=0)
    w = r.widget()
    torch.testing.assert_close(w.result.acts, r.acts)
    data = r._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    assert "application/vnd.jupyter.widget-view+json" in data and "text/html" in data


def test_static_html_is_self_contained_and_inert(gpt2, tmp_path):
    hostile = "<script>alert(1)</script> </script><img src=x onerror=alert(2)> &amp; \u202e \u2028"
    w = mw.TokenActivations(gpt2, [hostile, TEXTS[0]], site="mlp_post", layer=0)
    assert w.to_html(tmp_path / "view.html") == tmp_path / "view.html"  # with a path: the path
    page = (tmp_path / "view.html").read_text(encoding="utf-8")
    assert re.sub(r"mw-[0-9a-f]{12}", "ID", w.to_html()) == re.sub(r"mw-[0-9a-f]{12}", "ID", page)  # without one: the page
    # the only tags are ours: no token text can open or close a tag
    scripts = re.findall(r"<script[^>]*>", page)
    assert len(scripts) == 3
    assert "<img" not in page and "</script> </script>" not in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?:", page)
    state = json.loads(page.split('-state">', 1)[1].split("</script>", 1)[0])
    assert state["static"] is True and state["texts"] == w.texts
    assert state["values"]["b64"] and "buffer" not in state["values"]
    top_units = set(wire.decode(w.topk_indices).reshape(-1).tolist())
    assert set(map(int, state["unit_cache"])) >= top_units
    unit = sorted(top_units)[0]
    cached = wire.decode(state["unit_cache"][str(unit)])
    exact = w.result.acts[:, unit].numpy()
    step = (exact.max() - exact.min()) / 255
    assert np.abs(cached - exact).max() <= step / 2 + 1e-6


def test_to_circuitsvis_carries_the_same_numbers(gpt2):
    r = mw.token_activations(gpt2, TEXTS, site="mlp_post", layer=0)
    html = str(r.to_circuitsvis(unit=3))
    payload = json.loads(html.split("ColoredTokens,", 1)[1].rsplit(")", 1)[0])
    assert payload["tokens"] == [t for toks in r.str_tokens for t in toks]
    np.testing.assert_allclose(payload["values"], r.acts[:, 3].numpy(), rtol=1e-6)
    multi = str(r.to_circuitsvis(units=[1, 2]))
    assert "ColoredTokensMulti" in multi and "neuron 2" in multi


def test_notebook_copy_stays_small(gpt2):
    """The static copy kept next to the live view carries few units; the export carries more."""
    w = mw.TokenActivations(gpt2, [TEXTS[0] * 3, TEXTS[1] * 3], site="mlp_post", layer=0)
    w._static_budget = {"export": 512, "repr": 8}
    data = w._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data

    def units(page: str) -> int:
        return len(json.loads(page.split('-state">', 1)[1].split("</script>", 1)[0])["unit_cache"])

    assert units(data["text/html"]) <= w._static_budget["repr"] + 1
    assert units(w.to_html()) > w._static_budget["repr"]


def test_many_texts_show_a_progress_bar_and_interrupts_leave_the_model_clean(gpt2, capsys):
    texts = [f"The Eiffel Tower is in Paris {i}." for i in range(16)]
    r = mw.token_activations(gpt2, texts, site="mlp_post", layer=0)
    assert len(r.str_tokens) == 16
    assert "/16 [" in capsys.readouterr().err  # the tqdm bar was drawn
    calls = []

    def stop(done, total):
        calls.append(done)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mw.token_activations(gpt2, texts, site="mlp_post", layer=0, progress=stop)
    assert calls == [1, 2, 3]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in gpt2.hf.modules())
    assert hooks == 0
    again = mw.token_activations(gpt2, texts[:2], site="mlp_post", layer=0)
    torch.testing.assert_close(again.acts, r.acts[: again.acts.shape[0]])


# -- long texts: windowing, and the copy kept in a notebook's outputs --------------------------

WORDS = (
    "the Eiffel Tower is in Paris and the Colosseum is in Rome while Mary gave John a drink "
    "at the store because the food was wonderful and the staff were kind"
).split()


def long_text(model, n_tokens: int) -> str:
    """Ordinary words, repeated, until the text is at least ``n_tokens`` tokens long."""
    per = model.tokenizer(" ".join(WORDS), return_tensors="pt")["input_ids"].shape[1]
    reps = max(1, (n_tokens - 1) // max(per - 1, 1))
    while True:
        text = " ".join(WORDS * reps)
        if model.tokenizer(text, return_tensors="pt")["input_ids"].shape[1] >= n_tokens:
            return text
        reps += 1


def test_widget_windows_a_long_text_across_layers(gpt2):
    text = long_text(gpt2, 300)
    with pytest.raises(ValueError, match="pass window=128"):
        mw.TokenActivations(gpt2, text)
    w = mw.TokenActivations(gpt2, text, site="mlp_post", layer=0, window=64, stride=16, unit=3)
    n = gpt2.tokenizer(text, return_tensors="pt")["input_ids"].shape[1]
    assert sum(len(t) for t in w.texts) == n > gpt2.n_ctx
    w.layer = 2  # recomputes with the same windows
    ref = mw.token_activations(gpt2, text, site="mlp_post", layer=2, window=64, stride=16)
    assert (w.result.window, w.result.stride) == (64, 16)
    torch.testing.assert_close(w.result.acts, ref.acts)
    np.testing.assert_allclose(wire.decode(w.values), ref.acts[:, w.selected_unit].numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def view_10k(tiny):
    """A 10,000-token single text on zoo:tiny (context 128), windowed."""
    text = long_text(tiny, 10_000)
    return mw.TokenActivations(tiny, text, site="mlp_post", layer=1, window=tiny.n_ctx)


def notebook_outputs(w, monkeypatch) -> list[dict]:
    """The outputs a kernel puts in the .ipynb for a cell ending in ``w``: the saved-view output
    (``_publish_saved_view``, which only publishes inside a kernel) and the view's own bundle."""
    import IPython
    import IPython.display

    published = []

    class Shell:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    monkeypatch.setattr(IPython.display, "publish_display_data",
                        lambda data, metadata=None: published.append((data, metadata or {})))
    bundle = w._repr_mimebundle_()
    data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
    assert len(published) == 1  # the saved-view output was made
    return [{"data": d, "metadata": m} for d, m in published] + [{"data": data, "metadata": meta}]


def test_notebook_output_of_10k_tokens_stays_under_200_kb(view_10k, monkeypatch, capsys):
    import nbformat

    w = view_10k
    n = sum(len(t) for t in w.texts)
    assert len(w.texts) == 1 and n >= 10_000
    outputs = notebook_outputs(w, monkeypatch)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "w", outputs=[nbformat.v4.new_output("display_data", data=o["data"], metadata=o["metadata"]) for o in outputs],
    )])
    size = len(nbformat.writes(nb).encode())
    html = outputs[1]["data"]["text/html"]
    state = json.loads(html.split('-state">', 1)[1].split("</script>", 1)[0])
    keep = sum(len(t) for t in state["texts"])
    with capsys.disabled():
        print(f"\n[size] {n:,} tokens: notebook outputs {size / 1e3:.0f} kB (copy of the first {keep:,} tokens)",
              flush=True)
    assert size <= 200_000
    # the copy is the first tokens, their exact values and top-k, and says what it left out
    assert 1_000 <= keep < n
    assert state["texts"] == [w.texts[0][:keep]]
    np.testing.assert_array_equal(wire.decode(state["values"]), wire.decode(w.values)[:keep])
    np.testing.assert_array_equal(wire.decode(state["topk_indices"]), wire.decode(w.topk_indices)[:keep])
    assert f"first {keep:,} of {n:,} tokens" in state["static_note"]
    assert state["unit_cache"], "the copy carries no cached unit: the loop below would check nothing"
    for u, cached in state["unit_cache"].items():
        exact = w.result.acts[:keep, int(u)].numpy()
        assert np.abs(wire.decode(cached) - exact).max() <= float(cached["scale"]) / 2 + 1e-5
    # the saved-view output colours the full saved widget state: its cached units cover every token
    extra = json.loads(outputs[0]["data"]["text/html"].split('-extra">', 1)[1].split("</script>", 1)[0])
    assert extra["unit_cache"] and all(c["shape"] == [n] for c in extra["unit_cache"].values())


def test_to_html_of_10k_tokens_keeps_every_token(view_10k, capsys):
    w = view_10k
    page = w.to_html()
    state = json.loads(page.split('-state">', 1)[1].split("</script>", 1)[0])
    n = sum(len(t) for t in w.texts)
    with capsys.disabled():
        print(f"\n[size] {n:,} tokens: to_html {len(page.encode()) / 1e6:.2f} MB, "
              f"{len(state['unit_cache'])} cached units", flush=True)
    assert state["texts"] == w.texts and "static_note" not in state
    assert wire.decode(state["values"]).shape == (n,)
    # the unit cache is capped by bytes (one per token and unit), not only by count
    assert len(state["unit_cache"]) <= w.CACHE_BYTES["export"] // n + 1
    assert len(page.encode()) < 4_000_000


@pytest.mark.parametrize(("trait", "bad"), [
    ("k", 0), ("k", -1), ("k", True), ("k", 2.5), ("selected_unit", 99999), ("selected_unit", -2),
    ("selected_unit", "3"), ("layer", -1), ("layer", 99), ("layer", None),
])
def test_bad_trait_assignments_are_refused_and_change_nothing(gpt2, trait, bad):
    import traitlets

    w = mw.TokenActivations(gpt2, TEXTS, site="mlp_post", layer=0)
    before = {n: getattr(w, n) for n in ("k", "selected_unit", "layer", "site", "unit_label")}
    with pytest.raises(traitlets.TraitError, match=trait):
        setattr(w, trait, bad)
    assert {n: getattr(w, n) for n in before} == before
    w.k = 3
    assert w.k == 3
