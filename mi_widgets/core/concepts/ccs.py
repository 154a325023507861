"""Contrast-consistent search (Burns et al. 2022) on a :class:`ContrastDataset`: an unsupervised
direction whose probabilities on a claim and its negation are consistent and confident."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model, check_str_list
from ..model import Model
from ._edits import _layers_arg, overlay_widget
from .probes import (
    ProbeDataset,
    _acc,
    _layer_name,
    cache_activations,
    fit_probe,
)

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
    features (``x+ - x-``), the ceiling CCS is measured against: its C (``probe_C``) is chosen
    on the validation split as :func:`~mi_widgets.core.concepts.probes.probe` chooses it (fit on
    train, best validation accuracy), then it is refitted at that C on train + validation, the
    examples CCS trained on, and scored on the test split."""

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
        """Tidy table: ``site, layer, name, accuracy, accuracy_up_to_sign, probe_accuracy, probe_C,
        loss``."""
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
        check_str_list(self.pos, "pos")
        check_str_list(self.neg, "neg")
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
        from ...zoo import corpus

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
    check_model(model)
    from ._edits import _resolve_answers

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
    tr_only, va, te = data.split(seed)
    if not va:  # ContrastDataset splits keep a validation share (ProbeDataset's val_frac > 0)
        raise ValueError("the split has no validation examples to choose the supervised probe's C on")
    tr = tr_only + va  # CCS has no hyperparameter to validate: it trains on both
    keys = [("resid_pre", -1) if v < 0 else (site, v) for v in lay]
    Ap, _ = cache_activations(model, list(data.pos), data.read, keys, progress, "ccs x+")
    An, _ = cache_activations(model, list(data.neg), data.read, keys, progress, "ccs x-")
    y = torch.tensor(data.labels)
    trt, tet = torch.tensor(tr), torch.tensor(te)
    tro, vat = torch.tensor(tr_only), torch.tensor(va)
    rows, fits = [], {}
    for layer, key in zip(lay, keys):
        Xp, Xn = Ap[key], An[key]
        fit = fit_ccs(Xp[trt], Xn[trt], n_restarts=n_restarts, steps=steps, seed=seed)
        raw_tr = _acc((fit.credence(Xp[trt], Xn[trt]) > 0.5).long(), y[trt])
        fit.sign = 1 if raw_tr >= 0.5 else -1
        acc = _acc(fit.predict(Xp[tet], Xn[tet]), y[tet])
        raw_te = _acc((fit.credence(Xp[tet], Xn[tet]) > 0.5).long(), y[tet])
        D = Xp - Xn
        # the probes module's rule: C chosen on validation (fit on train only); then refit at that
        # C on train + validation, the examples CCS trained on
        C = fit_probe(D[tro], y[tro], D[vat], y[vat]).C
        sup = fit_probe(D[trt], y[trt], D[vat], y[vat], grid=(C,))
        rows.append({
            "site": key[0], "layer": layer, "name": _layer_name(*key), "accuracy": acc,
            "accuracy_up_to_sign": max(raw_te, 1 - raw_te), "probe_accuracy": _acc(sup.predict(D[tet]), y[tet]),
            "probe_C": C, "loss": fit.loss,
        })
        fits[layer] = fit
    return CCSResult(model.name, data.name, site, tuple(answers) if answers else ("", ""), rows, fits)  # type: ignore[arg-type]
