"""ACDC (Conmy et al. 2023): prune the edge graph from the logits backwards by exact patching.

Receivers are visited in reverse topological order (logits, then the last layer's MLP input,
its heads' v, k, q inputs, ... down to layer 0). For each receiver its incoming edges are tried
in increasing ``|EAP score|`` (the order of the scores is the only thing EAP decides): an edge is
removed (from then on it carries the corrupt sender output) when removing it changes the metric,
averaged over pairs, by less than ``threshold`` (metric units, absolute change: ACDC's
``abs_value_threshold`` rule) relative to the current pruned graph. A receiver whose node has no
kept outgoing edge left is dead: its incoming edges are removed without a test (exact: nothing
reads it).

Batching without changing the algorithm: the next ``P`` candidates of a receiver run as ``P``
rows whose graphs remove a growing prefix of them; the sequential decisions are read off
consecutive rows until the first edge that must stay, and the rows after it are discarded
(they assumed it removed). ``P`` doubles while every candidate goes and resets on a kept edge.

The result's ``scores`` are each edge's metric change when it was tested (0 for edges of dead
nodes); ``in_circuit`` is the pruned graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..interventions.batching import _progress
from ..metrics import Metric
from ..model import Model
from ._task import Task
from .circuit import Circuit, _all_nodes, _summarise
from .eap import _eap_scores


def acdc(
    model: Model,
    clean: str | Sequence[str],
    corrupt: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    threshold: float,
    *,
    order: str = "eap-ig",
    steps: int = 5,
    curve: bool = True,
    batch_size: int | None = None,
    progress: bool = True,
) -> Circuit:
    """The ACDC circuit at ``threshold`` (metric units; see the module docstring). ``order``:
    ``"eap"`` or ``"eap-ig"`` (``steps``) scores decide the order candidates are tried in
    (``"graph"``: graph order). ``curve=True`` adds the faithfulness curve over the
    tested-effect ranking and the circuit's faithfulness/completeness/random baseline in ``info``.
    Local causal models of the families in docs/models.md (circuits column); others are refused by
    name."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0 (metric units), got {threshold!r}")
    if order not in ("eap", "eap-ig", "graph"):
        raise ValueError(f"order must be 'eap', 'eap-ig' or 'graph', got {order!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    task = Task(model, clean, corrupt, metric, "acdc", batch_size)
    g = task.graph
    E = g.n_edges
    if order == "graph":
        prior = torch.zeros(E)
    else:
        dense = _eap_scores(task, 1 if order == "eap" else steps, False)
        prior = dense[g.edge_s, g.edge_r].float()
    task.prepare()
    removed = torch.zeros(E, dtype=torch.bool)
    tested = torch.zeros(E)
    base = float(task.evaluate(task.keep_masks(~removed[None]))[0])
    n_forward_batches = 1
    bar = _progress(g.n_receivers, progress, "acdc")
    try:
        for r in range(g.n_receivers - 1, -1, -1):
            node = g.receivers[r][0]
            incoming = (g.edge_r == r).nonzero()[:, 0]
            if node != "logits":
                out_edges = g.edge_s == g.sender_index(node)
                if bool(removed[out_edges].all()):
                    removed[incoming] = True
                    bar.update(1)
                    continue
            cand = incoming[torch.argsort(prior[incoming].abs(), stable=True)].tolist()
            i, P = 0, 4
            while i < len(cand):
                batch = cand[i : i + P]
                keeps = []
                cur = ~removed
                for e in batch:
                    cur = cur.clone()
                    cur[e] = False
                    keeps.append(cur)
                vals = task.evaluate(task.keep_masks(torch.stack(keeps))).tolist()
                n_forward_batches += 1
                prev = base
                kept_at = None
                for j, e in enumerate(batch):
                    change = vals[j] - prev
                    tested[e] = change
                    if abs(change) < threshold:
                        removed[e] = True
                        prev = vals[j]
                    else:
                        kept_at = j
                        break
                base = prev
                if kept_at is None:
                    i += len(batch)
                    P = min(P * 2, 64)
                else:
                    i += kept_at + 1
                    P = 4
            bar.update(1)
    finally:
        bar.close()
    c = Circuit(
        model_name=model.name,
        n_layers=g.n_layers,
        n_heads=g.n_heads,
        method="acdc",
        metric_name=task.metric.name,
        senders=[g.senders[i] for i in g.edge_s.tolist()],
        receivers=[g.receivers[i][0] for i in g.edge_r.tolist()],
        kinds=[g.receivers[i][1] for i in g.edge_r.tolist()],
        scores=tested,
        in_circuit=~removed,
        clean_metric=task.clean_metric,
        corrupt_metric=task.corrupt_metric,
        info={
            "threshold": float(threshold),
            "order": order,
            "n_pairs": task.n,
            "evaluate_calls": n_forward_batches,
            "pruned_metric": base,
            "prior_scores": prior,
        },
        model=model,
        task=task,
    )
    c.nodes = _all_nodes(g.n_layers, g.n_heads)
    if curve:
        c.compute_curve(progress=progress)
        _summarise(c)
    return c


__all__ = ["acdc"]
