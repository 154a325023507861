"""LogitLens (mi_widgets/widgets/logit_lens.py): traits from a LensResult, the "lens" and
"target" requests, static export. On the embedded trained model (zoo:tiny): "The Eiffel Tower
is in" → " Paris" (ground truth, figures.facts); needs the built JS bundle."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mi_widgets import wire
from mi_widgets.core.description.lens import TunedLens, logit_lens, train_tuned_lens, tuned_lens
from mi_widgets.widgets.logit_lens import LogitLens

PROMPT = "The Eiffel Tower is in"


@pytest.fixture(scope="module")
def lens(tiny):
    return train_tuned_lens(tiny, steps=40, n_texts=48, batch_tokens=128, progress=False)


@pytest.fixture(scope="module")
def result(tiny):
    return logit_lens(tiny, PROMPT, k=5)


@pytest.fixture
def view(result, lens):
    return result.widget(tuned=lens)


def dec(w):
    return torch.from_numpy(np.array(wire.decode(w)))


def check_payload(w, res):
    """The view's arrays are the result's (ids exact; float16 probabilities to 3 digits)."""
    assert w.top_ids["dtype"] == "int32" and w.top_probs["dtype"] == "float16"
    assert w.top_ids["shape"] == list(res.top_ids.shape)
    assert torch.equal(dec(w.top_ids), res.top_ids.long())
    torch.testing.assert_close(dec(w.top_probs), res.top_probs, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(dec(w.kl), res.kl, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(dec(w.final_prob), res.final_prob, atol=1e-3, rtol=1e-3)
    assert {int(i) for i in w.vocab} >= set(res.top_ids.unique().tolist())
    assert all(w.vocab[str(i)] == t for i, t in res.vocab.items())


def test_traits_from_result(view, result, tiny):
    assert isinstance(view, LogitLens)
    assert view.tokens == result.str_tokens == ["<|endoftext|>", "The", " Eiffel", " Tower", " is", " in"]
    assert view.layer_names == ["embed"] + [f"resid_post {i}" for i in range(tiny.n_layers)]
    assert view.lens == "logit" and view.lenses == ["logit", "tuned"] and view.can_compute
    assert view.final_tokens[-1] == " Paris" and view.target == "" and view.target_id == -1
    assert view.target_prob == {}
    check_payload(view, result)
    # only the top-k travels: ids int32 + probs float16 per cell, nothing vocabulary-sized
    rows, t = len(view.layer_names), len(view.tokens)
    assert wire.nbytes(view.state()) == rows * t * 5 * (4 + 2) + 2 * rows * t * 2
    assert LogitLens.from_result(result).lenses == ["logit"]


def test_switch_to_the_tuned_lens_and_back(view, result, tiny, lens):
    assert view.request("lens", {"lens": "tuned"}) == {"lens": "tuned"}
    assert view.lens == "tuned" and view.status == "ready"
    check_payload(view, tuned_lens(tiny, PROMPT, lens))
    assert view.result.lens == "tuned"
    view.request("lens", {"lens": "logit"})
    assert view.result is result  # cached
    check_payload(view, result)


def test_target_request_and_line(view, tiny, lens):
    # default line: the model's final top-1 at the position (" Paris" at the last one)
    line = view.target_line(5)
    assert line == pytest.approx(logit_lens(tiny, PROMPT, target=" Paris").target_prob[:, 5].tolist(), abs=1e-6)
    assert line[1:] == pytest.approx([float(x) for x in dec(view.final_prob)[1:, 5]], abs=1e-3)
    out = view.request("target", {"token": " Rome"})
    ref = logit_lens(tiny, PROMPT, target=" Rome")
    assert out == {"target": " Rome", "target_id": ref.target_id}
    assert view.target == " Rome" and view.target_id == ref.target_id
    torch.testing.assert_close(dec(view.target_prob), ref.target_prob, atol=1e-3, rtol=1e-3)
    assert view.target_line(5) == pytest.approx(ref.target_prob[:, 5].tolist(), abs=1e-7)
    # the target is kept across a lens switch
    view.set_lens("tuned")
    tref = tuned_lens(tiny, PROMPT, lens, target=" Rome")
    torch.testing.assert_close(dec(view.target_prob), tref.target_prob, atol=1e-3, rtol=1e-3)
    # clearing returns to the final top-1
    view.request("target", {"token": ""})
    assert view.target_id == -1 and view.target_prob == {} and view.lens == "tuned"


def test_errors_are_reported(view, result, reply):
    before = view.top_ids
    with pytest.raises(ValueError, match="one token"):
        view.request("target", {"token": " Eiffel Tower Paris"})
    assert view.error and view.status == "ready" and view.top_ids == before
    r = reply(view, "lens", {"lens": "nope"})
    assert r["ok"] is False and "lens must be one of" in r["error"]
    r = reply(view, "target", {"token": [1]})
    assert r["ok"] is False and "token must be" in r["error"]
    bare = LogitLens.from_result(result)
    with pytest.raises(ValueError, match="no tuned lens"):
        bare.set_lens("tuned")
    with pytest.raises(ValueError, match="position must be"):
        view.target_line(99)
    with pytest.raises(TypeError, match="LensResult"):
        LogitLens("not a result")
    view.request("lens", {"lens": "logit"})
    assert view.error == ""


def test_from_a_tuned_result(tiny, lens):
    res = tuned_lens(tiny, PROMPT, lens, target=" Paris")
    w = res.widget()
    assert w.lens == "tuned" and w.lenses == ["logit", "tuned"] and w.target == " Paris"
    check_payload(w, res)
    w.set_lens("logit")
    check_payload(w, logit_lens(tiny, PROMPT, target=" Paris"))
    # a lens for other rows is refused before anything is shown
    other = TunedLens(["embed", "resid_mid 0"], tiny.d_model, tiny.name)
    with pytest.raises(ValueError, match="no translator"):
        logit_lens(tiny, PROMPT).widget(tuned=other)


def test_static_html(view, tiny, lens):
    hostile = logit_lens(tiny, "<script>window.__pwned=1</script> is in", k=3)
    page = hostile.widget(tuned=lens).to_html()
    m = re.search(r'<script type="application/json" id="mw-[0-9a-f]+-state">(.*?)</script>', page, re.S)
    state = json.loads(m.group(1))
    assert state["static"] is True and "<script>window" not in m.group(1)
    assert state["tokens"] == hostile.str_tokens
    assert set(state["lens_cache"]) == {"logit", "tuned"}
    tuned = tuned_lens(tiny, hostile.text, lens, k=3)
    cached = state["lens_cache"]["tuned"]
    assert torch.equal(torch.from_numpy(np.array(wire.decode(cached["top_ids"]))), tuned.top_ids.long())
    assert "b64" in cached["top_probs"] and "MIWidgets" in page
    small = view._repr_mimebundle_()
    data = small[0] if isinstance(small, tuple) else small
    assert "text/html" in data
    bundle = logit_lens(tiny, PROMPT)._repr_mimebundle_()
    assert "text/html" in (bundle[0] if isinstance(bundle, tuple) else bundle)
