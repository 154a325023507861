"""Caching and batching for the engine: one nnsight trace per batch of same-length prompts caches
the residual stream and the written sites (:func:`_collect`); rows per batch under a token
budget; position bands and packed batches (every layer's rows in one batch per band)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..model import Model, _get
from .engine import (
    _as_heads,
    _DirectEngine,
    _forward_kwargs,
    _NNsightEngine,
    _save,
    _unembed_path,
    _Write,
)

# --------------------------------------------------------------------------------------------
# Caching: one nnsight trace per batch of same-length prompts
# --------------------------------------------------------------------------------------------

# Rows per batch are chosen so that rows * tokens stays under this (activation memory per block
# is a few d_model-sized vectors per token), and at most _MAX_ROWS (final-position logits are
# rows * d_vocab floats).
_TOKEN_BUDGET = 8192
_MAX_ROWS = 256
# Per-position patching splits a layer's rows into up to four position bands, one per this many
# tokens of work (matrix products on CPU run about as fast from ~50 rows up).
_BAND_TOKENS = 100

# Packed per-position batches (all layers' rows in one batch per band) run each block once per
# band, so they can use more, narrower bands.
_MAX_PACKED_BANDS = 16



@dataclass
class _Cache:
    tokens: torch.Tensor  # [B, T]
    stream: dict[
        int, torch.Tensor
    ]  # block boundary i -> [B, T, d]; i = n_layers is the final stream
    sites: dict[tuple[str, int], torch.Tensor]  # (site, layer) -> value in write form
    logits: torch.Tensor  # [B, vocab], final position


def _collect(
    model: Model, tokens: torch.Tensor, stream: set[int], sites: set[tuple[str, int]]
) -> _Cache:
    """One forward that saves the residual stream at block boundaries ``stream`` and the values
    of ``sites`` (in write form: ``head_out`` as the per-head z ``[B, T, H, d_head]``)."""
    return _collect_many(model, [(tokens, stream, sites)])[0]


def _collect_many(
    model: Model, requests: list[tuple[torch.Tensor, set[int], set[tuple[str, int]]]]
) -> list[_Cache]:
    """:func:`_collect` of each ``(tokens, stream, sites)``; on a remote model all the traces
    run in one nnsight session (one job)."""
    preps = [_collect_plan(model, *r) for r in requests]
    unembed = _get(model.nn, _unembed_path(model), envoy=True)
    runs = [(tokens.to(model.device), _forward_kwargs(model, tokens), plan) for tokens, plan, _, _ in preps]
    if model.remote and len(runs) > 1:
        nn = model.nn
        with torch.no_grad(), nn.session(remote=model.remote):
            outs = _save([])
            for toks, kw, plan in runs:
                with nn.trace(toks, **kw):
                    outs.append(_read_plan(plan, unembed))
    else:
        outs = []
        for toks, kw, plan in runs:
            with torch.no_grad(), model.nn.trace(toks, remote=model.remote, **kw):
                got = _save(_read_plan(plan, unembed))
            outs.append(got)
    return [
        _collect_finish(model, tokens, keys, wanted, sites, saved, logits)
        for (tokens, _, keys, wanted), (saved, logits), (_, _, sites) in zip(preps, outs, requests)
    ]


def _collect_plan(model: Model, tokens: torch.Tensor, stream: set[int], sites: set[tuple[str, int]]) -> tuple:
    n = model.n_layers
    wanted: dict[tuple[str, int], str] = {}
    for i in stream:
        wanted[("resid_pre", i) if i < n else ("resid_post", n - 1)] = f"stream:{i}"
    for s in sites:
        wanted.setdefault(s, "site")
    keys = model._read_groups(wanted)
    # envoys looked up here: the trace body names no Model (a remote request ships what it names)
    plan = [(key, model._module(key[0], key[2]), key[3]) for key in sorted(keys)]
    return tokens, plan, keys, wanted


def _read_plan(plan: list, unembed: Any) -> tuple[dict, Any]:
    """Inside a trace: save every planned read and the final-position logits."""
    saved = {key: (env.input if io == "input" else env.output).save() for key, env, io in plan}
    return saved, unembed.output[:, -1].save()


def _collect_finish(
    model: Model, tokens: torch.Tensor, keys: dict, wanted: dict, sites: set[tuple[str, int]],
    saved: dict, logits: torch.Tensor,
) -> _Cache:
    out_stream: dict[int, torch.Tensor] = {}
    out_sites: dict[tuple[str, int], torch.Tensor] = {}
    for key, names in keys.items():
        raw = saved[key]
        for site, layer in names:
            v = model._element(site, raw).detach()
            if site == "head_out":
                v = _as_heads(model, v)
            tag = wanted[(site, layer)]
            if tag.startswith("stream:"):
                out_stream[int(tag.split(":")[1])] = v
            if (site, layer) in sites:
                out_sites[(site, layer)] = v
    return _Cache(tokens=tokens, stream=out_stream, sites=out_sites, logits=logits.detach().float())


def _groups(lengths: list[int]) -> dict[int, list[int]]:
    """Prompt indices grouped by token length (each group runs as one batch, no padding)."""
    g: dict[int, list[int]] = {}
    for i, t in enumerate(lengths):
        g.setdefault(t, []).append(i)
    return g


def _rows_per_batch(batch_size: int | None, t: int) -> int:
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return batch_size
    return max(1, min(_MAX_ROWS, _TOKEN_BUDGET // max(t, 1)))


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="batch", leave=False)


def _self_check(engine: Any, model: Model, requested: str) -> Any:
    """The engine to use: the direct engine unless its preparation found that calling the
    model's blocks does not reproduce its forward; then nnsight (``engine="auto"``) or an error
    (``engine="direct"``)."""
    if not isinstance(engine, _DirectEngine) or engine.failed is None:
        return engine
    msg = f"calling the blocks of {model.name} directly does not reproduce its forward ({engine.failed})"
    if requested == "direct":
        raise RuntimeError(msg + "; use engine='nnsight'")
    warnings.warn(msg + "; using the slower nnsight engine", RuntimeWarning, stacklevel=3)
    return _NNsightEngine(model)


def _bands(specs: list, pos_l: list[int] | None, t: int) -> list[tuple[int, list]]:
    """Rows grouped into bands of patched positions, each with its first position (a batch runs
    positions ``p0..T-1`` only). ``k`` bands compute ``(k + 1) / 2k`` of the positions; more
    bands mean more, smaller matrix products, so ``k`` grows with the layer's work: one band
    per ``_BAND_TOKENS`` tokens, at most four (5/8 of the positions)."""
    assert pos_l is not None
    n_bands = max(1, min(4, len(specs) * t // _BAND_TOKENS))
    width = max(1, -(-t // n_bands))
    out: dict[int, list] = {}
    for sp in specs:
        out.setdefault(pos_l[sp[2]] // width, []).append(sp)
    return [(min(pos_l[sp[2]] for sp in band), band) for _, band in sorted(out.items())]


def _packed_bands(
    specs: list, pos_l: list[int] | None, t: int, n_layers: int
) -> list[tuple[int, list]]:
    """Position bands for packed batches (every layer's rows in one batch per band): each band
    costs one call per block, so there can be more, narrower bands than per-layer batches
    allow -- one per ``_BAND_TOKENS`` tokens of the band's rows over all layers, at most
    ``_MAX_PACKED_BANDS``."""
    assert pos_l is not None
    n_bands = max(1, min(_MAX_PACKED_BANDS, t, len(specs) * n_layers * t // _BAND_TOKENS))
    width = max(1, -(-t // n_bands))
    out: dict[int, list] = {}
    for sp in specs:
        out.setdefault(pos_l[sp[2]] // width, []).append(sp)
    return [(min(pos_l[sp[2]] for sp in band), band) for _, band in sorted(out.items())]


def _packed_batch(
    eng: _DirectEngine,
    model: Model,
    site: str,
    layer_l: list[int],
    items: list,
    bc: _Cache,
    sc: _Cache,
    group: list[int],
    pos_l: list[int] | None,
    p0: int,
    last_only: bool = False,
) -> tuple[torch.Tensor, list, torch.Tensor, list[int]]:
    """Run one packed batch of residual-stream patches (``items``: (layer index, row spec));
    returns final residuals at the last position and, per output row, its spec, pair and layer
    index."""
    by_layer: dict[int, list] = {}
    for li, sp in items:
        by_layer.setdefault(li, []).append(sp)
    segs = []
    row_specs: list = []
    lis: list[int] = []
    g_all: list[int] = []
    order = sorted(by_layer, key=lambda li: _Write(site, layer_l[li], _replace(None, None)).start)
    for li in order:
        specs = by_layer[li]
        layer = layer_l[li]
        g_rows = torch.tensor([sp[0] for sp in specs])
        g_dev = g_rows.to(model.device)
        src = sc.sites[(site, layer)][g_dev]
        mask = _patch_mask(src, specs, None, pos_l, site)
        start = _Write(site, layer, _replace(None, src)).start
        hidden = bc.stream[start][g_dev]
        if p0:
            src, hidden = src[:, p0:], hidden[:, p0:]
            mask = mask[:, p0:] if mask is not None else None
        segs.append((start, _replace(mask, src)(hidden), g_rows))
        row_specs += specs
        lis += [li] * len(specs)
        g_all += [sp[0] for sp in specs]
    out = eng.forward(
        bc.tokens,
        segs[0][0],
        segs[0][1],
        [],
        prefix=(torch.cat([r for *_, r in segs]), p0) if p0 else None,
        tail=False,
        packed=segs,
        last_only=last_only,
    )
    return out, row_specs, torch.tensor(group)[torch.tensor(g_all)], lis


def _patch_mask(
    src: torch.Tensor, specs: list, head_l: list[int] | None, pos_l: list[int] | None, site: str
) -> torch.Tensor | None:
    """Boolean mask broadcastable to ``src`` selecting each row's patched position and/or head
    (``None``: everything)."""
    if head_l is None and pos_l is None:
        return None
    n, t = src.shape[0], src.shape[1]
    if site == "head_out":
        mask = torch.zeros(n, t, src.shape[2], 1, dtype=torch.bool)
    else:
        mask = torch.zeros(n, t, 1, dtype=torch.bool)
    for r, (_, hi, pi) in enumerate(specs):
        pos = slice(None) if pi is None else pos_l[pi]  # type: ignore[index]
        if site == "head_out":
            mask[r, pos, head_l[hi] if hi is not None else slice(None)] = True  # type: ignore[index]
        else:
            mask[r, pos] = True
    return mask.to(src.device)


def _replace(
    mask: torch.Tensor | None, src: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    if mask is None:
        return lambda cur: src.to(cur.dtype).expand_as(cur)
    return lambda cur: torch.where(mask, src.to(cur.dtype), cur)
