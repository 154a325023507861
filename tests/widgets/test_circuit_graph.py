"""CircuitGraph (mi_widgets/widgets/circuit_graph.py): traits and wire arrays, the "faithfulness"
and "node" requests (replies against direct computations; invalid messages change nothing),
selection traits, static export. Circuits are built by hand on zoo:ioi's node names (3 layers ×
4 heads) with synthetic scores; the attention test loads zoo:ioi. Needs the built JS bundle."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import torch
import traitlets

import mi_widgets as mw
from mi_widgets import wire
from mi_widgets.core.circuits.circuit import Circuit, node_layer
from mi_widgets.widgets.circuit_graph import CircuitGraph, first_clean_prompt

L, H = 3, 4
NODES = ["input", *[f"a{i}.h{h}" for i in range(L) for h in range(H)], *[f"m{i}" for i in range(L)], "logits"]
#: the view's node order: by drawing height (input, a0.*, m0, a1.*, m1, ..., logits)
ORDER = ["input", *[n for i in range(L) for n in [*[f"a{i}.h{h}" for h in range(H)], f"m{i}"]], "logits"]
PROMPT = "When Nora and Daniel went to the store, Daniel gave a drink to"


def all_edges() -> tuple[list[str], list[str], list[str]]:
    """Every residual edge of the graph (q/k/v into heads), EAP-IG style."""
    s, r, k = [], [], []
    for a in NODES:
        for b in NODES:
            if a == "logits" or b == "input" or not node_layer(b, L) > node_layer(a, L):
                continue
            for kind in ("q", "k", "v") if b.startswith("a") else ("",):
                s.append(a)
                r.append(b)
                k.append(kind)
    return s, r, k


def make_circuit(cls=Circuit, seed: int = 0, **kw) -> Circuit:
    s, r, k = all_edges()
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(s), generator=g)
    keep = scores.abs() > 1.5
    args = dict(
        model_name="zoo:ioi", n_layers=L, n_heads=H, method="eap", metric_name="logit_diff",
        senders=s, receivers=r, kinds=k, scores=scores, in_circuit=keep, nodes=list(NODES),
        clean_metric=2.5, corrupt_metric=-1.0, curve_sizes=[10, 20], curve_values=[0.4, 0.8],
    )
    args.update(kw)
    return cls(**args)


@dataclass(repr=False)
class WithFaithfulness(Circuit):
    """A Circuit whose faithfulness(n) is a known function of n, recording its calls."""

    def faithfulness(self, n: int) -> float:
        self.info.setdefault("calls", []).append(n)
        return n / self.n_edges


@pytest.fixture
def circuit() -> Circuit:
    return make_circuit()


@pytest.fixture
def w(circuit) -> CircuitGraph:
    return CircuitGraph.from_result(circuit)


def dec(trait: dict) -> torch.Tensor:
    return torch.from_numpy(wire.decode(trait).copy())


def snapshot(w: CircuitGraph) -> str:
    return json.dumps(wire.to_static(w.state()), sort_keys=True, default=str)


# --------------------------------------------------------------------------------------------


def test_a_circuit_displays_as_the_graph(circuit):
    w = circuit.widget()
    assert isinstance(w, CircuitGraph)
    assert w.result is circuit
    assert mw.CircuitGraph is CircuitGraph if hasattr(mw, "CircuitGraph") else True


def test_wire_arrays_index_the_node_list(w, circuit):
    assert w.nodes == ORDER
    s, r = dec(w.senders).tolist(), dec(w.receivers).tolist()
    kinds = [w.kind_names[int(i)] for i in dec(w.kinds)]
    assert [w.nodes[i] for i in s] == circuit.senders
    assert [w.nodes[i] for i in r] == circuit.receivers
    assert kinds == circuit.kinds
    assert w.scores["dtype"] == "float32" and w.senders["dtype"] == "int32"
    assert torch.equal(dec(w.scores), circuit.scores)
    assert dec(w.in_circuit).bool().tolist() == circuit.in_circuit.tolist()
    assert dec(w.node_layers).tolist() == [node_layer(n, L) for n in ORDER]
    # top-n = first n of the order by |score|
    rank = dec(w.rank).tolist()
    mags = circuit.scores.abs()[rank]
    assert (mags[:-1] >= mags[1:]).all()
    assert sorted(rank) == list(range(circuit.n_edges))
    assert w.n_edges == circuit.n_edges and w.n_in_circuit == int(circuit.in_circuit.sum())
    assert w.n_edges_shown == w.n_in_circuit
    assert dec(w.curve).tolist() == [[10.0, 0.4000000059604645], [20.0, 0.800000011920929]]
    assert set(w.shown_edges()) == set(torch.nonzero(circuit.in_circuit).flatten().tolist())


def test_nodes_sorted_by_layer_when_given_unordered():
    c = make_circuit(nodes=list(reversed(NODES)))
    assert CircuitGraph(c).nodes == ORDER
    assert CircuitGraph(make_circuit(nodes=[])).nodes == ORDER  # taken from the edges


def test_faithfulness_request_calls_the_circuits_method():
    c = make_circuit(WithFaithfulness, model=object())
    w = CircuitGraph(c)
    assert w.can_compute
    reply = w.request("faithfulness", {"n": 12})
    assert reply == {"n": 12, "value": pytest.approx(12 / c.n_edges), "source": "computed"}
    assert c.info["calls"] == [12]
    assert w.faithfulness["n"] == 12 and w.status == "ready"
    w.request("faithfulness", {"n": 12})
    assert c.info["calls"] == [12]  # memoised
    assert w.request("faithfulness", {"n": 0})["value"] == 0.0


def test_faithfulness_without_a_model_is_a_clear_error_and_changes_nothing(w):
    assert not w.can_compute
    before = snapshot(w)
    with pytest.raises(ValueError, match="no model attached"):
        w.request("faithfulness", {"n": 11})
    assert snapshot(w) == before
    # sizes on the recorded curve are answered from it
    assert w.request("faithfulness", {"n": 20}) == {"n": 20, "value": pytest.approx(0.8), "source": "curve"}


@pytest.mark.parametrize("msg", [{}, {"n": "5"}, {"n": True}, {"n": -1}, {"n": 10**6}, {"n": 2.5}, {"n": None}, {"n": [3]}])
def test_invalid_faithfulness_messages_are_rejected_without_state_change(msg):
    c = make_circuit(WithFaithfulness, model=object())
    w = CircuitGraph(c)
    before = snapshot(w)
    with pytest.raises(ValueError, match="n must be"):
        w.request("faithfulness", msg)
    assert snapshot(w) == before
    assert "calls" not in c.info


@pytest.mark.parametrize("msg", [{}, {"node": 3}, {"node": "a9.h9"}, {"node": "<script>"}, {"node": ["m0"]}])
def test_invalid_node_messages_are_rejected_without_state_change(w, msg):
    before = snapshot(w)
    with pytest.raises(ValueError, match="unknown node"):
        w.request("node", msg)
    assert snapshot(w) == before


def test_rejections_travel_as_ok_false_replies(w, monkeypatch):
    sent = []
    monkeypatch.setattr(w, "send", lambda content, buffers=None: sent.append(content))
    w._on_custom_msg(w, {"kind": "mw-request", "id": "x1", "name": "faithfulness", "msg": {"n": "many"}}, [])
    w._on_custom_msg(w, {"kind": "mw-request", "id": "x2", "name": "node", "msg": {"node": "a0.h9"}}, [])
    assert [s["ok"] for s in sent] == [False, False]
    assert "n must be an int" in sent[0]["error"]
    assert "unknown node" in sent[1]["error"]


def test_node_reply_lists_top_edges_in_and_out(w, circuit):
    reply, buffers = CircuitGraph._node(w, {"node": "m1"}, None)
    assert buffers == [] and "pattern" not in reply  # an MLP: edges only
    assert reply["kind"] == "mlp" and reply["layer"] == 1
    for key, ends in (("in", circuit.receivers), ("out", circuit.senders)):
        idx = [i for i, e in enumerate(ends) if e == "m1"]
        top = sorted(idx, key=lambda i: -abs(float(circuit.scores[i])))[:12]
        assert [e for e, _ in reply["edges"][key]] == top
        assert [s for _, s in reply["edges"][key]] == pytest.approx([float(circuit.scores[i]) for i in top])


@pytest.fixture(scope="module")
def ioi_model():
    return mw.load("zoo:ioi")


def test_head_node_sends_its_attention_pattern_as_uint8(ioi_model):
    c = make_circuit(model=ioi_model, task={"clean": [PROMPT, "other"]})
    w = CircuitGraph(c)
    assert w.can_attend and w.prompt == PROMPT
    reply, buffers = CircuitGraph._node(w, {"node": "a2.h1"}, None)
    ref = mw.attention(ioi_model, PROMPT)
    assert reply["tokens"] == ref.str_tokens
    pat = {**reply["pattern"], "buffer": buffers[0]}
    assert pat["dtype"] == "uint8" and pat["shape"] == [len(ref.str_tokens)] * 2
    got = torch.from_numpy(wire.decode(pat).copy())
    assert (got - ref.patterns[2, 1]).abs().max() <= pat["scale"] / 2 + 1e-6
    # static export carries the heads of the shown edges, the selected one first
    w.selected_node = "a0.h3"
    cache = w._static_extra(512)["node_cache"]
    assert next(iter(cache)) == "a0.h3" and len(cache) <= 8


def test_first_clean_prompt_forms():
    assert first_clean_prompt(PROMPT) == PROMPT
    assert first_clean_prompt([{"text": PROMPT}]) == PROMPT
    assert first_clean_prompt({"clean": [PROMPT]}) == PROMPT

    class Task:
        clean = [PROMPT]

    assert first_clean_prompt(Task()) == PROMPT
    assert first_clean_prompt(None) is None and first_clean_prompt(3) is None


def test_selection_traits_round_trip(w):
    w.selected_node = "a1.h2"
    assert w.selected_node == "a1.h2" and w.error == ""
    with pytest.raises(traitlets.TraitError, match="selected_node .*'a7.h7'"):  # unknown: refused
        w.selected_node = "a7.h7"
    assert w.selected_node == "a1.h2"
    with pytest.raises(ValueError):
        w.select("nope")
    w.select("")
    assert w.selected_node == ""
    w.n_edges_shown = 5
    assert w.n_edges_shown == 5 and len(w.shown_edges()) == 5
    for bad in (10**6, -3, w.n_edges + 1):  # out of 0..n_edges: refused, the view keeps its 5
        with pytest.raises(traitlets.TraitError, match=rf"n_edges_shown must be an int in 0\.\.{w.n_edges}"):
            w.n_edges_shown = bad
        assert w.n_edges_shown == 5
    w.n_edges_shown = w.n_edges
    assert len(w.shown_edges()) == w.n_edges
    w.pinned = {"a0.h1": [0.25, 0.5]}
    w.groups = [{"name": "G1", "nodes": ["a1.h0", "a1.h1"]}]
    w.selected_node = "G1"  # a supernode is selectable by name
    assert w.selected_node == "G1"
    state = w.state()
    assert state["pinned"] == {"a0.h1": [0.25, 0.5]} and state["groups"][0]["name"] == "G1"


def test_bad_circuits_are_refused():
    with pytest.raises(TypeError):
        CircuitGraph("not a circuit")
    with pytest.raises(ValueError, match="one entry per edge"):
        CircuitGraph(make_circuit(kinds=["q"]))
    c = make_circuit()
    with pytest.raises(ValueError, match="edge kinds"):
        CircuitGraph(make_circuit(kinds=["x"] * c.n_edges))


def test_to_html_is_static_self_contained_and_escaped(tmp_path, circuit):
    w = CircuitGraph(circuit, n_edges_shown=7, selected_node="m0")
    w.groups = [{"name": "</script><script>window.__pwned=1</script>", "nodes": ["a0.h0", "a0.h1"]}]
    path = tmp_path / "graph.html"
    w.to_html(path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "http" not in page.split("<script>")[0]
    assert "MIWidgets" in page and "circuit_graph" in page
    assert "<script>window.__pwned" not in page
    data = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S).group(1)
    state = json.loads(data)
    assert state["static"] is True and state["n_edges_shown"] == 7 and state["selected_node"] == "m0"
    assert "b64" in state["scores"] and "buffer" not in state["scores"]
    assert state["node_cache"] == {}  # no model: no attention to carry
    assert "7/" in w._fallback_text()


def test_on_a_real_eap_circuit_the_readout_is_the_circuits_faithfulness(ioi_model):
    """EAP on zoo:ioi (core/circuits): the view's top-n are Circuit.order()'s, the faithfulness
    request answers circuit.faithfulness(n), and a head's attention uses the task's first prompt."""
    import random

    from mi_widgets.core.circuits import edge_attribution_patching
    from mi_widgets.zoo import compiled

    ps = compiled.ioi_prompts(2, seed=1)
    rng = random.Random(0)
    clean, corrupt = [], []
    for p in ps:
        a, b, c = rng.sample([n for n in compiled.IOI_NAMES if " " + n not in (p["io"], p["s"])], 3)
        clean.append(p["text"])
        corrupt.append(compiled.IOI_TEMPLATES[p["template"]].format(A=a, B=b, S=c))
    metric = mw.logit_diff([p["io"] for p in ps], [p["s"] for p in ps])
    circ = edge_attribution_patching(ioi_model, clean, corrupt, metric, curve=False, top_n=20, progress=False)
    w = circ.widget()
    assert isinstance(w, CircuitGraph) and w.can_compute and w.n_edges_shown == 20
    assert set(w.nodes) >= set(circ.senders) | set(circ.receivers)
    assert dec(w.rank).tolist() == circ.order().tolist()
    reply = w.request("faithfulness", {"n": 20})
    assert reply["source"] == "computed"
    assert reply["value"] == pytest.approx(circ.faithfulness(20))
    assert w.prompt == clean[0]
    head = next(circ.receivers[i] for i in w.shown_edges() if circ.receivers[i].startswith("a"))
    reply, buffers = CircuitGraph._node(w, {"node": head}, None)
    assert reply["tokens"] == mw.attention(ioi_model, clean[0]).str_tokens and len(buffers) == 1


def test_a_failing_attention_pass_does_not_break_the_static_copy():
    class Broken:
        pass  # not a Model: attention() fails on it

    w = CircuitGraph(make_circuit(model=Broken(), task=PROMPT), selected_node="a0.h0")
    assert w.can_attend
    with pytest.raises(TypeError, match="must be a mi_widgets Model"):  # the live request says why
        w.request("node", {"node": "a0.h0"})
    assert w._static_extra(32) == {"node_cache": {}}
    assert "circuit_graph" in w.html_fragment(32)


def test_circuit_only_shows_the_methods_own_edges_and_asks_for_their_faithfulness():
    """ACDC's circuit is its pruned graph: the view starts on exactly in_circuit, and
    ``{circuit: true}`` answers ``circuit.faithfulness(None)``."""

    @dataclass(repr=False)
    class Pruned(Circuit):
        def faithfulness(self, n=None):
            self.info.setdefault("calls", []).append(n)
            return 0.5 if n is None else n / self.n_edges

    s, r, k = all_edges()
    keep = torch.zeros(len(s), dtype=torch.bool)
    keep[[3, 50, 100]] = True  # not the top 3 by |score|
    c = make_circuit(Pruned, method="acdc", in_circuit=keep, model=object())
    w = CircuitGraph(c)
    assert w.circuit_only is True
    assert sorted(w.shown_edges()) == [3, 50, 100]
    assert w.request("faithfulness", {"circuit": True}) == {"n": None, "value": 0.5, "source": "computed", "circuit": True}
    assert c.info["calls"] == [None]
    assert w.faithfulness["circuit"] is True
    before = snapshot(w)
    for bad in ({"circuit": False}, {"circuit": 1}, {"circuit": True, "n": 3}):
        with pytest.raises(ValueError, match="circuit must be true"):
            w.request("faithfulness", bad)
    assert snapshot(w) == before
    w.circuit_only = False
    assert len(w.shown_edges()) == w.n_edges_shown == 3
    assert CircuitGraph(make_circuit()).circuit_only is False  # score methods: top n
    with pytest.raises(ValueError, match="no model attached"):
        CircuitGraph(make_circuit()).request("faithfulness", {"circuit": True})
