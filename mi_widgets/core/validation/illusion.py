"""The subspace illusion check (Makelov, Lange & Nanda 2023, "Is this the subspace you are looking
for?").

A direction ``v`` can look causal under an interchange intervention (``h_b + ((h_s - h_b) . v) v``
makes the model give the source's answer) without being where the model keeps the concept: if
``v`` mixes a part that nothing downstream reads but the inputs move along ("disconnected") with a
part that downstream does read but the inputs never move along ("dormant"), the patch copies the
disconnected part's difference into the dormant part and switches on a pathway the model never
uses on its own.

:func:`illusion_check` splits ``v`` by the weights: ``v_read``, its projection onto the directions
the rest of the model reads from this point of the residual stream (the row space of every later
block's input maps — attention q/k/v, MLP input — and of the unembedding; the output projections,
which read the components' own internal states, are left out), and ``v_unread``, the rest. It then
patches along ``v``, along each part alone, and the whole component, on the same counterfactual
pairs, and measures how much each part varies on the data.

``v`` is flagged **illusory** when it works (IIA >= 0.5) but neither part does on its own (each
falls short of it by more than ``drop``): the unread part supplies the difference, the read part
the pathway, and only the combination, which the model never produces, moves the output. The
report also says when ``v`` beats patching the whole component. On ``zoo:illusion`` the planted
``u`` is flagged and the true mechanism is not (tests/validation/test_illusion.py).

Scope: an exact unread subspace exists where the downstream maps have a kernel (compiled models,
and inside components wider than their output). In a trained model's residual stream the
unembedding alone usually reads every direction, so ``v_unread`` is ~0 and the check reports that
(it cannot call such a direction illusory; the full-component comparison still applies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model, check_vector
from ..concepts.probes import ProbeDataset, cache_activations
from ..model import Model


@dataclass(repr=False)
class IllusionCheck:
    """What :func:`illusion_check` measured; ``illusory`` and ``reasons`` are its verdict."""

    model_name: str
    site: str
    layer: int
    iia_direction: float
    iia_read: float
    iia_unread: float
    iia_full: float
    unread_fraction: float
    read_variation: float
    n_pairs: int
    drop: float
    reasons: list[str] = field(default_factory=list)

    @property
    def illusory(self) -> bool:
        return bool(self.reasons)

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([
            {"patch": "along v", "iia": self.iia_direction},
            {"patch": "v's read part alone", "iia": self.iia_read},
            {"patch": "v's unread part alone", "iia": self.iia_unread},
            {"patch": "whole component", "iia": self.iia_full},
        ])

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 2.6))
        df = self.to_pandas()
        ax.barh(df["patch"], df["iia"], color=["#4c72b0", "#dd8452", "#55a868", "#8c8c8c"])
        ax.set_xlim(0, 1)
        ax.set_xlabel("interchange accuracy")
        ax.set_title(f"{self.site} {self.layer}: {'illusory' if self.illusory else 'not illusory'}")
        ax.invert_yaxis()
        return ax

    def __repr__(self) -> str:
        head = (
            f"IllusionCheck({self.site} {self.layer}: IIA along v {self.iia_direction:.2f}, "
            f"read part {self.iia_read:.2f}, unread part {self.iia_unread:.2f}, whole component "
            f"{self.iia_full:.2f}; {self.unread_fraction:.0%} of v is read by nothing downstream"
        )
        return head + (": ILLUSORY — " + "; ".join(self.reasons) + ")" if self.reasons else ": not illusory)")


def read_space(model: Model, site: str, layer: int, tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal rows spanning the directions of the residual stream at ``site``/``layer`` that
    something later reads: the input maps (Linear / GPT-2 Conv1D modules taking ``d_model``
    inputs) of every later block except the output projections, and the unembedding."""
    from ..model import _get

    d = model.d_model
    blocks = _get(model.hf, model.arch.layers)
    first = layer if site == "resid_pre" else layer + 1
    skip = set()
    for blk in blocks:
        for path in (model.arch.o_proj, model.arch.mlp_down):
            if path:
                skip.add(id(_get(blk, path)))
    mats = []
    for blk in list(blocks)[first:]:
        for mod in blk.modules():
            if id(mod) in skip or not hasattr(mod, "weight") or getattr(mod, "weight", None) is None:
                continue
            W = mod.weight
            if type(mod).__name__ == "Conv1D" and W.ndim == 2 and W.shape[0] == d:
                mats.append(W.detach().T)
            elif isinstance(mod, torch.nn.Linear) and mod.in_features == d:
                mats.append(W.detach())
    if model.arch.unembed:
        mats.append(_get(model.hf, model.arch.unembed).weight.detach())
    R = torch.cat([m.double().cpu() for m in mats]) if mats else torch.zeros(0, d, dtype=torch.float64)
    if R.shape[0] == 0:
        return R
    _, S, Vh = torch.linalg.svd(R, full_matrices=False)
    return Vh[S > tol * float(S.max())]


def illusion_check(
    model: Model,
    dataset: ProbeDataset,
    layer: int,
    direction: torch.Tensor,
    site: str = "resid_post",
    *,
    answers: Any = None,
    n_pairs: int = 100,
    drop: float = 0.3,
    seed: int = 0,
    progress: bool = False,
) -> IllusionCheck:
    """Check whether ``direction`` at ``site``/``layer`` (the dataset's read position) is causal
    the way the model uses it, or an interchange illusion (see the module docstring).

    ``drop``: by how much each part alone must fall short of ``v`` for the illusion flag, and
    by how much ``v`` may beat the whole component before the report says so. Runs one activation pass over the dataset and
    three patched passes over the same test-split pairs (``n_pairs``, ``seed``).
    """
    check_model(model)
    from ..model.remote import require_local

    require_local(model, "illusion_check", "it reads the downstream weights of the local model; load the model without remote=")
    if not isinstance(dataset, ProbeDataset):
        raise TypeError(f"dataset must be a ProbeDataset, got {type(dataset).__name__}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {layer!r}")
    model.check_site(site, layer)
    if not isinstance(direction, torch.Tensor):
        raise TypeError(f"direction must be a torch tensor of size {model.d_model}, got {type(direction).__name__}")
    check_vector(direction, model.d_model, "direction")
    if site not in ("resid_pre", "resid_post"):
        raise ValueError(f"the illusion check splits residual-stream directions; site must be 'resid_pre' or 'resid_post', got {site!r}")
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 < float(drop) <= 1:
        raise ValueError(f"drop must be a number in (0, 1], got {drop!r}")
    if dataset.read == "mean":
        raise ValueError("the dataset reads the mean over tokens; the illusion check patches one position (read='last')")

    from ..concepts._edits import _resolve_answers, by_length, edited_run, pair_edits
    from ..concepts.interchange import counterfactual_pairs
    from ..concepts.probes import _acc, _positions

    if dataset.read == "mean":
        raise ValueError("the dataset reads the mean over tokens; the illusion check patches one position (read='last')")
    if len(dataset.classes) != 2:
        raise ValueError("the illusion check needs a binary dataset (two classes), as interchange does")
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive int, got {n_pairs!r}")
    _, ans_ids = _resolve_answers(model, dataset, answers)
    ids, _ = by_length(model, list(dataset.texts))
    pos = [int(_positions(dataset.read, i, x.shape[1])) for i, x in enumerate(ids)]
    tr, _, te = dataset.split(seed)
    pairs = counterfactual_pairs(dataset, te, n_pairs, seed)
    if not pairs:
        raise ValueError("no counterfactual pairs (different labels) in the test split; give a larger dataset")

    v = direction.detach().double().flatten()
    v = v / v.norm()
    acts, _ = cache_activations(model, list(dataset.texts), dataset.read, [(site, layer)], progress, "illusion check")
    H = acts[(site, layer)]
    span = read_space(model, site, layer)
    v_read = span.T @ (span @ v) if span.shape[0] else torch.zeros_like(v)
    v_unread = v - v_read
    unread_fraction = float(v_unread.norm() ** 2)
    Hd = H.double() - H.double().mean(0)
    read_variation = float((Hd @ _unit(v_read)).std() / (Hd @ v).std().clamp_min(1e-12)) if float(v_read.norm()) > 1e-6 else 0.0
    classes = dataset.classes
    y = torch.tensor([classes.index(lab) for lab in dataset.labels])
    ys = y[[s_ for _, s_ in pairs]]

    def iia(edit: Any) -> float:
        ld = torch.zeros(len(pairs))
        for js, base, fn in pair_edits(pairs, ids, H, pos, edit):
            lg, _ = edited_run(model, base, site, layer, fn)
            ld[js] = (lg[:, ans_ids[1]] - lg[:, ans_ids[0]]).float()
        return _acc((ld > 0).long(), ys)

    def along(u: torch.Tensor) -> Any:
        u = _unit(u).float()
        return lambda hb, hs: hb + ((hs - hb) @ u.to(hb.dtype))[:, None] * u.to(hb.dtype)

    iia_v = iia(along(v))
    iia_read = iia(along(v_read)) if float(v_read.norm()) > 1e-6 else 0.0
    iia_unread = iia(along(v_unread)) if unread_fraction > 1e-6 else 0.0
    iia_full = iia(lambda hb, hs: hs)
    reasons = []
    if iia_v >= 0.5 and max(iia_read, iia_unread) < iia_v - drop:
        reasons.append(
            f"v works (IIA {iia_v:.2f}) but neither of its parts does alone: the part nothing downstream reads "
            f"({unread_fraction:.0%} of v) gives {iia_unread:.2f}, the read part {iia_read:.2f} (and varies "
            f"{read_variation:.2f}x as much as v on the data): the patch writes the unread part's difference "
            "into a pathway the model does not use on its own"
        )
    if iia_v - iia_full > drop:
        reasons.append(f"patching along v ({iia_v:.2f}) beats patching the whole component ({iia_full:.2f})")
    return IllusionCheck(model.name, site, layer, iia_v, iia_read, iia_unread, iia_full, unread_fraction,
                         read_variation, len(pairs), float(drop), reasons)  # fmt: skip


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm().clamp_min(1e-12)


__all__ = ["IllusionCheck", "illusion_check", "read_space"]
