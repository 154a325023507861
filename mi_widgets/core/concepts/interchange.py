"""Interchange interventions: probe direction, DAS subspace, or the full vector.

- :func:`interchange` writes the *source* example's concept component into the *base* example's
  run at one ``(site, layer)`` and token, and measures interchange-intervention accuracy (IIA):
  how often the model then gives the source's answer. The component is a unit direction
  (class-mean difference, a probe's weight vector or one you pass), a subspace learned by
  distributed alignment search (DAS, Geiger et al. 2023), or the whole vector.

Evaluation runs are nnsight traces with the edit written at the site (:func:`edited_run`); DAS
training runs the same edit through a torch forward hook on the same module
(:func:`hooked_logits`) so gradients reach the rotation. Both are checked to agree in the tests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model, check_vector
from ..model import Model
from ..model.remote import require_local
from ._edits import (
    _layers_arg,
    by_length,
    check_edit_site,
    edited_run,
    hooked_logits,
    overlay_widget,
    pair_edits,
)
from .probes import (
    ProbeDataset,
    ProbeResult,
    _acc,
    _layer_name,
    _positions,
    cache_activations,
    fit_probe,
)

# ------------------------------------------------------------------------------------------
# Interchange interventions (probe direction, full vector, DAS subspace)
# ------------------------------------------------------------------------------------------

INTERCHANGE_KINDS = ("direction", "das", "full")


def counterfactual_pairs(dataset: ProbeDataset, indices: Sequence[int], n: int, seed: int = 0, same_length: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``n`` (base, source) index pairs drawn from ``indices`` with different labels (and equal
    ``same_length`` values, e.g. token counts, when given), seeded."""
    rng = random.Random(f"pairs-{seed}")
    idx = list(indices)
    by: dict[tuple, list[int]] = {}
    for i in idx:
        by.setdefault((same_length[i] if same_length is not None else 0, dataset.labels[i]), []).append(i)
    out: list[tuple[int, int]] = []
    order = idx[:]
    rng.shuffle(order)
    k = 0
    while len(out) < n and k < 4 * max(n, len(order)):
        b = order[k % len(order)]
        k += 1
        ln = same_length[b] if same_length is not None else 0
        cands = [c for (ll, lab), v in by.items() if ll == ln and lab != dataset.labels[b] for c in v]
        if cands:
            out.append((b, rng.choice(cands)))
    return out





@dataclass
class InterchangeResult:
    """Interchange-intervention accuracy (IIA) per layer: the fraction of (base, source) pairs
    with different labels for which, after writing the source's concept component into the
    base run at ``(site, layer)`` and ``position``, the model's answer (the sign of the answer
    logit difference) is the *source's* label. ``base_accuracy``: unedited runs answering
    their own label. Rows: one per layer (``layer -1`` = embedding)."""

    model_name: str
    dataset: str
    site: str
    position: str
    kind: str
    answers: tuple[str, str]
    rows: list[dict]
    rotations: dict[int, torch.Tensor] = field(repr=False, default_factory=dict)

    def iia(self, layer: int | str) -> float:
        layer = -1 if layer == "embed" else layer
        for r in self.rows:
            if r["layer"] == layer:
                return float(r["iia"])
        raise ValueError(f"no interchange at layer {layer!r}; layers: {[r['layer'] for r in self.rows]}")

    @property
    def overlay(self) -> dict[tuple[str, int], float]:
        """IIA per layer keyed like :attr:`ProbeResult.layers` (for ``add_overlay``)."""
        return {(("resid_pre", -1) if r["layer"] < 0 else (self.site, r["layer"])): r["iia"] for r in self.rows}

    def widget(self, probe_result: Any = None, **kwargs: Any) -> Any:
        """The ProbeAccuracy view of ``probe_result`` with this IIA curve on the same axes:
        where the concept is readable versus where swapping it changes the answer."""
        return overlay_widget(probe_result, f"IIA ({self.kind})", self.overlay, **kwargs)

    def __repr__(self) -> str:
        body = ", ".join(f"{r['name']}: {r['iia']:.2f}" for r in self.rows)
        return f"InterchangeResult({self.kind} interchange of {self.dataset} at {self.position} position; IIA {body})"

    def to_pandas(self) -> Any:
        """Tidy table: ``site, layer, name, kind, position, iia, base_accuracy, n_pairs``."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self, ax: Any = None) -> Any:
        """IIA per layer (matplotlib)."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.5))
        else:
            fig = ax.figure
        xs = list(range(len(self.rows)))
        ax.plot(xs, [r["iia"] for r in self.rows], "-o", label=f"IIA ({self.kind})")
        ax.set_xticks(xs)
        ax.set_xticklabels([r["name"] for r in self.rows], rotation=30, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("interchange-intervention accuracy")
        ax.set_title(f"{self.model_name} · {self.dataset}: {self.kind} interchange at the {self.position} token", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig




def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v.float().reshape(-1)
    return v / v.norm().clamp_min(1e-12)


def interchange(
    model: Model,
    dataset: ProbeDataset,
    layers: str | int | Sequence[int] = "all",
    site: str = "resid_post",
    *,
    kind: str = "direction",
    position: str | int = "read",
    directions: str | ProbeResult | dict[int, torch.Tensor] | torch.Tensor = "mean_diff",
    answers: Sequence[str] | None = None,
    n_pairs: int = 200,
    das_dim: int = 1,
    steps: int = 150,
    lr: float = 0.05,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> InterchangeResult:
    """Interchange interventions between counterfactual pairs of ``dataset`` (different labels).

    At each layer (``-1`` = embedding) and ``position`` (``"read"``: the dataset's read token;
    an int: that token index, pairs then have equal token counts), the base run's value of
    ``site`` is edited with the source's:

    - ``kind="direction"``: swap the component along a unit direction ``u`` (``h_b + ((h_s -
      h_b) . u) u``); ``u`` from ``directions``: ``"mean_diff"`` (the difference of the class
      means on the training split, at that layer), ``"probe"`` (a logistic probe fitted there),
      a :class:`ProbeResult` of the same site, a ``{layer: vector}`` dict or one vector. On
      zoo:tiny's sentiment the mean difference is causal (IIA 1.0 from block 0) while the
      logistic probe's weight vector is not (IIA <= 0.3): any separating hyperplane predicts
      perfectly, but only some directions are the ones the model reads.
    - ``kind="das"``: distributed alignment search (Geiger et al. 2023): learn an orthonormal
      ``das_dim``-dimensional subspace ``Q`` by gradient descent (``steps`` Adam steps on
      training-split pairs) so that ``h_b + Q^T Q (h_s - h_b)`` makes the model give the
      source's answer; scored on test-split pairs.
    - ``kind="full"``: replace the whole vector (the upper bound for any subspace).

    IIA is measured on pairs from the test split of ``dataset.split(seed)``. ``answers``: the
    two answer tokens (lower class first; defaults for the zoo's sentiment/truth). Binary
    datasets only. Errors are raised before any forward pass.
    """
    check_model(model)
    from ._edits import _resolve_answers

    if not isinstance(dataset, ProbeDataset):
        raise ValueError(f"dataset must be a ProbeDataset, got {type(dataset).__name__}")
    if kind not in INTERCHANGE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(INTERCHANGE_KINDS)}, got {kind!r}")
    if len(dataset.classes) != 2:
        raise ValueError("interchange() needs a binary dataset (two classes): IIA reads the sign of the answer logit difference")
    if dataset.read == "mean" and position == "read":
        raise ValueError("the dataset reads the mean over tokens; give position= an int token index")
    if not (position == "read" or (isinstance(position, int) and not isinstance(position, bool))):
        raise ValueError(f"position must be 'read' or an int token index, got {position!r}")
    lay = _layers_arg(model, layers)
    for layer in lay:
        check_edit_site(model, site, layer)
    if not isinstance(das_dim, int) or not 1 <= das_dim <= model.d_model:
        raise ValueError(f"das_dim must be an int in 1..{model.d_model}, got {das_dim!r}")
    if n_pairs < 1 or steps < 0 or batch_size < 1:
        raise ValueError("n_pairs and batch_size must be positive and steps non-negative")
    if kind == "das":
        require_local(
            model, "interchange(kind='das')",
            "DAS trains a rotation with gradients through the model; use kind='direction' or "
            "kind='full' (run remotely) or load the model without remote",
        )
    if kind == "direction":
        if isinstance(directions, str):
            if directions not in ("mean_diff", "probe"):
                raise ValueError(f"directions must be 'mean_diff', 'probe', a ProbeResult, a dict or a vector, got {directions!r}")
        elif isinstance(directions, ProbeResult):
            for layer in lay:
                if (("resid_pre", -1) if layer < 0 else (site, layer)) not in directions.directions:
                    raise ValueError(f"the ProbeResult has no {site} probe at layer {layer}; probe that site or pass a dict")
        elif isinstance(directions, dict):
            missing = [v for v in lay if v not in directions]
            if missing:
                raise ValueError(f"directions has no vector for layers {missing}")
            for v in lay:
                check_vector(directions[v], model.d_model, f"directions[{v}]")
        elif not (isinstance(directions, torch.Tensor) and directions.numel() == model.d_model):
            raise ValueError(f"directions must be a ProbeResult, a {{layer: vector}} dict or one vector of size {model.d_model}")
        else:
            check_vector(directions, model.d_model, "directions")
    ans, ans_ids = _resolve_answers(model, dataset, answers)
    ids, _ = by_length(model, list(dataset.texts))
    lengths = [x.shape[1] for x in ids]
    read = dataset.read if position == "read" else position
    pos = [int(_positions(read, i, x.shape[1])) for i, x in enumerate(ids)]
    tr, va, te = dataset.split(seed)
    same = None if position == "read" else lengths
    test_pairs = counterfactual_pairs(dataset, te, n_pairs, seed, same)
    train_pairs = counterfactual_pairs(dataset, tr, max(n_pairs, batch_size * 4), seed + 1, same) if kind == "das" else []
    if not test_pairs:
        raise ValueError("no counterfactual pairs (different labels, equal lengths) in the test split")
    classes = dataset.classes
    y = torch.tensor([classes.index(v) for v in dataset.labels])

    keys = [("resid_pre", -1) if v < 0 else (site, v) for v in lay]
    acts, _ = cache_activations(model, list(dataset.texts), read, keys, progress, f"interchange {dataset.name}")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(lay) * (1 + (steps if kind == "das" else 0)), desc=f"{kind} interchange", leave=False)
    rows: list[dict] = []
    rotations: dict[int, torch.Tensor] = {}

    def run_pairs(pairs: list[tuple[int, int]], layer: int, key: tuple[str, int], edit: Any, grad: bool = False) -> torch.Tensor:
        """Answer logit difference (high minus low class) for each pair's edited base run."""
        out = torch.zeros(len(pairs))
        outs = []
        for js, base, fn in pair_edits(pairs, ids, acts[key], pos, edit):
            if grad:
                lg = hooked_logits(model, base, site, layer, fn)
                outs.append((js, lg[:, ans_ids[1]] - lg[:, ans_ids[0]]))
            else:
                lg, _ = edited_run(model, base, site, layer, fn)
                out[js] = lg[:, ans_ids[1]] - lg[:, ans_ids[0]]
        if grad:
            return torch.cat([o for _, o in outs]), [j for js, _ in outs for j in js]  # type: ignore[return-value]
        return out

    try:
        # the unedited runs, once
        base_ld = run_pairs(test_pairs, lay[0], keys[0], lambda hb, hs: hb)
        yb = y[[b for b, _ in test_pairs]]
        ys = y[[s for _, s in test_pairs]]
        base_acc = _acc((base_ld > 0).long(), yb)
        for layer, key in zip(lay, keys):
            if kind == "full":
                edit = lambda hb, hs: hs  # noqa: E731
            elif kind == "direction":
                if directions == "mean_diff":
                    Xt, yt = acts[key][tr], y[tr]
                    u = _unit(Xt[yt == 1].mean(0) - Xt[yt == 0].mean(0))
                elif directions == "probe":
                    fit = fit_probe(acts[key][tr], y[tr], acts[key][va], y[va])
                    u = _unit(fit.direction)
                elif isinstance(directions, ProbeResult):
                    u = _unit(directions.directions[key])
                elif isinstance(directions, dict):
                    u = _unit(directions[layer])
                else:
                    u = _unit(directions)
                rotations[layer] = u[None]

                def edit(hb: torch.Tensor, hs: torch.Tensor, u: torch.Tensor = u) -> torch.Tensor:
                    return hb + ((hs - hb) @ u)[:, None] * u

            else:
                Q = _train_das(model, train_pairs, layer, key, das_dim, steps, lr, batch_size, seed, y, run_pairs, bar)
                rotations[layer] = Q

                def edit(hb: torch.Tensor, hs: torch.Tensor, Q: torch.Tensor = Q) -> torch.Tensor:
                    return hb + ((hs - hb) @ Q.T) @ Q

            ld = run_pairs(test_pairs, layer, key, edit)
            rows.append({
                "site": key[0], "layer": layer, "name": _layer_name(*key), "kind": kind,
                "position": str(position), "iia": _acc((ld > 0).long(), ys),
                "base_accuracy": base_acc, "n_pairs": len(test_pairs),
            })
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return InterchangeResult(model.name, dataset.name, site, str(position), kind, ans, rows, rotations)


def _train_das(model: Model, pairs: list[tuple[int, int]], layer: int, key: tuple[str, int], k: int, steps: int, lr: float, batch_size: int, seed: int, y: torch.Tensor, run_pairs: Any, bar: Any) -> torch.Tensor:
    """An orthonormal ``[k, d]`` basis trained so that interchanging its span makes the model
    give the source's answer (binary cross-entropy on the answer logit difference)."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(model.d_model, k, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, model.d_model, generator=g))
    torch.nn.utils.parametrizations.orthogonal(lin)
    params = [p for p in lin.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        pick = torch.randint(len(pairs), (batch_size,), generator=g).tolist()
        batch = [pairs[i] for i in pick]
        with torch.enable_grad():
            Q = lin.weight

            def edit(hb: torch.Tensor, hs: torch.Tensor, Q: torch.Tensor = Q) -> torch.Tensor:
                return hb + ((hs - hb) @ Q.T) @ Q

            ld, order = run_pairs(batch, layer, key, edit, grad=True)
            target = y[[batch[j][1] for j in order]].double().to(ld.dtype)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(ld, target)
            grads = torch.autograd.grad(loss, params)
        for p, gr in zip(params, grads):
            p.grad = gr
        opt.step()
        opt.zero_grad()
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(layer=layer, loss=f"{loss.item():.3f}")
    return lin.weight.detach().clone()
