"""Patchscope widget: the Python side (traits, the "decode" request, caching, static export)."""

from __future__ import annotations

import json
import re

import pytest

from mi_widgets.core.description.patchscopes import patchscope
from mi_widgets.widgets.patchscope import Patchscope

SRC = "The Eiffel Tower is in"


@pytest.fixture()
def w(tiny):
    return Patchscope(tiny, SRC, n_tokens=2)


def test_initial_state(w, tiny):
    assert w.source_tokens == tiny.to_str_tokens(SRC)
    assert w.target_prompt == "The Silver Mill is in"
    assert w.target_position == len(w.target_tokens) - 1
    assert w.target_layers == list(range(tiny.n_layers + 1))
    assert w.selected_layer == -1 and w.decoded == [] and w.done_cells == []


def test_decode_request_matches_the_core_and_reports_progress(w, tiny):
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    w._on_custom_msg(w, {"kind": "mw-request", "id": "r1", "name": "decode", "msg": {"layer": 2, "position": 5}}, [])
    reply = sent[-1]
    assert reply["kind"] == "mw-response" and reply["ok"] is True, reply
    core = patchscope(tiny, SRC, [2], 5, target_layers="all", n_tokens=2)
    assert reply["response"]["texts"] == core.texts[0]
    assert w.decoded == core.texts[0]
    assert w.decoded_probs == pytest.approx(core.first_prob[0].tolist(), abs=1e-5)
    assert (w.selected_layer, w.selected_position) == (2, 5)
    assert w.done_cells == ["2,5"] and w.status == "ready" and w.progress == 1.0
    assert w.baseline == core.baseline
    prog = [m for m in sent if m["kind"] == "mw-progress"]
    assert len(prog) >= 2 and prog[-1]["done"] == prog[-1]["total"] == tiny.n_layers + 2
    assert all(t.startswith(" Paris") for t in w.decoded), w.decoded  # ground truth: layer >= 1


def test_decoded_cells_are_cached(w, tiny):
    w.decode(1, -1)
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = w.decode(1, 5)
    finally:
        h.remove()
    assert calls == [] and out["texts"] == w.decoded


def test_bad_requests_answer_with_an_error_and_keep_the_state(w):
    w.decode(1, 5)
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    for msg, match in [({"layer": 9, "position": 0}, "layer must be an int in 0..4"),
                       ({"layer": 1, "position": 40}, "position must be an int"),
                       ({"layer": "x"}, "decode needs integer")]:
        w._on_custom_msg(w, {"kind": "mw-request", "id": "e", "name": "decode", "msg": msg}, [])
        assert sent[-1]["ok"] is False and re.search(match, sent[-1]["error"]), sent[-1]
    assert (w.selected_layer, w.selected_position) == (1, 5) and w.status == "ready"


def test_constructor_validates(tiny):
    with pytest.raises(ValueError, match="target_layers"):
        Patchscope(tiny, SRC, target_layers=[7])
    with pytest.raises(ValueError, match="target_position"):
        Patchscope(tiny, SRC, target_prompt="The Silver Mill is in", target_position=50)
    with pytest.raises(ValueError, match="text is empty"):
        Patchscope(tiny, "")


def test_from_result_prefills_the_grid(tiny):
    r = patchscope(tiny, SRC, target_layers="all", n_tokens=2)
    w = r.widget()
    assert isinstance(w, Patchscope)
    assert len(w.done_cells) == tiny.n_layers + 1
    assert (w.selected_layer, w.selected_position) == (0, 5)
    assert w.decoded == r.texts[0]
    assert w.decode(3, 5)["texts"] == r.texts[3]


def test_static_export_carries_computed_cells_and_hostile_tokens_stay_data(tiny, tmp_path):
    hostile = 'x <script>window.__pwned=1</script> & </script><!-- "q"'
    w = Patchscope(tiny, hostile, n_tokens=1, layer=1, position=-1)
    w.decode(2, 3)
    html = w.to_html(tmp_path / "p.html").read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in html.split("<script>", 1)[0]
    m = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', html, re.S)
    state = json.loads(m.group(1))
    assert state["static"] is True
    assert state["source_tokens"] == w.source_tokens
    assert set(state["decoded_cache"]) == {f"1,{len(w.source_tokens) - 1}", "2,3"}
    assert state["decoded_cache"]["2,3"]["texts"] == w._memo[(2, 3)][0]
    assert "</script><script>" not in m.group(1)
