"""Input attribution: which tokens (and which layer × position residual states) cause an output.

:func:`attribute` scores every token of one prompt for a scalar *target* ``f`` of the model's
forward pass (a logit, a logit difference, a neuron, a direction at a site, or any callable):

- ``"grad_x_input"``: ``(x - x') · ∂f/∂x`` at the input embeddings ``x`` (``x'`` is the
  baseline; with the default zero baseline this is the usual gradient × input), summed over the
  embedding dimension. One forward and one backward pass.
- ``"integrated_gradients"`` (IG): ``(x - x') · mean_α ∂f/∂x (x' + α (x - x'))`` with the
  midpoint rule over ``n_steps`` values of α, batched. *Completeness*: the attributions sum to
  ``f(x) - f(x')``. The result reports the relative error
  ``|Σ attr - (f(x) - f(x'))| / |f(x) - f(x')|``; when it exceeds ``tolerance`` the step count
  is raised (×4, up to ``max_steps``) and a warning is issued if it is still over.
- ``"occlusion"``: replace each token's embedding (or each window of ``window`` tokens) by the
  baseline and record the drop ``f(x) - f(x_occluded)``; a token's attribution is the mean drop
  of the windows that cover it (with ``window=1``, exactly its own drop).

Baselines (``baseline=``): ``"zero"`` (the zero embedding, the default), a token (a string that
is one token, or an id: its embedding at every position), or a tensor ``[d_model]`` /
``[T, d_model]`` of embeddings. With ``skip_bos=True`` (default) a leading BOS keeps its own
embedding in the baseline, so it gets exactly zero attribution: it is the same in every prompt
and carries no information about the input. On RMSNorm models (Llama family) avoid paths
through a zero vector: RMSNorm divides by ``sqrt(mean(x²) + eps)``, so near zero the target
changes abruptly and IG needs very many steps (the completeness check reports it); a token
baseline avoids that.

``layers=True`` adds a layer × position attribution to the residual stream: row ``l`` scores
``resid_pre[l]`` (row ``n_layers`` is the last block's output), with the intermediate baseline
``a'`` taken from the run on the baseline embeddings. IG interpolates the residual at one layer
between ``a'`` and ``a`` and runs the rest of the model from there, so each row also sums to
``f(x) - f(x')`` (for a target read at or after that layer); gradient × input becomes gradient
× (activation − baseline activation); occlusion replaces one (layer, position) residual by its
baseline value. Row 0 equals the input attribution (``resid_pre[0]`` is the embedding plus the
position embedding, which the baseline keeps).

Gradients are taken the way :func:`mi_widgets.core.patching.attribution_patching` takes them:
plain torch forward hooks on the model's modules, ``torch.autograd.grad`` on the activations
(parameters get no ``.grad``), and every hook removed in a ``finally``, so an exception or
``KeyboardInterrupt`` leaves the model as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .._checks import check_model, check_vector
from .._views import DisplaysAsView
from ..decomposition.activations import TokenActivationsResult
from ..metrics import token_id
from ..model import Model, _get
from ..model.remote import require_local

METHODS = ("integrated_gradients", "grad_x_input", "occlusion")
#: Sites a neuron / direction / feature target can read (one vector per token).
TARGET_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")
# rows * tokens per batched forward
_TOKEN_BUDGET = 8192


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A scalar function of one forward pass that attribution explains.

    Build one with a constructor: :meth:`logit`, :meth:`logit_diff`, :meth:`neuron`,
    :meth:`direction`, :meth:`feature` (any function of a site's activation at one position,
    e.g. an SAE encoder's feature) or :meth:`custom` (any function of the logits).
    ``attribute`` also accepts shorthands: a string or id (a token's logit), a pair of them (a
    logit difference) and a bare callable (``custom``).
    """

    kind: str
    label: str
    tokens: tuple[Any, ...] = ()
    site: str | None = None
    layer: int | None = None
    index: int | None = None
    vector: torch.Tensor | None = field(default=None, compare=False)
    fn: Callable | None = field(default=None, compare=False)
    position: int = -1

    @classmethod
    def logit(cls, token: str | int, position: int = -1) -> Target:
        """The logit of ``token`` (one token) predicted at ``position`` (default: the last)."""
        return cls("logit", f"logit {token!r}", tokens=(token,), position=position)

    @classmethod
    def logit_diff(cls, correct: str | int, wrong: str | int, position: int = -1) -> Target:
        """``logit[correct] - logit[wrong]`` at ``position``."""
        return cls(
            "logit_diff", f"logit {correct!r} - {wrong!r}", tokens=(correct, wrong), position=position
        )

    @classmethod
    def neuron(cls, site: str, layer: int, index: int, position: int = -1) -> Target:
        """Unit ``index`` of ``site`` (e.g. an MLP neuron of ``mlp_post``) at ``layer``, ``position``."""
        return cls(
            "neuron", f"{site} L{layer} #{index} @ {position}", site=site, layer=layer,
            index=index, position=position,
        )

    @classmethod
    def direction(
        cls, site: str, layer: int, vector: Any, position: int = -1, label: str | None = None
    ) -> Target:
        """The dot product of ``site``'s activation at ``layer``, ``position`` with ``vector``."""
        v = check_vector(vector, None, "Target.direction's vector")
        return cls(
            "direction", label or f"{site} L{layer} · direction @ {position}", site=site,
            layer=layer, vector=v, position=position,
        )

    @classmethod
    def feature(
        cls, site: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor],
        position: int = -1, label: str | None = None,
    ) -> Target:
        """``fn(activation [batch, width]) -> [batch]`` on ``site`` at ``layer``, ``position``:
        the plug for SAE features (``fn = lambda a: sae.encode(a)[:, i]``) or any readout."""
        return cls(
            "feature", label or f"{site} L{layer} feature @ {position}", site=site, layer=layer,
            fn=fn, position=position,
        )

    @classmethod
    def custom(cls, fn: Callable[[torch.Tensor], torch.Tensor], label: str | None = None) -> Target:
        """``fn(logits [batch, T, vocab]) -> [batch]``: any differentiable function of the output."""
        return cls("custom", label or getattr(fn, "__name__", "custom"), fn=fn)


@dataclass
class _Bound:
    """A target resolved against a model and a sequence length."""

    label: str
    site: tuple[str, int] | None
    position: int
    fn: Callable[[torch.Tensor | None, torch.Tensor | None], torch.Tensor]
    needs_logits: bool
    last_only: bool


def as_target(target: Any) -> Target:
    """Normalise ``attribute``'s ``target`` shorthand to a :class:`Target`."""
    if isinstance(target, Target):
        return target
    if isinstance(target, (str, int)) and not isinstance(target, bool):
        return Target.logit(target)
    if isinstance(target, (tuple, list)) and len(target) == 2 and all(
        isinstance(t, (str, int)) and not isinstance(t, bool) for t in target
    ):
        return Target.logit_diff(target[0], target[1])
    if callable(target):
        return Target.custom(target)
    raise ValueError(
        f"target {target!r} is not understood; give a token (' Paris' or an id), a pair of tokens "
        "(a logit difference), a callable on the logits, or a Target (Target.neuron(...), "
        "Target.direction(...), Target.feature(...))"
    )


def _check_position(pos: Any, t: int, what: str) -> int:
    if isinstance(pos, bool) or not isinstance(pos, int) or not -t <= pos < t:
        raise ValueError(f"{what} must be an int in {-t}..{t - 1} for this {t}-token prompt, got {pos!r}")
    return pos % t


def _bind(model: Model, target: Target, t: int) -> _Bound:
    """Resolve tokens and check everything against the model before any forward pass."""
    if target.kind in ("logit", "logit_diff"):
        if not model.causal or model.arch.unembed is None:
            raise ValueError(
                f"{model.name} ({model.family}) has no language-model head; use a neuron, direction "
                "or feature target"
            )
        pos = _check_position(target.position, t, "target position")
        ids = [token_id(model, tok, role="target token") for tok in target.tokens]
        last = pos == t - 1
        if target.kind == "logit":

            def fn(logits: Any, _act: Any) -> torch.Tensor:
                return logits[:, -1 if last else pos, ids[0]]
        else:

            def fn(logits: Any, _act: Any) -> torch.Tensor:
                row = logits[:, -1 if last else pos]
                return row[:, ids[0]] - row[:, ids[1]]

        return _Bound(target.label, None, pos, fn, True, last)
    if target.kind == "custom":
        if not callable(target.fn):
            raise ValueError("Target.custom needs a callable fn(logits) -> [batch]")

        def cfn(logits: Any, _act: Any) -> torch.Tensor:
            out = target.fn(logits)  # type: ignore[misc]
            out = torch.as_tensor(out)
            if out.ndim == 0:
                out = out.expand(logits.shape[0])
            if out.shape != (logits.shape[0],):
                raise ValueError(
                    f"target {target.label!r} returned shape {list(out.shape)}; it must return one "
                    f"number per batch row ([{logits.shape[0]}])"
                )
            return out

        return _Bound(target.label, None, t - 1, cfn, True, False)
    # site targets
    site, layer = target.site, target.layer
    if site not in TARGET_SITES:
        raise ValueError(
            f"target site {site!r} is not supported; choose one of {', '.join(TARGET_SITES)}"
        )
    model.check_site(site, layer)  # type: ignore[arg-type]
    pos = _check_position(target.position, t, "target position")
    width = model.site_width(site)
    if target.kind == "neuron":
        i = target.index
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < width:
            raise ValueError(
                f"neuron index {i!r} is out of range: {site} has {width} units (0..{width - 1})"
            )

        def nfn(_logits: Any, act: Any) -> torch.Tensor:
            return act[:, pos, i]

        fn = nfn
    elif target.kind == "direction":
        v = target.vector
        if v is None or v.shape[0] != width:
            raise ValueError(
                f"direction has {None if v is None else v.shape[0]} entries but {site} has {width} "
                "units per token"
            )

        def dfn(_logits: Any, act: Any) -> torch.Tensor:
            return act[:, pos].float() @ v.to(act.device)

        fn = dfn
    elif target.kind == "feature":
        if not callable(target.fn):
            raise ValueError("Target.feature needs a callable fn(activation [batch, width]) -> [batch]")

        def ffn(_logits: Any, act: Any) -> torch.Tensor:
            out = torch.as_tensor(target.fn(act[:, pos].float()))  # type: ignore[misc]
            return out.reshape(act.shape[0])

        fn = ffn
    else:
        raise ValueError(f"unknown target kind {target.kind!r}")
    return _Bound(target.label, (site, layer), pos, fn, False, False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Forward with hooks
# --------------------------------------------------------------------------------------------


def _first(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"] if "hidden_states" in kwargs else next(iter(kwargs.values()))


def _replace_first(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
    return args, {**kwargs, key: x}


def _out0(o: Any) -> torch.Tensor:
    return o[0] if isinstance(o, tuple) else o


def _with0(o: Any, x: torch.Tensor) -> Any:
    return (x, *o[1:]) if isinstance(o, tuple) else x


class _Runner:
    """Batched forwards of one prompt with optional writes, returning the target per row."""

    def __init__(self, model: Model, tokens: torch.Tensor, bound: _Bound):
        self.model = model
        self.tokens = tokens.to(model.device)
        self.t = int(tokens.shape[1])
        self.bound = bound
        self.blocks = _get(model.hf, model.arch.layers)
        self.embed = _get(model.hf, model.arch.embed)
        self.L = model.n_layers

    def embeddings(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.embed(self.tokens if ids is None else ids.to(self.model.device)).float()

    def __call__(
        self,
        embeds: torch.Tensor | None = None,
        resid_write: tuple[int, torch.Tensor] | None = None,
        read_resid: bool = False,
        rows: int | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Target values ``[rows]`` (and, with ``read_resid``, ``resid_pre[0..L]`` each
        ``[rows, T, d]``, still in the graph) under the current grad mode."""
        m = self.model
        b = rows or (embeds.shape[0] if embeds is not None else resid_write[1].shape[0] if resid_write else 1)
        handles = []
        resid: list[Any] = [None] * (self.L + 1)
        act: list[Any] = [None]
        try:
            if embeds is not None:
                e = embeds

                def put_embed(_m: Any, _a: Any, o: Any) -> Any:
                    return e.to(o.dtype)

                handles.append(self.embed.register_forward_hook(put_embed))
            if resid_write is not None:
                lw, xw = resid_write
                if lw < self.L:

                    def pre_w(_m: Any, a: tuple, kw: dict) -> Any:
                        return _replace_first(a, kw, xw.to(_first(a, kw).dtype))

                    handles.append(self.blocks[lw].register_forward_pre_hook(pre_w, with_kwargs=True))
                else:

                    def post_w(_m: Any, _a: Any, o: Any) -> Any:
                        return _with0(o, xw.to(_out0(o).dtype))

                    handles.append(self.blocks[self.L - 1].register_forward_hook(post_w))
            if read_resid:
                for li in range(self.L):

                    def pre_r(_m: Any, a: tuple, kw: dict, li: int = li) -> None:
                        resid[li] = _first(a, kw)

                    handles.append(self.blocks[li].register_forward_pre_hook(pre_r, with_kwargs=True))

                def post_r(_m: Any, _a: Any, o: Any) -> None:
                    resid[self.L] = _out0(o)

                handles.append(self.blocks[self.L - 1].register_forward_hook(post_r))
            if self.bound.site is not None:
                site, layer = self.bound.site
                blk = self.blocks[layer]

                def keep(v: torch.Tensor) -> None:
                    act[0] = v

                if site == "resid_pre":
                    handles.append(
                        blk.register_forward_pre_hook(lambda _m, a, kw: keep(_first(a, kw)), with_kwargs=True)
                    )
                elif site == "resid_post":
                    handles.append(blk.register_forward_hook(lambda _m, a, o: keep(_out0(o))))
                else:
                    r = m.arch.reads[site]
                    mod = _get(blk, r.module)
                    if r.io == "output":
                        handles.append(mod.register_forward_hook(lambda _m, a, o: keep(_out0(o))))
                    else:
                        handles.append(
                            mod.register_forward_pre_hook(
                                lambda _m, a, kw: keep(_first(a, kw)), with_kwargs=True
                            )
                        )
            ids = self.tokens.expand(b, self.t)
            kw: dict[str, Any] = {"attention_mask": torch.ones_like(ids)}
            if m.causal:
                kw["use_cache"] = False
            out = m.hf(ids, **kw)
            logits = None
            if self.bound.needs_logits:
                logits = out.logits if hasattr(out, "logits") else out[0]
                logits = logits.float()
            value = self.bound.fn(logits, act[0]).float()
        finally:
            for h in handles:
                h.remove()
        return value, resid


def _chunks(n: int, t: int, batch_size: int | None) -> list[slice]:
    size = batch_size or max(1, _TOKEN_BUDGET // max(t, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class _Progress:
    def __init__(self, total: int, progress: Callable | bool | None, desc: str):
        # a callable gets (done, total); False: silent; None/True: a tqdm bar for long runs
        self.total, self.done = total, 0
        self.cb = progress if callable(progress) else None
        self.bar = None
        if (progress is None or progress is True) and total >= 2048:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="row", leave=False)

    def add(self, n: int) -> None:
        self.done += n
        if self.cb is not None:
            self.cb(self.done, self.total)
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


def _label(tok: str) -> str:
    return tok.replace("\n", "\\n")


@dataclass(repr=False)
class AttributionResult(DisplaysAsView):
    """Attribution of ``target`` to the tokens of ``text`` (and optionally to residual states).

    ``values``: ``[T]`` one number per token, in the target's units (logits for a logit target):
    for IG and gradient × input the sum over the embedding dimension, for occlusion the drop of
    the target. ``f_input`` / ``f_baseline``: the target on the prompt and on the baseline.
    ``rel_error``: IG's completeness error ``|Σ values - (f_input - f_baseline)| /
    |f_input - f_baseline|`` (``None`` for the other methods). ``layer_values``: ``[n_layers + 1,
    T]`` for ``layers=True`` (row ``l`` = ``resid_pre[l]``, the last row = the last block's
    output), else ``None``; ``layer_rel_error`` is each row's completeness error for IG.
    """

    model_name: str
    text: str
    str_tokens: list[str]
    token_ids: list[int]
    method: str
    target_label: str
    values: torch.Tensor
    f_input: float
    f_baseline: float
    baseline: str
    n_steps: int | None = None
    rel_error: float | None = None
    tolerance: float | None = None
    layer_values: torch.Tensor | None = None
    layer_rel_error: torch.Tensor | None = None
    model: Model | None = field(default=None, compare=False)

    @property
    def delta(self) -> float:
        """``f_input - f_baseline``: what IG's attributions sum to."""
        return self.f_input - self.f_baseline

    @property
    def layer_labels(self) -> list[str]:
        if self.layer_values is None:
            return []
        n = self.layer_values.shape[0]
        return [f"resid_pre {i}" for i in range(n - 1)] + [f"resid_post {n - 2}"]

    def __repr__(self) -> str:
        top = int(self.values.abs().argmax())
        err = f", completeness error {self.rel_error:.2%}" if self.rel_error is not None else ""
        return (
            f"AttributionResult({self.model_name}, {self.method}, {self.target_label}, "
            f"{len(self.str_tokens)} tokens, f(x)={self.f_input:.3f}, f(baseline)={self.f_baseline:.3f}"
            f"{err}, largest |attr| at {top} {self.str_tokens[top]!r})"
        )

    def to_pandas(self, layers: bool = False) -> Any:
        """Tidy table: ``position``, ``token``, ``value`` (and ``share`` = |value| / Σ|value|);
        with ``layers=True`` one row per (layer, position) of ``layer_values``."""
        import pandas as pd

        if layers:
            if self.layer_values is None:
                raise ValueError("this result has no layer attribution; run attribute(..., layers=True)")
            rows = [
                {"layer": li, "site": lab, "position": p, "token": tok, "value": float(self.layer_values[li, p])}
                for li, lab in enumerate(self.layer_labels)
                for p, tok in enumerate(self.str_tokens)
            ]
            return pd.DataFrame(rows)
        total = float(self.values.abs().sum()) or 1.0
        return pd.DataFrame(
            [
                {"position": p, "token": tok, "value": float(v), "share": abs(float(v)) / total}
                for p, (tok, v) in enumerate(zip(self.str_tokens, self.values.tolist()))
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        """Matplotlib figure: a bar per token (and the layer × position heatmap below it when
        the result has one), diverging colours centred at 0."""
        import matplotlib.pyplot as plt
        from matplotlib import colors

        toks = [_label(t) for t in self.str_tokens]
        v = self.values.numpy()
        has_layers = self.layer_values is not None and ax is None
        if ax is None:
            fig, axes = plt.subplots(
                2 if has_layers else 1, 1,
                figsize=(max(5.0, 0.6 * len(toks) + 2), 6.5 if has_layers else 3.2),
                squeeze=False,
            )
            ax = axes[0, 0]
        else:
            fig = ax.figure
        m = float(abs(v).max()) or 1.0
        cmap = plt.get_cmap("RdBu_r")
        norm = colors.TwoSlopeNorm(vmin=-m, vcenter=0.0, vmax=m)
        ax.bar(range(len(v)), v, color=[cmap(norm(x)) for x in v])
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xticks(range(len(toks)), toks, rotation=60, ha="right")
        err = f" · completeness error {self.rel_error:.1%}" if self.rel_error is not None else ""
        ax.set_title(f"{self.model_name} · {self.method} · {self.target_label}{err}", fontsize=10)
        ax.set_ylabel("attribution")
        if has_layers:
            lv = self.layer_values.numpy()  # type: ignore[union-attr]
            ax2 = axes[1, 0]
            lm = float(abs(lv).max()) or 1.0
            im = ax2.imshow(
                lv, cmap="RdBu_r", norm=colors.TwoSlopeNorm(vmin=-lm, vcenter=0.0, vmax=lm),
                aspect="auto", interpolation="nearest",
            )
            ax2.set_yticks(range(lv.shape[0]), self.layer_labels)
            ax2.set_xticks(range(len(toks)), toks, rotation=60, ha="right")
            ax2.set_title("attribution to the residual stream (layer × position)", fontsize=10)
            fig.colorbar(im, ax=ax2, fraction=0.05)
        fig.tight_layout()
        return fig

    def to_token_activations(self) -> TokenActivationsResult:
        """The per-token attributions as a :class:`TokenActivationsResult` (one unit, coloured
        through a one-entry direction), so that the ``TokenActivations`` view renders them."""
        return TokenActivationsResult(
            model_name=self.model_name,
            site="attribution",
            layer=0,
            texts=[self.text],
            str_tokens=[list(self.str_tokens)],
            token_ids=[list(self.token_ids)],
            acts=self.values.float().reshape(-1, 1).clone(),
            direction=torch.ones(1),
            direction_label=f"{self.method} → {self.target_label}",
            model=None,
        )


# --------------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------------


def _baseline_embeds(
    model: Model, runner: _Runner, x: torch.Tensor, baseline: Any, skip_bos: bool
) -> tuple[torch.Tensor, str]:
    t, d = x.shape[1], x.shape[2]
    if isinstance(baseline, str) and baseline == "zero":
        xb, desc = torch.zeros_like(x), "zero embedding"
    elif isinstance(baseline, torch.Tensor):
        b = baseline.detach().float().to(x.device)
        if b.shape == (d,):
            b = b.expand(t, d)
        if b.shape != (t, d):
            raise ValueError(
                f"baseline tensor must have shape [{d}] or [{t}, {d}] (d_model, or one per token), "
                f"got {list(baseline.shape)}"
            )
        xb, desc = b[None].clone(), "given embedding"
    elif isinstance(baseline, (str, int)) and not isinstance(baseline, bool):
        tid = token_id(model, baseline, role="baseline token")
        xb = runner.embeddings(torch.full((1, t), tid, dtype=torch.long))
        desc = f"token {model.tokenizer.decode([tid])!r}"
    else:
        raise ValueError(
            f"baseline {baseline!r} is not understood; give 'zero', a token (string or id) or an "
            "embedding tensor [d_model] / [T, d_model]"
        )
    bos = model.tokenizer.bos_token_id
    if skip_bos and bos is not None and int(runner.tokens[0, 0]) == bos:
        xb[:, 0] = x[:, 0]
        desc += " (BOS kept)"
    return xb, desc


def _ig_grads(
    runner: _Runner,
    start: torch.Tensor,
    end: torch.Tensor,
    n_steps: int,
    write_layer: int | None,
    batch_size: int | None,
    prog: _Progress,
) -> torch.Tensor:
    """Mean gradient of the target along the straight path start -> end (midpoint rule).
    ``write_layer`` None: the path is over input embeddings; else over resid_pre[write_layer]."""
    alphas = (torch.arange(n_steps, dtype=torch.float32) + 0.5) / n_steps
    total = torch.zeros_like(end)
    diff = end - start
    for sl in _chunks(n_steps, runner.t, batch_size):
        a = alphas[sl].to(end.device).reshape(-1, 1, 1)
        xs = (start + a * diff).detach().requires_grad_(True)
        with torch.enable_grad():
            if write_layer is None:
                vals, _ = runner(embeds=xs)
            else:
                vals, _ = runner(resid_write=(write_layer, xs))
            (g,) = torch.autograd.grad(vals.sum(), xs, allow_unused=True)
        if g is not None:
            total += g.sum(0, keepdim=True).float()
        prog.add(xs.shape[0])
    return total / n_steps


def attribute(
    model: Model,
    text: str,
    target: Any,
    method: Literal["integrated_gradients", "grad_x_input", "occlusion"] = "integrated_gradients",
    *,
    baseline: str | int | torch.Tensor = "zero",
    skip_bos: bool = True,
    n_steps: int = 32,
    tolerance: float = 0.05,
    max_steps: int = 512,
    window: int = 1,
    layers: bool = False,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AttributionResult:
    """Attribute ``target`` to the tokens of ``text`` (see the module docstring for the methods
    and baselines).

    ``target``: a token (``" Paris"`` or an id: its logit at the last position), a pair of
    tokens (logit difference), a callable ``f(logits [batch, T, vocab]) -> [batch]``, or a
    :class:`Target`. ``n_steps``: IG steps (midpoint rule); if the completeness error exceeds
    ``tolerance`` the steps are multiplied by 4 up to ``max_steps``, then a warning is issued.
    ``window``: occlusion window in tokens. ``layers=True`` adds the layer × position
    attribution. ``progress(done, total)`` is called after each batch (rows of forward passes).
    Every check runs before the first forward pass. Local models only (gradients).
    """
    check_model(model)
    if isinstance(baseline, torch.Tensor):
        if baseline.is_complex():
            raise TypeError("baseline is complex; pass a real embedding tensor [d_model] or [T, d_model]")
        if not bool(torch.isfinite(baseline).all()):
            raise ValueError("baseline contains NaN or inf; pass a finite embedding tensor")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    require_local(
        model, "attribute",
        "it takes gradients through the model (or, for occlusion, runs it with torch hooks); "
        "use activation_patching (runs remotely) or load the model without remote",
    )
    for name, v, lo in (("n_steps", n_steps, 1), ("max_steps", max_steps, 1), ("window", window, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if not isinstance(tolerance, (int, float)) or tolerance <= 0:
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    tgt = as_target(target)
    tokens = model.to_tokens(text)
    t = int(tokens.shape[1])
    if window > t:
        raise ValueError(f"window {window} is longer than the prompt ({t} tokens)")
    bound = _bind(model, tgt, t)
    runner = _Runner(model, tokens, bound)
    x = runner.embeddings()
    xb, bdesc = _baseline_embeds(model, runner, x, baseline, skip_bos)

    L = model.n_layers
    n_rows = {"integrated_gradients": n_steps, "grad_x_input": 1, "occlusion": t - window + 1}[method]
    if layers:
        n_rows += (L + 1) * (n_steps if method == "integrated_gradients" else 1 if method == "grad_x_input" else t)
    prog = _Progress(n_rows + 2, progress, f"{method}")
    try:
        # f(x), f(x') and (for layers) the residual stream of both runs
        with torch.no_grad():
            vals, res = runner(embeds=torch.cat([x, xb]), read_resid=layers)
        prog.add(2)
        f_x, f_b = float(vals[0]), float(vals[1])
        delta = f_x - f_b
        a = [r[0:1].detach().float() for r in res] if layers else []
        ab = [r[1:2].detach().float() for r in res] if layers else []
        rel_error = None
        steps_used = None
        layer_values = None
        layer_err = None

        def rel(s: float) -> float:
            return abs(s - delta) / max(abs(delta), 1e-8)

        if method == "integrated_gradients":
            steps = n_steps
            while True:
                g = _ig_grads(runner, xb, x, steps, None, batch_size, prog)
                values = ((x - xb) * g).sum(-1)[0]
                rel_error = rel(float(values.sum()))
                if rel_error <= tolerance or steps * 4 > max_steps:
                    break
                prog.total += steps * 3
                steps *= 4
            steps_used = steps
            if rel_error > tolerance:
                warnings.warn(
                    f"integrated gradients: attributions sum to {float(values.sum()):.4g} but "
                    f"f(x) - f(baseline) = {delta:.4g} (relative error {rel_error:.2%} > tolerance "
                    f"{tolerance:.2%}) with {steps} steps; raise max_steps",
                    stacklevel=2,
                )
            if layers:
                rows_l, errs = [], []
                for li in range(L + 1):
                    gl = _ig_grads(runner, ab[li], a[li], steps, li, batch_size, prog)
                    row = ((a[li] - ab[li]) * gl).sum(-1)[0]
                    rows_l.append(row)
                    errs.append(rel(float(row.sum())))
                layer_values = torch.stack(rows_l).cpu()
                layer_err = torch.tensor(errs)
        elif method == "grad_x_input":
            xg = x.clone().requires_grad_(True)
            with torch.enable_grad():
                v, res_g = runner(embeds=xg, read_resid=layers)
                wrt = [xg] + (list(res_g) if layers else [])
                grads = torch.autograd.grad(v.sum(), wrt, allow_unused=True)
            prog.add(1 + (L + 1 if layers else 0))
            g0 = grads[0] if grads[0] is not None else torch.zeros_like(x)
            values = ((x - xb) * g0.float()).sum(-1)[0]
            if layers:
                rows_l = []
                for li in range(L + 1):
                    gl = grads[1 + li]
                    gl = torch.zeros_like(a[li]) if gl is None else gl.float()
                    rows_l.append(((a[li] - ab[li]) * gl).sum(-1)[0])
                layer_values = torch.stack(rows_l).detach().cpu()
        else:  # occlusion
            starts = list(range(t - window + 1))
            drops = torch.empty(len(starts))
            with torch.no_grad():
                for sl in _chunks(len(starts), t, batch_size):
                    batch = x.expand(sl.stop - sl.start, -1, -1).clone()
                    for r, p in enumerate(starts[sl]):
                        batch[r, p : p + window] = xb[0, p : p + window]
                    v, _ = runner(embeds=batch)
                    drops[sl] = f_x - v.cpu()
                    prog.add(batch.shape[0])
            acc, cnt = torch.zeros(t), torch.zeros(t)
            for p, dval in zip(starts, drops.tolist()):
                acc[p : p + window] += dval
                cnt[p : p + window] += 1
            values = acc / cnt.clamp(min=1)
            if layers:
                rows_l = []
                with torch.no_grad():
                    for li in range(L + 1):
                        row = torch.empty(t)
                        for sl in _chunks(t, t, batch_size):
                            n = sl.stop - sl.start
                            batch = a[li].expand(n, -1, -1).clone()
                            for r, p in enumerate(range(sl.start, sl.stop)):
                                batch[r, p] = ab[li][0, p]
                            v, _ = runner(resid_write=(li, batch))
                            row[sl] = f_x - v.cpu()
                            prog.add(n)
                        rows_l.append(row)
                layer_values = torch.stack(rows_l)
    finally:
        prog.close()
    return AttributionResult(
        model_name=model.name,
        text=text,
        str_tokens=model.to_str_tokens(tokens),
        token_ids=tokens[0].tolist(),
        method=method,
        target_label=bound.label,
        values=values.detach().float().cpu(),
        f_input=f_x,
        f_baseline=f_b,
        baseline=bdesc,
        n_steps=steps_used,
        rel_error=rel_error,
        tolerance=tolerance if method == "integrated_gradients" else None,
        layer_values=layer_values,
        layer_rel_error=layer_err,
        model=model,
    )

