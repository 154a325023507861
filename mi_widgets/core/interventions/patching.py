"""Activation patching grids: :func:`activation_patching` and its result, :class:`PatchingResult`.

:func:`activation_patching` runs one prompt (the *base*) while replacing one site's activation
with its value from another prompt (the *source*), for every layer (and every position or head),
and reports how much of the clean behaviour each replacement brings back.

- ``direction="denoise"``: base = corrupt prompt, source = clean prompt. A cell near 1 means that
  activation alone restores the clean behaviour (it is *sufficient*).
- ``direction="noise"``: base = clean prompt, source = corrupt prompt. A cell that falls from 1
  towards 0 means the clean behaviour *needs* that activation.

Normalisation (both directions, each prompt pair ``i`` on its own)::

    value_i = (m_i(patched) - m_i(corrupt)) / (m_i(clean) - m_i(corrupt))

so 0 is the corrupt run's metric and 1 the clean run's. The reported grid is the mean of the
per-pair values (``PatchingResult.per_pair``). ``normalize=False`` reports the raw metric instead.

:func:`ablate` replaces components (heads ``"L.H"``, neurons ``("mlp_post", L, i)``, whole MLPs
``"mlp.L"`` or attention layers ``"attn.L"``, or any site) by zero, their mean, or their value on
other prompts (resample), and reports the metric with and without the ablation.

:func:`attribution_patching` estimates the whole patching grid to first order from one forward
and one backward pass (AtP), with the same shape, labels and normalisation.

How activation patching runs (exact to float rounding: the tests check every site and both
directions against plain torch hooks running full forwards):

1. One nnsight trace per prompt side (batched over prompts of the same token length) caches the
   residual stream at every block boundary, the patched site, and the final-position logits.
2. Patched forwards run in batches (rows = one intervention each). Every row of a batch patches
   the same layer ``l``, so the batch *starts at block l* from the cached residual stream instead
   of re-running blocks ``0..l-1``; only the final position is unembedded (never full-vocabulary
   logits for every position). With per-position patching on a causal model, rows are grouped in
   bands of nearby positions and a band runs positions ``p0..T-1`` only, taking the earlier
   positions' keys and values from the base run (they are unchanged by a patch at ``p0`` or later).
   For residual-stream sites (``resid_pre``/``resid_post``) per position, one batch per band holds
   the rows of *every* layer, each joining at its own block, so each block runs once per band for
   all layers (small CPU batches are bound by reading the weights); on GPT-2 the last block runs
   its queries, attention output and MLP at the final position only (keys/values for the others);
   and a ``logit_diff`` metric unembeds only its own vocabulary columns.
3. Two engines do this. ``"direct"`` (local GPT-2, Llama-family and NeoX models) calls the blocks
   in torch with the arguments captured from one ordinary forward, and temporary hooks for writes
   inside a block; it checks once per model and sequence length that this reproduces the model's
   own forward, and otherwise falls back to ``"nnsight"``, which does the same inside one nnsight
   trace per batch with ``.skip()`` over the blocks before ``l`` (and also runs remote models).
4. Hooks are removed after every batch (``try/finally``), so an exception or ``KeyboardInterrupt``
   leaves the model as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .._checks import check_model
from .._views import DisplaysAsView
from ..metrics import Metric
from ..model import Model
from .batching import (
    _MAX_ROWS,
    _bands,
    _Cache,
    _collect_many,
    _groups,
    _packed_bands,
    _packed_batch,
    _patch_mask,
    _progress,
    _replace,
    _rows_per_batch,
    _self_check,
)
from .checks import _Pairs, _validate_pairs
from .engine import _DirectEngine, _engine, _narrow_tail, _tail, _Write

# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _heatmap(ax: Any, grid: Any, row_labels: list[str], col_labels: list[str], vmax: float) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib import colors

    vmax = vmax or 1.0
    norm = colors.TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    im = ax.imshow(
        grid, cmap=plt.get_cmap("RdBu"), norm=norm, aspect="auto", interpolation="nearest"
    )
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xticks(
        range(len(col_labels)),
        col_labels,
        rotation=60 if len(col_labels) > 4 else 0,
        ha="right" if len(col_labels) > 4 else "center",
    )
    return im


def _label(tok: str) -> str:
    return tok.replace("\n", "\\n")


@dataclass(repr=False)
class PatchingResult(DisplaysAsView):
    """Activation patching of ``site`` over layers (and positions or heads).

    ``values``: the mean over prompt pairs, shaped by ``dims``:

    - ``("layer",)`` for ``positions="all"``;
    - ``("layer", "position")`` for ``positions="each"`` (or a list of positions);
    - ``("layer", "head")`` for ``site="head_out"`` with ``positions="all"``;
    - ``("layer", "head", "position")`` for ``site="head_out"`` per position.

    ``per_pair``: ``[n_pairs, *values.shape]``, one grid per prompt pair (``values`` is their
    mean). With ``normalized`` (the default) each pair's cells are
    ``(m_patched - m_corrupt) / (m_clean - m_corrupt)``: 0 = corrupt, 1 = clean, for both
    directions. ``clean_baseline`` and ``corrupt_baseline`` are the raw metric on the unpatched
    runs, one per pair. ``clean_tokens`` / ``corrupt_tokens`` are the string tokens of each pair.
    """

    model_name: str
    site: str
    direction: str
    metric_name: str
    dims: tuple[str, ...]
    values: torch.Tensor
    per_pair: torch.Tensor
    layers: list[int]
    positions: list[int] | None
    heads: list[int] | None
    clean: list[str]
    corrupt: list[str]
    clean_tokens: list[list[str]]
    corrupt_tokens: list[list[str]]
    clean_baseline: torch.Tensor
    corrupt_baseline: torch.Tensor
    normalized: bool = True
    model: Model | None = field(default=None, compare=False)
    #: the metric object itself, so that a view can re-run sweeps with it
    metric: Any = field(default=None, compare=False)

    # -- labels ------------------------------------------------------------------------

    @property
    def layer_labels(self) -> list[str]:
        return [str(layer) for layer in self.layers]

    @property
    def head_labels(self) -> list[str]:
        """``"L.H"`` for every (layer, head) cell in row order of ``values`` (layer-major)."""
        return [f"{layer}.{h}" for layer in self.layers for h in (self.heads or [])]

    @property
    def str_tokens(self) -> list[str]:
        """Tokens of the first clean prompt at the patched positions (``[]`` for ``positions="all"``)."""
        if self.positions is None:
            return []
        return [self.clean_tokens[0][p] for p in self.positions]

    @property
    def position_labels(self) -> list[str]:
        """Axis labels for positions: the clean token, or ``clean/corrupt`` where they differ."""
        if self.positions is None:
            return []
        out = []
        for p in self.positions:
            a, b = self.clean_tokens[0][p], self.corrupt_tokens[0][p]
            out.append(_label(a) if a == b else f"{_label(a)}/{_label(b)}")
        return out

    @property
    def n_pairs(self) -> int:
        return int(self.per_pair.shape[0])

    def __repr__(self) -> str:
        shape = " × ".join(f"{d} {n}" for d, n in zip(self.dims, self.values.shape))
        return (
            f"PatchingResult({self.model_name}, {self.site}, {self.direction}, {self.metric_name}, "
            f"{shape}, {self.n_pairs} pair{'s' if self.n_pairs != 1 else ''}, "
            f"max {float(self.values.max()):.3f} at {self.argmax()})"
        )

    def argmax(self) -> dict[str, Any]:
        """The cell with the largest value, as ``{dim: label}``."""
        idx = torch.unravel_index(torch.argmax(self.values), self.values.shape)
        out: dict[str, Any] = {}
        for d, i in zip(self.dims, (int(i) for i in idx)):
            if d == "layer":
                out["layer"] = self.layers[i]
            elif d == "head":
                out["head"] = (self.heads or [])[i]
            else:
                pos = (self.positions or [])[i]
                out["position"] = pos
                out["token"] = self.clean_tokens[0][pos]
        return out

    # -- views ---------------------------------------------------------------------------

    def to_pandas(self, per_pair: bool = False) -> Any:
        """Tidy table: one row per cell with ``layer`` (and ``head``, ``position``, ``token``,
        ``corrupt_token``) and ``value``; with ``per_pair=True`` one row per cell and pair."""
        import pandas as pd

        grids = self.per_pair if per_pair else self.values[None]
        rows = []
        for k in range(grids.shape[0]):
            toks = self.clean_tokens[k] if per_pair else self.clean_tokens[0]
            ctoks = self.corrupt_tokens[k] if per_pair else self.corrupt_tokens[0]
            for idx in (
                torch.cartesian_prod(*[torch.arange(n) for n in grids.shape[1:]])
                .reshape(-1, len(self.dims))
                .tolist()
            ):
                row: dict[str, Any] = {"pair": k} if per_pair else {}
                for d, i in zip(self.dims, idx):
                    if d == "layer":
                        row["layer"] = self.layers[i]
                    elif d == "head":
                        row["head"] = (self.heads or [])[i]
                    else:
                        p = (self.positions or [])[i]
                        row.update(position=p, token=toks[p], corrupt_token=ctoks[p])
                row["value"] = float(grids[k][tuple(idx)])
                rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """Matplotlib heatmap (diverging, centred at 0): layers down, positions (token strings)
        or heads across."""
        import matplotlib.pyplot as plt

        v = self.values.float()
        if self.dims == ("layer",):
            grid, rows, cols = v[:, None], self.layer_labels, ["all positions"]
        elif self.dims == ("layer", "position"):
            grid, rows, cols = v, self.layer_labels, self.position_labels
        elif self.dims == ("layer", "head"):
            grid, rows, cols = v, self.layer_labels, [f"head {h}" for h in self.heads or []]
        else:  # layer, head, position
            grid, rows, cols = v.reshape(-1, v.shape[-1]), self.head_labels, self.position_labels
        if ax is None:
            fig, ax = plt.subplots(
                figsize=(max(4.0, 0.55 * len(cols) + 2.5), max(2.5, 0.35 * len(rows) + 1.5))
            )
        else:
            fig = ax.figure
        vmax = float(v.abs().max()) if v.numel() else 1.0
        if self.normalized:
            vmax = max(vmax, 1.0)
        im = _heatmap(ax, grid.numpy(), rows, cols, vmax)
        ax.set_ylabel(
            "layer" if self.dims[1:2] != ("head",) or len(self.dims) == 2 else "layer.head"
        )
        what = "normalised " + self.metric_name if self.normalized else self.metric_name
        ax.set_title(f"{self.model_name} · {self.site} · {self.direction} · {what}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.05)
        fig.tight_layout()
        return fig


# --------------------------------------------------------------------------------------------
# Activation patching
# --------------------------------------------------------------------------------------------


def _baselines(
    spec: _Pairs, clean_logits: torch.Tensor, corrupt_logits: torch.Tensor, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw metric on the clean and corrupt runs, one per pair; refuses to normalise by ~0."""
    m = spec.metric
    all_pairs = torch.arange(spec.n)
    m_clean = m(clean_logits, pairs=all_pairs, clean_logits=clean_logits).float().cpu()
    m_corrupt = m(corrupt_logits, pairs=all_pairs, clean_logits=clean_logits).float().cpu()
    if normalize:
        gap = m_clean - m_corrupt
        bad = [i for i in range(spec.n) if not torch.isfinite(gap[i]) or abs(float(gap[i])) < 1e-6]
        if bad:
            i = bad[0]
            who = (
                "the clean and corrupt prompts"
                if spec.n == 1
                else f"pair {i} ({spec.clean[i]!r} / {spec.corrupt[i]!r})"
            )
            raise ValueError(
                f"{m.name} is the same on {who}: clean {float(m_clean[i]):.6g}, corrupt "
                f"{float(m_corrupt[i]):.6g}, so the normalised value (m - m_corrupt) / (m_clean - m_corrupt) "
                "is undefined. Pick prompts the model answers differently, or pass normalize=False."
            )
    return m_clean, m_corrupt


def _result(
    model: Model,
    spec: _Pairs,
    site: str,
    direction: str,
    raw: torch.Tensor,
    m_clean: torch.Tensor,
    m_corrupt: torch.Tensor,
    normalize: bool,
    *,
    offset: bool = True,
) -> PatchingResult:
    """``raw``: ``[n_pairs, *grid]`` metric values (``offset=False``: already differences from the
    corrupt metric, as attribution gives)."""
    dims, shape = spec.dims_shape()
    view = (-1,) + (1,) * len(shape)
    if normalize:
        num = raw - m_corrupt.reshape(view) if offset else raw
        per_pair = num / (m_clean - m_corrupt).reshape(view)
    else:
        per_pair = raw
    return PatchingResult(
        model_name=model.name,
        site=site,
        direction=direction,
        metric_name=spec.metric.name,
        dims=dims,
        values=per_pair.mean(0),
        per_pair=per_pair,
        layers=spec.layers,
        positions=spec.positions,
        heads=spec.heads,
        clean=spec.clean,
        corrupt=spec.corrupt,
        clean_tokens=[model.to_str_tokens(a) for a in spec.ctoks],
        corrupt_tokens=[model.to_str_tokens(b) for b in spec.xtoks],
        clean_baseline=m_clean,
        corrupt_baseline=m_corrupt,
        normalized=normalize,
        model=model,
        metric=spec.metric,
    )


def activation_patching(
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
    batch_size: int | None = None,
    progress: bool = True,
    engine: Literal["auto", "direct", "nnsight"] = "auto",
    prefix: bool = True,
    on_update: Callable[[PatchingResult, int, int], None] | None = None,
) -> PatchingResult:
    """Patch ``site`` from one run of each prompt pair into the other, at every layer in
    ``layers`` and every position (``positions="each"`` or a list of positions) or all positions
    at once (``"all"``); for ``site="head_out"``, at every head in ``heads`` too.

    ``clean`` and ``corrupt``: strings, or equal-length lists of strings (prompt pairs; each pair
    must tokenise to the same length; with ``positions="each"`` all pairs must). ``metric``: a
    :mod:`~mi_widgets.core.metrics` object or a callable on final-position logits
    ``[batch, vocab] -> [batch]``. ``direction="denoise"`` runs the corrupt prompt with clean
    activations patched in; ``"noise"`` runs the clean prompt with corrupt activations.

    Values are normalised per pair, ``(m_patched - m_corrupt) / (m_clean - m_corrupt)`` (0 =
    corrupt run, 1 = clean run, in both directions), and averaged over pairs. Raises
    ``ValueError`` before any forward pass for invalid inputs. ``batch_size``: rows (patched
    forwards) per batch (default: about 8k tokens' worth, at most 256). ``progress``: a tqdm bar
    over batches. ``engine``: ``"direct"`` (default for local GPT-2/Llama/NeoX) or ``"nnsight"``
    (see the module docstring). ``prefix``: with per-position patching on a causal model, batch
    nearby positions and reuse the base run's keys/values for the positions before them (direct
    engine; exact, about 1.6x less compute).

    ``on_update(partial, done, total)``: called as cells complete (after every batch) with the
    result so far (cells not yet computed are NaN) and the number of batches done out of
    ``total``; a live view fills its grid from it. An exception raised by the callback (e.g. a
    cancel) stops the sweep and propagates; the model is left unchanged.
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
        "activation patching",
    )
    m, layer_l, head_l, pos_l = spec.metric, spec.layers, spec.heads, spec.positions
    n_pairs = spec.n
    eng = _engine(model, engine)
    base_toks, src_toks = (
        (spec.xtoks, spec.ctoks) if direction == "denoise" else (spec.ctoks, spec.xtoks)
    )
    groups = _groups(spec.lengths)
    # every boundary a batch may start from (resid_post at l starts at l + 1; head/in-block at l)
    starts = {(lay + 1 if site == "resid_post" else lay) for lay in layer_l}
    base_c: dict[int, _Cache] = {}
    src_c: dict[int, _Cache] = {}
    # both caching runs of every length group: one session (one job) on a remote model
    requests = []
    for _t, idx in groups.items():
        requests.append((torch.cat([base_toks[i] for i in idx]), starts | {0}, set()))
        requests.append((torch.cat([src_toks[i] for i in idx]), set(), {(site, lay) for lay in layer_l}))
    caches = _collect_many(model, requests)
    for k, t in enumerate(groups):
        base_c[t], src_c[t] = caches[2 * k], caches[2 * k + 1]
        eng.prepare(base_c[t].tokens)
    eng = _self_check(eng, model, engine)
    # per-position rows of a causal model: batches of nearby positions start at their first
    # patched position, with earlier positions' keys/values taken from the base run
    banded = isinstance(eng, _DirectEngine) and pos_l is not None and model.causal and prefix

    clean_logits = torch.empty(n_pairs, model.d_vocab)
    corrupt_logits = torch.empty(n_pairs, model.d_vocab)
    for t, idx in groups.items():
        cl, xl = (src_c[t], base_c[t]) if direction == "denoise" else (base_c[t], src_c[t])
        clean_logits[idx] = cl.logits.cpu()
        corrupt_logits[idx] = xl.logits.cpu()
    m_clean, m_corrupt = _baselines(spec, clean_logits, corrupt_logits, normalize)

    # the grid: rows = (pair, head?, position?) per layer
    _, shape = spec.dims_shape()
    raw = torch.full((n_pairs, *shape), float("nan")) if on_update else torch.zeros(n_pairs, *shape)
    plan = []  # (t, layer index, row specs, first patched position)
    # residual-stream writes with key/value reuse: one batch per position band holds the rows of
    # every layer, each joining at its own block, so each block runs once per band (weights are
    # read from memory once for all layers' rows, which is what small batches are bound by)
    packed = banded and site in ("resid_pre", "resid_post")
    for t, idx in groups.items():
        if packed:
            specs = [
                (g, None, pi)
                for g in range(len(idx))
                for pi in range(len(pos_l))  # type: ignore[arg-type]
            ]
            for p0, band in _packed_bands(specs, pos_l, t, len(layer_l)):
                items = [(li, sp) for li in range(len(layer_l)) for sp in band]
                per = _rows_per_batch(batch_size, t - p0)
                for s in range(0, len(items), per):
                    plan.append((t, -1, items[s : s + per], p0))
            continue
        for li in range(len(layer_l)):
            specs = [
                (g, hi, pi)
                for g in range(len(idx))
                for hi in (range(len(head_l)) if head_l is not None else [None])
                for pi in (range(len(pos_l)) if pos_l is not None else [None])
            ]
            bands = _bands(specs, pos_l, t) if banded else [(0, specs)]
            for p0, band in bands:
                per = _rows_per_batch(batch_size, t - p0)
                for s in range(0, len(band), per):
                    plan.append((t, li, band[s : s + per], p0))

    # The direct engine returns final residuals; the unembedding (a d_model x d_vocab matrix
    # that dominates small batches) then runs once per _MAX_ROWS rows instead of per batch.
    pending: list[tuple[torch.Tensor, list, torch.Tensor, int]] = []

    def record(
        logits: torch.Tensor,
        specs: list,
        pairs: torch.Tensor,
        li: int | list[int],
        metric: Metric | None = None,
    ) -> None:
        lis = li if isinstance(li, list) else [li] * len(specs)
        vals = (
            (metric or m)(
                logits,
                pairs=pairs.to(logits.device),
                clean_logits=clean_logits[pairs].to(logits.device),
            )
            .float()
            .cpu()
        )
        for (_, hi, pi), v, p, lj in zip(specs, vals.tolist(), pairs.tolist(), lis):
            cell: tuple = (
                (p, lj) + ((hi,) if hi is not None else ()) + ((pi,) if pi is not None else ())
            )
            raw[cell] = v

    narrow = _narrow_tail(model, m)

    def flush(if_full: bool = False) -> None:
        """Unembed and record the pending rows (``if_full``: only once they reach _MAX_ROWS,
        or at once when every batch is reported through ``on_update``)."""
        if if_full and on_update is None and sum(x[0].shape[0] for x in pending) < _MAX_ROWS:
            return
        if not pending:
            return
        hs = torch.cat([h for h, *_ in pending])
        with torch.no_grad():
            # logit_diff: only its vocabulary columns
            logits = (narrow[0](hs) if narrow is not None else _tail(model, hs)).float()
        k = 0
        for h, specs, pairs, li in pending:
            record(logits[k : k + h.shape[0]], specs, pairs, li, narrow[1] if narrow else None)
            k += h.shape[0]
        pending.clear()

    def report(done: int) -> None:
        if on_update is not None:
            partial = _result(model, spec, site, direction, raw.clone(), m_clean, m_corrupt, normalize)
            on_update(partial, done, len(plan))

    deferred = isinstance(eng, _DirectEngine)
    # a remote model runs every batch's trace in one session: one job per sweep, not per batch
    in_session: list[tuple[tuple, list, torch.Tensor, int]] | None = [] if model.remote else None
    kv_ready: dict[int, bool] = {}
    bar = _progress(len(plan), progress, f"patching {site}")
    try:
        for done, (t, li, specs, p0) in enumerate(plan, 1):
            if li < 0:  # a packed batch: specs are (layer index, row spec)
                if t not in kv_ready:
                    kv_ready[t] = eng.prepare_prefix(base_c[t].tokens)  # type: ignore[union-attr]
                use = bool(p0 and kv_ready[t] and eng.suffix_ok(base_c[t].tokens, p0))  # type: ignore[union-attr]
                last = bool(kv_ready[t] and eng.last_block_ok(base_c[t].tokens))  # type: ignore[union-attr]
                out, row_specs, pairs, lis = _packed_batch(
                    eng,
                    model,
                    site,
                    layer_l,
                    specs,
                    base_c[t],
                    src_c[t],
                    groups[t],
                    pos_l,
                    p0 if use else 0,
                    last,
                )
                a = 0
                while a < len(lis):  # one entry (and metric call) per layer, as unpacked
                    b = a
                    while b < len(lis) and lis[b] == lis[a]:
                        b += 1
                    pending.append((out[a:b], row_specs[a:b], pairs[a:b], lis[a]))
                    a = b
                flush(if_full=True)
                bar.update(1)
                report(done)
                continue
            layer = layer_l[li]
            g_rows = torch.tensor([s[0] for s in specs])
            pairs = torch.tensor(groups[t])[g_rows]
            bc, sc = base_c[t], src_c[t]
            g_dev = g_rows.to(model.device)
            src = sc.sites[(site, layer)][g_dev]
            mask = _patch_mask(src, specs, head_l, pos_l, site)
            start = _Write(site, layer, _replace(None, src)).start
            hidden = bc.stream[start][g_dev]
            extra: dict[str, Any] = {"tail": False} if deferred else {}
            if p0 and t not in kv_ready:
                kv_ready[t] = eng.prepare_prefix(bc.tokens)  # type: ignore[union-attr]
            if p0 and kv_ready[t] and eng.suffix_ok(bc.tokens, p0):  # type: ignore[union-attr]
                src, hidden = src[:, p0:], hidden[:, p0:]
                mask = mask[:, p0:] if mask is not None else None
                extra["prefix"] = (g_rows, p0)
            w = _Write(site, layer, _replace(mask, src))
            if in_session is not None:
                in_session.append(((bc.tokens[g_rows], start, hidden, [w]), specs, pairs, li))
                continue
            out = eng.forward(bc.tokens[g_rows], start, hidden, [w], **extra)
            if deferred:
                pending.append((out, specs, pairs, li))
                flush(if_full=True)
            else:
                record(out.float(), specs, pairs, li)
            bar.update(1)
            report(done)
        if in_session:
            outs = eng.forward_many([c for c, *_ in in_session])  # type: ignore[union-attr]
            for out, (_, specs, pairs, li) in zip(outs, in_session):
                record(out.float(), specs, pairs, li)
            bar.update(len(in_session))
            report(len(plan))
        flush()
    finally:
        pending.clear()
        bar.close()
    return _result(model, spec, site, direction, raw, m_clean, m_corrupt, normalize)
