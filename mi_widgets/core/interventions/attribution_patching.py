"""Attribution patching (AtP): the whole patching grid to first order from one forward and one
backward pass, with the same shape, labels and normalisation as :func:`activation_patching`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from .._checks import check_model
from ..metrics import Metric
from ..model import Model, _get
from ..model.remote import require_local
from .batching import _collect, _groups
from .checks import _validate_pairs
from .engine import _as_heads, _forward_kwargs
from .patching import PatchingResult, _baselines, _result


def attribution_patching(
    model: Model,
    clean: str | Sequence[str],
    corrupt: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    site: str = "resid_pre",
    positions: Literal["all", "each"] | Sequence[int] = "all",
    layers: Literal["all"] | int | Sequence[int] = "all",
    direction: Literal["denoise", "noise"] = "denoise",
    *,
    heads: Literal["all"] | int | Sequence[int] = "all",
    normalize: bool = True,
) -> PatchingResult:
    """Attribution patching (AtP): the first-order estimate of :func:`activation_patching` from
    one forward and one backward pass per side, for every cell at once.

    For denoising, the effect of patching cell ``c`` is estimated as
    ``(a_clean[c] - a_corrupt[c]) · dm/da[c]`` with the gradient taken on the corrupt run (summed
    over the cell's dimensions: the model dimension, or a head's ``d_head`` inputs of the output
    projection for ``head_out``); for noising, ``(a_corrupt - a_clean) · dm/da`` on the clean
    run. The result has the same shape, labels and normalisation as :func:`activation_patching`
    (``m_patched`` replaced by the base metric plus the estimate), so the two grids can be
    compared directly. Exact where the metric is linear in the activation; a known blind spot is
    a metric at an extremum (``kl_to_clean`` has zero gradient on the clean run). Local models
    only (it needs autograd).
    """
    check_model(model)
    spec = _validate_pairs(
        model,
        clean,
        corrupt,
        metric,
        site,
        positions,
        layers,
        direction,
        heads,
        "attribution patching",
    )
    require_local(
        model, "attribution_patching",
        "it takes gradients through the model; use activation_patching (runs remotely, one job "
        "per sweep) or load the model without remote",
    )
    m = spec.metric
    base_toks, src_toks = (
        (spec.xtoks, spec.ctoks) if direction == "denoise" else (spec.ctoks, spec.xtoks)
    )
    groups = _groups(spec.lengths)
    sites = {(site, lay) for lay in spec.layers}
    _, shape = spec.dims_shape()
    est = torch.zeros(spec.n, *shape)
    clean_logits = torch.empty(spec.n, model.d_vocab)
    corrupt_logits = torch.empty(spec.n, model.d_vocab)
    grads_by_group = {}
    src_by_group = {}
    for t, idx in groups.items():
        src_c = _collect(model, torch.cat([src_toks[i] for i in idx]), set(), sites)
        src_by_group[t] = src_c
        (clean_logits if direction == "denoise" else corrupt_logits)[idx] = src_c.logits.cpu()
    for t, idx in groups.items():
        pairs = torch.tensor(idx)
        acts, grads, logits = _grad_run(
            model,
            torch.cat([base_toks[i] for i in idx]),
            sites,
            m,
            pairs,
            clean_logits[pairs] if direction == "denoise" else None,
        )
        (corrupt_logits if direction == "denoise" else clean_logits)[idx] = logits.cpu()
        grads_by_group[t] = (acts, grads)
    m_clean, m_corrupt = _baselines(spec, clean_logits, corrupt_logits, normalize)
    for t, idx in groups.items():
        acts, grads = grads_by_group[t]
        src_c = src_by_group[t]
        for li, layer in enumerate(spec.layers):
            delta = (src_c.sites[(site, layer)].float() - acts[(site, layer)]) * grads[
                (site, layer)
            ]
            # [B, T, d] -> [B, T]; head_out [B, T, H, dh] -> [B, T, H]
            cell = delta.sum(-1).cpu()
            if spec.heads is not None:
                cell = cell[:, :, spec.heads].transpose(1, 2)  # [B, H, T]
            cell = cell[..., spec.positions] if spec.positions is not None else cell.sum(-1)
            est[torch.tensor(idx), li] = cell
    base = m_corrupt if direction == "denoise" else m_clean
    view = (-1,) + (1,) * len(shape)
    raw = est + base.reshape(view)
    return _result(
        model, spec, site, direction + " (attribution)", raw, m_clean, m_corrupt, normalize
    )


def _grad_run(
    model: Model,
    tokens: torch.Tensor,
    sites: set[tuple[str, int]],
    m: Metric,
    pairs: torch.Tensor,
    clean_logits: torch.Tensor | None,
) -> tuple[dict, dict, torch.Tensor]:
    """One forward with the activations of ``sites`` kept in the graph, the metric summed over
    rows, and its gradient w.r.t. each (parameters get no ``.grad``). Returns activations and
    gradients in write form (float32) and the final-position logits."""
    blocks = _get(model.hf, model.arch.layers)
    acts: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def keep(key: tuple[str, int], value: torch.Tensor) -> None:
        acts[key] = value

    def make_leafy(_m: Any, args: tuple, kwargs: dict) -> Any:
        # every activation downstream requires grad, even when the parameters are frozen
        x = args[0] if args else next(iter(kwargs.values()))
        x = x.detach().requires_grad_(True)
        return ((x, *args[1:]), kwargs) if args else ((), {**kwargs, next(iter(kwargs)): x})

    try:
        handles.append(blocks[0].register_forward_pre_hook(make_leafy, with_kwargs=True))
        for site, layer in sites:
            b = blocks[layer]
            if site == "resid_pre":
                handles.append(
                    b.register_forward_pre_hook(
                        lambda _m, a, kw, k=(site, layer): keep(
                            k, a[0] if a else next(iter(kw.values()))
                        ),
                        with_kwargs=True,
                    )
                )
            elif site == "resid_post":
                handles.append(
                    b.register_forward_hook(
                        lambda _m, a, o, k=(site, layer): keep(
                            k, o[0] if isinstance(o, tuple) else o
                        )
                    )
                )
            elif site in ("attn_out", "resid_mid"):
                # d m / d resid_mid = d m / d attn_out (resid_mid = resid_pre + attn_out)
                mod = _get(b, model.arch.reads["attn_out"].module)
                handles.append(
                    mod.register_forward_hook(
                        lambda _m, a, o, k=(site, layer): keep(
                            k, o[0] if isinstance(o, tuple) else o
                        )
                    )
                )
                if site == "resid_mid":
                    r = model.arch.reads["resid_mid"]
                    mid = _get(b, r.module)
                    handles.append(
                        mid.register_forward_pre_hook(
                            lambda _m, a, kw, k=("_mid", layer): keep(
                                k, a[0] if a else next(iter(kw.values()))
                            ),
                            with_kwargs=True,
                        )
                    )
            else:
                r = model.arch.reads[site]
                mod = _get(b, r.module)
                if r.io == "output":
                    handles.append(
                        mod.register_forward_hook(
                            lambda _m, a, o, k=(site, layer): keep(
                                k, o[0] if isinstance(o, tuple) else o
                            )
                        )
                    )
                else:
                    handles.append(
                        mod.register_forward_pre_hook(
                            lambda _m, a, kw, k=(site, layer): keep(
                                k, a[0] if a else next(iter(kw.values()))
                            ),
                            with_kwargs=True,
                        )
                    )
        with torch.enable_grad():
            kw = {"use_cache": False}
            kw.update(_forward_kwargs(model, tokens))
            out = model.hf(tokens.to(model.device), **kw)
            logits = (out.logits if hasattr(out, "logits") else out[0])[:, -1].float()
            cl = clean_logits.to(logits.device) if clean_logits is not None else logits.detach()
            total = m(logits, pairs=pairs.to(logits.device), clean_logits=cl).sum()
            keys = [k for k in sites]
            tensors = [acts[k] for k in keys]
            grads = torch.autograd.grad(total, tensors, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    g_out, a_out = {}, {}
    for k, g in zip(keys, grads):
        a = acts[("_mid", k[1])] if k[0] == "resid_mid" else acts[k]
        g = torch.zeros_like(a) if g is None else g
        if k[0] == "head_out":
            a, g = _as_heads(model, a), _as_heads(model, g)
        a_out[k] = a.detach().float()
        g_out[k] = g.detach().float()
    return a_out, g_out, logits.detach()
