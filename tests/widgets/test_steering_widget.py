"""Steering widget handlers: generation equals core generate, tokens stream one at a time,
cancel leaves the model clean, sweep values equal the core sweep, errors before compute,
static export keeps hostile tokens literal."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mi_widgets import wire
from mi_widgets.core.description import steering as S
from mi_widgets.core.metrics import logit_diff
from mi_widgets.widgets.steering import Steering
from mi_widgets.zoo import corpus
from tests._browser import HOSTILE_TOKENS

PROMPT = "The food was red and the staff were small. Overall the review is"


@pytest.fixture(scope="module")
def sentiment(tiny):
    ex = corpus.sentiment_examples("id", n=20)
    return S.steering_vector(
        tiny, [e["text"] for e in ex if e["label"]], [e["text"] for e in ex if not e["label"]], layer=0, name="sentiment"
    )


@pytest.fixture()
def w(tiny, sentiment):
    return Steering(tiny, "The food was", {"sentiment": sentiment, "random": torch.randn(128, generator=torch.Generator().manual_seed(0))}, layer=0, coef=-3.0, max_new_tokens=12)


def _no_hooks(model):
    """No hooks left on the model's modules, except transformers' own output-capturing hooks
    (installed, for good, the first time anyone asks for hidden states or attentions)."""

    def ours(hooks):
        return [h for h in hooks.values() if getattr(h, "__module__", "") != "transformers.utils.output_capturing"]

    return all(not ours(m._forward_hooks) and not ours(m._forward_pre_hooks) for m in model.hf.modules())


def test_widget_generation_equals_core_generate(tiny, sentiment, w):
    res = w.generate()
    ref = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=-3.0, max_new_tokens=12)
    assert res.steered_ids == ref.steered_ids and res.baseline_ids == ref.baseline_ids
    assert w.steered_tokens == ref.steered_tokens and w.baseline_tokens == ref.baseline_tokens
    assert w.status == "ready" and w.gen_coef == -3.0 and w.gen_prompt == "The food was"
    assert w.steered_tokens != w.baseline_tokens


def test_tokens_stream_into_the_traits_one_step_at_a_time(tiny, w):
    seen: list[int] = []
    w.observe(lambda ch: seen.append(len(ch["new"])), names=["steered_tokens"])
    assert w.request("generate", {"coef": 4.0, "max_new_tokens": 10}) == {"started": True}
    w.wait(60)
    assert w.status == "ready"
    n = len(w.steered_tokens)
    assert n > 1 and seen == list(range(1, n + 1))  # one token per push
    ref = S.steer_generate(tiny, "The food was", w.vectors["sentiment"], layer=0, coef=4.0, max_new_tokens=10)
    assert w.steered_tokens == ref.steered_tokens


def test_cancel_stops_generation_and_leaves_the_model_clean(tiny, w):
    ids = tiny.to_tokens(PROMPT)
    with torch.no_grad():
        before = tiny.hf(ids).logits
    counts: list[int] = []

    def on_tok(ch):
        counts.append(len(ch["new"]))
        if len(ch["new"]) == 2:
            w.request("cancel")

    w.observe(on_tok, names=["steered_tokens"])
    w.request("generate", {"coef": 9.0, "max_new_tokens": 100, "vector": "random"})
    w.wait(60)
    assert w.status == "cancelled"
    assert w.result is not None and w.result.cancelled and len(w.steered_tokens) < 100
    assert _no_hooks(tiny)
    with torch.no_grad():
        torch.testing.assert_close(tiny.hf(ids).logits, before, atol=0, rtol=0)
    # the panel works again afterwards
    assert w.generate(coef=0.0).steered_ids == w.result.baseline_ids


def test_sweep_request_plots_the_core_sweep(tiny, sentiment, w):
    out = w.request("sweep", {"prompt": PROMPT, "coefs": [-2, -1, 0, 1, 2], "metric_a": " positive", "metric_b": " negative"})
    assert out["n"] == 5
    ref = S.steering_sweep(tiny, PROMPT, sentiment, logit_diff(" positive", " negative"), coefs=[-2, -1, 0, 1, 2])
    np.testing.assert_allclose(wire.decode(w.sweep_values), ref.mean.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(wire.decode(w.sweep_coefs), [-2, -1, 0, 1, 2])
    assert w.metric_name == "logit_diff(' positive', ' negative')"
    vals = wire.decode(w.sweep_values)
    assert vals[0] < 0 < vals[-1] and (np.diff(vals) > 0).all()


def test_bad_requests_reply_errors_and_run_nothing(tiny, w):
    for msg, pat in (
        ({"vector": "nope"}, "unknown vector"),
        ({"layer": 7}, "out of range"),
        ({"site": "attn_pattern"}, "cannot be steered"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt": ""}, "empty"),
    ):
        with pytest.raises(ValueError, match=pat):
            w.request("generate", msg)
        assert not w._lock.locked() and w.status == "ready"
    with pytest.raises(ValueError, match="not exactly one token"):
        w.request("sweep", {"metric_a": " positively", "metric_b": " negative"})
    with pytest.raises(ValueError, match="d_model"):
        Steering(tiny, "x", {"bad": torch.zeros(5)}, layer=0)


def test_static_export_keeps_hostile_tokens_literal(tiny, w):
    g = w.generate(max_new_tokens=3)
    g.steered_tokens = list(HOSTILE_TOKENS)
    g.baseline_tokens = ["<b>bold</b>", "&lt;"]
    w.show_generation(g)
    w.sweep(coefs=[-1, 0, 1])
    page = w.to_html()
    data = re.search(r'<script type="application/json" id="(mw-[0-9a-f]+)-state">(.*?)</script>', page, re.S).group(2)
    assert "<script>window" not in data and "<img" not in data
    state = json.loads(data)
    assert state["steered_tokens"] == list(HOSTILE_TOKENS) and state["static"] is True
    assert state["sweep_values"]["b64"]


def test_results_open_the_panel(tiny, sentiment):
    g = S.steer_generate(tiny, "The food was", sentiment, layer=0, coef=2.0, max_new_tokens=5)
    w = g.widget(tiny, sentiment)
    assert w.steered_tokens == g.steered_tokens and w.gen_coef == 2.0 and w.vector == g.vector_name == "sentiment"
    sw = S.steering_sweep(tiny, PROMPT, sentiment, logit_diff(" positive", " negative"), coefs=[-1, 0, 1])
    w2 = sw.widget(tiny, sentiment)
    np.testing.assert_allclose(wire.decode(w2.sweep_values), sw.mean.numpy(), rtol=1e-6)
    r = S.steer(tiny, PROMPT, sentiment, coef=-1.0)
    w3 = r.widget(tiny, sentiment)
    assert (w3.prompt, w3.coef, w3.layer, w3.site) == (PROMPT, -1.0, 0, "resid_post")
    r.plot()
    assert list(r.to_pandas().columns) == ["run", "rank", "token", "id", "prob", "logit"]
    g.plot()
    assert len(g.to_pandas()) == len(g.baseline_ids) + len(g.steered_ids)
