"""Exact edge patching: the metric change when one edge, alone, carries the corrupt sender output.

For edge ``s -> r`` the clean prompt is run with receiver input ``r`` replaced by::

    clean resid at r - out_s(clean) + out_s(corrupt)

and every other receiver input left clean (downstream of ``r`` everything is recomputed). The
score is ``m(patched) - m(clean)`` in metric units, averaged over pairs: what EAP estimates to
first order. Many edges run per forward (one edge per batch row, all pairs of a length group),
in the functional GPT-2 forward of :mod:`._graph` (no hooks on the model) or, for the other
families, on the model's own modules with hooks (:mod:`._hooknet`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..metrics import Metric
from ..model import Model
from ._task import Task
from .circuit import Circuit, _finish


def _edge_indices(task: Task, edges: Sequence[str | int] | None) -> torch.Tensor:
    g = task.graph
    if edges is None:
        return torch.arange(g.n_edges)
    if isinstance(edges, (str, int)):
        edges = [edges]
    if len(edges) == 0:
        raise ValueError("edges is empty; pass None for every edge or a list of edge ids")
    ids = None
    out = []
    for e in edges:
        if isinstance(e, bool):
            raise TypeError(f"an edge is an id string ('a0.h1->a1.h2<k>') or an index, got {e!r}")
        if isinstance(e, int):
            if not 0 <= e < g.n_edges:
                raise ValueError(f"edge index {e} is out of range (the graph has {g.n_edges} edges)")
            out.append(e)
        elif isinstance(e, str):
            if ids is None:
                from .circuit import edge_id

                ids = {edge_id(g.senders[s], *g.receivers[r]): i for i, (s, r) in enumerate(zip(g.edge_s.tolist(), g.edge_r.tolist()))}
            if e not in ids:
                raise ValueError(
                    f"{e!r} is not an edge of this model's graph; ids look like 'input->a0.h1<q>', "
                    f"'a0.h1->a1.h2<k>', 'm0->a1.h0<v>', 'a2.h3->logits' (senders before receivers)"
                )
            out.append(ids[e])
        else:
            raise TypeError(f"an edge is an id string ('a0.h1->a1.h2<k>') or an index, got {type(e).__name__}")
    return torch.tensor(out)


def _single_edge_effects(task: Task, idx: torch.Tensor, progress: bool) -> torch.Tensor:
    """``m(edge alone corrupted) - m(clean)`` (pair mean) for each edge index in ``idx``."""
    g = task.graph
    es, er = g.edge_s[idx], g.edge_r[idx]

    def masks(ks: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(len(ks), g.n_senders, g.n_receivers)
        m[torch.arange(len(ks)), es[ks], er[ks]] = 1.0
        return m

    vals = task.evaluate((len(idx), masks), progress=progress, desc="edge patching")
    return vals - task.clean_metric


def edge_patching(
    model: Model,
    clean: str | Sequence[str],
    corrupt: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    edges: Sequence[str | int] | None = None,
    *,
    top_n: int | None = None,
    target: float = 0.9,
    curve: bool = True,
    batch_size: int | None = None,
    progress: bool = True,
) -> Circuit:
    """Exact effect of each edge (``edges``: ids like ``"a0.h1->a1.h2<k>"`` or indices; None =
    all): ``m(clean run with only that edge corrupted) - m(clean)``, averaged over pairs, in
    metric units. Edges not listed get NaN. ``top_n``/``target``/``curve`` choose the circuit as
    in :func:`~mi_widgets.core.circuits.eap.edge_attribution_patching`. Local causal
    models of the families in docs/models.md (circuits column); others are refused by name.
    """
    task = Task(model, clean, corrupt, metric, "edge_patching", batch_size)
    idx = _edge_indices(task, edges)
    g = task.graph
    scores = torch.full((g.n_edges,), float("nan"))
    scores[idx] = _single_edge_effects(task, idx, progress)
    c = Circuit(
        model_name=model.name,
        n_layers=g.n_layers,
        n_heads=g.n_heads,
        method="exact",
        metric_name=task.metric.name,
        senders=[g.senders[i] for i in g.edge_s.tolist()],
        receivers=[g.receivers[i][0] for i in g.edge_r.tolist()],
        kinds=[g.receivers[i][1] for i in g.edge_r.tolist()],
        scores=scores,
        in_circuit=torch.zeros(g.n_edges, dtype=torch.bool),
        clean_metric=task.clean_metric,
        corrupt_metric=task.corrupt_metric,
        info={"n_pairs": task.n, "n_patched": len(idx)},
        model=model,
        task=task,
    )
    return _finish(c, top_n=top_n, target=target, curve=curve, progress=progress)


__all__ = ["edge_patching"]
