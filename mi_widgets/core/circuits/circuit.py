"""The circuit graph's vocabulary and the :class:`Circuit` result every discovery method returns.

Nodes (strings, EAP-IG / auto-circuit naming): ``"input"`` (token + position embeddings),
``"a{L}.h{H}"`` (attention head H of layer L), ``"m{L}"`` (the MLP of layer L), ``"logits"``.
Edges run through the residual stream from a sender (``input``, a head, an MLP) to a later
receiver: a head's query, key or value input (``kind`` ``"q"``/``"k"``/``"v"``), an MLP's input
or the logits (``kind`` ``""``). An edge's id is ``"{sender}->{receiver}<{kind}>"`` (``<>``
dropped when ``kind`` is empty), as in EAP-IG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .._views import DisplaysAsView


def edge_id(sender: str, receiver: str, kind: str = "") -> str:
    """``"a0.h1->a1.h2<k>"``; ``"m0->logits"`` when ``kind`` is empty."""
    return f"{sender}->{receiver}<{kind}>" if kind else f"{sender}->{receiver}"


def node_layer(node: str, n_layers: int) -> float:
    """Drawing height of a node: ``input`` -1, ``a{L}.h{H}`` L, ``m{L}`` L + 0.5, ``logits`` n_layers."""
    if node == "input":
        return -1.0
    if node == "logits":
        return float(n_layers)
    if node.startswith("a"):
        return float(node[1:].split(".")[0])
    if node.startswith("m"):
        return float(node[1:]) + 0.5
    raise ValueError(f"not a circuit node: {node!r}")


@dataclass(repr=False)
class Circuit(DisplaysAsView):
    """Edges of a model's graph with one score each, and which of them are in the circuit.

    ``senders[i]``, ``receivers[i]``, ``kinds[i]`` describe edge ``i``; ``scores[i]`` is its
    effect on ``metric_name`` (EAP/EAP-IG: the first-order estimate; exact/ACDC: the metric change
    from patching that edge alone); ``in_circuit[i]`` says whether it was kept (ACDC: the pruned
    graph; score methods: the top edges by ``|score|`` chosen with :meth:`top`)."""

    model_name: str
    n_layers: int
    n_heads: int
    method: str  # "eap", "eap-ig", "exact", "acdc"
    metric_name: str
    senders: list[str]
    receivers: list[str]
    kinds: list[str]
    scores: torch.Tensor  # [E] float32
    in_circuit: torch.Tensor  # [E] bool
    nodes: list[str] = field(default_factory=list)
    clean_metric: float = float("nan")
    corrupt_metric: float = float("nan")
    #: faithfulness curve: edges kept (ascending) and the normalised metric with only those clean
    curve_sizes: list[int] = field(default_factory=list)
    curve_values: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # kept for lazy faithfulness queries from the view (never serialised)
    task: Any = None

    @property
    def n_edges(self) -> int:
        return len(self.senders)

    @property
    def edge_ids(self) -> list[str]:
        return [edge_id(s, r, k) for s, r, k in zip(self.senders, self.receivers, self.kinds)]

    def __repr__(self) -> str:
        kept = int(self.in_circuit.sum())
        return f"Circuit({self.model_name}, {self.method}, {self.metric_name}, {kept}/{self.n_edges} edges in the circuit)"

    # ------------------------------------------------------------------------------------------
    # selection
    # ------------------------------------------------------------------------------------------
    def order(self) -> torch.Tensor:
        """Edge indices by decreasing ``|score|`` (NaN last; ties keep graph order)."""
        s = torch.nan_to_num(self.scores.abs().float(), nan=-1.0)
        return torch.argsort(-s, stable=True)

    def top(self, n: int) -> Circuit:
        """A copy whose circuit is the ``n`` edges with the largest ``|score|``."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.n_edges:
            raise ValueError(f"n must be an int in 0..{self.n_edges}, got {n!r}")
        keep = torch.zeros(self.n_edges, dtype=torch.bool)
        keep[self.order()[:n]] = True
        return replace(self, in_circuit=keep, info=dict(self.info))

    def index(self, edge: str) -> int:
        """The index of edge id ``edge`` (``"a0.h1->a1.h2<k>"``)."""
        try:
            return self.edge_ids.index(edge)
        except ValueError:
            raise KeyError(f"{edge!r} is not an edge of this graph (ids look like 'a0.h1->a1.h2<k>', 'a2.h3->logits')") from None

    def score(self, edge: str) -> float:
        return float(self.scores[self.index(edge)])

    def rank(self, edge: str) -> int:
        """0-based rank of ``edge`` by ``|score|``."""
        return int((self.order() == self.index(edge)).nonzero()[0, 0])

    # ------------------------------------------------------------------------------------------
    # faithfulness (exact, batched: needs the model and task this circuit was found on)
    # ------------------------------------------------------------------------------------------
    def _need_task(self) -> Any:
        if self.task is None:
            raise ValueError("this Circuit has no task attached (loaded from JSON?); faithfulness needs the model and prompts")
        return self.task

    def _keeps(self, sizes: list[int]) -> torch.Tensor:
        order = self.order()
        rank = torch.empty(self.n_edges, dtype=torch.long)
        rank[order] = torch.arange(self.n_edges)
        return rank[None, :] < torch.tensor(sizes)[:, None]

    def faithfulness(self, n: int | None = None, *, knockout: bool = False) -> float:
        """Normalised metric ``(m - m_corrupt) / (m_clean - m_corrupt)`` with only the circuit's
        edges clean (every other edge hears the corrupt sender output): the top ``n`` edges by
        ``|score|``, or ``in_circuit`` when ``n`` is None. ``knockout=True``: the circuit's edges
        corrupt and the rest clean (completeness: near 0 for a complete circuit). One batched
        forward over the pairs."""
        task = self._need_task()
        if n is None:
            keep = self.in_circuit[None].clone()
        else:
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.n_edges:
                raise ValueError(f"n must be an int in 0..{self.n_edges}, got {n!r}")
            keep = self._keeps([n])
        if knockout:
            keep = ~keep
        return float(task.normalise(task.evaluate(task.keep_masks(keep))[0]))

    def compute_curve(self, sizes: list[int] | None = None, *, progress: bool = False, seed: int = 0) -> Circuit:
        """Fill ``curve_sizes``/``curve_values`` (faithfulness of the top-n circuit for each n),
        ``info['auc']`` (area under the curve over the kept fraction of edges, trapezoids, in
        [0, 1] for a curve in [0, 1]), ``info['random_values']`` (a random circuit of each size,
        ``seed``) and ``info['random_auc']``. Returns self."""
        task = self._need_task()
        E = self.n_edges
        if sizes is None:
            sizes = curve_sizes(E)
        sizes = sorted({int(s) for s in sizes})
        if not sizes or sizes[0] < 0 or sizes[-1] > E:
            raise ValueError(f"sizes must lie in 0..{E}")
        keeps = self._keeps(sizes)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(E, generator=gen)
        rank = torch.empty(E, dtype=torch.long)
        rank[perm] = torch.arange(E)
        rkeeps = rank[None, :] < torch.tensor(sizes)[:, None]
        vals = task.evaluate(task.keep_masks(torch.cat([keeps, rkeeps])), progress=progress, desc="faithfulness curve")
        norm = task.normalise(vals).tolist()
        k = len(sizes)
        self.curve_sizes = sizes
        self.curve_values = norm[:k]
        self.info["random_values"] = norm[k:]
        self.info["auc"] = _auc(sizes, norm[:k], E)
        self.info["random_auc"] = _auc(sizes, norm[k:], E)
        return self

    # ------------------------------------------------------------------------------------------
    # export
    # ------------------------------------------------------------------------------------------
    def to_pandas(self) -> Any:
        """One row per edge: edge, sender, receiver, kind, score, abs_score, rank, in_circuit."""
        import pandas as pd

        order = self.order()
        rank = torch.empty(self.n_edges, dtype=torch.long)
        rank[order] = torch.arange(self.n_edges)
        return pd.DataFrame(
            {
                "edge": self.edge_ids,
                "sender": self.senders,
                "receiver": self.receivers,
                "kind": self.kinds,
                "score": self.scores.float().numpy(),
                "abs_score": self.scores.float().abs().numpy(),
                "rank": rank.numpy(),
                "in_circuit": self.in_circuit.numpy(),
            }
        )

    def to_networkx(self, *, all_edges: bool = False) -> Any:
        """A ``networkx.MultiDiGraph`` of the circuit's edges (``all_edges``: every edge);
        edge attributes ``kind``, ``score``, ``in_circuit``; node attribute ``layer``."""
        import networkx as nx

        g = nx.MultiDiGraph(model=self.model_name, method=self.method, metric=self.metric_name)
        for i in range(self.n_edges):
            if not (all_edges or bool(self.in_circuit[i])):
                continue
            s, r, k = self.senders[i], self.receivers[i], self.kinds[i]
            for node in (s, r):
                if node not in g:
                    g.add_node(node, layer=node_layer(node, self.n_layers))
            g.add_edge(s, r, key=k, kind=k, score=float(self.scores[i]), in_circuit=bool(self.in_circuit[i]))
        return g

    def to_json(self, *, all_edges: bool = False) -> dict:
        """The circuit in the circuit-tracer / Neuronpedia graph schema: ``metadata``, ``qParams``,
        ``nodes`` (``node_id``, ``feature_type``, ``layer``, ``ctx_idx``, ``clerp``) and ``links``
        (``source``, ``target``, ``weight``, plus ``target_input`` = q/k/v)."""
        keep = [i for i in range(self.n_edges) if all_edges or bool(self.in_circuit[i])]
        used = {n for i in keep for n in (self.senders[i], self.receivers[i])}
        names = self.nodes or _all_nodes(self.n_layers, self.n_heads)
        ftype = {"input": "embedding", "logits": "logit"}
        nodes = [
            {
                "node_id": n,
                "jsNodeId": n,
                "feature": None,
                "feature_type": ftype.get(n, "attention head" if n.startswith("a") else "mlp"),
                "layer": "E" if n == "input" else ("Lgt" if n == "logits" else str(int(node_layer(n, self.n_layers)))),
                "ctx_idx": 0,
                "clerp": n,
                "influence": None,
            }
            for n in names
            if n in used
        ]
        links = [
            {
                "source": self.senders[i],
                "target": self.receivers[i],
                "target_input": self.kinds[i],
                "weight": float(self.scores[i]),
            }
            for i in keep
        ]
        return {
            "metadata": {
                "slug": f"{self.model_name}-{self.method}",
                "scan": self.model_name,
                "prompt": (self.task.pairs_clean[0] if self.task is not None else None),
                "method": self.method,
                "metric": self.metric_name,
                "clean_metric": self.clean_metric,
                "corrupt_metric": self.corrupt_metric,
                "schema": "circuit-tracer graph (nodes/links); head/MLP nodes, edges into q/k/v inputs",
            },
            "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both"},
            "nodes": nodes,
            "links": links,
        }

    def to_mib(self) -> dict:
        """A MIB circuit-localisation submission graph (EAP-IG ``Graph.to_json`` layout):
        ``{"cfg": {...}, "nodes": {name: in_graph}, "edges": {edge_id: {"score", "in_graph"}}}``."""
        used = {n for i in range(self.n_edges) if bool(self.in_circuit[i]) for n in (self.senders[i], self.receivers[i])}
        return {
            "cfg": {"n_layers": self.n_layers, "n_heads": self.n_heads, "parallel_attn_mlp": False, "d_model": None},
            "nodes": {n: n in used for n in (self.nodes or _all_nodes(self.n_layers, self.n_heads))},
            "edges": {
                e: {"score": float(self.scores[i]), "in_graph": bool(self.in_circuit[i])} for i, e in enumerate(self.edge_ids)
            },
        }

    def plot(self, ax: Any = None) -> Any:
        """The faithfulness curve (with the random baseline) when computed, else the sorted
        ``|score|`` of every edge; returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 3.2))
        else:
            fig = ax.figure
        if self.curve_sizes:
            x = [max(s, 0.5) for s in self.curve_sizes]
            ax.plot(x, self.curve_values, marker=".", label=f"top-n by |{self.method} score|")
            if "random_values" in self.info:
                ax.plot(x, self.info["random_values"], ls="--", color="grey", label="random edges")
            ax.axhline(1.0, color="k", lw=0.5)
            ax.set_xscale("log")
            ax.set_xlabel("edges kept (clean); the rest corrupt")
            ax.set_ylabel("faithfulness (1 = clean, 0 = corrupt)")
            ax.legend(fontsize=8)
        else:
            s = self.scores.abs()[self.order()].numpy()
            ax.plot(range(1, len(s) + 1), s)
            ax.set_xscale("log")
            ax.set_xlabel("edge rank")
            ax.set_ylabel(f"|score| ({self.metric_name})")
        ax.set_title(f"{self.model_name}: {self.method}, {int(self.in_circuit.sum())} edges in circuit")
        fig.tight_layout()
        return fig


def _all_nodes(n_layers: int, n_heads: int) -> list[str]:
    out = ["input"]
    for layer in range(n_layers):
        out += [f"a{layer}.h{h}" for h in range(n_heads)] + [f"m{layer}"]
    return out + ["logits"]


def curve_sizes(n_edges: int, dense: int = 32, n_log: int = 24) -> list[int]:
    """Sizes for a faithfulness curve: every n up to ``dense``, then ``n_log`` log-spaced up to
    all edges."""
    out = set(range(min(dense, n_edges) + 1)) | {n_edges}
    if n_edges > dense:
        out |= {int(round(v)) for v in torch.logspace(math.log10(dense), math.log10(n_edges), n_log).tolist()}
    return sorted(out)


def _auc(sizes: list[int], values: list[float], n_edges: int) -> float:
    x = [s / max(n_edges, 1) for s in sizes]
    return float(sum((x[i + 1] - x[i]) * (values[i + 1] + values[i]) / 2 for i in range(len(x) - 1)))


def _finish(c: Circuit, *, top_n: int | None, target: float | None, curve: bool, progress: bool) -> Circuit:
    """Fill nodes, the curve and ``in_circuit`` (``top_n`` edges, or the smallest curve size that
    reaches ``target``) of a freshly scored circuit; records the circuit's faithfulness,
    completeness and a same-size random circuit's faithfulness in ``info``."""
    c.nodes = _all_nodes(c.n_layers, c.n_heads)
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= c.n_edges):
        raise ValueError(f"top_n must be an int in 0..{c.n_edges}, got {top_n!r}")
    if not curve:
        if top_n is not None:
            c.in_circuit = c.top(top_n).in_circuit
        return c
    c.compute_curve(progress=progress)
    if top_n is None:
        hit = [s for s, v in zip(c.curve_sizes, c.curve_values) if v >= (target or 0.9)]
        top_n = hit[0] if hit else c.n_edges
        c.info["target"] = target
    c.in_circuit = c.top(top_n).in_circuit
    _summarise(c)
    return c


def _summarise(c: Circuit, seed: int = 0) -> None:
    """info: faithfulness and completeness of ``in_circuit`` and of a random circuit its size."""
    task = c._need_task()
    n = int(c.in_circuit.sum())
    gen = torch.Generator().manual_seed(seed + 1)
    rnd = torch.zeros(c.n_edges, dtype=torch.bool)
    rnd[torch.randperm(c.n_edges, generator=gen)[:n]] = True
    keeps = torch.stack([c.in_circuit, ~c.in_circuit, rnd])
    v = task.normalise(task.evaluate(task.keep_masks(keeps))).tolist()
    c.info.update(
        {"n_in_circuit": n, "faithfulness": v[0], "knockout": v[1], "completeness": 1.0 - v[1], "random_faithfulness": v[2]}
    )
