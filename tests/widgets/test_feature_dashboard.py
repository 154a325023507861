"""FeatureDashboard (mi_widgets/widgets/feature_dashboard.py): traits and payloads against
features.py, the "select" / "steer" / "stop" requests (steer and ablate against a hand-written
torch hook), the background pass filling the list, and the static export opened in chromium.
On the embedded trained model (zoo:tiny); needs the built JS bundle."""

from __future__ import annotations

import json

import pytest
import torch
from _browser import launch

from mi_widgets import wire
from mi_widgets.core.decomposition.features import LinearDictionary, default_texts, feature_pass
from mi_widgets.widgets.feature_dashboard import FeatureDashboard, feature_payload
from mi_widgets.zoo.corpus import CITIES

CITY_TOKENS = {" " + c for c in CITIES}
PROMPT = "The Eiffel Tower is in"
HOSTILE_TEXT = (
    "Hi <script>window.__pwned=1</script> and "
    '<img src=x onerror="window.__pwned=2"> &amp; \u202eevil\u202c \x00 nul \U0001f980 crab\nline two'
)


@pytest.fixture(scope="module")
def texts():
    return default_texts(48) + [HOSTILE_TEXT]


@pytest.fixture(scope="module")
def sae(tiny, texts):
    """Feature 0 = the planted city class at resid_pre 0; features 1..5 random directions."""
    city = LinearDictionary.from_token_classes(tiny, texts[:40], {"city": CITY_TOKENS}, site="resid_pre", layer=0)
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(5, tiny.d_model, generator=g)
    rand = rand / rand.norm(dim=1, keepdim=True)
    return LinearDictionary(
        torch.cat([city.W_enc, rand.T], 1), torch.cat([city.b_enc, torch.zeros(5)]),
        torch.cat([city.W_dec, rand]), site="resid_pre", layer=0,
    )


EXPL = {0: "city names", 3: '<img src=x onerror="window.__pwned=7">'}


@pytest.fixture(scope="module")
def dash(tiny, sae, texts):
    return FeatureDashboard(tiny, sae, texts, explanations=EXPL, background=False, k=5)


def test_traits_equal_the_pass(dash, tiny, sae, texts):
    data = feature_pass(tiny, sae, texts, progress=lambda d, t: None)
    s = data.summary()
    assert dash.status == "ready" and dash.n_texts_done == dash.n_texts == len(texts)
    assert torch.allclose(torch.from_numpy(wire.decode(dash.frequency)), s["frequency"].float())
    assert torch.equal(torch.from_numpy(wire.decode(dash.max_act)), s["max_act"])
    assert dash.explanations == {"0": "city names", "3": EXPL[3]}
    assert dash.d_sae == 6 and dash.site == "resid_pre" and dash.layer == 0
    # opens on the feature with the largest max activation
    assert dash.selected == int(s["max_act"].argmax())


def test_select_payload_equals_features_data(dash):
    dash.request("select", {"feature": 0})
    assert dash.selected == 0
    p = dash.feature
    info = dash.data.feature(0)
    assert p == feature_payload(info)
    assert p["index"] == 0 and p["explanation"] == "city names"
    assert [r["activation"] for r in p["top"]] == [ex.activation for ex in info.top]
    assert [r["tokens"] for r in p["top"]] == [ex.tokens for ex in info.top]
    assert all(r["tokens"][r["center"]] in CITY_TOKENS for r in p["top"])  # the planted class
    acts = wire.decode(p["acts"])
    r0 = p["top"][0]
    assert acts[r0["start"] : r0["start"] + r0["len"]].tolist() == pytest.approx(info.top[0].acts)
    assert acts[r0["start"] + r0["center"]] == pytest.approx(info.max_act)
    assert wire.decode(p["hist"]).tolist() == info.hist_counts
    assert [b["lo"] for b in p["bands"]] == [b["lo"] for b in info.bands]
    assert p["logits_pos"] == info.logits_pos and len(p["logits_pos"]) == 10
    # binary buffers, not JSON float lists
    assert isinstance(p["acts"]["buffer"], bytes) and isinstance(p["hist"]["buffer"], bytes)
    with pytest.raises(ValueError, match="feature"):
        dash.request("select", {"feature": 6})


def _hook_next_probs(model, prompt, fn):
    """resid_pre of block 0 edited by a plain forward pre-hook."""
    def pre(m, args, kwargs):
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

    h = model.hf.transformer.h[0].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        ids = model.to_tokens(prompt)
        with torch.no_grad():
            return torch.softmax(model.hf(ids, attention_mask=torch.ones_like(ids)).logits[0, -1], -1)
    finally:
        h.remove()


def test_steer_and_ablate_requests_equal_a_hand_written_hook(dash, tiny, sae):
    d = sae.W_dec[0]
    out = dash.request("steer", {"feature": 0, "mode": "steer", "prompt": PROMPT, "coef": 6.0})
    ref = _hook_next_probs(tiny, PROMPT, lambda x: x + 6.0 * d)
    base = _hook_next_probs(tiny, PROMPT, lambda x: x)
    top = torch.topk(ref, dash.k)
    assert [r["id"] for r in out["after"]] == top.indices.tolist()
    assert [r["prob"] for r in out["after"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert [r["other"] for r in out["after"]] == pytest.approx(base[top.indices].tolist(), abs=1e-6)
    tb = torch.topk(base, dash.k)
    assert [r["id"] for r in out["before"]] == tb.indices.tolist()
    assert out["after"][0]["token"] == tiny.tokenizer.decode([top.indices[0].item()])
    assert dash.steer_result == out and dash.prompt == PROMPT
    # adding the city direction at the embedding changes the answer distribution
    assert out["kl"] > 1e-3
    ab = dash.request("steer", {"feature": 0, "mode": "ablate", "prompt": PROMPT})
    ref = _hook_next_probs(tiny, PROMPT, lambda x: x - sae.encode(x)[..., :1] * d)
    top = torch.topk(ref, dash.k)
    assert [r["id"] for r in ab["after"]] == top.indices.tolist()
    assert [r["prob"] for r in ab["after"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    for bad, match in [({"mode": "boost"}, "mode"), ({"prompt": ""}, "prompt"), ({"coef": "x"}, "coef"),
                       ({"feature": -1}, "feature")]:
        with pytest.raises(ValueError, match=match):
            dash.request("steer", {"feature": 0, "prompt": PROMPT, **bad})
    assert tiny.next_tokens(PROMPT, 1)[0][0] == " Paris"  # no hook left behind


def test_background_pass_fills_the_list_then_ready(tiny, sae, texts):
    seen = []
    w = FeatureDashboard(tiny, sae, texts, batch_size=8)
    w.refresh_s = 0.0
    w.observe(lambda ch: seen.append(ch["new"]), names="n_texts_done")
    w.wait(120)
    assert w.status == "ready" and w.n_texts_done == len(texts)
    assert w.selected >= 0 and w.feature["index"] == w.selected
    assert seen and seen[-1] == len(texts)
    s = feature_pass(tiny, sae, texts, batch_size=8, progress=lambda d, t: None).summary()
    assert torch.equal(torch.from_numpy(wire.decode(w.max_act)), s["max_act"])
    # a stopped pass says so
    w2 = FeatureDashboard(tiny, sae, texts, batch_size=8)
    w2.request("stop")
    w2.wait(60)
    assert w2.status in ("stopped", "ready")
    assert w2.status == "ready" or w2.n_texts_done < len(texts)


def test_from_result_and_repr(tiny, sae, texts):
    data = feature_pass(tiny, sae, texts[:8], progress=lambda d, t: None)
    w = data.widget()
    assert isinstance(w, FeatureDashboard) and w.data is data and w.status == "ready"
    df = data.to_pandas()
    assert list(df.columns)[:3] == ["feature", "frequency", "max_act"] and len(df) == 6
    fig = data.plot(0)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="model and a dictionary"):
        FeatureDashboard()


def test_static_export_shows_list_and_first_feature_literally(dash, tiny, tmp_path, pytestconfig):
    dash.select(0)
    out = tmp_path / "dash.html"
    assert dash.to_html(out, title="<script>window.__pwned=4</script>") == out  # with a path: the path
    page_html = out.read_text(encoding="utf-8")
    assert "window.__pwned=7" in page_html and "<img src=x" not in page_html.split("<script>")[0]
    browser = launch(pytestconfig)
    try:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.resolve().as_uri())
        root = page.locator(".mw-feature-dashboard")
        root.locator(".mw-feature-row[data-feature]").first.wait_for(state="attached")
        assert root.locator(".mw-feature-row[data-feature]").count() == 6
        # explanations are shown literally
        row3 = root.locator('.mw-feature-row[data-feature="3"] .mw-fname')
        assert row3.text_content() == "#3 " + EXPL[3]
        # the first feature (0) with its examples, coloured; steering disabled without a kernel
        title = root.locator(".mw-feature-title").text_content()
        assert title == "Feature 0 · city names"
        ex = root.locator('.mw-examples[data-group="top"] .mw-example').first
        center = ex.locator(".mw-token.mw-center").text_content()
        assert center == dash.feature["top"][0]["tokens"][dash.feature["top"][0]["center"]]
        assert center in CITY_TOKENS
        assert root.locator("button.mw-steer-btn").is_disabled()
        # another feature: not in the export
        root.locator('.mw-feature-row[data-feature="2"]').click()
        assert "not in this static export" in root.locator(".mw-feature-main").text_content()
        assert page.evaluate("() => typeof window.__pwned") == "undefined"
        assert root.locator("img, b").count() == 0
        assert errors == []
        assert json.loads(json.dumps(dash.explanations)) == {"0": "city names", "3": EXPL[3]}
    finally:
        browser.close()


def test_hostile_text_tokens_render_literally_in_examples(tiny, sae, texts, tmp_path, pytestconfig):
    """Examples drawn from the hostile text (index len-1) keep its markup as literal text."""
    data = feature_pass(tiny, sae, [HOSTILE_TEXT], k=4, context=(40, 40), progress=lambda d, t: None)
    f = int(data.summary()["n_fire"].argmax())
    w = FeatureDashboard(data=data)
    w.select(f)
    out = tmp_path / "hostile.html"
    w.to_html(out)
    browser = launch(pytestconfig)
    try:
        page = browser.new_page()
        page.goto(out.resolve().as_uri())
        ex = page.locator('.mw-examples[data-group="top"] .mw-example').first
        ex.wait_for(state="attached")
        shown = "".join(ex.locator(".mw-token").all_text_contents())
        assert "<script>window.__pwned=1</script>" in shown
        assert '<img src=x onerror="window.__pwned=2">' in shown
        assert page.evaluate("() => typeof window.__pwned") == "undefined"
        assert page.locator(".mw-feature-dashboard img, .mw-feature-dashboard b").count() == 0
    finally:
        browser.close()


def test_explain_request_writes_the_explanation_and_score_badges(dash, tmp_path):
    """"explain" runs the rule explainer and scorer on the selected feature: the planted city
    feature gets a rule naming cities, badges that beat their random baselines, and a second
    request comes from the cache; a failing language model leaves the state as it was."""
    from mi_widgets.core.autointerp.client import LMError, OpenAIClient
    from mi_widgets.core.autointerp.explain import parse_rule

    saved = dict(dash.data.explanations)
    try:
        w = FeatureDashboard.from_result(
            dash.data, autointerp_cache=tmp_path / "ai.sqlite",
            autointerp_kwargs={"scores": ("simulation", "detection"), "n_negative": 4, "n_baseline": 2},
        )
        assert w.can_explain
        seen = []
        out = w._explain({"feature": 0}, lambda d, t: seen.append((d, t)))
        assert seen and seen[-1][0] == seen[-1][1]
        m = parse_rule(out["explanation"])
        assert any(m(c) for c in CITY_TOKENS) and not m(" the")
        assert w.explanations["0"] == out["explanation"] == dash.data.explanations[0]
        badges = w.scores["0"]["badges"]
        assert [b["name"] for b in badges] == ["simulation", "detection_balanced_accuracy"]
        assert all(b["value"] > b["baseline"] for b in badges) and badges[0]["value"] > 0.5
        assert w.request("explain", {"feature": 0}) == out  # cached: the same answer
        json.dumps(w.scores, allow_nan=False)  # no NaN reaches the browser
        with pytest.raises(ValueError, match="feature"):
            w.request("explain", {"feature": 99})
        broken = FeatureDashboard.from_result(dash.data, explainer=OpenAIClient("http://127.0.0.1:9/v1", "m", retries=0, timeout=2))
        with pytest.raises(LMError, match="cannot reach"):
            broken.request("explain", {"feature": 1})
        assert "1" not in broken.scores and broken.explanations.get("1", "") == saved.get(1, "")
        with pytest.raises(TypeError, match="explainer"):
            FeatureDashboard.from_result(dash.data, explainer="gpt-4")
    finally:
        dash.data.explanations.clear()
        dash.data.explanations.update(saved)


def _holding(model):
    """A thread that holds ``model.lock`` (another job on the model) until ``release`` is set."""
    import threading

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with model.lock:
            held.set()
            release.wait(60)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert held.wait(10)
    return t, release


def test_the_pass_and_a_steer_say_waiting_while_another_job_holds_the_model(tiny, sae, texts):
    """While another thread holds the model's lock, the background pass and a steer request
    wait for it with ``status == "waiting"``; once it is released both finish with the numbers
    they have without the wait."""
    seen: list[str] = []
    t, release = _holding(tiny)

    def on_status(change: dict) -> None:
        seen.append(change["new"])
        if change["new"] == "waiting":
            release.set()  # the view said so: let the other job end

    try:
        w = FeatureDashboard(tiny, sae, texts, batch_size=8, explanations=EXPL)
        w.observe(on_status, names="status")
        on_status({"new": w.status})  # the watcher may have said it before the observer was in
        assert release.wait(30), f"the pass never said waiting (statuses: {seen})"
        w.wait(120)
    finally:
        release.set()
        t.join(10)
    assert "waiting" in seen and w.status == "ready" and w.n_texts_done == len(texts)
    s = feature_pass(tiny, sae, texts, batch_size=8, progress=lambda d, t: None).summary()
    assert torch.equal(torch.from_numpy(wire.decode(w.max_act)), s["max_act"])
    assert torch.allclose(torch.from_numpy(wire.decode(w.frequency)), s["frequency"].float())

    # a steer request (a lazy fetch) waits too, then answers as without the wait
    ref = w.request("steer", {"feature": 0, "mode": "steer", "prompt": PROMPT, "coef": 6.0})
    seen.clear()
    t, release = _holding(tiny)
    try:
        out = w.request("steer", {"feature": 0, "mode": "steer", "prompt": PROMPT, "coef": 6.0})
    finally:
        release.set()
        t.join(10)
    assert "waiting" in seen and w.status == "ready"
    assert out == ref
