"""A toy model of superposition (Elhage et al. 2022) and how well an SAE recovers its features.

``n`` ground-truth features ``x_i`` are zero with probability ``sparsity`` and uniform on [0, 1]
otherwise. A linear map ``W`` (``[d_hidden, n]``, ``d_hidden < n``) embeds them into a hidden
space, and ``x_hat = ReLU(W^T W x + b)`` reads them back; training minimises the
importance-weighted squared error, ``sum_i I_i (x_i - x_hat_i)^2`` with ``I_i = decay^i``. The
sparser the features, the more of them the model packs into the ``d_hidden`` dimensions.

An SAE trained on the hidden activations ``h = W x`` should find the planted directions: a
planted feature counts as recovered when some decoder row has cosine ``>= 0.9`` with its column
``W_i``. :func:`recovery_curve` reports the recovered fraction of all ``n`` features across
sparsities.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .sae import SAE, fit


class ToyModel(nn.Module):
    """``x_hat = ReLU(W^T W x + b)`` with ``W`` ``[d_hidden, n_features]``."""

    def __init__(self, n_features: int, d_hidden: int, sparsity: float, importance_decay: float = 1.0, seed: int = 0):
        super().__init__()
        if not 0 < d_hidden < n_features:
            raise ValueError(f"need 0 < d_hidden < n_features for superposition, got d_hidden={d_hidden}, n_features={n_features}")
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity is the probability a feature is zero: 0 <= sparsity < 1, got {sparsity}")
        g = torch.Generator().manual_seed(seed)
        self.n_features, self.d_hidden, self.sparsity = n_features, d_hidden, sparsity
        self.W = nn.Parameter(torch.randn(d_hidden, n_features, generator=g) * (2 / (d_hidden + n_features)) ** 0.5)
        self.b = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("importance", importance_decay ** torch.arange(n_features, dtype=torch.float32))
        self.gen = torch.Generator().manual_seed(seed + 1)

    def sample(self, batch: int) -> torch.Tensor:
        """Ground-truth feature vectors ``[batch, n_features]``."""
        x = torch.rand(batch, self.n_features, generator=self.gen)
        on = torch.rand(batch, self.n_features, generator=self.gen) >= self.sparsity
        return x * on

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x) @ self.W + self.b)

    def train_model(self, steps: int = 2000, batch: int = 1024, lr: float = 1e-2) -> float:
        """Train in place; returns the final loss."""
        opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=0.0)
        loss = torch.tensor(0.0)
        for step in range(steps):
            x = self.sample(batch)
            loss = (self.importance * (x - self(x)).pow(2)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, 2 * (steps - step) / steps)
            opt.step()
        return float(loss.detach())

    def represented(self, min_norm: float = 0.5) -> torch.Tensor:
        """Which features the model embeds (``||W_i|| >= min_norm``) ``[n_features]``."""
        return self.W.detach().norm(dim=0) >= min_norm

    def batches(self, batch: int) -> Iterator[torch.Tensor]:
        while True:
            with torch.no_grad():
                h = self.hidden(self.sample(batch))
            yield h  # outside no_grad: a generator's grad mode leaks into its caller


def max_cosines(W_dec: torch.Tensor, planted: torch.Tensor) -> torch.Tensor:
    """For each planted direction (rows of ``planted`` ``[n, d]``), the largest cosine with any
    decoder row (``W_dec`` ``[d_sae, d]``): ``[n]``."""
    a = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = planted / planted.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (b @ a.T).max(dim=-1).values


@dataclass
class ToyRecovery:
    """One toy model and the SAE trained on it. ``cosines[i]``: best decoder cosine of planted
    feature ``i``; ``recovered``: fraction of all planted features with cosine ``>= threshold``."""

    sparsity: float
    n_features: int
    d_hidden: int
    cosines: torch.Tensor
    represented: torch.Tensor
    threshold: float
    toy: ToyModel = field(repr=False)
    sae: SAE = field(repr=False)

    @property
    def recovered(self) -> float:
        return float((self.cosines >= self.threshold).float().mean())

    @property
    def recovered_of_represented(self) -> float:
        rep = self.represented
        return float((self.cosines[rep] >= self.threshold).float().mean()) if rep.any() else float("nan")

    def to_pandas(self) -> Any:
        """One row per planted feature: its embedding norm in the toy model and best cosine."""
        import pandas as pd

        norms = self.toy.W.detach().norm(dim=0)
        return pd.DataFrame(
            {
                "feature": range(self.n_features),
                "norm": norms.tolist(),
                "represented": self.represented.tolist(),
                "max_cosine": self.cosines.tolist(),
                "recovered": (self.cosines >= self.threshold).tolist(),
            }
        )

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        ax.bar(range(self.n_features), self.cosines.numpy())
        ax.axhline(self.threshold, color="grey", ls="--")
        ax.set_xlabel("planted feature")
        ax.set_ylabel("best decoder cosine")
        ax.set_title(f"S = {self.sparsity}: {self.recovered:.0%} recovered")
        return ax.figure


def toy_recovery(
    sparsity: float = 0.95,
    n_features: int = 20,
    d_hidden: int = 5,
    *,
    importance_decay: float = 1.0,
    d_sae: int | None = None,
    kind: str = "topk",
    k: int | None = None,
    toy_steps: int = 300,
    sae_steps: int = 300,
    batch: int = 256,
    threshold: float = 0.9,
    seed: int = 0,
    **fit_kwargs: Any,
) -> ToyRecovery:
    """Train a toy model at ``sparsity`` and an SAE (``d_sae`` latents, default ``2 n_features``)
    on its hidden activations; measure how many planted features the decoder recovers.
    ``kind="topk"`` (default) takes ``k`` = the expected number of active features + 1 unless
    given. Importance is uniform by default (``importance_decay=1``) so that, at high sparsity,
    the toy model embeds every feature and all of them can be recovered."""
    toy = ToyModel(n_features, d_hidden, sparsity, importance_decay, seed)
    toy.train_model(steps=toy_steps, batch=4 * batch, lr=2e-2)
    toy.requires_grad_(False)
    if kind == "topk" and k is None:  # about the expected number of active features, at least 1
        k = max(1, min(n_features, round(n_features * (1 - sparsity)) + 1))
    sae = SAE(d_hidden, d_sae or 2 * n_features, kind, site="toy_hidden", layer=0, k=k, seed=seed)
    fit_kwargs.setdefault("l1_coefficient", 0.3)
    fit_kwargs.setdefault("lr", 1e-2)
    fit_kwargs.setdefault("dead_window", 50 * batch)
    fit(sae, toy.batches(batch), steps=sae_steps, progress=False, seed=seed, **fit_kwargs)
    cos = max_cosines(sae.W_dec.detach(), toy.W.detach().T)
    return ToyRecovery(sparsity, n_features, d_hidden, cos, toy.represented(), threshold, toy, sae)


@dataclass
class RecoveryCurve:
    """Planted-feature recovery against feature sparsity (one :class:`ToyRecovery` per point)."""

    points: list[ToyRecovery]

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "sparsity": p.sparsity,
                    "recovered": p.recovered,
                    "represented": float(p.represented.float().mean()),
                    "recovered_of_represented": p.recovered_of_represented,
                    "mean_max_cosine": float(p.cosines.mean()),
                }
                for p in self.points
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        df = self.to_pandas()
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        x = 1 - df["sparsity"]
        ax.plot(x, df["recovered"], "o-", label=f"recovered (cos ≥ {self.points[0].threshold:.2f})")
        ax.plot(x, df["represented"], "s--", label="represented by the toy model")
        ax.set_xscale("log")
        ax.set_xlabel("feature probability 1 − S")
        ax.set_ylabel("fraction of planted features")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title(f"SAE recovery: {self.points[0].n_features} features in {self.points[0].d_hidden} dims")
        return ax.figure


def recovery_curve(sparsities: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98), progress: bool = True, **kwargs: Any) -> RecoveryCurve:
    """:func:`toy_recovery` at each sparsity (same seed and sizes)."""
    it: Any = sparsities
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(sparsities, desc="toy models", leave=False)
    return RecoveryCurve([toy_recovery(s, **kwargs) for s in it])
