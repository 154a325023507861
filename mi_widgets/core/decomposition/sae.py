"""Sparse dictionaries: SAEs (ReLU + L1, TopK, JumpReLU), transcoders and crosscoders.

A dictionary maps a site's activation ``x`` (``[..., d_in]``) to sparse feature activations
``f = encode(x)`` (``[..., d_sae]``) and back, ``decode(f) = f @ W_dec + b_dec``. Every
dictionary here satisfies the protocol the feature views use: ``encode``, ``decode``,
``W_dec`` ``[d_sae, d_in]`` (rows are feature directions, unit norm for SAEs and transcoders),
``d_in``, ``d_sae``, ``site`` and ``layer`` (where it reads, in mi-widgets site names).

- :class:`SAE` reconstructs the site it reads. ``kind``: ``"relu"`` (ReLU, L1 penalty, unit-norm
  decoder rows, dead-latent resampling), ``"topk"`` (keeps the k largest pre-activations; AuxK
  loss on dead latents, Gao et al. 2024) or ``"jumprelu"`` (learnable per-feature thresholds,
  straight-through estimator, L0 penalty; Rajamanoharan et al. 2024).
- :class:`Transcoder` reads the MLP input (``resid_mid``) and predicts the MLP output
  (``out_site="mlp_out"``, same layer).
- :class:`Crosscoder` reads several layers of one site at once: ``encode`` takes
  ``[..., n_layers, d_in]`` (the per-layer encoders' pre-activations are summed) and ``decode``
  returns ``[..., n_layers, d_in]``; ``W_dec`` is ``[d_sae, n_layers, d_in]``, ``layers`` lists the
  layers and ``layer`` is the last of them.

Training (:func:`train_sae`, :func:`train_transcoder`, :func:`train_crosscoder`) streams
activations from an :class:`~mi_widgets.core.activation_store.ActivationStore`. Inputs are
scaled to mean squared norm ``d_in`` while training and the scale is folded back into the
weights at the end, so a trained dictionary takes raw activations. Interrupting (Ctrl-C)
returns the partially trained dictionary, folded and usable.

:func:`evaluate` gives L0, fraction of variance explained, dead and dense latents and the
cross-entropy loss recovered with the dictionary spliced into the model (an nnsight
intervention) against the clean model and against zero-ablation of the site.

:func:`save_sae` / :func:`load_sae` read and write the SAELens on-disk format (``cfg.json`` +
``sae_weights.safetensors`` with keys ``W_enc`` ``[d_in, d_sae]``, ``b_enc``, ``W_dec``
``[d_sae, d_in]``, ``b_dec``, and ``threshold`` for JumpReLU).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import (
    check_dictionary_width,
    check_index,
    check_model,
    check_positive_int,
    check_str_list,
)
from .._views import view
from ..model import Model
from ..model.remote import require_local
from .activation_store import STORE_SITES, ActivationStore, special_ids, tokenize_batch

KINDS = ("relu", "topk", "jumprelu")


# --------------------------------------------------------------------------------------------
# JumpReLU straight-through estimators
# --------------------------------------------------------------------------------------------


def _rect(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        z, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        gz = grad * (z > threshold).to(z.dtype)
        gt = -(threshold / bw) * _rect((z - threshold) / bw) * grad
        return gz, gt.reshape(-1, threshold.shape[-1]).sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        z, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        gt = -(1.0 / bw) * _rect((z - threshold) / bw) * grad
        return torch.zeros_like(z), gt.reshape(-1, threshold.shape[-1]).sum(0), None


# --------------------------------------------------------------------------------------------
# Dictionaries
# --------------------------------------------------------------------------------------------


class SAE(nn.Module):
    """A sparse autoencoder on ``site`` at ``layer``: ``f = act((x - b_dec) @ W_enc + b_enc)``,
    ``x_hat = f @ W_dec + b_dec``. Feature activations are in the site's units (the decoder
    rows have unit norm)."""

    out_site: str | None = None

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        kind: str = "relu",
        *,
        site: str = "resid_post",
        layer: int = 0,
        k: int | None = None,
        model_name: str = "",
        d_out: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "topk" and (k is None or not 0 < k <= d_sae):
            raise ValueError(f"a topk SAE needs k in 1..d_sae={d_sae}, got k={k!r}")
        if d_in < 1 or d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive, got {d_in}, {d_sae}")
        self.d_in, self.d_sae, self.kind, self.k = d_in, d_sae, kind, k
        self.d_out = d_out or d_in
        self.site, self.layer, self.model_name = site, layer, model_name
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_sae, self.d_out, generator=g)
        w = w / w.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        if self.d_out == d_in:
            w_enc = w.T.clone()
        else:
            w_enc = torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))
        # JumpReLU thresholds, learnt in log space
        self.log_threshold = nn.Parameter(torch.full((d_sae,), 0.0)) if kind == "jumprelu" else None
        self.bandwidth = 0.05

    # the SAE reads x and subtracts b_dec first (SAELens apply_b_dec_to_input) only when it
    # reconstructs its own input
    @property
    def apply_b_dec_to_input(self) -> bool:
        return self.out_site is None and not getattr(self, "_no_b_dec_in", False)

    @property
    def threshold(self) -> torch.Tensor | None:
        return None if self.log_threshold is None else self.log_threshold.exp()

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"input has width {x.shape[-1]} but this dictionary reads d_in={self.d_in}")
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return torch.relu(pre)
        if self.kind == "topk":
            top = torch.topk(pre, self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        z = torch.relu(pre)
        return _JumpReLU.apply(z, self.threshold, self.bandwidth)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` of activations ``x`` ``[..., d_in]``."""
        x = x.to(self.W_enc.dtype)
        return self.activation(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[..., d_out]`` from feature activations ``[..., d_sae]``."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # -- training helpers -----------------------------------------------------------------

    def decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the gradient component along each unit decoder row (keeps the rows on
        the sphere to first order)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec.data
        self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def fold_scale(self, s: float) -> None:
        """Make a dictionary trained on ``x / s`` take raw ``x``: feature activations and
        reconstructions are multiplied by ``s`` (biases and thresholds scale; directions stay)."""
        self.b_enc.mul_(s)
        self.b_dec.mul_(s)
        if self.log_threshold is not None:
            self.log_threshold.add_(math.log(s))

    def extra_repr(self) -> str:
        out = f", out_site={self.out_site}" if self.out_site else ""
        k = f", k={self.k}" if self.kind == "topk" else ""
        return f"{self.kind}, d_in={self.d_in}, d_sae={self.d_sae}{k}, site={self.site}, layer={self.layer}{out}"

    # -- views ----------------------------------------------------------------------------

    def widget(self, model: Model | None = None, texts: Any = None, **kwargs: Any) -> Any:
        """The feature dashboard for this dictionary (needs the model it was trained on)."""
        return view(self, model, texts, **kwargs)

    def save(self, path: str | Path) -> Path:
        return save_sae(self, path)


class Transcoder(SAE):
    """Reads the MLP input (``resid_mid`` at ``layer``) and predicts the MLP output
    (``out_site="mlp_out"`` at the same layer): ``mlp_out ≈ decode(encode(resid_mid))``."""

    def __init__(self, d_in: int, d_sae: int, kind: str = "relu", *, layer: int = 0, out_site: str = "mlp_out", **kw: Any):
        kw.setdefault("site", "resid_mid")
        super().__init__(d_in, d_sae, kind, layer=layer, **kw)
        self.out_site = out_site


class Crosscoder(SAE):
    """One dictionary across ``layers`` of ``site``: ``encode(x)`` takes ``x`` ``[..., L, d_in]``
    and sums the per-layer encoders, ``decode(f)`` returns ``[..., L, d_in]``. ``W_enc`` is
    ``[L, d_in, d_sae]``, ``W_dec`` ``[d_sae, L, d_in]``, ``b_dec`` ``[L, d_in]``. The sparsity
    penalty weights each feature by the sum of its per-layer decoder norms (decoder rows are
    not normalised, so a feature can live in some layers only)."""

    def __init__(self, d_in: int, d_sae: int, layers: list[int], kind: str = "relu", *, site: str = "resid_post", **kw: Any):
        super().__init__(d_in, d_sae, kind, site=site, layer=int(layers[-1]), **kw)
        self.layers = [int(x) for x in layers]
        L = len(self.layers)
        g = torch.Generator().manual_seed(kw.get("seed", 0))
        w = torch.randn(d_sae, L, d_in, generator=g)
        w = 0.1 * w / w.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.permute(1, 2, 0).clone())
        self.b_dec = nn.Parameter(torch.zeros(L, d_in))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (len(self.layers), self.d_in):
            raise ValueError(f"a crosscoder takes [..., {len(self.layers)}, {self.d_in}] (layers {self.layers}), got {list(x.shape)}")
        return torch.einsum("...ld,lds->...s", x - self.b_dec, self.W_enc) + self.b_enc

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...s,sld->...ld", f, self.W_dec) + self.b_dec

    def decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=-1).sum(-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:  # the weighted L1 keeps the scale in check
        pass

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainingLog:
    """Per-logging-step training curves: ``step``, ``tokens``, ``mse`` (normalised: 1 - FVE on
    the batch), ``l0``, ``loss``, ``dead`` (fraction of latents that have not fired in the
    dead window)."""

    rows: list[dict] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    tokens: int = 0

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self) -> Any:
        import matplotlib.pyplot as plt

        df = self.to_pandas()
        fig, axes = plt.subplots(1, 3, figsize=(11, 3))
        for ax, col in zip(axes, ("mse", "l0", "dead")):
            if len(df):
                ax.plot(df["tokens"], df[col])
            ax.set_xlabel("tokens")
            ax.set_title(col)
        fig.tight_layout()
        return fig


def _loss(sae: SAE, x: torch.Tensor, target: torch.Tensor, *, l1: float, l0: float, aux: float, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pre = sae.pre_acts(x)
    f = sae.activation(pre)
    recon = sae.decode(f)
    err = (recon - target).pow(2).reshape(len(x), -1).sum(-1)
    mse = err.mean()
    if sae.kind == "relu":
        loss = mse + l1 * (f * sae.decoder_norms()).sum(-1).mean()
    elif sae.kind == "jumprelu":
        loss = mse + l0 * _Step.apply(torch.relu(pre), sae.threshold, sae.bandwidth).sum(-1).mean()
    else:
        loss = mse
        if aux > 0 and bool(dead.any()):
            # AuxK: the dead latents' top pre-activations reconstruct the residual error
            k_aux = min(int(dead.sum()), max(1, sae.d_in // 2))
            dpre = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
            top = torch.topk(dpre, k_aux, dim=-1)
            fa = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
            e = (target - recon).detach()
            e_hat = fa @ sae.W_dec.reshape(sae.d_sae, -1)
            e = e.reshape(len(x), -1)
            denom = (e - e.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
            loss = loss + aux * (e_hat - e).pow(2).sum(-1).mean() / denom
    return loss, f, err


def _split(sae: SAE, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(sae, Crosscoder) or batch.ndim == 2:
        return batch, batch
    return batch[:, 0], batch[:, 1]  # transcoder: (input, target)


@torch.no_grad()
def _resample(sae: SAE, dead: torch.Tensor, x: torch.Tensor, target: torch.Tensor, opt: torch.optim.Optimizer, seed: int) -> int:
    """Re-initialise dead latents towards inputs the dictionary reconstructs worst (Anthropic,
    "Towards monosemanticity"): decoder row = normalised input, encoder column = that input
    scaled to 0.2 x the mean alive encoder norm, bias 0; their optimiser state is reset."""
    idx = dead.nonzero().flatten()
    if len(idx) == 0:
        return 0
    err = (sae(x) - target).pow(2).reshape(len(x), -1).sum(-1)
    g = torch.Generator().manual_seed(seed)
    pick = torch.multinomial(err + 1e-12, len(idx), replacement=True, generator=g)
    tgt = target[pick].reshape(len(idx), -1)
    tgt = tgt / tgt.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc.norm(dim=0)[alive].mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec.data[idx] = tgt.reshape(sae.W_dec.data[idx].shape)
    inp = x[pick]
    inp = inp / inp.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    sae.W_enc.data[:, idx] = (inp * 0.2 * enc_norm).T
    sae.b_enc.data[idx] = 0
    for p in (sae.W_dec, sae.W_enc, sae.b_enc):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                if p is sae.W_enc:
                    st[key][:, idx] = 0
                else:
                    st[key][idx] = 0
    return len(idx)


def fit(
    sae: SAE,
    batches: Iterable[torch.Tensor],
    *,
    steps: int | None = None,
    lr: float = 3e-3,
    l1_coefficient: float = 2.0,
    l0_coefficient: float = 1.0,
    aux_coefficient: float = 1 / 32,
    dead_window: int = 2000,
    resample_every: int | None = None,
    scale: float | None = None,
    warmup_steps: int = 20,
    log_every: int = 20,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
    seed: int = 0,
) -> TrainingLog:
    """Train ``sae`` in place on ``batches`` (``[B, d_in]``; transcoders take ``[B, 2, d]`` =
    (input, target), crosscoders ``[B, L, d]``) with Adam.

    ``scale``: inputs are divided by it while training (default: from the first batch, so that
    the mean squared norm is ``d_in``) and it is folded into the weights when training ends.
    ``l1_coefficient`` (relu), ``l0_coefficient`` (jumprelu) and ``aux_coefficient`` (topk) are
    in those normalised units. ``dead_window``: a latent is dead if it has not fired in that
    many tokens. ``resample_every``: ReLU dead-latent resampling period in steps (``None``: at
    steps 1/4 and 1/2 of ``steps`` when known). Ctrl-C stops training and returns the log with
    ``interrupted=True``; the SAE is left folded and consistent. ``checkpoint_dir`` gets an
    SAELens-format save every ``checkpoint_every`` steps and at the end.
    """
    it: Iterator[torch.Tensor] = iter(batches)
    log = TrainingLog()
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(sae.d_sae, dtype=torch.long)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"train {sae.kind} {sae.site} L{sae.layer}", unit="step", leave=False)
    t0 = time.perf_counter()
    step = 0
    folded = False
    if resample_every is None and sae.kind == "relu" and steps:
        resample_points = {steps // 4, steps // 2}
    else:
        resample_points = set()
    try:
        first = next(it, None)
        if first is None:
            raise ValueError("the activation source gave no batch; give more text or a smaller batch_size")
        x0, t0_ = _split(sae, first)
        if scale is None:
            scale = float(x0.reshape(len(x0), -1, sae.d_in).pow(2).sum(-1).mean().sqrt() / math.sqrt(sae.d_in))
            scale = scale if scale > 0 else 1.0
        with torch.no_grad():  # decoder bias starts at the mean target
            sae.b_dec.data[:] = (t0_ / scale).mean(0).reshape(sae.b_dec.shape)
        batch: torch.Tensor | None = first
        while batch is not None and (steps is None or step < steps):
            x, target = _split(sae, batch)
            x, target = x / scale, target / scale
            for gparam in opt.param_groups:
                gparam["lr"] = lr * min(1.0, (step + 1) / max(1, warmup_steps))
            if steps:  # linear decay over the last 20%
                frac = (steps - step) / max(1, int(0.2 * steps))
                for gparam in opt.param_groups:
                    gparam["lr"] *= min(1.0, frac)
            dead = since_fired >= dead_window
            loss, f, err = _loss(sae, x, target, l1=l1_coefficient, l0=l0_coefficient, aux=aux_coefficient, dead=dead)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_grad()
            opt.step()
            sae.normalize_decoder()
            with torch.no_grad():
                fired = (f > 0).any(0)
                since_fired += len(x)
                since_fired[fired] = 0
            step += 1
            log.tokens += len(x)
            if sae.kind == "relu" and ((resample_every and step % resample_every == 0) or step in resample_points):
                _resample(sae, since_fired >= min(dead_window, step * len(x) // 2), x, target, opt, seed + step)
                since_fired[since_fired >= min(dead_window, step * len(x) // 2)] = 0
            if step % log_every == 0 or step == 1:
                with torch.no_grad():
                    var = (target - target.mean(0)).pow(2).reshape(len(x), -1).sum(-1).mean()
                    row = {
                        "step": step,
                        "tokens": log.tokens,
                        "loss": float(loss),
                        "mse": float(err.mean() / var.clamp_min(1e-12)),
                        "l0": float((f > 0).sum(-1).float().mean()),
                        "dead": float((since_fired >= dead_window).float().mean()),
                    }
                log.rows.append(row)
                if bar is not None:
                    bar.set_postfix(mse=f"{row['mse']:.3f}", l0=f"{row['l0']:.1f}")
            if bar is not None:
                bar.update(1)
            if checkpoint_dir is not None and step % checkpoint_every == 0:
                _checkpoint(sae, scale, checkpoint_dir, step)
            batch = next(it, None)
    except KeyboardInterrupt:
        log.interrupted = True
    finally:
        if scale is not None and not folded:
            sae.fold_scale(scale)
            folded = True
        if bar is not None:
            bar.close()
        log.seconds = time.perf_counter() - t0
    if checkpoint_dir is not None:
        save_sae(sae, Path(checkpoint_dir) / "final")
    sae.eval()
    return log


def _checkpoint(sae: SAE, scale: float, directory: str | Path, step: int) -> None:
    import copy

    snap = copy.deepcopy(sae)
    snap.fold_scale(scale)
    save_sae(snap, Path(directory) / f"step_{step}")


def _check_kind(kind: str, k: int | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "topk" and k is None:
        raise ValueError("kind='topk' needs k (the number of active latents per token), e.g. k=8")


def _store(model: Model, reads: list[tuple[str, int]], texts: Any, tokens: int | None, steps: int | None, batch_size: int, seed: int, progress: bool, column: str) -> ActivationStore:
    max_tokens = tokens if tokens is not None else (steps * batch_size if steps else None)
    return ActivationStore(
        model, reads=reads, texts=texts, batch_size=batch_size, max_tokens=max_tokens, seed=seed,
        progress=False, column=column, buffer_tokens=max(16 * batch_size, batch_size + model.n_ctx),
    )  # fmt: skip


def train_sae(
    model: Model,
    site: str,
    layer: int,
    d_sae: int,
    kind: str = "relu",
    *,
    k: int | None = None,
    tokens: int | None = 200_000,
    steps: int | None = None,
    batch_size: int = 1024,
    texts: Any = None,
    column: str = "text",
    seed: int = 0,
    progress: bool = True,
    **fit_kwargs: Any,
) -> SAE:
    """Train an SAE on ``site`` at ``layer`` of ``model`` over ``texts`` (default: the embedded
    corpus) for ``tokens`` tokens (or ``steps`` batches). Returns the SAE; its training curves
    are in ``sae.log`` (a :class:`TrainingLog`). Other keyword arguments go to :func:`fit`."""
    check_model(model)
    model.check_site(site, layer)
    if site not in STORE_SITES:
        raise ValueError(f"an SAE reads one vector per token; site must be one of {', '.join(STORE_SITES)}")
    _check_kind(kind, k)
    sae = SAE(model.site_width(site), d_sae, kind, site=site, layer=layer, k=k, model_name=model.name, seed=seed)
    store = _store(model, [(site, layer)], texts, tokens, steps, batch_size, seed, progress, column)
    n_steps = steps or (tokens // batch_size if tokens else None)
    sae.log = fit(sae, store, steps=n_steps, progress=progress, seed=seed, **fit_kwargs)
    return sae


def train_transcoder(
    model: Model, layer: int, d_sae: int, kind: str = "relu", *, k: int | None = None, tokens: int | None = 200_000,
    steps: int | None = None, batch_size: int = 1024, texts: Any = None, column: str = "text", seed: int = 0,
    progress: bool = True, **fit_kwargs: Any,
) -> Transcoder:  # fmt: skip
    """Train a transcoder that reads ``resid_mid`` at ``layer`` (the MLP input) and predicts
    ``mlp_out`` at ``layer``. Same arguments as :func:`train_sae`."""
    check_model(model)
    model.check_site("resid_mid", layer)
    _check_kind(kind, k)
    tc = Transcoder(model.d_model, d_sae, kind, layer=layer, k=k, model_name=model.name, seed=seed)
    store = _store(model, [("resid_mid", layer), ("mlp_out", layer)], texts, tokens, steps, batch_size, seed, progress, column)
    n_steps = steps or (tokens // batch_size if tokens else None)
    tc.log = fit(tc, store, steps=n_steps, progress=progress, seed=seed, **fit_kwargs)
    return tc


def train_crosscoder(
    model: Model, layers: list[int], d_sae: int, kind: str = "relu", *, site: str = "resid_post", k: int | None = None,
    tokens: int | None = 200_000, steps: int | None = None, batch_size: int = 1024, texts: Any = None,
    column: str = "text", seed: int = 0, progress: bool = True, **fit_kwargs: Any,
) -> Crosscoder:  # fmt: skip
    """Train a crosscoder over ``site`` at each of ``layers``. Same arguments as :func:`train_sae`."""
    check_model(model)
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be a non-empty list of distinct layers, got {layers!r}")
    for lay in layers:
        model.check_site(site, lay)
    _check_kind(kind, k)
    cc = Crosscoder(model.site_width(site), d_sae, list(layers), kind, site=site, k=k, model_name=model.name, seed=seed)
    store = _store(model, [(site, lay) for lay in layers], texts, tokens, steps, batch_size, seed, progress, column)
    n_steps = steps or (tokens // batch_size if tokens else None)
    fit_kwargs.setdefault("l1_coefficient", 1.0)
    cc.log = fit(cc, store, steps=n_steps, progress=progress, seed=seed, **fit_kwargs)
    return cc


# --------------------------------------------------------------------------------------------
# Splicing (nnsight) and metrics
# --------------------------------------------------------------------------------------------


def _unembed(model: Model) -> Any:
    from ..interventions.engine import _unembed_path
    from ..model import _get

    return _get(model.nn, _unembed_path(model), envoy=True)


def _first(v: Any) -> torch.Tensor:
    return v[0] if isinstance(v, (tuple, list)) else v


def _with_first(v: Any, new: torch.Tensor) -> Any:
    return (new, *v[1:]) if isinstance(v, tuple) else new


def spliced_forward(
    model: Model,
    ids: torch.Tensor,
    mask: torch.Tensor,
    keep: torch.Tensor,
    dictionary: SAE | None = None,
    mode: str = "splice",
    reduce: Any = None,
) -> Any:
    """One nnsight trace over ``ids`` ``[B, T]`` in which the dictionary's site is replaced, at
    the ``keep`` positions, by the dictionary's reconstruction (``mode="splice"``), by zeros
    (``mode="zero"``), or left alone (``mode="clean"`` / ``dictionary=None``). ``reduce(logits,
    ids, mask)`` runs inside the trace on the logits and its result is returned (so only what it
    keeps leaves the trace); default: the logits."""
    if mode not in ("splice", "zero", "clean"):
        raise ValueError(f"mode must be 'splice', 'zero' or 'clean', got {mode!r}")
    if isinstance(dictionary, Crosscoder) and mode != "clean":
        raise ValueError("a crosscoder spans several layers and is not spliced at one site; evaluate it with splice=False")
    reduce = reduce or (lambda logits, _ids, _mask: logits)
    keep_d = keep.to(model.device)[..., None]
    dev = model.device

    def replace(value: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        src = value if source is None else source
        if mode == "zero":
            new = torch.zeros_like(value)
        else:
            new = dictionary(src.float()).to(value.dtype)  # type: ignore[misc]
        return torch.where(keep_d, new, value)

    unembed = _unembed(model)
    with torch.no_grad(), model.nn.trace(ids.to(dev), attention_mask=mask.to(dev), remote=model.remote):
        if dictionary is not None and mode != "clean":
            site, layer = dictionary.site, dictionary.layer
            block = model._module(layer, "")
            if dictionary.out_site is not None:  # transcoder: read the MLP input, write the MLP output
                r_in = model.arch.reads[site]
                env_in = model._module(layer, r_in.module)
                x_in = _first(env_in.input if r_in.io == "input" else env_in.output)
                r_out = model.arch.reads[dictionary.out_site]
                env = model._module(layer, r_out.module)
                out = env.output
                env.output = _with_first(out, replace(_first(out), x_in))
            elif site == "resid_pre":
                block.input = replace(block.input)
            elif site == "resid_mid":
                x = block.input
                attn = model._module(layer, model.arch.reads["attn_out"].module)
                a = attn.output
                a0 = _first(a)
                cur = x + a0
                attn.output = _with_first(a, a0 + (replace(cur) - cur))
            else:
                r = model.arch.reads[site]
                env = model._module(layer, r.module)
                if r.io == "input":
                    env.input = replace(env.input)
                else:
                    out = env.output
                    env.output = _with_first(out, replace(_first(out)))
        result = reduce(unembed.output, ids.to(dev), mask.to(dev)).save()
    return result


def _ce_sum(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy and count over real target positions: ``[2]``."""
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    nll = -lp.gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:].float()
    return torch.stack([(nll * m).sum(), m.sum()])


@dataclass
class SAEMetrics:
    """How well a dictionary does on held-out text.

    ``l0``: mean active latents per token. ``fve``: fraction of variance explained,
    ``1 - E||x - x_hat||^2 / E||x - E x||^2``. ``dead``: fraction of latents that never fired on
    the evaluation tokens; ``dense``: fraction firing on more than ``dense_threshold`` of
    tokens. ``ce_clean`` / ``ce_spliced`` / ``ce_zero``: the model's mean next-token loss (nats)
    clean, with the dictionary spliced in at its site, and with the site zero-ablated (at real
    tokens; BOS is left alone). ``ce_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)``.
    ``frequency``: each latent's firing frequency ``[d_sae]``.
    """

    name: str
    n_tokens: int
    l0: float
    fve: float
    dead: float
    dense: float
    ce_clean: float
    ce_spliced: float
    ce_zero: float
    frequency: torch.Tensor = field(repr=False)
    dense_threshold: float = 0.1

    @property
    def ce_recovered(self) -> float:
        gap = self.ce_zero - self.ce_clean
        return float("nan") if abs(gap) < 1e-9 else (self.ce_zero - self.ce_spliced) / gap

    def to_pandas(self) -> Any:
        import pandas as pd

        keys = ["l0", "fve", "dead", "dense", "ce_clean", "ce_spliced", "ce_zero", "ce_recovered", "n_tokens"]
        return pd.DataFrame([{"dictionary": self.name, **{k: getattr(self, k) for k in keys}}])

    def plot(self) -> Any:
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3))
        freq = self.frequency.clamp_min(1e-7).log10()
        a1.hist(freq.numpy(), bins=40)
        a1.set_xlabel("log10 firing frequency")
        a1.set_ylabel("latents")
        a1.set_title(f"{self.name}: L0 {self.l0:.1f}, dead {self.dead:.0%}")
        names = ["FVE", "CE recovered"]
        a2.bar(names, [self.fve, self.ce_recovered], color=["#4c72b0", "#dd8452"])
        a2.set_ylim(min(0.0, self.fve, self.ce_recovered), 1.05)
        a2.set_title(f"CE clean {self.ce_clean:.3f} / spliced {self.ce_spliced:.3f} / zero {self.ce_zero:.3f}")
        fig.tight_layout()
        return fig


def eval_texts(n: int = 400, seed: int = 1) -> list[str]:
    """Held-out text for evaluation: corpus rows drawn with another seed than the training ones."""
    from ...zoo import corpus

    return corpus.training_rows(seed=seed, n_rows=n)


def evaluate(
    dictionary: SAE,
    model: Model,
    texts: list[str] | None = None,
    *,
    batch_texts: int = 64,
    splice: bool = True,
    dense_threshold: float = 0.1,
    progress: bool = False,
) -> SAEMetrics:
    """Metrics of ``dictionary`` on ``texts`` (default: 400 held-out corpus rows). With
    ``splice`` (not for crosscoders) the model is also run three times per batch (clean, spliced,
    zero-ablated) to measure the cross-entropy loss recovered."""
    check_model(model)
    require_local(model, "evaluate", "it splices the dictionary into the forward with local hooks; use encode_texts on the remote model for L0 and reconstruction")
    check_dictionary_width(dictionary, model)
    if texts is not None:
        check_str_list(texts, "texts")
    texts = eval_texts() if texts is None else list(texts)
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ValueError("texts must be a non-empty list of non-empty strings")
    is_cc = isinstance(dictionary, Crosscoder)
    if is_cc:
        reads = [(dictionary.site, lay) for lay in dictionary.layers]
    elif dictionary.out_site is not None:
        reads = [(dictionary.site, dictionary.layer), (dictionary.out_site, dictionary.layer)]
    else:
        reads = [(dictionary.site, dictionary.layer)]
    for s, lay in reads:
        model.check_site(s, lay)
    if splice and is_cc:
        splice = False
    from .activation_store import _batch_reads

    n = 0
    l0 = 0.0
    err = 0.0
    xs_sum = None
    xs_sq = 0.0
    fired = torch.zeros(dictionary.d_sae)
    ce = {"clean": torch.zeros(2), "splice": torch.zeros(2), "zero": torch.zeros(2)}
    batches = [texts[i : i + batch_texts] for i in range(0, len(texts), batch_texts)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluate", leave=False)
    with torch.no_grad():
        for chunk in batches:
            ids, mask, keep = tokenize_batch(model, chunk)
            vals = _batch_reads(model, ids, mask, reads)
            if is_cc:
                x = torch.stack([v[keep] for v in vals], dim=1)
                target = x
            else:
                x = vals[0][keep]
                target = vals[-1][keep]
            f = dictionary.encode(x)
            recon = dictionary.decode(f)
            active = f > 0
            l0 += float(active.sum())
            fired += active.sum(0).float()
            tflat = target.reshape(len(target), -1)
            err += float((recon.reshape(len(target), -1) - tflat).pow(2).sum())
            xs_sum = tflat.sum(0) if xs_sum is None else xs_sum + tflat.sum(0)
            xs_sq += float(tflat.pow(2).sum())
            n += len(x)
            if splice:
                for mode in ce:
                    ce[mode] += spliced_forward(model, ids, mask, keep, dictionary, mode if mode != "clean" else "clean", _ce_sum).cpu()
    if n == 0:
        raise ValueError("the texts have no real tokens to evaluate on")
    var = xs_sq - float(xs_sum.pow(2).sum()) / n  # type: ignore[union-attr]
    freq = fired / n
    nan = float("nan")
    return SAEMetrics(
        name=repr_name(dictionary),
        n_tokens=n,
        l0=l0 / n,
        fve=1 - err / max(var, 1e-12),
        dead=float((fired == 0).float().mean()),
        dense=float((freq > dense_threshold).float().mean()),
        ce_clean=float(ce["clean"][0] / ce["clean"][1]) if splice else nan,
        ce_spliced=float(ce["splice"][0] / ce["splice"][1]) if splice else nan,
        ce_zero=float(ce["zero"][0] / ce["zero"][1]) if splice else nan,
        frequency=freq,
        dense_threshold=dense_threshold,
    )


def repr_name(d: SAE) -> str:
    kind = type(d).__name__
    where = f"{d.site} L{'/'.join(map(str, d.layers))}" if isinstance(d, Crosscoder) else f"{d.site} L{d.layer}"
    out = f" -> {d.out_site}" if d.out_site else ""
    return f"{kind}({d.kind}) {where}{out} d_sae={d.d_sae}"


def top_activations(dictionary: SAE, model: Model, feature: int, texts: list[str], k: int = 20, batch_texts: int = 64) -> list[tuple[float, str, int, str]]:
    """The ``k`` largest activations of ``feature`` over ``texts``: ``(value, token, position,
    text)``, largest first (a simple pass; the dashboard's dataset pass is richer)."""
    check_model(model)
    check_dictionary_width(dictionary, model)
    check_str_list(texts, "texts")
    check_positive_int(k, "k")
    check_positive_int(batch_texts, "batch_texts")
    check_index(feature, dictionary.d_sae, "feature")
    from .activation_store import _batch_reads

    reads = [(dictionary.site, lay) for lay in dictionary.layers] if isinstance(dictionary, Crosscoder) else [(dictionary.site, dictionary.layer)]
    vals, where = [], []
    with torch.no_grad():
        for i in range(0, len(texts), batch_texts):
            chunk = texts[i : i + batch_texts]
            ids, mask, keep = tokenize_batch(model, chunk)
            v = _batch_reads(model, ids, mask, reads)
            x = torch.stack(v, dim=2) if len(reads) > 1 else v[0]
            f = dictionary.encode(x)[..., feature].masked_fill(~keep, -torch.inf)
            flat = f.flatten()
            top = torch.topk(flat, min(k, flat.numel()))
            for val, j in zip(top.values.tolist(), top.indices.tolist()):
                b, t = divmod(j, ids.shape[1])
                if val > -math.inf:
                    vals.append(val)
                    where.append((model.token_str(int(ids[b, t])), t, chunk[b]))
    order = sorted(range(len(vals)), key=lambda j: -vals[j])[:k]
    return [(vals[j], *where[j]) for j in order]


# --------------------------------------------------------------------------------------------
# SAELens format
# --------------------------------------------------------------------------------------------

_HOOKS = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "mlp_post": "mlp.hook_post",
}
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens/SAELens hook name of a site: ``("resid_post", 1)`` ->
    ``"blocks.1.hook_resid_post"``."""
    if site not in _HOOKS:
        raise ValueError(f"site {site!r} has no SAELens hook name; one of {', '.join(_HOOKS)}")
    return f"blocks.{layer}.{_HOOKS[site]}"


def parse_hook_name(name: str) -> tuple[str, int]:
    """``"blocks.1.hook_resid_post"`` -> ``("resid_post", 1)``."""
    m = _HOOK_RE.match(name or "")
    inverse = {v: k for k, v in _HOOKS.items()}
    if not m or m.group(2) not in inverse:
        raise ValueError(
            f"hook name {name!r} does not map to a mi-widgets site; supported: blocks.<L>.{{{', '.join(_HOOKS.values())}}}"
        )
    return inverse[m.group(2)], int(m.group(1))


_ARCH_TO_KIND = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}
_KIND_TO_ARCH = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}
# SAELens' own transcoder architectures (no b_dec on the input, as in SAELens' Transcoder)
_TRANSCODER_ARCH_TO_KIND = {"transcoder": "relu", "jumprelu_transcoder": "jumprelu"}
# SAELens 6 architectures whose math this module does not implement: refused by name
_UNSUPPORTED_ARCH = {
    "gated": "a gated encoder (separate gate and magnitude paths)",
    "abstopk": "top-k by absolute value (negative activations kept)",
    "temporal": "a temporal SAE (attention over earlier positions)",
    "matching_pursuit": "matching-pursuit encoding",
    "skip_transcoder": "a skip connection W_skip",
    "jumprelu_skip_transcoder": "a skip connection W_skip",
    "batchtopk": "a batch-level top-k (SAELens saves trained BatchTopK SAEs as 'jumprelu')",
    "matryoshka_batchtopk": "a batch-level top-k (SAELens saves them as 'jumprelu')",
}
_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "float64": torch.float64, "double": torch.float64,
}  # fmt: skip
_WEIGHT_KEYS = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold", "scaling_factor"}


def _cfg_dtype(value: Any) -> torch.dtype:
    name = str(value).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"cfg.json field dtype={value!r} is not a floating dtype this loader knows; one of {sorted(_DTYPES)}")
    return _DTYPES[name]

def save_sae(dictionary: SAE, path: str | Path) -> Path:
    """Write ``dictionary`` in the SAELens format: ``path/cfg.json`` and
    ``path/sae_weights.safetensors``. Crosscoders use the same two files with
    ``architecture="mi_widgets.crosscoder"`` (SAELens has no crosscoder)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    d = dictionary
    tensors = {
        "W_enc": d.W_enc.detach().contiguous().cpu(),
        "b_enc": d.b_enc.detach().contiguous().cpu(),
        "W_dec": d.W_dec.detach().contiguous().cpu(),
        "b_dec": d.b_dec.detach().contiguous().cpu(),
    }
    if d.kind == "jumprelu":
        tensors["threshold"] = d.threshold.detach().contiguous().cpu()  # type: ignore[union-attr]
    arch = "mi_widgets.crosscoder" if isinstance(d, Crosscoder) else _KIND_TO_ARCH[d.kind]
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": d.d_in,
        "d_sae": d.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": d.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "hook_name": hook_name(d.site, d.layer),
        "metadata": {"model_name": d.model_name, "hook_name": hook_name(d.site, d.layer), "mi_widgets_kind": d.kind},
    }
    if d.kind == "topk":
        cfg["k"] = d.k
    if d.out_site is not None:
        cfg["d_out"] = d.d_out
        cfg["hook_name_out"] = hook_name(d.out_site, d.layer)
    if isinstance(d, Crosscoder):
        cfg["layers"] = d.layers
        cfg["site"] = d.site
    save_file(tensors, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path


def load_sae(path: str | Path, *, dtype: torch.dtype | str | None = None) -> SAE:
    """Load an SAELens-format directory (``cfg.json`` + ``sae_weights.safetensors``) written here
    or by SAELens 4-6: architectures ``standard``, ``topk``, ``jumprelu``, SAELens' ``transcoder``
    and ``jumprelu_transcoder``, and this module's transcoders (``hook_name_out``) and
    crosscoders. Hook names ``blocks.<L>.hook_<site>`` map to mi-widgets sites.

    The loader never guesses: every cfg field that changes what the dictionary computes is either
    applied exactly as SAELens applies it or refused with a ``ValueError`` naming the field.
    Applied: ``apply_b_dec_to_input``; ``rescale_acts_by_decoder_norm`` (TopK: folded into the
    weights, so ``encode`` returns SAELens' feature activations and ``decode`` its
    reconstruction); ``normalize_activations="expected_average_only_in"`` when the cfg carries
    its ``norm_scaling_factor`` (folded as SAELens folds it); ``finetuning_scaling_factor``
    (SAELens 4-5: ``scaling_factor`` folded into the decoder); ``dtype`` (the parameters are
    kept in that dtype unless ``dtype=`` overrides it); pre-6 ``activation_fn="topk"``.
    Refused: other ``normalize_activations`` (``layer_norm``, ``constant_norm_rescale``,
    ``covariance_whitening``, or a missing scaling factor), ``reshape_activations="hook_z"`` and
    hook names ending in ``hook_z``, a ``hook_head_index``, architectures not implemented here,
    activation functions other than relu/topk, a residual stream from TransformerLens with
    ``center_writing_weights=True`` (not the stream a Hugging Face model produces), unknown
    weight tensors. ``prepend_bos`` does not change the dictionary's math; it is kept as
    ``sae.prepend_bos`` (``None`` when the cfg does not say)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / "cfg.json", path / "sae_weights.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(f"{path} is not an SAELens directory: it needs cfg.json and sae_weights.safetensors")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    meta = cfg.get("metadata") or {}

    def field(name: str, default: Any = None) -> Any:
        """A cfg field, top level first (SAELens <= 5 and this module), then ``metadata`` (SAELens 6)."""
        if name in cfg:
            return cfg[name]
        return meta.get(name, default)

    hook = field("hook_name") or field("hook_point")
    arch = cfg.get("architecture", "standard")
    if arch in _UNSUPPORTED_ARCH:
        raise ValueError(f"cfg.json field architecture={arch!r} ({_UNSUPPORTED_ARCH[arch]}) is not implemented here")
    known = set(_ARCH_TO_KIND) | set(_TRANSCODER_ARCH_TO_KIND) | {"mi_widgets.crosscoder"}
    if arch not in known:
        raise ValueError(f"cfg.json field architecture={arch!r} is not supported; one of {sorted(known)}")
    for key in ("d_in", "d_sae"):
        if key not in cfg:
            raise ValueError(f"cfg.json lacks the field {key!r}")
    # -- fields that change the math: applied exactly, or refused by name ----------------------
    head = field("hook_head_index", field("hook_point_head_index"))
    if head is not None:
        raise ValueError(f"cfg.json field hook_head_index={head!r}: this dictionary reads one attention head's slice, which mi-widgets sites do not provide")
    reshape = cfg.get("reshape_activations", "none")
    if reshape not in ("none", None) or (isinstance(hook, str) and hook.endswith("hook_z")):
        raise ValueError(f"cfg.json field reshape_activations={reshape!r} / hook_name={hook!r}: hook_z (per-head attention outputs, reshaped [heads, d_head] -> [heads * d_head]) is not a mi-widgets site")
    center = (field("model_from_pretrained_kwargs") or {}).get("center_writing_weights")
    if center:
        raise ValueError("cfg.json field model_from_pretrained_kwargs.center_writing_weights=True: the dictionary was trained on TransformerLens' centred residual stream, not the stream the Hugging Face model produces")
    act_fn = field("activation_fn", field("activation_fn_str"))
    if act_fn not in (None, "relu", "topk"):
        raise ValueError(f"cfg.json field activation_fn={act_fn!r} is not implemented; relu or topk")
    norm = cfg.get("normalize_activations", "none")
    if norm is False:
        norm = "none"
    elif norm is True:  # SAELens < 6 wrote a bool for the April-2024 scaling
        norm = "expected_average_only_in"
    norm_scale: float | None = None
    if norm == "expected_average_only_in":
        norm_scale = field("norm_scaling_factor")
        if not isinstance(norm_scale, (int, float)):
            raise ValueError("cfg.json field normalize_activations='expected_average_only_in' needs the release's norm_scaling_factor in cfg.json (SAELens takes it from its pretrained-SAE table); it has none")
    elif norm not in ("none", None):
        raise ValueError(f"cfg.json field normalize_activations={norm!r} is not supported (a per-token normalisation of the input and its inverse on the output); only 'none' and 'expected_average_only_in' with a norm_scaling_factor")
    rescale = bool(cfg.get("rescale_acts_by_decoder_norm", False))
    b_dec_in = cfg.get("apply_b_dec_to_input", True)
    target = dtype if dtype is not None else cfg.get("dtype", "float32")
    target = target if isinstance(target, torch.dtype) else _cfg_dtype(target)
    w = load_file(str(w_path))
    missing = [key for key in ("W_enc", "b_enc", "W_dec", "b_dec") if key not in w]
    if missing:
        raise ValueError(f"{w_path} lacks {missing}; SAELens keys are W_enc, b_enc, W_dec, b_dec")
    unknown = sorted(set(w) - _WEIGHT_KEYS)
    if unknown:
        raise ValueError(f"{w_path} has tensors {unknown} this loader does not know what to do with (e.g. a skip connection); refusing rather than ignoring them")
    scaling = w.get("scaling_factor")
    if scaling is not None and torch.allclose(scaling.float(), torch.ones_like(scaling.float())):
        scaling = None
    if scaling is not None and not cfg.get("finetuning_scaling_factor", False):
        raise ValueError("sae_weights.safetensors has a scaling_factor that is not all ones but cfg.json field finetuning_scaling_factor is False")
    model_name = field("model_name", "") or ""
    if arch == "mi_widgets.crosscoder":
        kind = meta.get("mi_widgets_kind", "relu")
        d: SAE = Crosscoder(cfg["d_in"], cfg["d_sae"], cfg["layers"], kind, site=cfg["site"], k=cfg.get("k"), model_name=model_name)
        if rescale or norm_scale is not None or scaling is not None:
            raise ValueError("rescale_acts_by_decoder_norm / normalize_activations / scaling_factor are not defined for a crosscoder")
    else:
        site, layer = parse_hook_name(hook)
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
        if tuple(w["W_enc"].shape) != (d_in, d_sae):
            raise ValueError(f"W_enc has shape {list(w['W_enc'].shape)}; cfg.json says [d_in, d_sae] = [{d_in}, {d_sae}]")
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        if arch in _TRANSCODER_ARCH_TO_KIND:
            kind = _TRANSCODER_ARCH_TO_KIND[arch]
        else:
            kind = _ARCH_TO_KIND[arch]
            if act_fn == "topk" and kind == "relu":  # SAELens < 6: architecture 'standard' + activation_fn 'topk'
                kind = "topk"
        if act_fn == "topk" and kind != "topk":
            raise ValueError(f"cfg.json field activation_fn='topk' contradicts architecture={arch!r}")
        if kind == "topk" and not k:
            raise ValueError("cfg.json describes a TopK dictionary but has no field k (SAELens would silently use k=100)")
        if rescale and kind != "topk":
            raise ValueError(f"cfg.json field rescale_acts_by_decoder_norm=True is a TopK field; architecture={arch!r} does not define it")
        out_hook = field("hook_name_out")
        if arch in _TRANSCODER_ARCH_TO_KIND and not out_hook:
            raise ValueError(f"cfg.json has architecture={arch!r} but no field hook_name_out (where the transcoder writes)")
        if out_hook:
            out_site, out_layer = parse_hook_name(out_hook)
            if out_layer != layer:
                raise ValueError(f"transcoder reads layer {layer} but writes layer {out_layer}; only same-layer transcoders are supported")
            if arch not in _TRANSCODER_ARCH_TO_KIND and b_dec_in:
                raise ValueError("cfg.json field apply_b_dec_to_input=True with hook_name_out: a transcoder's b_dec lives in the output space; this loader does not subtract it from the input")
            d = Transcoder(d_in, d_sae, kind, layer=layer, out_site=out_site, site=site, k=k, d_out=int(cfg.get("d_out", w["W_dec"].shape[-1])), model_name=model_name)
        else:
            d = SAE(d_in, d_sae, kind, site=site, layer=layer, k=k, model_name=model_name)
            if not b_dec_in:
                d._no_b_dec_in = True  # type: ignore[attr-defined]
    if tuple(w["W_dec"].shape) != tuple(d.W_dec.shape):
        raise ValueError(f"W_dec has shape {list(w['W_dec'].shape)}; cfg.json implies {list(d.W_dec.shape)}")
    with torch.no_grad():
        p = {key: w[key].double() for key in ("W_enc", "b_enc", "W_dec", "b_dec")}
        threshold = w["threshold"].double() if "threshold" in w else None
        if kind == "jumprelu" and threshold is None:
            raise ValueError("a jumprelu SAE needs a 'threshold' tensor in sae_weights.safetensors")
        if kind != "jumprelu" and threshold is not None:
            raise ValueError(f"sae_weights.safetensors has a 'threshold' tensor but cfg.json field architecture={arch!r} has no threshold; refusing rather than ignoring it")
        if scaling is not None:  # SAELens 4-5: decode(f) = (f * scaling_factor) @ W_dec + b_dec
            p["W_dec"] = p["W_dec"] * scaling.double()[:, None]
        if norm_scale is not None:  # SAELens' fold_activation_norm_scaling_factor
            p["W_enc"] = p["W_enc"] * norm_scale
            p["W_dec"] = p["W_dec"] / norm_scale
            p["b_dec"] = p["b_dec"] / norm_scale
        if rescale:
            # SAELens TopK: pre-acts * |W_dec_i| before the top-k, decode(f) = (f / |W_dec_i|) @ W_dec.
            # Folding the norms makes encode return those activations and decode invert them.
            n = p["W_dec"].norm(dim=-1)
            p["W_enc"], p["b_enc"], p["W_dec"] = p["W_enc"] * n, p["b_enc"] * n, p["W_dec"] / n[:, None]
        for key, value in p.items():
            getattr(d, key).data = value.to(target).clone()
        if kind == "jumprelu":
            d.log_threshold.data = threshold.clamp_min(1e-12).log().to(target)  # type: ignore[union-attr]
    d.prepend_bos = field("prepend_bos")  # type: ignore[attr-defined]
    return d.eval()


def spliced_accuracy(dictionary: SAE, model: Model, prompts: list[str], answers: list[str], *, mode: str = "splice") -> float:
    """Top-1 next-token accuracy on ``prompts`` (expected next tokens ``answers``, e.g. ``" Paris"``)
    with the dictionary spliced in (``mode="splice"``), its site zero-ablated (``"zero"``) or
    clean (``"clean"``). Prompts of one token length share a trace; only the argmax leaves it."""
    check_model(model)
    require_local(model, "spliced_accuracy", "it splices the dictionary into the forward with local hooks; load the model without remote")
    check_dictionary_width(dictionary, model)
    check_str_list(prompts, "prompts")
    check_str_list(answers, "answers")
    if len(prompts) != len(answers) or not prompts:
        raise ValueError("prompts and answers must be non-empty lists of the same length")
    from ..metrics import token_id

    want = torch.tensor([token_id(model, a, role="answer") for a in answers])
    rows = [model.to_tokens(p)[0] for p in prompts]
    by_len: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_len.setdefault(len(r), []).append(i)
    specials = torch.tensor(sorted(special_ids(model)))
    correct = 0
    for idx in by_len.values():
        ids = torch.stack([rows[i] for i in idx])
        mask = torch.ones_like(ids)
        keep = ~torch.isin(ids, specials)
        top = spliced_forward(model, ids, mask, keep, dictionary, mode, lambda lg, _i, _m: lg[:, -1].argmax(-1))
        correct += int((top.cpu() == want[idx]).sum())
    return correct / len(prompts)


def encode_texts(dictionary: SAE, model: Model, texts: list[str], batch_texts: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature activations at every real token of ``texts``: ``(acts [N, d_sae], token_ids [N])``
    (BOS and padding dropped; tokens in text order)."""
    check_model(model)
    check_dictionary_width(dictionary, model)
    check_str_list(texts, "texts")
    check_positive_int(batch_texts, "batch_texts")
    from .activation_store import _batch_reads

    if isinstance(dictionary, Crosscoder):
        reads = [(dictionary.site, lay) for lay in dictionary.layers]
    else:
        reads = [(dictionary.site, dictionary.layer)]
    acts, toks = [], []
    with torch.no_grad():
        for i in range(0, len(texts), batch_texts):
            ids, mask, keep = tokenize_batch(model, list(texts[i : i + batch_texts]))
            v = _batch_reads(model, ids, mask, reads)
            x = torch.stack([t[keep] for t in v], 1) if len(v) > 1 else v[0][keep]
            acts.append(dictionary.encode(x))
            toks.append(ids[keep])
    return torch.cat(acts), torch.cat(toks)
