"""Causal and unsupervised concept tools: interchange interventions (probe direction, DAS,
full vector) and CCS.

- :func:`interchange` writes the *source* example's concept component into the *base* example's
  run at one ``(site, layer)`` and token, and measures interchange-intervention accuracy (IIA):
  how often the model then gives the source's answer. The component is a unit direction
  (class-mean difference, a probe's weight vector or one you pass), a subspace learned by
  distributed alignment search (DAS, Geiger et al. 2023), or the whole vector.
- :func:`ccs` is contrast-consistent search (Burns et al. 2022) on a :class:`ContrastDataset`.

Evaluation runs are nnsight traces with the edit written at the site (:func:`edited_run`); DAS
training runs the same edit through a torch forward hook on the same module
(:func:`hooked_logits`) so gradients reach the rotation. Both are checked to agree in the tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .model import Model, _get
from .probes import (
    ProbeDataset,
    ProbeResult,
    _acc,
    _layer_name,
    _positions,
    cache_activations,
    fit_probe,
)

#: Sites a concept intervention can write (one vector per token in the residual basis).
EDIT_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")


def check_edit_site(model: Model, site: str, layer: int) -> tuple[str, int]:
    """Validate ``(site, layer)``; layer ``-1`` means the embedding (``resid_pre`` of block 0)."""
    model.check_site(site)
    if site not in EDIT_SITES:
        raise ValueError(f"site {site!r} cannot be edited by a concept intervention; choose one of {', '.join(EDIT_SITES)}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"layer must be an int (-1 for the embedding), got {layer!r}")
    if layer == -1:
        return "resid_pre", 0
    model.check_layer(layer)
    return site, layer


def unembed_path(model: Model) -> str:
    from .patching import _unembed_path

    return _unembed_path(model)


def edited_run(
    model: Model,
    ids: torch.Tensor,
    site: str,
    layer: int,
    fn: Callable[[torch.Tensor], torch.Tensor] | None,
    *,
    reads: list[int] = (),  # type: ignore[assignment]
    all_logits: bool = False,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """One nnsight trace over ``ids`` ``[B, T]`` with ``site`` at ``layer`` replaced by
    ``fn(value)`` (``fn=None``: no edit). Returns ``(logits, {layer: resid_post [B, T, d]})``
    with logits ``[B, vocab]`` at the last position (``all_logits``: ``[B, T, vocab]``); reads
    of ``resid_post`` and the embedding (layer ``-1``) come after the edit where it precedes them."""
    site, layer = check_edit_site(model, site, layer)
    r = model.arch.reads[site]
    unembed = _get(model.nn, unembed_path(model), envoy=True)
    saved: dict[int, Any] = {}
    mask = torch.ones(ids.shape, dtype=torch.long, device=model.device)
    with torch.no_grad(), model.nn.trace(ids.to(model.device), attention_mask=mask, remote=model.remote):
        for i in range(model.n_layers):
            block = model._module(i, "")
            edit_here = fn is not None and i == layer
            if edit_here and r.io == "input" and not r.module:
                block.input = fn(block.input)
                edit_here = False
            if i == 0 and -1 in reads:
                saved[-1] = block.input.save()
            if edit_here:
                env = model._module(i, r.module)
                if r.io == "input":
                    env.input = fn(env.input)
                else:
                    v = env.output
                    env.output = (fn(v[0]), *v[1:]) if isinstance(v, tuple) else fn(v)
            if i in reads:
                out = block.output
                saved[i] = (out[0] if isinstance(out, tuple) else out).save()
        logits = unembed.output.save()
    lg = logits.detach().float().cpu()
    lg = lg if all_logits else lg[:, -1]
    return lg, {k: v.detach().float().cpu() for k, v in saved.items()}


def hooked_logits(model: Model, ids: torch.Tensor, site: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Last-position logits ``[B, vocab]`` with ``site`` at ``layer`` replaced by ``fn(value)``
    through a torch forward hook, differentiable with respect to whatever ``fn`` closes over."""
    site, layer = check_edit_site(model, site, layer)
    r = model.arch.reads[site]
    block = _get(model.hf, model.arch.layers)[layer]
    mod = _get(block, r.module) if r.module else block

    if r.io == "input":

        def pre(_m: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: fn(kwargs[key])}

        h = mod.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(_m: Any, _args: Any, out: Any) -> Any:
            return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

        h = mod.register_forward_hook(post)
    try:
        ids = ids.to(model.device)
        out = model.hf(ids, attention_mask=torch.ones_like(ids))
    finally:
        h.remove()
    return out.logits[:, -1].float()


def by_length(model: Model, texts: list[str]) -> tuple[list[torch.Tensor], dict[int, list[int]]]:
    """Token ids per text and the text indices grouped by token length (batches need no padding)."""
    ids = [model.to_tokens(t) for t in texts]
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        groups.setdefault(x.shape[1], []).append(i)
    return ids, groups


def single_token(model: Model, word: str, what: str) -> int:
    """The id of ``word`` as one token (no special tokens), or a ValueError naming ``what``."""
    if not isinstance(word, str) or word == "":
        raise ValueError(f"{what} must be a non-empty str, got {word!r}")
    ids = model.tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{what} {word!r} is {len(ids)} tokens for {model.name}; give a single-token answer (with its leading space)")
    return int(ids[0])


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



def overlay_widget(probe_result: Any, name: str, overlay: dict[tuple[str, int], float], **kwargs: Any) -> Any:
    """Draw ``overlay`` (per-layer accuracies) as curve ``name`` on ``probe_result``'s
    ProbeAccuracy view (the layers it shares with the probe) and return the view."""
    if probe_result is None:
        raise ValueError("pass the ProbeResult of the same dataset, e.g. r.widget(mw.probe(model, dataset)): "
                         "this result is drawn as a curve on its axes")
    shared = {k: v for k, v in overlay.items() if k in probe_result.layers}
    if not shared:
        raise ValueError(f"none of this result's layers {sorted(overlay)} were probed in that ProbeResult "
                         f"({probe_result.layers})")
    probe_result.add_overlay(name, shared)
    return probe_result.widget(**kwargs)

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


def _layers_arg(model: Model, layers: Any) -> list[int]:
    if layers == "all":
        return [-1, *range(model.n_layers)]
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be 'all', an int or a non-empty list of ints (-1 = embedding), got {layers!r}")
    out = []
    for v in layers:
        if v != -1:
            model.check_layer(v)
        out.append(int(v))
    return out


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
    from .erasure import _resolve_answers

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
        elif not (isinstance(directions, torch.Tensor) and directions.numel() == model.d_model):
            raise ValueError(f"directions must be a ProbeResult, a {{layer: vector}} dict or one vector of size {model.d_model}")
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
        groups: dict[int, list[int]] = {}
        for j, (b, _) in enumerate(pairs):
            groups.setdefault(lengths[b], []).append(j)
        out = torch.zeros(len(pairs))
        outs = []
        for _, js in groups.items():
            base = torch.cat([ids[pairs[j][0]] for j in js])
            src = acts[key][[pairs[j][1] for j in js]]
            p = torch.tensor([pos[pairs[j][0]] for j in js])
            bi = torch.arange(len(js))

            def fn(h: torch.Tensor, src: torch.Tensor = src, p: torch.Tensor = p, bi: torch.Tensor = bi) -> torch.Tensor:
                h = h.clone()
                h[bi, p] = edit(h[bi, p], src.to(h.dtype))
                return h

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


# ------------------------------------------------------------------------------------------
# CCS: contrast-consistent search (Burns et al. 2022)
# ------------------------------------------------------------------------------------------


def _ccs_normalise(X: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    if stats is None:
        mu = X.mean(0)
        sd = X.std(0, unbiased=False).clamp_min(1e-6)
        stats = (mu, sd)
    return (X - stats[0]) / stats[1], stats


@dataclass
class CCSFit:
    """A CCS probe: ``p(x) = sigmoid(w . norm(x) + b)`` with each side (``+``: the statement
    with the positive answer, ``-``: with the negative one) normalised by its own training mean
    and std. ``sign`` (+1 or -1) orients it: the predicted label is
    ``sign * (0.5 (p+ + 1 - p-) - 0.5) > 0``."""

    w: torch.Tensor
    b: float
    pos_stats: tuple[torch.Tensor, torch.Tensor]
    neg_stats: tuple[torch.Tensor, torch.Tensor]
    loss: float
    sign: int = 1

    def credence(self, Xp: torch.Tensor, Xn: torch.Tensor) -> torch.Tensor:
        """``0.5 (p+ + 1 - p-)``: the (unoriented) probability that the statement is true."""
        zp, _ = _ccs_normalise(Xp.float(), self.pos_stats)
        zn, _ = _ccs_normalise(Xn.float(), self.neg_stats)
        pp = torch.sigmoid(zp @ self.w + self.b)
        pn = torch.sigmoid(zn @ self.w + self.b)
        return 0.5 * (pp + 1 - pn)

    def predict(self, Xp: torch.Tensor, Xn: torch.Tensor) -> torch.Tensor:
        c = self.credence(Xp, Xn) - 0.5
        return ((self.sign * c) > 0).long()

    @property
    def direction(self) -> torch.Tensor:
        """The weight vector in activation units of the ``+`` side."""
        return self.w / self.pos_stats[1]


def fit_ccs(Xp: torch.Tensor, Xn: torch.Tensor, *, n_restarts: int = 10, steps: int = 500, lr: float = 1e-2, weight_decay: float = 0.01, seed: int = 0) -> CCSFit:
    """Unsupervised CCS on contrast pairs ``Xp``, ``Xn`` ``[n, d]`` (the same statements with the
    positive / negative answer): per-side mean/std normalisation, then ``n_restarts`` random
    initialisations of a linear-sigmoid probe trained by full-batch Adam on
    ``mean((p+ - (1 - p-))^2) + mean(min(p+, p-)^2)``; the restart with the lowest loss wins.
    The result is unoriented (``sign=+1``): CCS cannot tell true from false."""
    if Xp.shape != Xn.shape or Xp.ndim != 2:
        raise ValueError(f"Xp and Xn must be [n, d] of the same shape, got {list(Xp.shape)} and {list(Xn.shape)}")
    zp, ps = _ccs_normalise(Xp.float())
    zn, ns = _ccs_normalise(Xn.float())
    g = torch.Generator().manual_seed(seed)
    best: CCSFit | None = None
    d = zp.shape[1]
    for _ in range(n_restarts):
        w = (torch.randn(d, generator=g) / d**0.5).requires_grad_(True)
        b = torch.zeros(1).requires_grad_(True)
        opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
        with torch.enable_grad():
            for _ in range(steps):
                pp = torch.sigmoid(zp @ w + b)
                pn = torch.sigmoid(zn @ w + b)
                loss = ((pp - (1 - pn)) ** 2).mean() + (torch.minimum(pp, pn) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            pp = torch.sigmoid(zp @ w + b)
            pn = torch.sigmoid(zn @ w + b)
            final = float(((pp - (1 - pn)) ** 2).mean() + (torch.minimum(pp, pn) ** 2).mean())
        if best is None or final < best.loss:
            best = CCSFit(w.detach().clone(), float(b.detach()), ps, ns, final)
    assert best is not None
    return best


@dataclass
class CCSResult:
    """CCS accuracy per layer on held-out pairs. ``accuracy``: oriented with the *training*
    labels (the one use of labels: pick the sign that fits the training split best);
    ``accuracy_up_to_sign``: ``max(acc, 1 - acc)`` on the test split, the label-free figure
    Burns et al. report. ``probe_accuracy``: a supervised logistic probe on the same
    features (``x+ - x-``), the ceiling CCS is measured against."""

    model_name: str
    dataset: str
    site: str
    answers: tuple[str, str]
    rows: list[dict]
    fits: dict[int, CCSFit] = field(repr=False, default_factory=dict)

    def accuracy(self, layer: int | str, up_to_sign: bool = False) -> float:
        layer = -1 if layer == "embed" else layer
        for r in self.rows:
            if r["layer"] == layer:
                return float(r["accuracy_up_to_sign" if up_to_sign else "accuracy"])
        raise ValueError(f"no CCS at layer {layer!r}; layers: {[r['layer'] for r in self.rows]}")

    @property
    def overlay(self) -> dict[tuple[str, int], float]:
        """Oriented CCS test accuracy per layer, keyed for :meth:`ProbeResult.add_overlay`."""
        return {(("resid_pre", -1) if r["layer"] < 0 else (self.site, r["layer"])): r["accuracy"] for r in self.rows}

    def widget(self, probe_result: Any = None, **kwargs: Any) -> Any:
        """The ProbeAccuracy view of ``probe_result`` with the CCS accuracy curve on the same
        axes (unsupervised CCS next to the supervised probe)."""
        return overlay_widget(probe_result, "CCS", self.overlay, **kwargs)

    def __repr__(self) -> str:
        body = ", ".join(f"{r['name']}: {r['accuracy']:.2f}" for r in self.rows)
        return f"CCSResult({self.dataset}; oriented test accuracy {body})"

    def to_pandas(self) -> Any:
        """Tidy table: ``site, layer, name, accuracy, accuracy_up_to_sign, probe_accuracy, loss``."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.5))
        else:
            fig = ax.figure
        xs = list(range(len(self.rows)))
        ax.plot(xs, [r["accuracy"] for r in self.rows], "-o", label="CCS (oriented by train labels)")
        ax.plot(xs, [r["accuracy_up_to_sign"] for r in self.rows], ":o", label="CCS max(acc, 1-acc)")
        ax.plot(xs, [r["probe_accuracy"] for r in self.rows], "--", label="supervised probe (same features)")
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_xticks(xs)
        ax.set_xticklabels([r["name"] for r in self.rows], rotation=30, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{self.model_name} · CCS on {self.dataset}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


@dataclass
class ContrastDataset:
    """Contrast pairs for CCS: ``pos[i]`` and ``neg[i]`` are two mutually exclusive versions of
    one item, exactly one of them true; ``labels[i] = 1`` when ``pos[i]`` is the true one. Both
    are read at ``read`` (as :class:`ProbeDataset`). ``groups`` keep splits apart."""

    pos: list[str]
    neg: list[str]
    labels: list[int]
    groups: list[Any] | None = None
    read: str | int = "last"
    name: str = "contrast"

    def __post_init__(self) -> None:
        if len(self.pos) != len(self.neg):
            raise ValueError(f"pos has {len(self.pos)} texts but neg has {len(self.neg)}")
        self._ds = ProbeDataset(list(self.pos), list(self.labels), self.read, groups=self.groups, name=self.name)

    def __len__(self) -> int:
        return len(self.pos)

    def split(self, seed: int = 0) -> tuple[list[int], list[int], list[int]]:
        return self._ds.split(seed)

    @classmethod
    def from_answers(cls, dataset: ProbeDataset, answers: Sequence[str]) -> ContrastDataset:
        """Burns et al.'s construction: each text followed by the higher-class answer (``pos``)
        and by the lower-class one (``neg``), read at the answer token; label = the text's class."""
        hi = dataset.classes[-1]
        return cls([t + answers[1] for t in dataset.texts], [t + answers[0] for t in dataset.texts],
                   [1 if v == hi else 0 for v in dataset.labels], dataset.groups, "last", dataset.name)

    @classmethod
    def from_zoo(cls, name: str = "truth", seed: int = 0) -> ContrastDataset:
        """``"truth"``: per fact and claim template, the true and the false claim
        (``"Claim: <statement> This is"``) in a seeded random order, read at ``" is"``; label 1
        when ``pos`` is the true claim; grouped by subject."""
        from ..zoo import corpus

        if name != "truth":
            raise ValueError(f"unknown zoo contrast dataset {name!r}; choose 'truth'")
        rng = random.Random(f"ccs-{seed}")
        pos, neg, lab, grp = [], [], [], []
        for p in corpus.truth_pairs(seed):
            t = corpus.CLAIM_PREFIX + p["true_statement"] + corpus.CLAIM_PROMPT
            f = corpus.CLAIM_PREFIX + p["false_statement"] + corpus.CLAIM_PROMPT
            first = rng.random() < 0.5
            pos.append(t if first else f)
            neg.append(f if first else t)
            lab.append(int(first))
            grp.append(p["subject"])
        return cls(pos, neg, lab, grp, "last", "truth pairs")


def ccs(
    model: Model,
    data: ContrastDataset | ProbeDataset,
    layers: str | int | Sequence[int] = "all",
    site: str = "resid_post",
    *,
    answers: Sequence[str] | None = None,
    n_restarts: int = 10,
    steps: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> CCSResult:
    """CCS on contrast pairs, fitted without labels on the training split of
    ``data.split(seed)`` and scored on its test split (see :class:`CCSResult` for how the sign
    is resolved). ``data``: a :class:`ContrastDataset`, or a :class:`ProbeDataset` turned into
    one with :meth:`ContrastDataset.from_answers` (``answers``, lower class first; defaults for
    the zoo's datasets).

    On zoo:tiny use ``ContrastDataset.from_zoo("truth")`` (true vs false version of each claim,
    read at ``" is"``): CCS finds truth there at blocks 2-3, as the supervised probe does. The
    answer-token construction fails on this model: at the appended ``" true"``/``" false"``
    the model does not represent whether the answer agrees with the claim (a supervised probe
    on ``x+ - x-`` reaches only ~0.6), so there is no consistent direction to find.
    """
    from .erasure import _resolve_answers

    if isinstance(data, ProbeDataset):
        if len(data.classes) != 2:
            raise ValueError("CCS needs a binary dataset (true/false statements)")
        ans, _ = _resolve_answers(model, data, answers)
        data = ContrastDataset.from_answers(data, ans)
    elif not isinstance(data, ContrastDataset):
        raise ValueError(f"data must be a ContrastDataset or a ProbeDataset, got {type(data).__name__}")
    lay = _layers_arg(model, layers)
    if site not in ("resid_pre", "resid_post", "resid_mid", "attn_out", "mlp_out"):
        raise ValueError(f"CCS reads a residual-width site; got {site!r}")
    for layer in lay:
        if layer >= 0:
            model.check_site(site, layer)
    if n_restarts < 1 or steps < 1:
        raise ValueError("n_restarts and steps must be positive")
    tr, va, te = data.split(seed)
    tr = tr + va  # CCS has no hyperparameter to validate
    keys = [("resid_pre", -1) if v < 0 else (site, v) for v in lay]
    Ap, _ = cache_activations(model, list(data.pos), data.read, keys, progress, "ccs x+")
    An, _ = cache_activations(model, list(data.neg), data.read, keys, progress, "ccs x-")
    y = torch.tensor(data.labels)
    trt, tet = torch.tensor(tr), torch.tensor(te)
    rows, fits = [], {}
    for layer, key in zip(lay, keys):
        Xp, Xn = Ap[key], An[key]
        fit = fit_ccs(Xp[trt], Xn[trt], n_restarts=n_restarts, steps=steps, seed=seed)
        raw_tr = _acc((fit.credence(Xp[trt], Xn[trt]) > 0.5).long(), y[trt])
        fit.sign = 1 if raw_tr >= 0.5 else -1
        acc = _acc(fit.predict(Xp[tet], Xn[tet]), y[tet])
        raw_te = _acc((fit.credence(Xp[tet], Xn[tet]) > 0.5).long(), y[tet])
        D = Xp - Xn
        sup = fit_probe(D[trt], y[trt], D[tet[:0]], y[tet[:0]])
        rows.append({
            "site": key[0], "layer": layer, "name": _layer_name(*key), "accuracy": acc,
            "accuracy_up_to_sign": max(raw_te, 1 - raw_te), "probe_accuracy": _acc(sup.predict(D[tet]), y[tet]),
            "loss": fit.loss,
        })
        fits[layer] = fit
    return CCSResult(model.name, data.name, site, tuple(answers) if answers else ("", ""), rows, fits)  # type: ignore[arg-type]
