"""CircuitGraph: a circuit's edge graph as a layered DAG; prune with a slider, click a node.

See docs/widget_protocol.md ("CircuitGraph") for the traits, requests and DOM hooks.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import traitlets

from .. import wire
from ..core.circuits.circuit import Circuit, node_layer
from ._base import Field, MIWidget, bundle, check_traits, request_handler
from .code import ShowsCode, circuit_graph_code

#: edge kinds on the wire (uint8 codes index this list)
KINDS = ("", "q", "k", "v")
_HEAD = re.compile(r"^a(\d+)\.h(\d+)$")
_MLP = re.compile(r"^m(\d+)$")
#: edges listed per direction in a node's reply
TOP_EDGES = 12


def node_kind(node: str) -> tuple[str, int | None, int | None]:
    """``(kind, layer, head)`` of a node name: ``("head", L, H)``, ``("mlp", L, None)``,
    ``("input"|"logits", None, None)``."""
    if node in ("input", "logits"):
        return node, None, None
    m = _HEAD.match(node)
    if m:
        return "head", int(m.group(1)), int(m.group(2))
    m = _MLP.match(node)
    if m:
        return "mlp", int(m.group(1)), None
    raise ValueError(f"not a circuit node: {node!r}")


def _sort_key(node: str, n_layers: int) -> tuple[float, int]:
    _, _, head = node_kind(node)
    return node_layer(node, n_layers), head if head is not None else -1


def first_clean_prompt(task: Any) -> str | None:
    """The task's first clean prompt: ``task`` itself if a string, else ``task.clean`` /
    ``task["clean"]`` / ``task.pairs_clean`` (core/circuits' Task) / ``task.prompts`` (a string or a list whose first item is one, or a dict
    with ``"clean"``, ``"prompt"`` or ``"text"``); ``None`` when none is found."""

    def first(x: Any) -> str | None:
        if isinstance(x, str):
            return x
        if isinstance(x, dict):
            for key in ("clean", "prompt", "text"):
                if key in x:
                    return first(x[key])
            return None
        if isinstance(x, (list, tuple)) and x:
            return first(x[0])
        return None

    if task is None:
        return None
    if isinstance(task, (str, dict, list, tuple)):
        return first(task)
    for attr in ("pairs_clean", "clean", "clean_prompts", "prompts"):
        if hasattr(task, attr):
            got = first(getattr(task, attr))
            if got is not None:
                return got
    return None


class CircuitGraph(ShowsCode, MIWidget):
    """The edge graph of a :class:`~mi_widgets.core.circuits.circuit.Circuit` as a layered DAG
    (input at the bottom, logits on top, heads and MLPs in rows by layer). Edges are drawn on a
    canvas, coloured by the sign of their score and weighted by ``|score|``. The top-n slider
    prunes in the browser at once; on release the view asks Python for the faithfulness of that
    many edges (``circuit.faithfulness(n)``). Click a node for its top edges in and out (and a
    head's attention pattern on the task's first clean prompt); drag nodes to pin them; group
    nodes into supernodes by hand or from a suggestion.

    ``CircuitGraph.from_result(circuit, n_edges_shown=None, selected_node="", circuit_only=None)``
    (``circuit_only``: draw exactly ``in_circuit`` instead of the top n; default on for ACDC); a
    circuit displays as this view in a notebook.
    """

    _stem = "circuit_graph"

    model_name = traitlets.Unicode("").tag(sync=True)
    method = traitlets.Unicode("").tag(sync=True)
    metric_name = traitlets.Unicode("").tag(sync=True)
    n_layers = traitlets.Int(0).tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    nodes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    node_layers = traitlets.Dict().tag(sync=True)
    senders = traitlets.Dict().tag(sync=True)
    receivers = traitlets.Dict().tag(sync=True)
    kinds = traitlets.Dict().tag(sync=True)
    kind_names = traitlets.List(traitlets.Unicode(), list(KINDS)).tag(sync=True)
    scores = traitlets.Dict().tag(sync=True)
    in_circuit = traitlets.Dict().tag(sync=True)
    rank = traitlets.Dict().tag(sync=True)
    n_edges = traitlets.Int(0).tag(sync=True)
    n_in_circuit = traitlets.Int(0).tag(sync=True)
    clean_metric = traitlets.Float(float("nan"), allow_none=True).tag(sync=True)
    corrupt_metric = traitlets.Float(float("nan"), allow_none=True).tag(sync=True)
    curve = traitlets.Dict().tag(sync=True)
    n_edges_shown = traitlets.Int(0).tag(sync=True)
    circuit_only = traitlets.Bool(False).tag(sync=True)
    selected_node = traitlets.Unicode("").tag(sync=True)
    pinned = traitlets.Dict().tag(sync=True)
    groups = traitlets.List(traitlets.Dict()).tag(sync=True)
    faithfulness = traitlets.Dict().tag(sync=True)
    can_compute = traitlets.Bool(False).tag(sync=True)
    can_attend = traitlets.Bool(False).tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("ready").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        circuit: Circuit,
        *,
        n_edges_shown: int | None = None,
        selected_node: str = "",
        circuit_only: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(circuit, Circuit):
            raise TypeError(f"CircuitGraph shows a Circuit, got {type(circuit).__name__}")
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._result = circuit
        self._faith_memo: dict[int | None, float] = {}
        self._attention: Any = None
        super().__init__(**kwargs)
        with self.hold_trait_notifications():
            self._show(circuit)
            default = self.n_in_circuit if self.n_in_circuit > 0 else min(self.n_edges, 100)
            self.n_edges_shown = default if n_edges_shown is None else n_edges_shown
            # ACDC's circuit is its pruned graph, not the top edges by |score|: show it as found
            self.circuit_only = (circuit.method == "acdc" and self.n_in_circuit > 0) if circuit_only is None else circuit_only
        if selected_node:
            self.selected_node = selected_node

    # -- state ----------------------------------------------------------------------------

    def _show(self, c: Circuit) -> None:
        E = len(c.senders)
        if len(c.receivers) != E or len(c.kinds) != E:
            raise ValueError(f"senders, receivers and kinds must have one entry per edge ({E})")
        scores = torch.as_tensor(c.scores).detach().float().cpu().reshape(-1)
        keep = torch.as_tensor(c.in_circuit).detach().cpu().reshape(-1).bool()
        if scores.numel() != E or keep.numel() != E:
            raise ValueError(f"scores and in_circuit must have {E} entries, got {scores.numel()} and {keep.numel()}")
        names = list(dict.fromkeys([*c.nodes, *c.senders, *c.receivers]))
        names.sort(key=lambda n: _sort_key(n, c.n_layers))
        index = {n: i for i, n in enumerate(names)}
        kind_code = {k: i for i, k in enumerate(KINDS)}
        bad = sorted({k for k in c.kinds if k not in kind_code})
        if bad:
            raise ValueError(f"edge kinds must be one of {list(KINDS)}, got {bad}")
        self._index = index
        self.model_name, self.method, self.metric_name = c.model_name, c.method, c.metric_name
        self.n_layers, self.n_heads = int(c.n_layers), int(c.n_heads)
        self.nodes = names
        self.node_layers = wire.encode(torch.tensor([node_layer(n, c.n_layers) for n in names]), "float32")
        self.senders = wire.encode(torch.tensor([index[s] for s in c.senders], dtype=torch.int32), "int32")
        self.receivers = wire.encode(torch.tensor([index[r] for r in c.receivers], dtype=torch.int32), "int32")
        self.kinds = wire.encode(torch.tensor([kind_code[k] for k in c.kinds], dtype=torch.uint8), "uint8")
        self.scores = wire.encode(scores, "float32")
        self.in_circuit = wire.encode(keep.to(torch.uint8), "uint8")
        self.rank = wire.encode(self.edge_order().to(torch.int32), "int32")
        self.n_edges = E
        self.n_in_circuit = int(keep.sum())
        self.clean_metric = _finite(c.clean_metric)
        self.corrupt_metric = _finite(c.corrupt_metric)
        sizes, values = list(c.curve_sizes), list(c.curve_values)
        if sizes and len(sizes) == len(values):
            self.curve = wire.encode(torch.tensor([sizes, values], dtype=torch.float32).T.contiguous(), "float32")
        else:
            self.curve = {}
        self.can_compute = self._can_compute()
        prompt = first_clean_prompt(c.task)
        self.prompt = prompt or ""
        self.can_attend = c.model is not None and prompt is not None

    def _can_compute(self) -> bool:
        """``circuit.faithfulness(n)`` can run: the method exists and a task or model is attached
        (core's Circuit needs its task; it raises a clear error when something is missing)."""
        c = self._result
        return callable(getattr(c, "faithfulness", None)) and (c.task is not None or c.model is not None)

    def edge_order(self) -> torch.Tensor:
        """Edge indices by ``|score|`` descending (NaN last, ties in edge order): the view's top-n
        are the first n of this order (``Circuit.order()``, so ``faithfulness(n)`` keeps the same
        edges the view draws)."""
        if callable(getattr(self._result, "order", None)):
            return self._result.order().cpu()
        s = torch.as_tensor(self._result.scores).detach().float().cpu().reshape(-1).abs()
        s = torch.nan_to_num(s, nan=-1.0)
        return torch.argsort(-s, stable=True)

    def shown_edges(self) -> list[int]:
        """Indices of the edges the view draws now, by |score|: the top ``n_edges_shown``, or the
        circuit's own edges (``in_circuit``) when ``circuit_only``."""
        order = self.edge_order()
        if self.circuit_only:
            keep = torch.as_tensor(self._result.in_circuit).reshape(-1).bool().cpu()
            return [i for i in order.tolist() if keep[i]]
        return order[: self.n_edges_shown].tolist()

    _write_code = staticmethod(circuit_graph_code)  # code(): see ShowsCode

    _check = check_traits(
        n_edges_shown=Field(int, min=0, max=lambda w: w.n_edges),
        # a node, a supernode (group) by name, or "" for none
        selected_node=Field(str, max=10_000, choices=lambda w: ["", *w._index, *(g.get("name") for g in w.groups)]),
    )

    def select(self, node: str) -> None:
        """Select ``node`` (``""`` clears); unknown names raise."""
        if node and node not in self._index:
            raise ValueError(f"unknown node {node!r}")
        self.selected_node = node

    # -- requests -------------------------------------------------------------------------

    def _check_n(self, n: Any) -> int:
        if isinstance(n, bool) or not isinstance(n, int):
            if isinstance(n, float) and n.is_integer():
                n = int(n)
            else:
                raise ValueError(f"n must be an int, got {n!r}")
        if not 0 <= n <= self.n_edges:
            raise ValueError(f"n must be in 0..{self.n_edges}, got {n}")
        return n

    def faithfulness_at(self, n: int) -> tuple[float, str]:
        """The faithfulness of the top-``n`` edges and where it came from: ``"computed"``
        (``circuit.faithfulness(n)``) or ``"curve"`` (the circuit's recorded curve at exactly n)."""
        n = self._check_n(n)
        c = self._result
        if n in self._faith_memo:
            return self._faith_memo[n], "computed"
        if self._can_compute():
            value = float(c.faithfulness(n))
            self._faith_memo[n] = value
            return value, "computed"
        if n in c.curve_sizes:
            return float(c.curve_values[c.curve_sizes.index(n)]), "curve"
        raise ValueError(
            "no model attached to this circuit, so the faithfulness of "
            f"{n} edges cannot be computed (the recorded curve has sizes {list(c.curve_sizes)[:8]})"
        )

    def circuit_faithfulness(self) -> float:
        """The faithfulness of the circuit's own edges (``circuit.faithfulness(None)``, which keeps
        ``in_circuit``)."""
        c = self._result
        if not self._can_compute():
            raise ValueError("no model attached to this circuit, so the faithfulness of its edges cannot be computed")
        if None not in self._faith_memo:
            self._faith_memo[None] = float(c.faithfulness(None))
        return self._faith_memo[None]

    @request_handler("faithfulness")
    def _faithfulness(self, msg: dict, progress: Any) -> dict:
        """``{n}``: the top-n edges; ``{circuit: true}``: the circuit's own edges."""
        if "circuit" in msg:
            if msg["circuit"] is not True or "n" in msg:
                raise ValueError(f"circuit must be true, without n; got {msg!r}"[:120])
            n: int | None = None
        else:
            n = self._check_n(msg.get("n"))
        prev = self.status
        self.status = "running"
        try:
            value, source = (self.circuit_faithfulness(), "computed") if n is None else self.faithfulness_at(n)
        except Exception:
            self.status = prev
            raise
        reply = {"n": n, "value": _finite(value), "source": source, **({"circuit": True} if n is None else {})}
        with self.hold_trait_notifications():
            self.faithfulness = reply
            self.status = "ready"
        return reply

    def node_edges(self, node: str, k: int = TOP_EDGES) -> dict:
        """A node's top-``k`` incoming and outgoing edges by ``|score|``: ``{"in": [[edge, score],
        ...], "out": [...]}``."""
        c = self._result
        scores = torch.as_tensor(c.scores).detach().float().cpu().reshape(-1)
        out: dict[str, list] = {}
        for key, ends in (("in", c.receivers), ("out", c.senders)):
            idx = [i for i, e in enumerate(ends) if e == node]
            idx.sort(key=lambda i: (-abs(float(scores[i])) if math.isfinite(float(scores[i])) else 1.0, i))
            out[key] = [[i, _finite(float(scores[i]))] for i in idx[:k]]
        return out

    def head_pattern(self, node: str) -> dict | None:
        """The head's attention pattern ``[T, T]`` (query, key) on the task's first clean prompt,
        as a uint8 wire array, with its tokens; ``None`` when there is no model or prompt."""
        kind, layer, head = node_kind(node)
        if kind != "head" or not self.can_attend:
            return None
        if self._attention is None:
            from ..core.description.attention import attention

            self._attention = attention(self._result.model, self.prompt)
        att = self._attention
        if not (layer < att.patterns.shape[0] and head < att.patterns.shape[1]):
            raise ValueError(f"{node} is outside the model ({att.patterns.shape[0]} layers × {att.patterns.shape[1]} heads)")
        return {"tokens": list(att.str_tokens), "pattern": wire.quantize(att.patterns[layer, head], 8)}

    @request_handler("node")
    def _node(self, msg: dict, progress: Any) -> tuple[dict, list]:
        node = msg.get("node")
        if not isinstance(node, str) or node not in self._index:
            raise ValueError(f"unknown node {node!r}")
        kind, layer, head = node_kind(node)
        reply: dict = {"node": node, "kind": kind, "layer": layer, "head": head, "edges": self.node_edges(node)}
        buffers: list = []
        pat = self.head_pattern(node)
        if pat is not None:
            buffers.append(pat["pattern"].pop("buffer"))
            reply.update(pat)
        return reply, buffers

    # -- static export --------------------------------------------------------------------

    def _static_extra(self, budget: int) -> dict:
        """Attention patterns of the selected head and of the heads with the largest summed
        ``|score|`` over the shown edges (8 in an export, 2 in a notebook's saved copy)."""
        if not self.can_attend:
            return {"node_cache": {}}
        n = 8 if budget >= 64 else 2
        weight: dict[str, float] = {}
        scores = torch.as_tensor(self._result.scores).detach().float().cpu().reshape(-1)
        for i in self.shown_edges():
            for end in (self._result.senders[i], self._result.receivers[i]):
                if end.startswith("a"):
                    weight[end] = weight.get(end, 0.0) + abs(float(scores[i]))
        heads = sorted(weight, key=lambda h: -weight[h])[:n]
        sel = self.selected_node
        if sel in self._index and node_kind(sel)[0] == "head":
            heads = [sel, *[h for h in heads if h != sel]][:n]
        cache = {}
        for h in heads:
            try:
                pat = self.head_pattern(h)
            except Exception:  # noqa: BLE001 - a static copy without attention still shows the graph
                break
            if pat is not None:
                cache[h] = pat
        return {"node_cache": cache}

    def _fallback_text(self) -> str:
        return (
            f"CircuitGraph · {self.model_name} · {self.method} · {self.metric_name} · "
            f"{self.n_edges_shown}/{self.n_edges} edges shown"
        )


def _finite(x: float) -> float | None:
    """JSON has no NaN: non-finite values travel as null."""
    x = float(x)
    return x if math.isfinite(x) else None
