"""Linear probes: is a label linearly readable from a site, layer by layer?

``probe(model, dataset)`` runs the model once over the dataset (one nnsight trace per batch of
same-length texts that reads every requested ``(site, layer)`` at once, keeping only the read
position), then fits per
layer an L2-regularised logistic regression in torch (Newton's method on standardised features,
float64; the regularisation strength is picked on the validation split). Each layer reports
train / validation / test / OOD accuracy and AUROC, a majority-class baseline and a control task
(Hewitt & Liang 2019) whose gap to the test accuracy is the probe's *selectivity*. Everything is
repeated over ``seeds`` (split and control-label seeds) to give error bands.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model, check_str_list
from .._views import Viewable
from ..model import Model

#: Sites with one vector per token that a probe can read.
PROBE_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
SPLITS = ("train", "validation", "test", "ood", "control", "baseline")


# ------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------


@dataclass
class ProbeDataset:
    """Texts with class labels, which token to read, and how to split them.

    ``read``: ``"last"`` (the last token), ``"mean"`` (mean over all tokens), an int position
    (negative counts from the end) or a list with one position per text (a marked token).
    ``groups`` (optional, one per text): splits keep groups apart (e.g. the truth probe's
    subjects, so test subjects are unseen). ``ood_texts``/``ood_labels``: an optional
    out-of-distribution test set, read the same way (``ood_read`` for per-text positions).
    Splits are ``test_frac`` of the data (of the groups) for test and ``val_frac`` for
    validation, the rest for training, drawn with :meth:`split`'s seed.
    """

    texts: list[str]
    labels: list[int]
    read: str | int | list[int] = "last"
    groups: list[Any] | None = None
    ood_texts: list[str] | None = None
    ood_labels: list[int] | None = None
    ood_read: str | int | list[int] | None = None
    name: str = "dataset"
    val_frac: float = 0.15
    test_frac: float = 0.3

    def __post_init__(self) -> None:
        self.texts = check_str_list(self.texts, "texts")
        if self.ood_texts is not None:
            check_str_list(self.ood_texts, "ood_texts")
        self.labels = [int(v) for v in self.labels]
        _check_xy(self.texts, self.labels, self.read, "texts")
        if self.groups is not None:
            self.groups = list(self.groups)
            if len(self.groups) != len(self.texts):
                raise ValueError(f"groups has {len(self.groups)} entries but texts has {len(self.texts)}")
        if (self.ood_texts is None) != (self.ood_labels is None):
            raise ValueError("give both ood_texts and ood_labels, or neither")
        if self.ood_texts is not None:
            self.ood_texts = list(self.ood_texts)
            self.ood_labels = [int(v) for v in self.ood_labels]  # type: ignore[union-attr]
            _check_xy(self.ood_texts, self.ood_labels, self.ood_read_spec, "ood_texts", need_two=False)
            extra = set(self.ood_labels) - set(self.labels)
            if extra:
                raise ValueError(f"ood_labels has classes {sorted(extra)} that the training labels lack")
        if not (0 < self.test_frac < 1 and 0 <= self.val_frac < 1 and self.test_frac + self.val_frac < 1):
            raise ValueError("test_frac and val_frac must be fractions that leave some training data")

    @property
    def ood_read_spec(self) -> str | int | list[int]:
        if self.ood_read is not None:
            return self.ood_read
        return self.read if not isinstance(self.read, list) else "last"

    @property
    def classes(self) -> list[int]:
        return sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_lists(cls, texts: Sequence[str], labels: Sequence[int], read: str | int | list[int] = "last", **kwargs: Any) -> ProbeDataset:
        """A dataset from plain lists (``kwargs``: ``groups``, ``ood_texts``, ``ood_labels``, ...)."""
        return cls(list(texts), list(labels), read, **kwargs)

    @classmethod
    def from_zoo(cls, name: str, *, n: int = 600, n_ood: int = 200, seed: int = 0) -> ProbeDataset:
        """The zoo corpus' evaluation sets, read as ``mi_widgets.zoo.measure`` reads them.

        - ``"sentiment"``: ``n`` in-distribution reviews ending at ``" Overall the review is"``
          (label 1 = positive), read at the last token; OOD = ``n_ood`` reviews built only from
          held-out adjectives.
        - ``"truth"``: ``"Claim: <statement> This is"`` for a true and a false statement per
          fact and claim template (label 1 = true), read at the last token, split by subject.
        - ``"city"`` (multiclass): the fact prompts of the training templates
          (``"The Eiffel Tower is in"``), label = the index of the subject's city in
          ``corpus.CITIES`` (20 classes), read at the last token (always ``" in"``), split by
          template so test templates are unseen.
        """
        from ...zoo import corpus

        if name == "sentiment":
            id_ex = corpus.sentiment_examples("id", n=n, seed=seed)
            ood_ex = corpus.sentiment_examples("ood", n=n_ood, seed=seed) if n_ood else []
            return cls(
                [e["text"] for e in id_ex], [e["label"] for e in id_ex], "last",
                ood_texts=[e["text"] for e in ood_ex] or None,
                ood_labels=[e["label"] for e in ood_ex] or None,
                name="sentiment",
            )
        if name == "truth":
            ex = corpus.contrast_pairs(seed)
            return cls(
                [e["prompt"] for e in ex], [e["label"] for e in ex], "last",
                groups=[e["subject"] for e in ex], name="truth",
            )
        if name == "city":
            fp = corpus.fact_prompts("train")
            return cls(
                [e["prompt"] for e in fp], [corpus.CITIES.index(e["city"]) for e in fp], "last",
                groups=[e["template"] for e in fp], name="city",
            )
        raise ValueError(f"unknown zoo probe dataset {name!r}; choose 'sentiment', 'truth' or 'city'")

    def split(self, seed: int = 0) -> tuple[list[int], list[int], list[int]]:
        """``(train, validation, test)`` indices, seeded; by group when ``groups`` is set."""
        units = sorted(set(self.groups), key=repr) if self.groups is not None else list(range(len(self)))
        order = list(range(len(units)))
        random.Random(f"probe-split-{seed}").shuffle(order)
        n_test = max(1, int(round(self.test_frac * len(units))))
        n_val = int(round(self.val_frac * len(units)))
        if self.val_frac > 0:
            n_val = max(1, n_val)
        if n_test + n_val >= len(units):
            raise ValueError(f"{len(units)} {'groups' if self.groups is not None else 'examples'} are too few to split into train/validation/test")
        part = {}
        for rank, u in enumerate(order):
            part[u] = 2 if rank < n_test else (1 if rank < n_test + n_val else 0)
        if self.groups is not None:
            gi = {g: i for i, g in enumerate(units)}
            which = [part[gi[g]] for g in self.groups]
        else:
            which = [part[i] for i in range(len(self))]
        out = tuple([i for i, w in enumerate(which) if w == k] for k in (0, 1, 2))
        return out  # type: ignore[return-value]


def _check_xy(texts: list, labels: list, read: Any, what: str, need_two: bool = True) -> None:
    if len(texts) == 0:
        raise ValueError(f"{what} is empty; a probe needs labelled examples")
    if len(labels) != len(texts):
        raise ValueError(f"{what} has {len(texts)} entries but its labels have {len(labels)}")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or t == "":
            raise ValueError(f"{what}[{i}] must be a non-empty str, got {t!r}")
    if need_two and len(set(labels)) < 2:
        raise ValueError(f"labels hold one class only ({labels[0]}); a probe needs at least two classes")
    if isinstance(read, list):
        if len(read) != len(texts):
            raise ValueError(f"read has {len(read)} positions but {what} has {len(texts)} entries")
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in read):
            raise ValueError("read positions must be ints")
    elif not (read in ("last", "mean") or (isinstance(read, int) and not isinstance(read, bool))):
        raise ValueError(f"read must be 'last', 'mean', an int position or a list of positions, got {read!r}")


# ------------------------------------------------------------------------------------------
# Logistic regression in torch
# ------------------------------------------------------------------------------------------


@dataclass
class LogisticFit:
    """A fitted probe on standardised features: ``logit = ((x - mean) / scale) @ coef + intercept``."""

    coef: torch.Tensor
    intercept: float
    mean: torch.Tensor
    scale: torch.Tensor
    C: float

    def decision(self, X: torch.Tensor) -> torch.Tensor:
        return ((X.double() - self.mean) / self.scale) @ self.coef + self.intercept

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return (self.decision(X) > 0).long()

    @property
    def direction(self) -> torch.Tensor:
        """The probe's weight vector in the original activation units (``x @ direction`` is the
        logit up to a constant)."""
        return (self.coef / self.scale).float()


def standardise(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    X = X.double()
    mean = X.mean(0)
    scale = X.std(0, unbiased=False)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    return mean, scale


def _newton(Z: torch.Tensor, y: torch.Tensor, C: float, theta: torch.Tensor | None, max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """Minimise ``0.5 |w|^2 + C * sum(logloss)`` (intercept unpenalised, as scikit-learn) by
    damped Newton steps. ``Z`` is ``[n, d+1]`` with a column of ones last."""
    n, d1 = Z.shape
    reg = torch.ones(d1, dtype=Z.dtype)
    reg[-1] = 0.0
    theta = torch.zeros(d1, dtype=Z.dtype) if theta is None else theta.clone()

    def objective(t: torch.Tensor) -> torch.Tensor:
        z = Z @ t
        return 0.5 * (reg * t * t).sum() + C * torch.nn.functional.softplus(z).sum() - C * (y * z).sum()

    f = objective(theta)
    for _ in range(max_iter):
        p = torch.sigmoid(Z @ theta)
        g = C * (Z.T @ (p - y)) + reg * theta
        s = (p * (1 - p)).clamp_min(1e-12)
        H = C * (Z.T @ (Z * s[:, None]))
        H.diagonal().add_(reg + 1e-10)
        try:
            step = torch.linalg.solve(H, g)
        except RuntimeError:  # pragma: no cover - singular Hessian
            step = torch.linalg.lstsq(H, g).solution
        t = 1.0
        while True:
            new = theta - t * step
            fn = objective(new)
            if fn <= f - 1e-4 * t * (g @ step) or t < 1e-8:
                break
            t *= 0.5
        decrease = f - fn
        theta, f = new, fn
        if float((t * step).abs().max()) < tol or float(decrease) <= 1e-12 * max(1.0, abs(float(f))):
            break
    return theta


def _lbfgs(Z: torch.Tensor, y: torch.Tensor, C: float, theta: torch.Tensor | None, max_iter: int = 1000, tol: float = 1e-4) -> torch.Tensor:
    """Same objective as :func:`_newton` (divided by ``C * n``), by full-batch L-BFGS; for wide
    features, where a ``d x d`` Hessian per step costs more than many gradient steps. Stops when
    the largest gradient component of the mean objective is below ``tol`` (scikit-learn's
    ``tol`` for its lbfgs solver, default 1e-4, means the same); runs in ``Z``'s dtype."""
    n, d1 = Z.shape
    reg = torch.ones(d1, dtype=Z.dtype)
    reg[-1] = 0.0
    lam = 1.0 / (C * n)
    t = (torch.zeros(d1, dtype=Z.dtype) if theta is None else theta.to(Z.dtype).clone()).requires_grad_(True)
    opt = torch.optim.LBFGS([t], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=tol,
                            tolerance_change=1e-12 if Z.dtype == torch.float64 else 1e-9, line_search_fn="strong_wolfe")

    inv_n = 1.0 / n

    def closure() -> torch.Tensor:
        # analytic gradient: no autograd graph per evaluation
        with torch.no_grad():
            z = Z @ t
            rt = reg * t
            loss = (torch.nn.functional.softplus(z) - y * z).sum() * inv_n + 0.5 * lam * (rt * t).sum()
            t.grad = Z.T @ ((torch.sigmoid(z) - y) * inv_n) + lam * rt
        return loss

    opt.step(closure)
    return t.detach()


def fit_logistic(X: torch.Tensor, y: torch.Tensor, C: float = 1.0, *, stats: tuple[torch.Tensor, torch.Tensor] | None = None, init: LogisticFit | None = None, newton_max_dim: int = 256, tol: float = 1e-4, dtype: torch.dtype = torch.float32) -> LogisticFit:
    """L2-regularised binary logistic regression with scikit-learn's objective
    (``0.5 |w|^2 + C * sum(logloss)``, intercept unpenalised) on standardised features:
    Newton's method in float64 up to ``newton_max_dim`` features; above, full-batch L-BFGS in
    ``dtype`` (float32 by default: standardised features are O(1), and the stopping rule
    ``tol`` on the mean objective's gradient is scikit-learn's default, 1e-4; pass
    ``dtype=torch.float64, tol=1e-9`` for a reference-grade optimum)."""
    mean, scale = stats if stats is not None else standardise(X)
    Z = _design(X, mean, scale, torch.float64 if X.shape[1] + 1 <= newton_max_dim else dtype)
    return _fit_design(Z, y, C, mean, scale, init, newton_max_dim, tol, dtype)


def _design(X: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Standardised features with a column of ones last, ``[n, d + 1]``."""
    Z = ((X.double() - mean) / scale).to(dtype)
    return torch.cat([Z, torch.ones(Z.shape[0], 1, dtype=dtype)], dim=1)


def _fit_design(Z: torch.Tensor, y: torch.Tensor, C: float, mean: torch.Tensor, scale: torch.Tensor, init: LogisticFit | None, newton_max_dim: int, tol: float, dtype: torch.dtype) -> LogisticFit:
    theta0 = None if init is None else torch.cat([init.coef, torch.tensor([init.intercept], dtype=torch.float64)])
    if Z.shape[1] <= newton_max_dim:
        theta = _newton(Z.double(), y.double(), float(C), theta0)
    else:
        theta = _lbfgs(Z.to(dtype), y.to(dtype), float(C), theta0, tol=tol).double()
    return LogisticFit(theta[:-1].clone(), float(theta[-1]), mean, scale, float(C))


@dataclass
class SoftmaxFit:
    """A fitted multiclass (softmax) probe on standardised features:
    ``scores = ((x - mean) / scale) @ coef + intercept`` with ``coef`` ``[d, K]``; class ``k``
    is the ``k``-th sorted label (``classes``)."""

    coef: torch.Tensor
    intercept: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor
    C: float
    classes: list[int] = field(default_factory=list)

    def decision(self, X: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) ``[n, K]``."""
        return ((X.double() - self.mean) / self.scale) @ self.coef + self.intercept

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class indices ``0..K-1``."""
        return self.decision(X).argmax(-1)

    @property
    def direction(self) -> torch.Tensor:
        """One weight vector per class in activation units, ``[K, d]``."""
        return (self.coef / self.scale[:, None]).T.float().contiguous()


def fit_softmax(X: torch.Tensor, y: torch.Tensor, C: float = 1.0, *, stats: tuple[torch.Tensor, torch.Tensor] | None = None, init: SoftmaxFit | None = None, n_classes: int | None = None, tol: float = 1e-5) -> SoftmaxFit:
    """L2-regularised multinomial logistic regression with scikit-learn's objective
    (``0.5 |W|^2 + C * sum(cross-entropy)``, intercepts unpenalised) on standardised features,
    by full-batch L-BFGS in float64. ``y`` holds class indices ``0..K-1``."""
    mean, scale = stats if stats is not None else standardise(X)
    Z = (X.double() - mean) / scale
    n, d = Z.shape
    K = int(n_classes or int(y.max()) + 1)
    lam = 1.0 / (C * n)
    W = torch.zeros(d, K, dtype=torch.float64) if init is None else init.coef.clone()
    b = torch.zeros(K, dtype=torch.float64) if init is None else init.intercept.clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=1000, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")
    yl = y.long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Z @ W + b, yl) + 0.5 * lam * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return SoftmaxFit(W.detach(), b.detach(), mean, scale, float(C), list(range(K)))


def fit_probe(Xtr: torch.Tensor, ytr: torch.Tensor, Xva: torch.Tensor, yva: torch.Tensor, grid: Sequence[float] = C_GRID, n_classes: int | None = None) -> LogisticFit | SoftmaxFit:
    """A probe for class indices ``0..K-1``: binary logistic for ``K = 2``, softmax above, with
    C picked on validation (see :func:`fit_with_validation`). ``fit.predict`` gives class indices."""
    K = int(n_classes or int(max(int(ytr.max()), int(yva.max()) if len(yva) else 0)) + 1)
    if K <= 2:
        return fit_with_validation(Xtr, ytr, Xva, yva, grid)
    stats = standardise(Xtr)

    def key(z: torch.Tensor) -> tuple[float, float]:
        return -_acc(z.argmax(-1), yva), float(torch.nn.functional.cross_entropy(z, yva.long()))

    return _pick_C(grid, lambda C, prev: fit_softmax(Xtr, ytr, C, stats=stats, init=prev, n_classes=K), Xva, yva, key)


def _pick_C(grid: Sequence[float], fit_at: Callable[[float, Any], Any], Xva: torch.Tensor, yva: torch.Tensor,
            key: Callable[[torch.Tensor], tuple[float, float]]) -> Any:
    """Fit at every C of ``grid`` in ascending order, each fit warm-started from the previous,
    and keep the fit whose validation decision ``fit.decision(Xva)`` has the smallest ``key``
    (ties and an empty validation set: the stronger regularisation)."""
    best, best_key, prev = None, None, None
    for C in sorted(grid):
        fit = prev = fit_at(C, prev)
        k = key(fit.decision(Xva)) if len(yva) else (0.0, 0.0)
        if best_key is None or k < best_key:
            best, best_key = fit, k
    assert best is not None
    return best


def macro_auroc(scores: torch.Tensor, y: torch.Tensor) -> float:
    """One-vs-rest AUROC averaged over the classes present in ``y`` (scores ``[n, K]``)."""
    vals = [auroc(scores[:, k], (y == k).long()) for k in range(scores.shape[1])]
    vals = [v for v in vals if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def auroc(scores: torch.Tensor, y: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class."""
    y = y.long()
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    s = scores.double()
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    sorted_s = s[order]
    # average ranks over ties
    uniq, inv, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inv]
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).double().mean()) if len(y) else float("nan")


def fit_with_validation(Xtr: torch.Tensor, ytr: torch.Tensor, Xva: torch.Tensor, yva: torch.Tensor, grid: Sequence[float] = C_GRID) -> LogisticFit:
    """Fit over ``grid`` (warm-started from the strongest regularisation) and keep the C with the
    best validation accuracy (ties: lower validation log-loss, then stronger regularisation)."""
    stats = standardise(Xtr)
    newton_max_dim = 256
    Z = _design(Xtr, *stats, torch.float64 if Xtr.shape[1] + 1 <= newton_max_dim else torch.float32)

    def key(z: torch.Tensor) -> tuple[float, float]:
        return -_acc((z > 0).long(), yva), float(torch.nn.functional.binary_cross_entropy_with_logits(z, yva.double()))

    return _pick_C(grid, lambda C, prev: _fit_design(Z, ytr, C, *stats, prev, newton_max_dim, 1e-4, torch.float32), Xva, yva, key)


# ------------------------------------------------------------------------------------------
# Result
# ------------------------------------------------------------------------------------------


def _layer_name(site: str, layer: int) -> str:
    return "embed" if layer < 0 else f"{site} {layer}"


@dataclass
class ProbeResult(Viewable):
    """Per-layer probe accuracies. ``rows``: one dict per (site, layer, seed, split) with
    ``accuracy`` and ``auroc``; layer ``-1`` is the embedding (``resid_pre`` of block 0).
    ``directions[(site, layer)]``: the first seed's probe weight vector in activation units
    (``[d]`` for two classes; ``[K, d]``, one row per sorted class, for K > 2). Multiclass rows
    report macro one-vs-rest AUROC."""

    model_name: str
    dataset: str
    rows: list[dict]
    layers: list[tuple[str, int]]
    directions: dict[tuple[str, int], torch.Tensor]
    fits: dict[tuple[str, int], LogisticFit | SoftmaxFit] = field(repr=False, default_factory=dict)
    control_kind: str = ""
    seeds: tuple[int, ...] = (0,)
    #: the probed texts, their labels and read spec (for views that show examples)
    texts: list[str] = field(repr=False, default_factory=list)
    labels: list[int] = field(repr=False, default_factory=list)
    read: Any = "last"
    #: the first seed's test indices into ``texts`` and, per (site, layer), the probe's
    #: decision values on them (binary: logit of the higher class, shape ``[n_test]``;
    #: multiclass: the K class scores (logits, classes in sorted label order), ``[n_test, K]``)
    test_index: list[int] = field(repr=False, default_factory=list)
    test_scores: dict[tuple[str, int], torch.Tensor] = field(repr=False, default_factory=dict)
    #: extra per-layer accuracy curves drawn on the same axes (e.g. after erasure, CCS):
    #: ``{curve name: {(site, layer): accuracy}}``
    overlays: dict[str, dict[tuple[str, int], float]] = field(repr=False, default_factory=dict)

    @property
    def classes(self) -> list[int]:
        return sorted(set(self.labels))

    def add_overlay(self, name: str, values: dict[tuple[str, int], float] | dict[int, float]) -> ProbeResult:
        """Add a per-layer accuracy curve (keys ``(site, layer)`` or plain layers) to draw with
        the probe's own curves; returns ``self``."""
        out: dict[tuple[str, int], float] = {}
        for k, v in values.items():
            key = k if isinstance(k, tuple) else self._key(k, None)
            if key not in self.layers:
                raise ValueError(f"overlay {name!r}: no probed layer {k!r}; layers: {[_layer_name(*x) for x in self.layers]}")
            out[key] = float(v)
        self.overlays[name] = out
        return self

    def to_pandas(self) -> Any:
        """Tidy table: ``site, layer, name, split, accuracy, auroc, seed, C``."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def summary(self, split: str = "test") -> dict[str, tuple[float, float]]:
        """``{layer name: (mean, std)}`` of ``split`` accuracy over seeds."""
        out = {}
        for site, layer in self.layers:
            v = [r["accuracy"] for r in self.rows if r["site"] == site and r["layer"] == layer and r["split"] == split]
            v = [x for x in v if not math.isnan(x)]
            if v:
                m = sum(v) / len(v)
                sd = math.sqrt(sum((x - m) ** 2 for x in v) / len(v))
                out[_layer_name(site, layer)] = (m, sd)
        return out

    def accuracy(self, layer: int | str, split: str = "test", site: str | None = None) -> float:
        """Mean ``split`` accuracy over seeds at ``layer`` (``"embed"`` or ``-1`` for the embedding)."""
        key = self._key(layer, site)
        v = [r["accuracy"] for r in self.rows if (r["site"], r["layer"]) == key and r["split"] == split]
        return sum(v) / len(v)

    def selectivity(self, layer: int | str, site: str | None = None) -> float:
        return self.accuracy(layer, "test", site) - self.accuracy(layer, "control", site)

    def _key(self, layer: int | str, site: str | None) -> tuple[str, int]:
        if layer == "embed":
            layer = -1
        matches = [k for k in self.layers if k[1] == layer and (site is None or k[0] == site or k[1] < 0)]
        if not matches:
            raise ValueError(f"no probe at layer {layer!r}{f' for {site}' if site else ''}; layers: {[_layer_name(*k) for k in self.layers]}")
        if len(matches) > 1:
            raise ValueError(f"several sites were probed at layer {layer}; pass site= (one of {[k[0] for k in matches]})")
        return matches[0]

    def direction(self, layer: int | str, site: str | None = None, normalize: bool = False) -> torch.Tensor:
        """The probe direction at ``layer`` in the original activation units, usable as
        ``token_activations(model, texts, site, layer, direction=...)`` (for the embedding:
        ``site="resid_pre", layer=0``) or as a steering vector. ``normalize=True`` gives a unit vector."""
        v = self.directions[self._key(layer, site)]
        return v / v.norm() if normalize else v.clone()

    def plot(self, site: str | None = None, ax: Any = None) -> Any:
        """Matplotlib figure: accuracy per layer for train/test/OOD/control/baseline, mean over
        seeds with a min-max band."""
        import matplotlib.pyplot as plt

        keys = [k for k in self.layers if site is None or k[0] == site or k[1] < 0]
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 4))
        else:
            fig = ax.figure
        xs = list(range(len(keys)))
        styles = {"train": ":", "test": "-", "ood": "-", "control": "--", "baseline": "-."}
        for split, ls in styles.items():
            means, lo, hi = [], [], []
            for k in keys:
                v = [r["accuracy"] for r in self.rows if (r["site"], r["layer"]) == k and r["split"] == split]
                v = [x for x in v if not math.isnan(x)]
                if not v:
                    break
                means.append(sum(v) / len(v))
                lo.append(min(v))
                hi.append(max(v))
            if len(means) != len(keys):
                continue
            (line,) = ax.plot(xs, means, ls, marker="o", label=split)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_xticks(xs)
        ax.set_xticklabels([_layer_name(*k) for k in keys], rotation=30, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{self.model_name} · probe: {self.dataset}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------


def _resolve_reads(model: Model, sites: str | Sequence[str], layers: str | int | Sequence[int]) -> list[tuple[str, int]]:
    site_list = [sites] if isinstance(sites, str) else list(sites)
    if not site_list:
        raise ValueError("sites is empty; give e.g. sites='resid_post'")
    for s in site_list:
        model.check_site(s)
        if s not in PROBE_SITES:
            raise ValueError(f"site {s!r} has no single vector per token to probe; choose one of {', '.join(PROBE_SITES)}")
    if layers == "all":
        layer_list = list(range(model.n_layers))
    elif isinstance(layers, int) and not isinstance(layers, bool):
        layer_list = [layers]
    elif isinstance(layers, str):
        raise ValueError(f"layers must be 'all', an int or a list of ints, got {layers!r}")
    else:
        layer_list = list(layers)
    for layer in layer_list:
        model.check_layer(layer)
    reads = [("resid_pre", -1)]  # the embedding row
    reads += [(s, layer) for s in site_list for layer in layer_list]
    return list(dict.fromkeys(reads))


def _positions(read: Any, i: int, n_tokens: int) -> int | str:
    p = read[i] if isinstance(read, list) else read
    if p == "last":
        return n_tokens - 1
    if p == "mean":
        return "mean"
    if not -n_tokens <= p < n_tokens:
        raise ValueError(f"read position {p} is outside text {i} ({n_tokens} tokens)")
    return p % n_tokens


def _run_batch(model: Model, ids: torch.Tensor, reads: list[tuple[str, int]]) -> dict[tuple[str, int], torch.Tensor]:
    """One nnsight trace over same-length sequences ``ids`` ``[B, T]`` reading every vector site
    of ``reads`` (in execution order); values ``[B, T, d]`` in float32 on the CPU."""
    keys = model._read_groups(dict.fromkeys(reads))
    saved: dict[tuple[int, int, str, str], Any] = {}
    mask = torch.ones(ids.shape, dtype=torch.long, device=model.device)
    # envoys looked up here: the trace body names no Model (a remote request ships what it names)
    plan = [(key, model._module(key[0], key[2]), key[3]) for key in sorted(keys)]
    with torch.no_grad(), model.nn.trace(ids.to(model.device), attention_mask=mask, remote=model.remote):
        for key, env, io in plan:
            saved[key] = (env.input if io == "input" else env.output).save()
    out: dict[tuple[str, int], torch.Tensor] = {}
    for key, wanted in keys.items():
        raw = saved[key]
        for site, layer in wanted:
            out[(site, layer)] = model._element(site, raw).detach().float().cpu()
    return out


def cache_activations(model: Model, texts: list[str], read: Any, reads: list[tuple[str, int]], progress: bool = True, desc: str = "probe", batch_size: int = 64) -> tuple[dict[tuple[str, int], torch.Tensor], list[int]]:
    """One nnsight trace per batch of up to ``batch_size`` same-length texts, reading every
    ``(site, layer)`` of ``reads`` (layer -1 = embedding) at once; only the read position (or
    the mean over tokens) is kept. Returns ``({key: [N, d]}, token id at the read position (-1
    for "mean"))``."""
    ids = [model.to_tokens(t) for t in texts]  # validates lengths before any forward
    pos = [_positions(read, i, x.shape[1]) for i, x in enumerate(ids)]
    run_reads = list(dict.fromkeys(("resid_pre", 0) if layer < 0 else (s, layer) for s, layer in reads))
    for s, layer in run_reads:
        model.check_site(s, layer)
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        groups.setdefault(x.shape[1], []).append(i)
    batches = [m[k : k + batch_size] for m in groups.values() for k in range(0, len(m), batch_size)]
    out: dict[tuple[str, int], torch.Tensor] = {}
    tok = [-1 if p == "mean" else int(ids[i][0, p]) for i, p in enumerate(pos)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc=desc, unit="text", leave=False)
    try:
        for members in batches:
            got = _run_batch(model, torch.cat([ids[i] for i in members]), run_reads)
            b = torch.arange(len(members))
            for k in reads:
                v = got[("resid_pre", 0) if k[1] < 0 else k]
                if k not in out:
                    out[k] = torch.zeros(len(texts), v.shape[-1])
                if all(pos[i] == "mean" for i in members):
                    out[k][members] = v.mean(1)
                else:
                    p = torch.tensor([pos[i] for i in members])
                    out[k][members] = v[b, p]
            if bar is not None:
                bar.update(len(members))
    finally:
        if bar is not None:
            bar.close()
    return out, tok


def _control_labels(y: torch.Tensor, tok: list[int], seed: int, n_classes: int = 2) -> tuple[torch.Tensor, str]:
    """Hewitt & Liang control task: each read-token identity gets a fixed random class (drawn
    with the label's class balance); when that is degenerate (too few distinct tokens, or one
    class only), labels are shuffled instead (same class balance, no information)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    distinct = sorted(set(tok))
    if -1 not in distinct and len(distinct) >= 4 * n_classes:
        freq = torch.bincount(y, minlength=n_classes).double()
        draws = torch.multinomial(freq / freq.sum(), len(distinct), replacement=True, generator=g)
        table = {t: int(c) for t, c in zip(distinct, draws)}
        c = torch.tensor([table[t] for t in tok])
        if len(set(c.tolist())) == n_classes:
            return c, "token identity"
    return y[torch.randperm(len(y), generator=g)], "shuffled labels"


def probe(
    model: Model,
    dataset: ProbeDataset,
    sites: str | Sequence[str] = "resid_post",
    layers: str | int | Sequence[int] = "all",
    kind: str = "logistic",
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = True,
    C_grid: Sequence[float] = C_GRID,
) -> ProbeResult:
    """Fit a linear probe for ``dataset``'s labels at every requested ``(site, layer)`` and at
    the embedding (``resid_pre`` of block 0, the first row, layer ``-1``).

    One pass over the data caches every activation (one nnsight trace per batch of same-length
    texts reading all layers; only the read position is kept), then per layer and seed: a seeded train /
    validation / test split, an L2 logistic regression whose C is chosen on validation, and
    the control task and majority baseline. Errors about the arguments are raised before any
    forward pass.
    """
    check_model(model)
    if not isinstance(dataset, ProbeDataset):
        raise ValueError(f"dataset must be a ProbeDataset, got {type(dataset).__name__}")
    if kind != "logistic":
        raise ValueError(f"unknown probe kind {kind!r}; only 'logistic' is implemented")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    reads = _resolve_reads(model, sites, layers)
    for s in seeds:
        dataset.split(s)  # too-small datasets fail here, before any forward
    classes = dataset.classes
    K = len(classes)
    y = torch.tensor([classes.index(v) for v in dataset.labels])
    acts, tok = cache_activations(model, dataset.texts, dataset.read, reads, progress, f"probe {dataset.name}")
    ood_acts, y_ood = None, None
    if dataset.ood_texts is not None:
        ood_acts, _ = cache_activations(model, dataset.ood_texts, dataset.ood_read_spec, reads, progress, f"probe {dataset.name} OOD")
        y_ood = torch.tensor([classes.index(v) for v in dataset.ood_labels])  # type: ignore[union-attr]

    rows: list[dict] = []
    directions: dict[tuple[str, int], torch.Tensor] = {}
    fits: dict[tuple[str, int], LogisticFit | SoftmaxFit] = {}
    test_scores: dict[tuple[str, int], torch.Tensor] = {}
    test_index: list[int] = []
    control_kind = ""
    for seed in seeds:
        tr, va, te = (torch.tensor(ix, dtype=torch.long) for ix in dataset.split(seed))
        yc, control_kind = _control_labels(y, tok, seed, K)
        majority = int(torch.bincount(y[tr], minlength=K).argmax())
        for key in reads:
            X = acts[key]
            site, layer = key
            fit = fit_probe(X[tr], y[tr], X[va], y[va], C_grid, K)
            if seed == seeds[0]:
                directions[key] = fit.direction
                fits[key] = fit
                test_index = te.tolist()
                test_scores[key] = fit.decision(X[te]).float()
            base = {"site": site, "layer": layer, "name": _layer_name(site, layer), "seed": seed}

            def add(split: str, z: torch.Tensor | None, yy: torch.Tensor, C: float, pred: torch.Tensor | None = None, base: dict = base) -> None:
                if pred is None:
                    pred = (z > 0).long() if z.ndim == 1 else z.argmax(-1)  # type: ignore[union-attr]
                if z is None:
                    au = float("nan")
                else:
                    au = auroc(z, yy) if z.ndim == 1 else macro_auroc(z, yy)
                rows.append({**base, "split": split, "accuracy": _acc(pred, yy), "auroc": au, "C": C})

            for split, ix in (("train", tr), ("validation", va), ("test", te)):
                add(split, fit.decision(X[ix]), y[ix], fit.C)
            if ood_acts is not None:
                add("ood", fit.decision(ood_acts[key]), y_ood, fit.C)  # type: ignore[arg-type]
            cfit = fit_probe(X[tr], yc[tr], X[va], yc[va], C_grid, K)
            add("control", cfit.decision(X[te]), yc[te], cfit.C)
            add("baseline", None, y[te], float("nan"), pred=torch.full_like(y[te], majority))
    return ProbeResult(
        model_name=model.name,
        dataset=dataset.name,
        rows=rows,
        layers=reads,
        directions=directions,
        fits=fits,
        control_kind=control_kind,
        seeds=seeds,
        texts=list(dataset.texts),
        labels=list(dataset.labels),
        read=dataset.read,
        test_index=test_index,
        test_scores=test_scores,
    )
