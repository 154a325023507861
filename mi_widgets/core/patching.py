"""Causal interventions: activation patching and ablation.

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

import inspect
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from .metrics import Metric, as_metric
from .model import Model, _get

if TYPE_CHECKING:  # pragma: no cover
    from ..widgets.patching_grid import PatchingGrid

#: Sites activation patching can write.
PATCH_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out")
#: Sites ablation can write (adds MLP neurons).
ABLATE_SITES = (*PATCH_SITES, "mlp_post")

# Model types whose blocks can be called one by one with the kwargs captured from a normal
# forward (checked once per call against the cached run anyway).
_DIRECT_TYPES = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox"}
# Where writing resid_mid by adjusting the attention output is exact: resid_mid = resid_pre + attn_out.
_RESID_MID_WRITABLE = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox"}

# Rows per batch are chosen so that rows * tokens stays under this (activation memory per block
# is a few d_model-sized vectors per token), and at most _MAX_ROWS (final-position logits are
# rows * d_vocab floats).
_TOKEN_BUDGET = 8192
_MAX_ROWS = 256
# Per-position patching splits a layer's rows into up to four position bands, one per this many
# tokens of work (matrix products on CPU run about as fast from ~50 rows up).
_BAND_TOKENS = 100
# ... and keeps the base run's keys/values for that, unless they would take more than this.
_KV_BUDGET = 1 << 30
# Packed per-position batches (all layers' rows in one batch per band) run each block once per
# band, so they can use more, narrower bands.
_MAX_PACKED_BANDS = 16


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
class PatchingResult:
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

    def widget(self, **kwargs: Any) -> PatchingGrid:
        from ..widgets.patching_grid import PatchingGrid

        return PatchingGrid.from_result(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        try:
            w = self.widget()
        except ImportError:
            return {"text/plain": repr(self)}
        return w._repr_mimebundle_(include=include, exclude=exclude)


@dataclass(repr=False)
class AblationResult:
    """The metric with and without ablating ``components``.

    ``clean``: ``[n_prompts]`` metric on the unablated runs. ``ablated``: ``[n_prompts]`` with all
    components ablated together, or ``[n_components, n_prompts]`` when ``separately``.
    ``effect`` = ``ablated - clean`` (mean over prompts in ``effect_mean``).
    """

    model_name: str
    kind: str
    metric_name: str
    components: list[str]
    prompts: list[str]
    clean: torch.Tensor
    ablated: torch.Tensor
    separately: bool = False
    model: Model | None = field(default=None, compare=False)
    #: the reference prompts of a mean/resample ablation (``None``: the prompts themselves)
    reference: list[str] | None = None

    @property
    def effect(self) -> torch.Tensor:
        return self.ablated - self.clean

    @property
    def clean_mean(self) -> float:
        return float(self.clean.mean())

    @property
    def ablated_mean(self) -> torch.Tensor | float:
        """Mean over prompts: a float, or one per component when ``separately``."""
        m = self.ablated.mean(-1)
        return m if self.separately else float(m)

    @property
    def effect_mean(self) -> torch.Tensor | float:
        m = self.effect.mean(-1)
        return m if self.separately else float(m)

    def __repr__(self) -> str:
        comps = ", ".join(self.components[:6]) + (", ..." if len(self.components) > 6 else "")
        if self.separately:
            am = self.ablated.mean(-1)
            i = int((am - self.clean_mean).abs().argmax())
            tail = (
                f"largest effect {self.components[i]}: {self.clean_mean:.3f} -> {float(am[i]):.3f}"
            )
        else:
            tail = f"{self.clean_mean:.3f} -> {float(self.ablated.mean()):.3f}"
        return (
            f"AblationResult({self.model_name}, {self.kind}, {self.metric_name}, "
            f"[{comps}]{' separately' if self.separately else ''}, {len(self.prompts)} "
            f"prompt{'s' if len(self.prompts) != 1 else ''}, {tail})"
        )

    def to_pandas(self, per_prompt: bool = False) -> Any:
        """Tidy table: ``component``, ``clean``, ``ablated``, ``effect`` (mean over prompts, or one
        row per prompt with ``per_prompt=True``). Components ablated together are one row
        labelled with all of them joined by ``+``."""
        import pandas as pd

        labels = self.components if self.separately else ["+".join(self.components)]
        abl = self.ablated if self.separately else self.ablated[None]
        rows = []
        for c, a in zip(labels, abl):
            if per_prompt:
                for i, p in enumerate(self.prompts):
                    rows.append(
                        {
                            "component": c,
                            "prompt": i,
                            "text": p,
                            "clean": float(self.clean[i]),
                            "ablated": float(a[i]),
                            "effect": float(a[i] - self.clean[i]),
                        }
                    )
            else:
                rows.append(
                    {
                        "component": c,
                        "clean": self.clean_mean,
                        "ablated": float(a.mean()),
                        "effect": float(a.mean()) - self.clean_mean,
                    }
                )
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """Matplotlib figure of the mean effect (ablated - clean): a layer × head heatmap when
        every component is a head ablated separately, otherwise bars per component."""
        import matplotlib.pyplot as plt

        eff = self.effect.mean(-1).reshape(-1) if self.separately else self.effect.mean().reshape(1)
        labels = self.components if self.separately else ["+".join(self.components)]
        heads = [_parse_head(c) for c in labels]
        vmax = float(eff.abs().max()) or 1.0
        if self.separately and all(h is not None for h in heads):
            layers = sorted({h[0] for h in heads if h})
            nh = max(h[1] for h in heads if h) + 1
            grid = torch.full((len(layers), nh), float("nan"))
            for (layer, h), e in zip(heads, eff.tolist()):  # type: ignore[misc]
                grid[layers.index(layer), h] = e
            if ax is None:
                fig, ax = plt.subplots(
                    figsize=(max(4.0, 0.6 * nh + 2.5), max(2.5, 0.4 * len(layers) + 1.5))
                )
            else:
                fig = ax.figure
            im = _heatmap(
                ax, grid.numpy(), [str(x) for x in layers], [f"head {h}" for h in range(nh)], vmax
            )
            ax.set_ylabel("layer")
            fig.colorbar(im, ax=ax, fraction=0.05)
        else:
            import numpy as np

            if ax is None:
                fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(labels) + 2), 3.2))
            else:
                fig = ax.figure
            cmap = plt.get_cmap("RdBu")
            e = eff.numpy()
            ax.bar(np.arange(len(labels)), e, color=[cmap(0.5 + 0.5 * x / vmax) for x in e])
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set_xticks(range(len(labels)), labels, rotation=60 if len(labels) > 4 else 0)
            ax.set_ylabel(f"Δ {self.metric_name}")
        ax.set_title(
            f"{self.model_name} · {self.kind} ablation · {self.metric_name} (clean {self.clean_mean:.3f})",
            fontsize=10,
        )
        fig.tight_layout()
        return fig

    def widget(self, **kwargs: Any) -> Any:
        """The Ablation view: a layers x heads heatmap of the effect (heads ablated
        separately) or bars per component; click one for the top next tokens with and
        without it. ``kwargs``: ``k``, ``component``."""
        from ..widgets.ablation import Ablation

        return Ablation.from_result(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        try:
            return self.widget()._repr_mimebundle_(include=include, exclude=exclude)
        except ImportError:  # no anywidget: a table
            return {"text/plain": repr(self), "text/html": self.to_pandas().to_html(index=False)}


# --------------------------------------------------------------------------------------------
# Validation (cheap, before any forward pass)
# --------------------------------------------------------------------------------------------


def _check_prompts(x: Any, what: str) -> list[str]:
    if isinstance(x, str):
        if x == "":
            raise ValueError(f"the {what} prompt is empty; give at least one character of text")
        return [x]
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        raise ValueError(f"{what} must be a string or a non-empty list of strings, got {x!r}")
    for i, t in enumerate(x):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}] must be a str, got {type(t).__name__}")
        if t == "":
            raise ValueError(f"{what}[{i}] is empty; give at least one character of text")
    return list(x)


def _check_lm(model: Model) -> None:
    if not isinstance(model, Model):
        raise ValueError(
            f"model must be a mi_widgets Model (mw.load or mw.wrap), got {type(model).__name__}"
        )
    if not model.causal or model.arch.unembed is None:
        raise ValueError(
            f"{model.name} ({model.family}) is not a causal language model with an unembedding; "
            "patching and ablation read next-token logits at the final position (GPT-2, Llama, NeoX)"
        )


def _check_layers(model: Model, layers: Any) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an int or a list of ints, got {layers!r}")
        return list(range(model.n_layers))
    if isinstance(layers, int) and not isinstance(layers, bool):
        return [model.check_layer(layers)]
    if isinstance(layers, (list, tuple, range)) and len(layers) > 0:
        return [model.check_layer(x) for x in layers]
    raise ValueError(f"layers must be 'all', an int or a non-empty list of ints, got {layers!r}")


def _check_heads(model: Model, heads: Any) -> list[int]:
    if isinstance(heads, str) and heads == "all":
        return list(range(model.n_heads))
    hs = [heads] if isinstance(heads, int) and not isinstance(heads, bool) else heads
    if not isinstance(hs, (list, tuple, range)) or len(hs) == 0:
        raise ValueError(f"heads must be 'all', an int or a non-empty list of ints, got {heads!r}")
    for h in hs:
        _check_head(model, h)
    return list(hs)


def _check_head(model: Model, h: Any, layer: int | None = None) -> int:
    if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < model.n_heads:
        where = f" (in layer {layer})" if layer is not None else ""
        raise ValueError(
            f"head {h!r}{where} is out of range: {model.name} has {model.n_heads} heads per layer (0..{model.n_heads - 1})"
        )
    return h


def _check_write_site(model: Model, site: str, allowed: tuple[str, ...], what: str) -> None:
    if site not in allowed:
        raise ValueError(f"unknown site {site!r} for {what}; choose one of {', '.join(allowed)}")
    model.check_site(site)
    if (
        site == "resid_mid"
        and getattr(model.hf.config, "model_type", "") not in _RESID_MID_WRITABLE
    ):
        raise ValueError(
            f"writing resid_mid is not supported for {model.name} ({model.hf.config.model_type}); patch attn_out or resid_post"
        )


def _tokens(model: Model, texts: list[str], what: str) -> list[torch.Tensor]:
    out = []
    for i, t in enumerate(texts):
        try:
            out.append(model.to_tokens(t))
        except ValueError as e:
            raise ValueError(f"{what}[{i}]: {e}") from None
    return out


# --------------------------------------------------------------------------------------------
# Interventions: a write replaces one site's value at one layer for every row of a batch
# --------------------------------------------------------------------------------------------


@dataclass
class _Write:
    """``fn(value) -> new value`` at ``(site, layer)``; values are ``[N, T, d]`` (residual and
    sublayer sites), ``[N, T, n_heads, d_head]`` (``head_out``: the per-head input of the output
    projection, whose image under it is the head's write) or ``[N, T, d_mlp]`` (``mlp_post``)."""

    site: str
    layer: int
    fn: Callable[[torch.Tensor], torch.Tensor]

    @property
    def stream(self) -> int | None:
        """Index into the residual stream for resid_pre/resid_post writes (block boundary)."""
        if self.site == "resid_pre":
            return self.layer
        if self.site == "resid_post":
            return self.layer + 1
        return None

    @property
    def start(self) -> int:
        """First block a forward with this write must run."""
        s = self.stream
        return self.layer if s is None else s


def _write_module(model: Model, site: str) -> tuple[str, str, int | None]:
    """(module relative to the block, 'input'|'output', tuple item) that a write of ``site`` edits.
    resid_mid is written through the attention output (resid_mid = resid_pre + attn_out)."""
    if site == "resid_mid":
        r = model.arch.reads["attn_out"]
    else:
        r = model.arch.reads[site]
    return r.module, r.io, r.item


def _order(model: Model, site: str) -> int:
    return model.arch.reads["attn_out" if site == "resid_mid" else site].order


def _as_heads(model: Model, z: torch.Tensor) -> torch.Tensor:
    return z.reshape(*z.shape[:-1], model.n_heads, model.d_head)


def _apply(
    model: Model, site: str, fn: Callable, value: Any, block_input: torch.Tensor | None
) -> Any:
    """The new value of a module's input/output after write ``fn`` (tuple outputs kept)."""
    if site == "resid_mid":
        a = value[0] if isinstance(value, tuple) else value
        cur = block_input + a
        # a + (new - cur) keeps a bit-exact where nothing changed
        new_a = a + (fn(cur) - cur)
        return (new_a, *value[1:]) if isinstance(value, tuple) else new_a
    if isinstance(value, tuple):
        return (fn(value[0]), *value[1:])
    if site == "head_out":
        return fn(_as_heads(model, value)).reshape(value.shape)
    return fn(value)


def _unembed_path(model: Model) -> str:
    """Module path of the unembedding: the architecture map's, or (where transformers renamed
    it, e.g. NeoX's ``embed_out`` -> ``lm_head``) the model's output embeddings."""
    path = model.arch.unembed or ""
    try:
        _get(model.hf, path)
        return path
    except AttributeError:
        out = model.hf.get_output_embeddings()
        for name, mod in model.hf.named_modules():
            if mod is out and name:
                return name
    raise ValueError(f"cannot find the unembedding of {model.name}")


def _tail(model: Model, h_last: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, vocab]`` from the final residual stream at the last position ``[N, d]``."""
    if model.arch.final_norm is not None:
        h_last = _get(model.hf, model.arch.final_norm)(h_last)
    return _get(model.hf, _unembed_path(model))(h_last)


def _narrow_tail(model: Model, m: Metric) -> tuple[Callable, Metric] | None:
    """For a ``logit_diff`` metric and a plain linear unembedding: a tail computing only the
    metric's vocabulary columns (final norm, then those rows of the unembedding) and the same
    metric re-indexed into them, so patched rows never build vocabulary-sized logits."""
    from .metrics import LogitDiff

    if type(m) is not LogitDiff or m._ids is None:
        return None
    mod = _get(model.hf, _unembed_path(model))
    if type(mod) is not torch.nn.Linear:
        return None
    a, b = m._ids
    flat = [a] if isinstance(a, int) else list(a)
    flat += [b] if isinstance(b, int) else list(b)
    cols = sorted(set(flat))
    if len(cols) * 4 > model.d_vocab:
        return None
    where = {c: j for j, c in enumerate(cols)}

    def remap(x: int | list[int]) -> int | list[int]:
        return where[x] if isinstance(x, int) else [where[i] for i in x]

    idx = torch.tensor(cols, device=mod.weight.device)
    w = mod.weight[idx]
    bias = mod.bias[idx] if mod.bias is not None else None
    norm = _get(model.hf, model.arch.final_norm) if model.arch.final_norm is not None else None

    def tail(h: torch.Tensor) -> torch.Tensor:
        if norm is not None:
            h = norm(h)
        return torch.nn.functional.linear(h, w, bias)

    sub = LogitDiff(m.correct, m.wrong, _ids=(remap(a), remap(b)))
    sub.name = m.name
    return tail, sub


class _PrefixCache:
    """Stands in for a transformers ``Cache`` in a block call: every layer's keys and values are
    the base run's for positions ``< p0`` (rows picked per batch row) followed by the new ones.
    Nothing is stored, so memory stays at one layer's keys/values at a time."""

    def __init__(
        self,
        kv: tuple[list[torch.Tensor], list[torch.Tensor]],
        rows: torch.Tensor,
        p0: int,
        mid: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.keys, self.values = kv
        self.rows, self.p0 = rows, p0
        self.mid = mid  # keys/values of positions p0.. computed by the caller (one layer)

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.keys[layer_idx][self.rows, :, : self.p0].to(key_states.dtype)
        v = self.values[layer_idx][self.rows, :, : self.p0].to(value_states.dtype)
        if self.mid is not None:
            mk, mv = self.mid
            return torch.cat([k, mk, key_states], dim=-2), torch.cat([v, mv, value_states], dim=-2)
        return torch.cat([k, key_states], dim=-2), torch.cat([v, value_states], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.p0 + (self.mid[0].shape[-2] if self.mid is not None else 0)


def _swap_cache(args: tuple, kwargs: dict, cache: _PrefixCache) -> tuple[tuple, dict]:
    from transformers.cache_utils import Cache

    return (
        tuple(cache if isinstance(a, Cache) else a for a in args),
        {k: cache if isinstance(v, Cache) else v for k, v in kwargs.items()},
    )


# hf module -> {(length, device, dtype, attention implementation): captured block arguments}
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _DirectEngine:
    """Runs blocks ``start..L-1`` in torch from a cached residual stream, with hooks for writes
    inside a block, then the final norm and unembedding at the last position only."""

    name = "direct"

    def __init__(self, model: Model):
        self.model = model
        self.blocks = _get(model.hf, model.arch.layers)
        self._args: dict[int, list[tuple[tuple, dict]]] = {}
        self._suffix: dict[tuple[int, int], list[tuple[tuple, dict]] | None] = {}
        self._kv: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.failed: str | None = None

    def _key(self, *extra: Any) -> tuple:
        hf = self.model.hf
        return (
            *extra,
            str(self.model.device),
            next(hf.parameters()).dtype,
            getattr(hf.config, "_attn_implementation", None),
        )

    def _cache_kwarg(self) -> str | None:
        params = inspect.signature(self.model.hf.forward).parameters
        return (
            "cache"
            if "cache" in params
            else "past_key_values"
            if "past_key_values" in params
            else None
        )

    def prepare_prefix(self, tokens: torch.Tensor) -> bool:
        """Keys and values of every layer for the base prompts ``[B, T]`` (one forward with a
        cache), so that a batch whose edits all start at position ``p0`` (causal models) can
        run positions ``p0..T-1`` only: positions before ``p0`` are identical to the base run."""
        ck = self._cache_kwarg()
        if ck is None or self.failed:
            return False
        n_bytes = (
            2
            * self.model.n_layers
            * tokens.numel()
            * self.model.d_model
            * next(self.model.hf.parameters()).element_size()
        )
        if n_bytes > _KV_BUDGET:
            return False
        from transformers import DynamicCache

        c = DynamicCache(config=self.model.hf.config)
        with torch.no_grad():
            self.model.hf(
                tokens.to(self.model.device),
                use_cache=True,
                **{ck: c},
                **_forward_kwargs(self.model, tokens),
            )
        layers = getattr(c, "layers", None)
        if layers is None or len(layers) != self.model.n_layers:
            return False
        self._kv[tokens.shape[-1]] = ([x.keys for x in layers], [x.values for x in layers])
        return True

    def suffix_ok(self, tokens: torch.Tensor, p0: int) -> bool:
        """Capture (once per model, length and ``p0``) the block arguments of a forward over
        positions ``p0..T-1`` after a cached prefix, and check that running the blocks with
        them and the cached keys/values reproduces that forward's logits."""
        t = tokens.shape[-1]
        if t not in self._kv or not 0 < p0 < t:
            return False
        if (t, p0) in self._suffix:
            return self._suffix[(t, p0)] is not None
        hf = self.model.hf
        store = _PREPARED.setdefault(hf, {})
        key = self._key("suffix", t, p0)
        if key in store:
            self._suffix[(t, p0)] = store[key]
            return store[key] is not None
        from transformers import DynamicCache

        ck = self._cache_kwarg()
        one = tokens[:1].to(self.model.device)
        captured: list[tuple[tuple, dict]] = []
        first: list[torch.Tensor] = []

        def grab(_m: Any, args: tuple, kwargs: dict) -> None:
            if not captured:
                first.append(args[0])
            captured.append((tuple(args[1:]), dict(kwargs)))

        ok = False
        try:
            c = DynamicCache(config=hf.config)
            with torch.no_grad():
                hf(
                    one[:, :p0],
                    use_cache=True,
                    **{ck: c},
                    attention_mask=torch.ones_like(one[:, :p0]),
                )
                handles = [b.register_forward_pre_hook(grab, with_kwargs=True) for b in self.blocks]
                try:
                    kw = _forward_kwargs(self.model, one)  # attention mask over past + new tokens
                    out = hf(one[:, p0:], use_cache=True, **{ck: c}, **kw)
                finally:
                    for h in handles:
                        h.remove()
            if len(captured) == self.model.n_layers:
                self._suffix[(t, p0)] = captured
                ref = out.logits[:, -1].float()
                got = self.forward(
                    one, 0, first[0], [], prefix=(torch.zeros(1, dtype=torch.long), p0)
                ).float()
                ok = float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
        except Exception:  # noqa: BLE001 - any failure just disables the optimisation
            ok = False
        self._suffix[(t, p0)] = captured if ok else None
        store[key] = self._suffix[(t, p0)]
        return ok

    def prepare(self, tokens: torch.Tensor) -> None:
        """Capture each block's extra arguments (masks, position embeddings) for sequences of
        this length from one batch-1 forward (they broadcast over any batch size), and check
        that running the blocks with them reproduces that forward's logits. Both are remembered
        per model and sequence length, so later calls skip this."""
        t = tokens.shape[-1]
        hf = self.model.hf
        key = self._key(t)
        store = _PREPARED.setdefault(hf, {})
        if key in store:
            self._args[t] = store[key]
            return
        captured: list[tuple[tuple, dict]] = []
        first: list[torch.Tensor] = []

        def grab(_m: Any, args: tuple, kwargs: dict) -> None:
            if not captured:
                first.append(args[0])
            captured.append((tuple(args[1:]), dict(kwargs)))

        handles = [b.register_forward_pre_hook(grab, with_kwargs=True) for b in self.blocks]
        try:
            with torch.no_grad():
                one = tokens[:1]
                out = hf(
                    one.to(self.model.device), use_cache=False, **_forward_kwargs(self.model, one)
                )
        finally:
            for h in handles:
                h.remove()
        if len(captured) != self.model.n_layers:
            self.failed = "could not capture the block arguments"
            return
        self._args[t] = captured
        ref = (out.logits if hasattr(out, "logits") else out[0])[:, -1].float()
        got = self.forward(tokens[:1], 0, first[0], []).float()
        err = float((got - ref).abs().max())
        if err > 1e-4 * max(1.0, float(ref.abs().max())):
            self.failed = f"max logit difference {err:.2e}"
            return
        store[key] = captured

    @torch.no_grad()
    def forward(
        self,
        tokens: torch.Tensor,
        start: int,
        hidden: torch.Tensor,
        writes: list[_Write],
        prefix: tuple[torch.Tensor, int] | None = None,
        tail: bool = True,
        packed: list[tuple[int, torch.Tensor, torch.Tensor]] | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Final-position logits (``tail=False``: the final residual stream at the last position,
        for :func:`_tail` to turn into logits for many batches at once). With
        ``prefix=(rows, p0)``, ``hidden`` and every write cover positions ``p0..T-1`` only;
        earlier positions come from the base keys/values of ``rows`` (indices into the prepared
        base batch). ``packed``: residual-stream segments that join at different blocks (see
        :meth:`forward_packed`; ``hidden``/``writes`` are then unused, ``tail`` must be False)."""
        model = self.model
        n = model.n_layers
        t = tokens.shape[-1]
        if packed is not None:
            return self.forward_packed(t, packed, prefix[1] if prefix else 0, last_only)
        if prefix is None:
            args = self._args[t]
        else:
            rows, p0 = prefix
            pc = _PrefixCache(self._kv[t], rows.to(model.device), p0)
            args = [_swap_cache(a, kw, pc) for a, kw in self._suffix[(t, p0)]]  # type: ignore[union-attr]
        stream: dict[int, list[Callable]] = {}
        inner: list[_Write] = []
        for w in writes:
            if w.stream is not None:
                stream.setdefault(w.stream, []).append(w.fn)
            else:
                inner.append(w)
        block_in: dict[int, torch.Tensor] = {}
        handles = []
        try:
            for w in inner:
                handles.append(self._hook(w, block_in))
            h = hidden
            for i in range(start, n):
                for fn in stream.get(i, ()):
                    h = fn(h)
                block_in[i] = h
                a, kw = args[i]
                h = self.blocks[i](h, *a, **kw)
                if isinstance(h, tuple):
                    h = h[0]
            for fn in stream.get(n, ()):
                h = fn(h)
            return _tail(model, h[:, -1]) if tail else h[:, -1]
        finally:
            for hd in handles:
                hd.remove()

    @torch.no_grad()
    def forward_packed(
        self,
        t: int,
        segs: list[tuple[int, torch.Tensor, torch.Tensor]],
        p0: int,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Final residual stream at the last position for rows that start at different blocks:
        ``segs`` = ``(block boundary i, already-written stream [N_i, T - p0, d], base rows
        [N_i])``, sorted by ``i``; each segment joins the batch at block ``i`` (so block ``i``
        runs once for all rows that have reached it, not once per start layer). With ``p0 > 0``,
        positions before ``p0`` come from the base keys/values of each row. Output rows follow
        ``segs`` order."""
        n = self.model.n_layers
        dev = self.model.device
        pc = None
        if p0:
            pc = _PrefixCache(self._kv[t], segs[0][2].to(dev), p0)
            args = [_swap_cache(a, kw, pc) for a, kw in self._suffix[(t, p0)]]  # type: ignore[union-attr]
        else:
            args = self._args[t]
        h: torch.Tensor | None = None
        rows: torch.Tensor | None = None
        k = 0
        for i in range(segs[0][0], n + 1):
            while k < len(segs) and segs[k][0] == i:
                _, hs, rs = segs[k]
                h = hs if h is None else torch.cat([h, hs])
                rows = rs if rows is None else torch.cat([rows, rs])
                k += 1
            if i == n or h is None:
                continue
            if pc is not None:
                pc.rows = rows.to(dev)  # type: ignore[union-attr]
            if i == n - 1 and last_only and h.shape[1] > 1:
                out = self._last_block(t, h, rows.to(dev), p0)  # type: ignore[union-attr]
                # rows that join after the last block (resid_post of the last layer)
                return torch.cat([out, *(hs[:, -1] for _, hs, _ in segs[k:])])
            a, kw = args[i]
            h = self.blocks[i](h, *a, **kw)
            if isinstance(h, tuple):
                h = h[0]
        assert h is not None
        return h[:, -1]

    def last_block_ok(self, tokens: torch.Tensor) -> bool:
        """Whether the last block can run its queries, attention output and MLP at the last
        position only (GPT-2 blocks; keys/values of the other positions computed from the
        block's own ``ln_1`` and ``c_attn``), checked once per model and length."""
        t = tokens.shape[-1]
        if getattr(self.model.hf.config, "model_type", "") != "gpt2" or t < 2:
            return False
        blk = self.blocks[self.model.n_layers - 1]
        if not (hasattr(blk, "ln_1") and hasattr(getattr(blk, "attn", None), "c_attn")):
            return False
        if t not in self._kv or t not in self._args or not self.suffix_ok(tokens, t - 1):
            return False
        store = _PREPARED.setdefault(self.model.hf, {})
        key = self._key("last", t)
        if key not in store:
            ok = False
            try:
                with torch.no_grad():
                    n = self.model.n_layers
                    h = torch.randn(2, t, self.model.d_model, device=self.model.device)
                    h = h.to(next(self.model.hf.parameters()).dtype)
                    rows = torch.zeros(2, dtype=torch.long, device=self.model.device)
                    a, kw = self._args[t][n - 1]  # the full-length block arguments
                    ref = blk(h, *a, **kw)
                    ref = (ref[0] if isinstance(ref, tuple) else ref)[:, -1].float()
                    got = self._last_block(t, h, rows, 0).float()
                    ok = float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
            except Exception:  # noqa: BLE001 - any failure just disables the optimisation
                ok = False
            store[key] = ok
        return bool(store[key])

    def _last_block(self, t: int, h: torch.Tensor, rows: torch.Tensor, p0: int) -> torch.Tensor:
        """The last block's output at the last position for ``h`` = positions ``p0..T-1``."""
        blk = self.blocks[self.model.n_layers - 1]
        att = blk.attn
        kv = att.c_attn(blk.ln_1(h[:, :-1]))
        _, km, vm = kv.split(kv.shape[-1] // 3, dim=2)
        shape = (*km.shape[:-1], -1, att.head_dim)
        mid = (km.view(shape).transpose(1, 2), vm.view(shape).transpose(1, 2))
        pc = _PrefixCache(self._kv[t], rows, p0, mid)
        a, kw = _swap_cache(*self._suffix[(t, t - 1)][-1], pc)  # type: ignore[index]
        out = blk(h[:, -1:], *a, **kw)
        return (out[0] if isinstance(out, tuple) else out)[:, -1]

    def _hook(self, w: _Write, block_in: dict[int, torch.Tensor]) -> Any:
        model = self.model
        rel, io, _ = _write_module(model, w.site)
        mod = _get(self.blocks[w.layer], rel)
        if io == "output":

            def post(_m: Any, _args: Any, out: Any) -> Any:
                return _apply(model, w.site, w.fn, out, block_in.get(w.layer))

            return mod.register_forward_hook(post)

        def pre(_m: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                return (_apply(model, w.site, w.fn, args[0], None), *args[1:]), kwargs
            k = next(iter(kwargs))
            return args, {**kwargs, k: _apply(model, w.site, w.fn, kwargs[k], None)}

        return mod.register_forward_pre_hook(pre, with_kwargs=True)


class _NNsightEngine:
    """The same forward inside one nnsight trace per batch: blocks before ``start`` are skipped
    (``.skip(cached residual)``), writes are assignments to envoys, and only final-position
    logits are kept (``logits_to_keep=1`` where the model takes it)."""

    name = "nnsight"

    def __init__(self, model: Model):
        self.model = model

    def prepare(self, tokens: torch.Tensor) -> None:
        pass

    def forward(
        self, tokens: torch.Tensor, start: int, hidden: torch.Tensor, writes: list[_Write]
    ) -> torch.Tensor:
        model = self.model
        n = model.n_layers
        stream: dict[int, list[Callable]] = {}
        inner: dict[int, list[_Write]] = {}
        for w in writes:
            if w.stream is not None:
                stream.setdefault(w.stream, []).append(w.fn)
            else:
                inner.setdefault(w.layer, []).append(w)
        h0 = hidden
        for fn in stream.pop(start, ()):
            h0 = fn(h0)
        unembed = _get(model.nn, _unembed_path(model), envoy=True)
        with (
            torch.no_grad(),
            model.nn.trace(
                tokens.to(model.device), remote=model.remote, **_forward_kwargs(model, tokens)
            ),
        ):
            for j in range(start):
                model._module(j, "").skip(h0)
            if start == 0 and h0 is not hidden:
                model._module(0, "").input = h0
            for i in range(start, n):
                block = model._module(i, "")
                # the block's input: h0 at the start block (skipped blocks return it, or it
                # was set above); read from the trace further on, when a write needs it
                x = h0 if i == start else None
                if i in stream:
                    x = block.input
                    for fn in stream[i]:
                        x = fn(x)
                    block.input = x
                layer_writes = sorted(inner.get(i, []), key=lambda w: _order(model, w.site))
                if any(w.site == "resid_mid" for w in layer_writes) and x is None:
                    x = block.input
                k = 0
                while k < len(layer_writes):
                    rel, io, _ = _write_module(model, layer_writes[k].site)
                    group = [
                        w for w in layer_writes[k:] if _write_module(model, w.site)[:2] == (rel, io)
                    ]
                    k += len(group)
                    env = model._module(i, rel)
                    if io == "output":
                        v = env.output
                        for w in group:
                            v = _apply(model, w.site, w.fn, v, x)
                        env.output = v
                    else:
                        v = env.input
                        for w in group:
                            v = _apply(model, w.site, w.fn, v, x)
                        env.input = v
            if n in stream and start < n:
                last = model._module(n - 1, "")
                v = last.output
                for fn in stream[n]:
                    v = fn(v)
                last.output = v
            logits = unembed.output[:, -1].save()
        return logits


def _forward_kwargs(model: Model, tokens: torch.Tensor) -> dict[str, Any]:
    """Keyword arguments for a forward over ``tokens`` (no padding): an all-ones attention mask
    (so transformers does not warn about padding when BOS is also the pad token) and
    ``logits_to_keep=1`` (final-position logits only) where the model takes it."""
    kw: dict[str, Any] = {
        "attention_mask": torch.ones(tokens.shape, dtype=torch.long, device=model.device)
    }
    try:
        params = inspect.signature(model.hf.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return kw
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    return kw


def _engine(model: Model, engine: str) -> _DirectEngine | _NNsightEngine:
    if engine not in ("auto", "direct", "nnsight"):
        raise ValueError(f"engine must be 'auto', 'direct' or 'nnsight', got {engine!r}")
    direct_ok = not model.remote and getattr(model.hf.config, "model_type", "") in _DIRECT_TYPES
    if engine == "direct" and not direct_ok:
        raise ValueError(
            f"the direct engine supports local {', '.join(sorted(_DIRECT_TYPES))} models; "
            f"{model.name} is {'remote' if model.remote else model.hf.config.model_type}; use engine='nnsight'"
        )
    if engine == "nnsight" or (engine == "auto" and not direct_ok):
        return _NNsightEngine(model)
    return _DirectEngine(model)


# --------------------------------------------------------------------------------------------
# Caching: one nnsight trace per batch of same-length prompts
# --------------------------------------------------------------------------------------------


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
    n = model.n_layers
    wanted: dict[tuple[str, int], str] = {}
    for i in stream:
        wanted[("resid_pre", i) if i < n else ("resid_post", n - 1)] = f"stream:{i}"
    for s in sites:
        wanted.setdefault(s, "site")
    keys: dict[tuple[int, int, str, str], list[tuple[str, int]]] = {}
    for site, layer in wanted:
        r = model.arch.reads[site]
        keys.setdefault((layer, r.order, r.module, r.io), []).append((site, layer))
    saved: dict[tuple, Any] = {}
    unembed = _get(model.nn, _unembed_path(model), envoy=True)
    with (
        torch.no_grad(),
        model.nn.trace(
            tokens.to(model.device), remote=model.remote, **_forward_kwargs(model, tokens)
        ),
    ):
        for key in sorted(keys):
            layer, _, module, io = key
            env = model._module(layer, module)
            saved[key] = (env.input if io == "input" else env.output).save()
        logits = unembed.output[:, -1].save()
    out_stream: dict[int, torch.Tensor] = {}
    out_sites: dict[tuple[str, int], torch.Tensor] = {}
    for key, names in keys.items():
        raw = saved[key]
        for site, layer in names:
            item = model.arch.reads[site].item
            v = raw[item] if (item is not None and isinstance(raw, (tuple, list))) else raw
            v = v.detach()
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


# --------------------------------------------------------------------------------------------
# Activation patching
# --------------------------------------------------------------------------------------------


@dataclass
class _Pairs:
    """Validated inputs shared by the patching functions."""

    clean: list[str]
    corrupt: list[str]
    ctoks: list[torch.Tensor]
    xtoks: list[torch.Tensor]
    layers: list[int]
    heads: list[int] | None
    positions: list[int] | None
    metric: Metric

    @property
    def n(self) -> int:
        return len(self.clean)

    @property
    def lengths(self) -> list[int]:
        return [a.shape[1] for a in self.ctoks]

    def dims_shape(self) -> tuple[tuple[str, ...], list[int]]:
        dims: tuple[str, ...] = ("layer",)
        shape = [len(self.layers)]
        if self.heads is not None:
            dims += ("head",)
            shape.append(len(self.heads))
        if self.positions is not None:
            dims += ("position",)
            shape.append(len(self.positions))
        return dims, shape


def _validate_pairs(
    model: Model,
    clean: Any,
    corrupt: Any,
    metric: Any,
    site: str,
    positions: Any,
    layers: Any,
    direction: str,
    heads: Any,
    what: str,
) -> _Pairs:
    _check_lm(model)
    clean_l = _check_prompts(clean, "clean")
    corrupt_l = _check_prompts(corrupt, "corrupt")
    if len(clean_l) != len(corrupt_l):
        raise ValueError(
            f"clean and corrupt must pair up: got {len(clean_l)} clean and {len(corrupt_l)} corrupt prompts"
        )
    _check_write_site(model, site, PATCH_SITES, what)
    if direction not in ("denoise", "noise"):
        raise ValueError(
            f"direction must be 'denoise' (patch clean into corrupt) or 'noise' (corrupt into clean), got {direction!r}"
        )
    layer_l = _check_layers(model, layers)
    head_l = _check_heads(model, heads) if site == "head_out" else None
    if site != "head_out" and not (isinstance(heads, str) and heads == "all"):
        raise ValueError(f"heads= applies to site='head_out' only (site is {site!r})")
    m = as_metric(metric).bind(model)
    m.check_batch(len(clean_l))
    ctoks = _tokens(model, clean_l, "clean")
    xtoks = _tokens(model, corrupt_l, "corrupt")
    single = len(clean_l) == 1
    for i, (a, b) in enumerate(zip(ctoks, xtoks)):
        if a.shape[1] != b.shape[1]:
            who = "clean and corrupt" if single else f"clean[{i}] and corrupt[{i}]"
            raise ValueError(
                f"{who} tokenise to different lengths, {a.shape[1]} vs {b.shape[1]} tokens: "
                f"{model.to_str_tokens(a)} vs {model.to_str_tokens(b)}. Patching swaps activations "
                "position by position, so each pair needs the same number of tokens; reword one of them."
            )
    lengths = [a.shape[1] for a in ctoks]
    pos_l: list[int] | None
    if isinstance(positions, str):
        if positions not in ("all", "each"):
            raise ValueError(
                f"positions must be 'all', 'each' or a list of positions, got {positions!r}"
            )
        pos_l = None if positions == "all" else list(range(lengths[0]))
    else:
        if isinstance(positions, int) and not isinstance(positions, bool):
            positions = [positions]
        if not isinstance(positions, (list, tuple, range)) or len(positions) == 0:
            raise ValueError(
                f"positions must be 'all', 'each' or a non-empty list of ints, got {positions!r}"
            )
        pos_l = []
        for p in positions:
            if isinstance(p, bool) or not isinstance(p, int) or not -lengths[0] <= p < lengths[0]:
                raise ValueError(
                    f"position {p!r} is out of range for prompts of {lengths[0]} tokens (0..{lengths[0] - 1}, or negative from the end)"
                )
            pos_l.append(p % lengths[0])
    if pos_l is not None and len(set(lengths)) > 1:
        detail = ", ".join(f"pair {i}: {t}" for i, t in enumerate(lengths))
        raise ValueError(
            f"per-position patching needs every prompt pair to have the same token length so the "
            f"grid lines up; got {detail}. Use positions='all' or prompts of one length."
        )
    return _Pairs(clean_l, corrupt_l, ctoks, xtoks, layer_l, head_l, pos_l, m)


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
    for t, idx in groups.items():
        bt = torch.cat([base_toks[i] for i in idx])
        st = torch.cat([src_toks[i] for i in idx])
        base_c[t] = _collect(model, bt, starts | {0}, set())
        src_c[t] = _collect(model, st, set(), {(site, lay) for lay in layer_l})
        eng.prepare(bt)
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

    def flush() -> None:
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

    deferred = isinstance(eng, _DirectEngine)
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
                if on_update is not None or sum(x[0].shape[0] for x in pending) >= _MAX_ROWS:
                    flush()
                bar.update(1)
                if on_update is not None:
                    on_update(
                        _result(
                            model, spec, site, direction, raw.clone(), m_clean, m_corrupt, normalize
                        ),
                        done,
                        len(plan),
                    )
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
            out = eng.forward(bc.tokens[g_rows], start, hidden, [w], **extra)
            if deferred:
                pending.append((out, specs, pairs, li))
                if on_update is not None or sum(x[0].shape[0] for x in pending) >= _MAX_ROWS:
                    flush()
            else:
                record(out.float(), specs, pairs, li)
            bar.update(1)
            if on_update is not None:
                on_update(
                    _result(
                        model, spec, site, direction, raw.clone(), m_clean, m_corrupt, normalize
                    ),
                    done,
                    len(plan),
                )
        flush()
    finally:
        pending.clear()
        bar.close()
    return _result(model, spec, site, direction, raw, m_clean, m_corrupt, normalize)


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
    if model.remote:
        raise ValueError("attribution_patching needs gradients and runs on local models only")
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


# --------------------------------------------------------------------------------------------
# Ablation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """A set of units at one site and layer: ``units=None`` is the whole site (every dimension,
    head or neuron); otherwise head indices (``head_out``), neuron indices (``mlp_post``) or
    residual dimensions."""

    site: str
    layer: int
    units: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        if self.site == "head_out" and self.units is not None and len(self.units) == 1:
            return f"{self.layer}.{self.units[0]}"
        if self.units is None:
            short = {"mlp_out": "mlp", "attn_out": "attn"}.get(self.site, self.site)
            return f"{short}.{self.layer}"
        return f"{self.site}.{self.layer}[{','.join(map(str, self.units))}]"


def _parse_head(label: str) -> tuple[int, int] | None:
    parts = label.split(".")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def parse_component(model: Model, c: Any) -> Component:
    """A :class:`Component` from ``"L.H"`` (a head), ``"mlp.L"`` / ``"attn.L"`` (a whole MLP or
    attention layer), ``"<site>.L"`` (a whole site), ``(site, L)`` or ``(site, L, units)``
    (``("mlp_post", 1, 7)`` is neuron 7 of layer 1's MLP; ``("head_out", 2, [0, 3])`` two heads).
    Raises ``ValueError`` naming the component when it is malformed or out of range."""
    if isinstance(c, Component):
        site, layer, units = c.site, c.layer, c.units
    elif isinstance(c, str):
        head = _parse_head(c)
        if head is not None:
            site, layer, units = "head_out", head[0], (head[1],)
        else:
            name, _, num = c.rpartition(".")
            site = {"mlp": "mlp_out", "attn": "attn_out"}.get(name, name)
            if not num.isdigit() or site not in ABLATE_SITES:
                raise ValueError(
                    f"cannot read component {c!r}: use 'L.H' for a head (e.g. '1.3'), 'mlp.L' or "
                    f"'attn.L' for a whole layer, '<site>.L' for a site ({', '.join(ABLATE_SITES)}), "
                    "or a tuple (site, layer[, units]) such as ('mlp_post', 1, 7)"
                )
            layer, units = int(num), None
    elif isinstance(c, tuple) and len(c) in (2, 3) and isinstance(c[0], str):
        site = {"mlp": "mlp_out", "attn": "attn_out"}.get(c[0], c[0])
        layer = c[1]
        units = None
        if len(c) == 3:
            u = c[2]
            units = (
                (u,)
                if isinstance(u, int) and not isinstance(u, bool)
                else tuple(u)
                if isinstance(u, (list, tuple, range))
                else u
            )
            if not isinstance(units, tuple) or not units:
                raise ValueError(
                    f"component {c!r}: units must be an int or a non-empty list of ints"
                )
    else:
        raise ValueError(
            f"cannot read component {c!r}: use 'L.H', 'mlp.L', 'attn.L', '<site>.L', or (site, layer[, units])"
        )
    if site not in ABLATE_SITES:
        raise ValueError(
            f"component {c!r}: unknown site {site!r}; choose one of {', '.join(ABLATE_SITES)}"
        )
    _check_write_site(model, site, ABLATE_SITES, "ablation")
    try:
        model.check_layer(layer)
    except ValueError as e:
        raise ValueError(f"component {c!r}: {e}") from None
    if units is not None:
        width = model.site_width(site)
        kind = {"head_out": "head", "mlp_post": "neuron"}.get(site, "dimension")
        for u in units:
            if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < width:
                per = "heads per layer" if kind == "head" else f"{kind}s"
                raise ValueError(
                    f"component {c!r}: {kind} {u!r} is out of range: {model.name} has {width} {per} at {site} (0..{width - 1})"
                )
    return Component(site, layer, units)


def _unit_mask(model: Model, comp: Component, like: torch.Tensor) -> torch.Tensor | None:
    if comp.units is None:
        return None
    if comp.site == "head_out":
        mask = torch.zeros(model.n_heads, 1, dtype=torch.bool)
        mask[list(comp.units)] = True
    else:
        mask = torch.zeros(like.shape[-1], dtype=torch.bool)
        mask[list(comp.units)] = True
    return mask.to(like.device)


def ablate(
    model: Model,
    prompts: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    components: Any,
    kind: Literal["zero", "mean", "resample"] = "zero",
    reference: str | Sequence[str] | None = None,
    *,
    separately: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    engine: Literal["auto", "direct", "nnsight"] = "auto",
) -> AblationResult:
    """The metric on ``prompts`` with ``components`` ablated, and without.

    ``components``: one component or a list (see :func:`parse_component`: ``"L.H"`` heads,
    ``"mlp.L"``, ``"attn.L"``, ``("mlp_post", L, neuron)``, ``(site, L)``), ablated together,
    or each on its own with ``separately=True``. ``kind``:

    - ``"zero"``: the value becomes 0 (for a head: its output-projection input, so the head
      writes nothing; the projection bias stays);
    - ``"mean"``: its mean over every token of ``reference`` (default: ``prompts``);
    - ``"resample"``: its value on ``reference[i % len(reference)]`` at the same positions
      (that prompt must have the same token length as ``prompts[i]``).

    Applied at every position. The metric is raw (not normalised); ``kl_to_clean`` compares with
    the unablated run.
    """
    _check_lm(model)
    prompt_l = _check_prompts(prompts, "prompts")
    comps_in = components if isinstance(components, list) else [components]
    if len(comps_in) == 0:
        raise ValueError(
            "components is empty; name at least one, e.g. '1.3' (layer 1 head 3) or 'mlp.0'"
        )
    comps = [parse_component(model, c) for c in comps_in]
    if kind not in ("zero", "mean", "resample"):
        raise ValueError(f"kind must be 'zero', 'mean' or 'resample', got {kind!r}")
    if kind == "resample" and reference is None:
        raise ValueError(
            "kind='resample' needs reference prompts (reference=[...]) to take activations from"
        )
    m = as_metric(metric).bind(model)
    m.check_batch(len(prompt_l))
    toks = _tokens(model, prompt_l, "prompts")
    ref_l = _check_prompts(reference, "reference") if reference is not None else None
    ref_toks = _tokens(model, ref_l, "reference") if ref_l is not None else None
    if kind == "resample":
        assert ref_toks is not None and ref_l is not None
        for i, a in enumerate(toks):
            r = ref_toks[i % len(ref_toks)]
            if r.shape[1] != a.shape[1]:
                raise ValueError(
                    f"resample ablation takes prompts[{i}]'s activations from reference[{i % len(ref_toks)}], "
                    f"but they tokenise to different lengths, {a.shape[1]} vs {r.shape[1]} tokens: "
                    f"{model.to_str_tokens(a)} vs {model.to_str_tokens(r)}"
                )

    eng = _engine(model, engine)
    sites = {(c.site, c.layer) for c in comps}
    starts = {_Write(c.site, c.layer, lambda x: x).start for c in comps}
    lengths = [a.shape[1] for a in toks]
    groups = _groups(lengths)
    base_c: dict[int, _Cache] = {}
    for t, idx in groups.items():
        bt = torch.cat([toks[i] for i in idx])
        base_c[t] = _collect(model, bt, starts | {0}, set())
        eng.prepare(bt)
    eng = _self_check(eng, model, engine)

    # replacement values per component: zero / mean ([...site shape]) or resample (per prompt)
    means: dict[tuple[str, int], torch.Tensor] = {}
    resampled: dict[int, _Cache] = {}
    if kind == "mean":
        src_toks = ref_toks if ref_toks is not None else toks
        sums: dict[tuple[str, int], torch.Tensor] = {}
        count = 0
        for _t, idx in _groups([a.shape[1] for a in src_toks]).items():
            c = _collect(model, torch.cat([src_toks[i] for i in idx]), set(), sites)
            for k, v in c.sites.items():
                s = v.float().sum(dim=(0, 1))
                sums[k] = sums[k] + s if k in sums else s
            count += len(idx) * _t
        means = {k: v / count for k, v in sums.items()}
    elif kind == "resample":
        assert ref_toks is not None
        for t, idx in groups.items():
            rt = torch.cat([ref_toks[i % len(ref_toks)] for i in idx])
            resampled[t] = _collect(model, rt, set(), sites)

    clean_logits = torch.empty(len(prompt_l), model.d_vocab)
    for t, idx in groups.items():
        clean_logits[idx] = base_c[t].logits.cpu()
    all_rows = torch.arange(len(prompt_l))
    m_clean = m(clean_logits, pairs=all_rows, clean_logits=clean_logits).float().cpu()

    def writes_for(cs: list[Component], t: int, g_dev: torch.Tensor) -> list[_Write]:
        out = []
        for c in cs:
            if kind == "zero":
                src: torch.Tensor | float = 0.0
            elif kind == "mean":
                src = means[(c.site, c.layer)]
            else:
                src = resampled[t].sites[(c.site, c.layer)][g_dev]
            out.append(_Write(c.site, c.layer, _ablate_fn(model, c, src)))
        return out

    sets = [[c] for c in comps] if separately else [comps]
    ablated = torch.zeros(len(sets), len(prompt_l))
    plan = []
    for si, cs in enumerate(sets):
        for t, idx in groups.items():
            per = _rows_per_batch(batch_size, t)
            for s in range(0, len(idx), per):
                plan.append((si, cs, t, list(range(s, min(s + per, len(idx))))))
    bar = _progress(len(plan), progress, f"{kind} ablation")
    try:
        for si, cs, t, g in plan:
            g_rows = torch.tensor(g)
            g_dev = g_rows.to(model.device)
            rows = torch.tensor(groups[t])[g_rows]
            ws = writes_for(cs, t, g_dev)
            start = min(w.start for w in ws)
            bc = base_c[t]
            logits = eng.forward(bc.tokens[g_rows], start, bc.stream[start][g_dev], ws).float()
            vals = (
                m(
                    logits,
                    pairs=rows.to(logits.device),
                    clean_logits=clean_logits[rows].to(logits.device),
                )
                .float()
                .cpu()
            )
            ablated[si, rows] = vals
            bar.update(1)
    finally:
        bar.close()
    return AblationResult(
        model_name=model.name,
        kind=kind,
        metric_name=m.name,
        components=[c.label for c in comps],
        prompts=prompt_l,
        clean=m_clean,
        ablated=ablated if separately else ablated[0],
        separately=separately,
        model=model,
        reference=ref_l,
    )


def _ablate_fn(
    model: Model, comp: Component, src: torch.Tensor | float
) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(cur: torch.Tensor) -> torch.Tensor:
        s = (
            torch.zeros((), dtype=cur.dtype, device=cur.device)
            if isinstance(src, float)
            else src.to(cur.device, cur.dtype)
        )
        mask = _unit_mask(model, comp, cur)
        if mask is None:
            return s.expand_as(cur).clone() if s.ndim < cur.ndim else s.clone()
        return torch.where(mask, s, cur)

    return fn


__all__ = [
    "ABLATE_SITES",
    "PATCH_SITES",
    "AblationResult",
    "Component",
    "PatchingResult",
    "ablate",
    "activation_patching",
    "parse_component",
]
