"""Concept erasure with LEACE (Belrose et al. 2023), applied inside the forward pass.

``erase(model, dataset, layer)`` fits a LEACE eraser (EleutherAI's ``concept-erasure``
package) on the dataset's training-split activations at ``(site, layer)`` and the read
position, then runs the model with the eraser applied there (an nnsight intervention) and
reports three things:

- **probe accuracy after erasure**, per layer: a fresh logistic probe (C chosen on
  validation, as :func:`~mi_widgets.core.probes.probe`) on the erased run's activations. At the
  erased layer it falls to chance: LEACE makes the class-conditional means equal, so no linear
  classifier beats the majority baseline there. Later layers show whether the model
  *recomputes* the concept from elsewhere (e.g. by attending back to earlier tokens).
- **the behaviour that depends on the concept**: the logit difference between the answer
  tokens (e.g. ``" positive"`` minus ``" negative"`` after ``" Overall the review is"``) and
  the fraction of examples where its sign matches the label, before and after.
- **loss on neutral text** (mean next-token cross-entropy, nats/token) before and after, with
  the eraser applied at every position (the stringent check that erasure is surgical).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model
from ..model import Model
from ._edits import _resolve_answers, by_length, check_edit_site, edited_run, overlay_widget
from .probes import (
    ProbeDataset,
    ProbeResult,
    _acc,
    _layer_name,
    _positions,
    cache_activations,
)

#: Default answer tokens for the zoo datasets, ordered (lower class, higher class).


def fit_leace(X: torch.Tensor, y: torch.Tensor) -> Any:
    """A LEACE eraser for integer labels ``y`` (two classes: one indicator column; more: one-hot)
    fitted on ``X`` ``[n, d]``; call it on ``[..., d]`` to erase."""
    try:
        from concept_erasure import LeaceEraser
    except ImportError as e:  # pragma: no cover
        raise ImportError("concept erasure needs the concept-erasure package: pip install 'concept-erasure>=0.2.4'") from e
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ValueError("LEACE needs at least two classes in the labels")
    if len(classes) == 2:
        z = (y == classes[1]).float()[:, None]
    else:
        z = torch.nn.functional.one_hot(torch.tensor([classes.index(v) for v in y.tolist()]), len(classes)).float()
    return LeaceEraser.fit(X.float(), z)


def neutral_texts(n: int = 64, seed: int = 0) -> list[str]:
    """``n`` neutral sentences from the zoo corpus' filler generator (no sentiment, no claims)."""
    from ...zoo import corpus

    rng = random.Random(f"neutral-{seed}")
    return [corpus._filler(rng) for _ in range(n)]


@dataclass
class ErasureResult:
    """What erasing a concept at ``(site, layer)`` did. ``probe_before``/``probe_after``:
    ``{(site, layer): test accuracy}`` of probes re-fitted on clean / erased activations (keys as
    :class:`ProbeResult.layers`, so ``probe_result.add_overlay("erased", r.probe_after)``
    works); ``logit_diff_*``: per example, logit(higher-class answer) - logit(lower-class
    answer); ``neutral_loss_*``: nats per token."""

    model_name: str
    dataset: str
    site: str
    layer: int
    positions: str
    answers: tuple[str, str]
    labels: list[int]
    probe_before: dict[tuple[str, int], float]
    probe_after: dict[tuple[str, int], float]
    baseline: float
    logit_diff_before: torch.Tensor
    logit_diff_after: torch.Tensor
    neutral_loss_before: float
    neutral_loss_after: float
    eraser: Any = field(repr=False, default=None)

    def _sign_acc(self, ld: torch.Tensor) -> float:
        hi = max(self.labels)
        y = torch.tensor([1 if v == hi else 0 for v in self.labels])
        return _acc((ld > 0).long(), y)

    @property
    def behaviour_accuracy_before(self) -> float:
        """Fraction of examples whose answer logit difference has the label's sign, unedited."""
        return self._sign_acc(self.logit_diff_before)

    @property
    def behaviour_accuracy_after(self) -> float:
        return self._sign_acc(self.logit_diff_after)

    @property
    def neutral_loss_change(self) -> float:
        return self.neutral_loss_after - self.neutral_loss_before

    @property
    def overlay(self) -> dict[tuple[str, int], float]:
        """Post-erasure probe accuracy per layer, for :meth:`ProbeResult.add_overlay`."""
        return dict(self.probe_after)

    @property
    def where(self) -> str:
        return f"{_layer_name(self.site, self.layer)} ({self.positions} positions)"

    def __repr__(self) -> str:
        return (
            f"ErasureResult({self.dataset} erased at {self.where}: behaviour accuracy "
            f"{self.behaviour_accuracy_before:.2f} -> {self.behaviour_accuracy_after:.2f}, "
            f"{self._probe_note()}neutral loss {self.neutral_loss_before:.3f} -> {self.neutral_loss_after:.3f} nats/token)"
        )

    def _probe_note(self) -> str:
        k = self._key if self._key in self.probe_before else ("resid_post", self.layer)
        if k not in self.probe_before:
            return ""
        return f"probe at {_layer_name(*k)} {self.probe_before[k]:.2f} -> {self.probe_after[k]:.2f}, "

    @property
    def _key(self) -> tuple[str, int]:
        return ("resid_pre", -1) if self.layer < 0 else (self.site, self.layer)

    def to_pandas(self) -> Any:
        """Tidy table: ``measure, layer, name, before, after`` (measures: ``probe_accuracy`` per
        layer, ``behaviour_accuracy``, ``mean_logit_diff``, ``neutral_loss``)."""
        import pandas as pd

        rows = [
            {"measure": "probe_accuracy", "site": k[0], "layer": k[1], "name": _layer_name(*k),
             "before": self.probe_before[k], "after": self.probe_after[k]}
            for k in self.probe_before
        ]
        rows += [
            {"measure": "behaviour_accuracy", "before": self.behaviour_accuracy_before, "after": self.behaviour_accuracy_after},
            {"measure": "mean_logit_diff", "before": float(self._signed(self.logit_diff_before)), "after": float(self._signed(self.logit_diff_after))},
            {"measure": "neutral_loss", "before": self.neutral_loss_before, "after": self.neutral_loss_after},
        ]
        return pd.DataFrame(rows)

    def _signed(self, ld: torch.Tensor) -> torch.Tensor:
        hi = max(self.labels)
        s = torch.tensor([1.0 if v == hi else -1.0 for v in self.labels])
        return (ld * s).mean()

    def plot(self, ax: Any = None) -> Any:
        """Probe accuracy per layer before/after erasure, and the behaviour's logit difference
        (signed by the label) before/after."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
        else:
            axes = [ax, ax.inset_axes([1.15, 0, 0.5, 1])]
            fig = ax.figure
        keys = list(self.probe_before)
        xs = list(range(len(keys)))
        axes[0].plot(xs, [self.probe_before[k] for k in keys], "-o", label="probe (clean)")
        axes[0].plot(xs, [self.probe_after[k] for k in keys], "-o", label=f"probe after erasing at {_layer_name(*self._key)}")
        axes[0].axhline(self.baseline, ls="-.", color="grey", label="majority baseline")
        axes[0].set_xticks(xs)
        axes[0].set_xticklabels([_layer_name(*k) for k in keys], rotation=30, ha="right")
        axes[0].set_ylim(0, 1.02)
        axes[0].set_ylabel("test accuracy")
        axes[0].legend(fontsize=8)
        hi = max(self.labels)
        s = torch.tensor([1.0 if v == hi else -1.0 for v in self.labels])
        axes[1].boxplot([(self.logit_diff_before * s).numpy(), (self.logit_diff_after * s).numpy()])
        axes[1].set_xticks([1, 2])
        axes[1].set_xticklabels(["clean", "erased"])
        axes[1].axhline(0, color="grey", lw=0.8)
        axes[1].set_ylabel(f"logit diff toward the label's answer\n({self.answers[1]!r} vs {self.answers[0]!r})")
        axes[1].set_title(f"behaviour acc {self.behaviour_accuracy_before:.2f} -> {self.behaviour_accuracy_after:.2f}", fontsize=9)
        fig.suptitle(f"{self.model_name} · LEACE erasure of {self.dataset} at {self.where}", fontsize=10)
        fig.tight_layout()
        return fig

    def widget(self, probe_result: ProbeResult | None = None, **kwargs: Any) -> Any:
        """The probe-accuracy view with the post-erasure curve drawn as an overlay (on
        ``probe_result`` if given, else on nothing but this result's own curves is available:
        pass the :class:`ProbeResult` of the same dataset)."""
        return overlay_widget(probe_result, f"erased at {_layer_name(*self._key)}", self.probe_after, **kwargs)




def erase(
    model: Model,
    dataset: ProbeDataset,
    layer: int,
    site: str = "resid_post",
    *,
    positions: str = "read",
    answers: Sequence[str] | None = None,
    neutral: Sequence[str] | None = None,
    probe_layers: str | Sequence[int] = "all",
    seed: int = 0,
    progress: bool = True,
) -> ErasureResult:
    """Erase ``dataset``'s concept with LEACE at ``(site, layer)`` (``layer=-1``: the
    embedding) and measure what that does.

    ``positions``: ``"read"`` edits only the token the dataset reads (e.g. the last token),
    ``"all"`` every token. The eraser is fitted on the training split of ``dataset.split(seed)``
    at the read position; probes before/after are fitted on the same split and scored on its test
    split. ``answers``: the two answer tokens whose logit difference is the behaviour (lower
    class first; defaults for the zoo's ``sentiment``/``truth`` datasets). ``neutral``: texts for
    the loss check (default: 64 zoo filler sentences). Errors are raised before any forward.
    """
    check_model(model)
    if not isinstance(dataset, ProbeDataset):
        raise ValueError(f"dataset must be a ProbeDataset, got {type(dataset).__name__}")
    if len(dataset.classes) != 2:
        raise ValueError(f"erase() measures a two-answer behaviour and needs a binary dataset; this one has {len(dataset.classes)} classes (fit_leace() itself takes any number)")
    e_site, e_layer = check_edit_site(model, site, layer)
    if positions not in ("read", "all"):
        raise ValueError(f"positions must be 'read' or 'all', got {positions!r}")
    if dataset.read == "mean":
        raise ValueError("erase() needs a token position to read; the dataset reads the mean over tokens")
    ans, ans_ids = _resolve_answers(model, dataset, answers)
    if probe_layers == "all":
        pl = list(range(model.n_layers))
    elif isinstance(probe_layers, str):
        raise ValueError(f"probe_layers must be 'all' or a list of ints, got {probe_layers!r}")
    else:
        pl = [model.check_layer(v) for v in probe_layers]
    neutral = neutral_texts() if neutral is None else list(neutral)
    if not neutral:
        raise ValueError("neutral is empty; give some neutral texts (or None for the default)")
    ids, groups = by_length(model, list(dataset.texts))
    pos = [int(_positions(dataset.read, i, x.shape[1])) for i, x in enumerate(ids)]
    n_ids, n_groups = by_length(model, neutral)
    tr, va, te = (torch.tensor(ix, dtype=torch.long) for ix in dataset.split(seed))
    y = torch.tensor([dataset.classes.index(v) for v in dataset.labels])

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * len(groups) + 2 * len(n_groups) + 1, desc=f"erase {dataset.name}", leave=False)

    def tick() -> None:
        if bar is not None:
            bar.update(1)

    try:
        fit_key = ("resid_pre", -1) if layer == -1 else (e_site, e_layer)
        X_fit = cache_activations(model, list(dataset.texts), dataset.read, [fit_key], progress=False)[0][fit_key]
        eraser = fit_leace(X_fit[tr], y[tr])
        tick()

        def make_fn(rows_pos: list[int] | None) -> Any:
            def fn(h: torch.Tensor) -> torch.Tensor:
                h = h.clone()
                if rows_pos is None:
                    return eraser(h.float()).to(h.dtype)
                b = torch.arange(h.shape[0])
                p = torch.tensor(rows_pos)
                h[b, p] = eraser(h[b, p].float()).to(h.dtype)
                return h

            return fn

        reads = [-1, *pl]
        acts = {"before": {k: torch.zeros(len(ids), model.d_model) for k in reads}, "after": {k: torch.zeros(len(ids), model.d_model) for k in reads}}
        lds = {"before": torch.zeros(len(ids)), "after": torch.zeros(len(ids))}
        for which in ("before", "after"):
            for _, members in groups.items():
                batch = torch.cat([ids[i] for i in members])
                fn = None if which == "before" else make_fn(None if positions == "all" else [pos[i] for i in members])
                logits, got = edited_run(model, batch, site, layer, fn, reads=reads)
                b = torch.arange(len(members))
                p = torch.tensor([pos[i] for i in members])
                for k in reads:
                    acts[which][k][members] = got[k][b, p]
                lds[which][members] = logits[:, ans_ids[1]] - logits[:, ans_ids[0]]
                tick()
        losses = {}
        for which in ("before", "after"):
            tot, cnt = 0.0, 0
            for _, members in n_groups.items():
                batch = torch.cat([n_ids[i] for i in members])
                fn = None if which == "before" else make_fn(None)
                logits, _ = edited_run(model, batch, site, layer, fn, all_logits=True)
                ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
                tot += float(ce)
                cnt += batch[:, 1:].numel()
                tick()
            losses[which] = tot / max(cnt, 1)
    finally:
        if bar is not None:
            bar.close()

    probe_before, probe_after = {}, {}
    for k in reads:
        key = ("resid_pre", -1) if k == -1 else ("resid_post", k)
        for which, store in (("before", probe_before), ("after", probe_after)):
            X = acts[which][k]
            fit = _fit(X, y, tr, va)
            store[key] = _acc(fit(X[te]), y[te])
    majority = int(torch.bincount(y[tr]).argmax())
    return ErasureResult(
        model_name=model.name,
        dataset=dataset.name,
        site=e_site if layer != -1 else "resid_pre",
        layer=layer,
        positions=positions,
        answers=ans,
        labels=list(dataset.labels),
        probe_before=probe_before,
        probe_after=probe_after,
        baseline=_acc(torch.full_like(y[te], majority), y[te]),
        logit_diff_before=lds["before"],
        logit_diff_after=lds["after"],
        neutral_loss_before=losses["before"],
        neutral_loss_after=losses["after"],
        eraser=eraser,
    )


def _fit(X: torch.Tensor, y: torch.Tensor, tr: torch.Tensor, va: torch.Tensor) -> Any:
    """A probe (binary or multiclass, C on validation) as a ``predict`` callable on class indices."""
    from .probes import fit_probe

    fit = fit_probe(X[tr], y[tr], X[va], y[va])
    return fit.predict

