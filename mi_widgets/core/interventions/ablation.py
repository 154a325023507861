"""Ablation: :func:`ablate` replaces components (heads ``"L.H"``, neurons ``("mlp_post", L, i)``,
whole MLPs ``"mlp.L"`` or attention layers ``"attn.L"``, or any site) by zero, their mean, or their
value on other prompts (resample), and reports the metric with and without the ablation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .._checks import check_model
from .._views import view
from ..metrics import Metric, as_metric
from ..model import Model
from .batching import _Cache, _collect, _groups, _progress, _rows_per_batch, _self_check
from .checks import ABLATE_SITES, PATCH_SITES, _check_lm, _check_prompts, _check_write_site, _tokens
from .engine import _engine, _Write
from .patching import PatchingResult, _heatmap, activation_patching


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
        return view(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        try:
            return view(self)._repr_mimebundle_(include=include, exclude=exclude)
        except ImportError:  # no anywidget: a table
            return {"text/plain": repr(self), "text/html": self.to_pandas().to_html(index=False)}


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


def _unit_mask(model: Model | int, comp: Component, like: torch.Tensor) -> torch.Tensor | None:
    """``model``: the Model, or its number of heads (inside a remote trace, which ships no Model)."""
    if comp.units is None:
        return None
    if comp.site == "head_out":
        n_heads = model if isinstance(model, int) else model.n_heads
        mask = torch.zeros(n_heads, 1, dtype=torch.bool)
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
    check_model(model)
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
    def record(logits: torch.Tensor, si: int, rows: torch.Tensor) -> None:
        logits = logits.float()
        ablated[si, rows] = (
            m(logits, pairs=rows.to(logits.device), clean_logits=clean_logits[rows].to(logits.device))
            .float()
            .cpu()
        )

    in_session: list[tuple[tuple, int, torch.Tensor]] = []
    bar = _progress(len(plan), progress, f"{kind} ablation")
    try:
        for si, cs, t, g in plan:
            g_rows = torch.tensor(g)
            g_dev = g_rows.to(model.device)
            rows = torch.tensor(groups[t])[g_rows]
            ws = writes_for(cs, t, g_dev)
            start = min(w.start for w in ws)
            bc = base_c[t]
            call = (bc.tokens[g_rows], start, bc.stream[start][g_dev], ws)
            if model.remote:  # every batch's trace in one session below: one job, not one per batch
                in_session.append((call, si, rows))
                continue
            record(eng.forward(*call), si, rows)
            bar.update(1)
        if in_session:
            outs = eng.forward_many([c for c, *_ in in_session])  # type: ignore[union-attr]
            for out, (_, si, rows) in zip(outs, in_session):
                record(out, si, rows)
            bar.update(len(in_session))
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
    n_heads = model.n_heads  # the closure names no Model: it may run inside a remote trace

    def fn(cur: torch.Tensor) -> torch.Tensor:
        s = (
            torch.zeros((), dtype=cur.dtype, device=cur.device)
            if isinstance(src, float)
            else src.to(cur.device, cur.dtype)
        )
        mask = _unit_mask(n_heads, comp, cur)
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
