"""Edge attribution patching (EAP, Syed et al. 2023) and EAP with integrated gradients (EAP-IG,
Hanna et al. 2024): every edge's effect on a metric to first order, from one corrupt forward,
one clean forward and one backward pass (EAP-IG: ``steps`` forward/backward passes).

For edge ``s -> r`` (``r`` a head's q/k/v input, an MLP input or the logits) the score is::

    score = (out_s(corrupt) - out_s(clean)) · d metric / d input_r      (summed over positions,
                                                                          averaged over pairs)

in metric units: the estimated change of the metric when only that edge carries the corrupt
sender output (the clean run otherwise), i.e. the first-order estimate of
:func:`~mi_widgets.core.circuits.edge_patching.edge_patching`. The gradient is taken at the
receiver's residual input *before* its LayerNorm (EAP-IG's convention), on the clean run for
EAP; EAP-IG averages it over ``steps`` runs whose input embeddings go from corrupt to clean
(``alpha = k / steps``, ``k = 1..steps``, so ``steps=1`` is EAP). Linear attribution misses what
a saturated softmax hides (an attention pattern at ~1 has ~0 gradient); EAP-IG sees it along the
path. Scores are accumulated per layer during the backward pass (``[senders, receivers]``
matrix), so memory holds the sender-output differences, not per-edge tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from ..interventions.batching import _progress
from ..metrics import Metric
from ..model import Model
from ._task import Task
from .circuit import Circuit, _finish

METHODS = ("eap", "eap-ig")

#: EAP-IG's default number of interpolation steps, set by measurement on zoo:ioi (8 IOI prompts,
#: ABC corruption, 3 prompt seeds; ROC AUC of |score| for the 8 planted edges against the other
#: 254): 1 step (EAP) 0.92, 5 steps 0.98, 10 0.97, 20 0.97, 30 0.99, 40 0.999, 50 0.9995 (every
#: planted edge in the top 9 from 40 steps on), 64 0.998, 100 0.998. The planted key/query
#: edges act through softmaxes saturated by 14-30 logits, whose switch from corrupt to clean
#: happens in a narrow band of alpha that a coarse grid steps over.
#: (tests/circuits/test_eap.py::test_zoo_ioi_default_eap_ig_steps_recover_the_planted_circuit)
DEFAULT_IG_STEPS = 50


def _check_steps(method: str, steps: int | None) -> int:
    if method not in METHODS:
        raise ValueError(f"method must be 'eap' or 'eap-ig', got {method!r}")
    if steps is None:
        return 1 if method == "eap" else DEFAULT_IG_STEPS
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if method == "eap" and steps != 1:
        raise ValueError("steps applies to method='eap-ig' (EAP takes one gradient); drop steps or use method='eap-ig'")
    return steps


def _eap_scores(task: Task, steps: int, progress: bool) -> torch.Tensor:
    """``[S, R]`` float64 dense score matrix (mean over pairs); fills the task's logits."""
    net = task.net
    g = task.graph
    scores = torch.zeros(g.n_senders, g.n_receivers, dtype=torch.float64)
    plan = []
    for t, idx in task.groups.items():
        per = task.batch_size or max(1, (256 * 2**20) // (g.n_senders * t * net.d * 4))
        plan += [(t, list(range(i, min(i + per, len(idx))))) for i in range(0, len(idx), per)]
    bar = _progress(len(plan) * steps, progress, "edge attribution")
    m = task.metric
    try:
        for t, rows in plan:
            idx = task.groups[t]
            r = torch.tensor(rows)
            pairs = torch.tensor(idx)[r]
            cids, xids = task.clean_ids[t][r], task.corrupt_ids[t][r]
            x_emb = net.embed(xids)
            c_emb = net.embed(cids)
            lx, outs = net.run(x_emb, record=True)
            delta = outs.transpose(0, 1)  # type: ignore[union-attr]  (sender-major storage: no copy)
            assert delta.is_contiguous()
            del outs
            clean_l = None
            # the clean run (alpha = 1) first: it turns delta into corrupt - clean outputs
            for k in [steps, *range(1, steps)]:
                emb = x_emb + (k / steps) * (c_emb - x_emb)
                with torch.enable_grad():
                    logits = net.run_grad(emb, delta, scores, subtract_outputs=k == steps).float()
                    if clean_l is None:
                        clean_l = logits.detach()
                    vals = m(logits, pairs=pairs.to(logits.device), clean_logits=clean_l)
                    if not vals.requires_grad:
                        raise ValueError(
                            f"metric {m.name!r} does not depend on the logits through autograd; "
                            "EAP needs a differentiable metric"
                        )
                    vals.sum().backward()
                bar.update(1)
            task.clean_logits[pairs] = clean_l.cpu()  # type: ignore[union-attr]
            task.corrupt_logits[pairs] = lx.float().cpu()
    finally:
        bar.close()
    return scores / (task.n * steps)


def edge_attribution_patching(
    model: Model,
    clean: str | Sequence[str],
    corrupt: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    method: Literal["eap", "eap-ig"] = "eap",
    steps: int | None = None,
    *,
    top_n: int | None = None,
    target: float = 0.9,
    curve: bool = True,
    batch_size: int | None = None,
    progress: bool = True,
) -> Circuit:
    """Score every edge of ``model``'s graph (input, heads' q/k/v inputs, MLPs, logits) by EAP or
    EAP-IG; see the module docstring for the formula, units and conventions.

    ``clean``/``corrupt``: prompt pairs of equal token length per pair; ``metric``: ``logit_diff``,
    ``prob``, ``kl_to_clean`` (zero gradient on the clean run: use ``eap-ig``) or a callable on
    final-position logits. ``steps``: EAP-IG interpolation steps (default 50, measured on zoo:ioi:
    see ``DEFAULT_IG_STEPS``; the cost is one forward and backward per step). The circuit
    (``in_circuit``) is the top ``top_n`` edges by ``|score|`` or, by default, the smallest top-n
    on the faithfulness curve reaching ``target`` (``curve=True`` computes the curve, its area,
    completeness and a random-circuit baseline with batched exact forwards; ``curve=False`` skips
    them, leaving ``in_circuit`` empty unless ``top_n`` is given). Local causal
    models of the families in docs/models.md (circuits column); others are refused by name.
    """
    steps = _check_steps(method, steps)
    task = Task(model, clean, corrupt, metric, "edge_attribution_patching", batch_size)
    if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1.5):
        raise ValueError(f"target must be a faithfulness in (0, 1.5], got {target!r}")
    dense = _eap_scores(task, steps, progress)
    g = task.graph
    scores = dense[g.edge_s, g.edge_r].float()
    allp = torch.arange(task.n)
    mc = task.metric(task.clean_logits, pairs=allp, clean_logits=task.clean_logits).float().mean()
    mx = task.metric(task.corrupt_logits, pairs=allp, clean_logits=task.clean_logits).float().mean()
    c = Circuit(
        model_name=model.name,
        n_layers=g.n_layers,
        n_heads=g.n_heads,
        method=method,
        metric_name=task.metric.name,
        senders=[g.senders[i] for i in g.edge_s.tolist()],
        receivers=[g.receivers[i][0] for i in g.edge_r.tolist()],
        kinds=[g.receivers[i][1] for i in g.edge_r.tolist()],
        scores=scores,
        in_circuit=torch.zeros(g.n_edges, dtype=torch.bool),
        clean_metric=float(mc),
        corrupt_metric=float(mx),
        info={"steps": steps, "n_pairs": task.n},
        model=model,
        task=task,
    )
    return _finish(c, top_n=top_n, target=target, curve=curve, progress=progress)


__all__ = ["DEFAULT_IG_STEPS", "METHODS", "edge_attribution_patching"]
