"""Steering: add a direction to the residual stream and watch the output move.

A steering vector is a ``[d_model]`` tensor added, times a coefficient, to one site of one
layer (``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out`` or ``mlp_out``) at all
positions or at chosen positions:

- :func:`steering_vector` builds one from a contrast: the mean activation of a set of
  "positive" prompts minus that of "negative" prompts (read at the last token or the mean over
  tokens), in the site's own units;
- :func:`steering_from_probe` takes a linear probe's direction (:meth:`ProbeResult.direction`);
- :func:`as_steering_vector` wraps any 1-D tensor of size ``d_model`` (e.g. an SAE decoder row).

Three ways to apply it, each one nnsight trace with the addition inside:

- :func:`steer`: the next-token distribution with and without the vector (top-k, computed in
  the trace), plus an optional metric;
- :func:`steer_generate` / :func:`steer_stream`: baseline and steered continuations, generated as
  the two rows of one batch through nnsight's generation interface (``model.generate`` with a
  ``tracer.all()`` loop, so the vector is added at every decoding step), greedy or sampled
  with a seed; the stream yields tokens as they are decoded and can be cancelled;
- :func:`steering_sweep`: a behaviour metric (``logit_diff``, ``prob`` or any callable on the
  last-position logits) against the coefficient, all coefficients as one batch.

Positions are absolute token positions of the prompt (negative counts from the prompt's end);
``"all"`` also steers every generated token. The model is never left modified: the addition
lives in the trace, which nnsight removes when it ends, on error or interrupt too.
"""

from __future__ import annotations

import math
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model
from .._views import view
from ..metrics import Metric, as_metric
from ..model import Model

#: Sites a steering vector can be added to (all ``[T, d_model]``).
STEER_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")

Positions = str | Sequence[int]


# ------------------------------------------------------------------------------------------
# Vectors
# ------------------------------------------------------------------------------------------


@dataclass
class SteeringVector:
    """A ``[d_model]`` direction plus where it came from. ``site``/``layer`` are where it was
    read (the default place to add it); ``source`` is ``"contrast"``, ``"probe"`` or
    ``"tensor"``."""

    vector: torch.Tensor
    name: str = "vector"
    site: str | None = None
    layer: int | None = None
    source: str = "tensor"

    def __post_init__(self) -> None:
        self.vector = _as_1d(self.vector, self.name)

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def normalized(self) -> SteeringVector:
        """The same direction with unit norm."""
        n = self.vector.norm()
        if float(n) == 0.0:
            raise ValueError(f"steering vector {self.name!r} is zero; it has no direction to normalise")
        return SteeringVector(self.vector / n, self.name, self.site, self.layer, self.source)

    def __neg__(self) -> SteeringVector:
        return SteeringVector(-self.vector, f"-{self.name}", self.site, self.layer, self.source)

    def __repr__(self) -> str:
        where = f", site={self.site!r}, layer={self.layer}" if self.site is not None else ""
        return f"SteeringVector({self.name!r}, d={self.vector.numel()}, norm={self.norm:.4g}, source={self.source}{where})"


def _as_1d(x: Any, name: str = "vector") -> torch.Tensor:
    if isinstance(x, SteeringVector):
        return x.vector
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a 1-D tensor (or array/list of numbers), got {type(x).__name__}") from None
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D with d_model entries, got shape {list(t.shape)}")
    if t.is_complex():
        raise TypeError(f"{name} is complex; pass a real vector (its imaginary part would be dropped)")
    if not t.is_floating_point():
        t = t.float()
    t = t.detach().float().cpu()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has NaN or infinite entries")
    return t


def as_steering_vector(x: Any, model: Model | None = None, *, name: str | None = None) -> SteeringVector:
    """A :class:`SteeringVector` from a SteeringVector (returned as is), or any 1-D tensor / array
    / list of ``d_model`` numbers (checked against ``model`` when given)."""
    sv = x if isinstance(x, SteeringVector) else SteeringVector(_as_1d(x, name or "vector"), name or "vector")
    if name is not None and sv.name != name:
        sv = SteeringVector(sv.vector, name, sv.site, sv.layer, sv.source)
    if model is not None and sv.vector.numel() != model.d_model:
        raise ValueError(
            f"steering vector {sv.name!r} has {sv.vector.numel()} entries but {model.name} has "
            f"d_model={model.d_model}; steering adds it to a [T, d_model] site"
        )
    return sv


def _texts(x: str | Sequence[str], what: str) -> list[str]:
    texts = [x] if isinstance(x, str) else list(x)
    if not texts:
        raise ValueError(f"{what} is empty; give at least one prompt")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or t == "":
            raise ValueError(f"{what}[{i}] must be a non-empty str, got {t!r}")
    return texts


def steering_vector(
    model: Model,
    positive: str | Sequence[str],
    negative: str | Sequence[str],
    *,
    site: str = "resid_post",
    layer: int,
    read: str = "last",
    name: str | None = None,
) -> SteeringVector:
    """Mean activation of ``positive`` prompts minus mean of ``negative`` prompts at
    ``(site, layer)``, each prompt read at its last token (``read="last"``) or averaged over its
    tokens (``read="mean"``). Units: the site's own (residual-stream units), so ``coef=1`` adds
    the full mean difference. One forward per prompt."""
    check_model(model)
    _check_site(model, site, layer)
    pos, neg = _texts(positive, "positive"), _texts(negative, "negative")
    if read not in ("last", "mean"):
        raise ValueError(f"read must be 'last' or 'mean', got {read!r}")
    toks = [model.to_tokens(t) for t in pos + neg]  # validates lengths before any forward

    def one(ids: torch.Tensor) -> torch.Tensor:
        h = model.run(ids, [(site, layer)])[(site, layer)]
        return h[-1] if read == "last" else h.mean(0)

    acts = torch.stack([one(ids) for ids in toks])
    vec = acts[: len(pos)].mean(0) - acts[len(pos):].mean(0)
    return SteeringVector(vec, name or "contrast", site, layer, "contrast")


def steering_from_probe(result: Any, layer: int, *, site: str | None = None, normalize: bool = False, name: str | None = None) -> SteeringVector:
    """A probe's weight vector (:meth:`ProbeResult.direction`) at ``layer`` as a steering vector
    (positive coefficients push towards the probe's higher class)."""
    key = result._key(layer, site)
    v = result.direction(layer, site=site, normalize=normalize)
    s, lay = key
    if lay < 0:  # the embedding: resid_pre of block 0
        s, lay = "resid_pre", 0
    return SteeringVector(v, name or f"probe:{result.dataset}", s, lay, "probe")


# ------------------------------------------------------------------------------------------
# Validation and the intervention
# ------------------------------------------------------------------------------------------


def _check_site(model: Model, site: str, layer: Any) -> None:
    if site not in STEER_SITES:
        raise ValueError(f"site {site!r} cannot be steered; choose one of {', '.join(STEER_SITES)} (all [T, d_model])")
    model.check_site(site)
    model.check_layer(layer)


def _resolve_place(model: Model, vec: SteeringVector, site: str | None, layer: int | None) -> tuple[str, int]:
    site = site if site is not None else (vec.site or "resid_post")
    if layer is None:
        if vec.layer is None:
            raise ValueError(f"give layer= (0..{model.n_layers - 1}): the vector {vec.name!r} does not say where it was read")
        layer = vec.layer
    _check_site(model, site, layer)
    return site, layer


def _check_coef(coef: Any, what: str = "coef") -> float:
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(float(coef)):
        raise ValueError(f"{what} must be a finite number, got {coef!r}")
    return float(coef)


def _resolve_positions(positions: Positions, n_tokens: int) -> list[int] | None:
    """``None`` for every position; otherwise sorted absolute prompt positions."""
    if isinstance(positions, str):
        if positions != "all":
            raise ValueError(f"positions must be 'all' or a list of ints, got {positions!r}")
        return None
    try:
        raw = list(positions)
    except TypeError:
        raw = [positions]
    if not raw:
        raise ValueError("positions is an empty list; give 'all' or at least one position")
    out = []
    for p in raw:
        if isinstance(p, bool) or not isinstance(p, int):
            raise ValueError(f"positions must be ints, got {p!r}")
        q = p + n_tokens if p < 0 else p
        if not 0 <= q < n_tokens:
            raise ValueError(f"position {p} is out of range for a prompt of {n_tokens} tokens (-{n_tokens}..{n_tokens - 1})")
        out.append(q)
    return sorted(set(out))


def _site_value(model: Model, site: str, layer: int) -> Any:
    """The nnsight proxy of ``(site, layer)``'s ``[B, T, d_model]`` tensor (edited in place)."""
    return _value_at(_site_place(model, site, layer))


def _site_place(model: Model, site: str, layer: int) -> tuple[Any, str, int | None]:
    """(envoy, 'input'|'output', tuple item) of ``(site, layer)``, looked up before a trace so
    that its body names no Model (a remote request ships what the body names)."""
    r = model.arch.reads[site]
    return model._module(layer, r.module), r.io, r.item


def _value_at(place: tuple[Any, str, int | None]) -> Any:
    envoy, io, item = place
    value = envoy.input if io == "input" else envoy.output
    if isinstance(value, (tuple, list)):
        value = value[item or 0]
    return value


def _add(h: torch.Tensor, delta: torch.Tensor, rows: slice | torch.Tensor, pos: list[int] | None, offset: int) -> None:
    """In place: ``h[rows, p - offset] += delta[rows]`` for the steered positions present in this
    forward (``offset``: absolute position of ``h``'s first token)."""
    d = delta.to(h.device, h.dtype)
    if pos is None:
        h[rows] += d[rows][:, None, :] if d.ndim == 2 else d
        return
    local = [p - offset for p in pos if offset <= p < offset + h.shape[1]]
    if not local:
        return
    idx = torch.tensor(local, device=h.device)
    if d.ndim == 2:
        h[rows, idx] += d[rows][:, None, :]
    else:
        h[rows, idx] += d


# ------------------------------------------------------------------------------------------
# Next-token effect
# ------------------------------------------------------------------------------------------


@dataclass
class SteerResult:
    """Next-token distributions of ``prompt`` with and without ``coef * vector`` at
    ``(site, layer)``. ``baseline_topk``/``steered_topk``: top-k ``{token, id, prob, logit}``;
    ``kl``: KL(baseline || steered) in nats; ``metric_*``: the metric on both runs (if given)."""

    model_name: str
    prompt: str
    vector_name: str
    site: str
    layer: int
    coef: float
    positions: list[int] | None
    baseline_topk: list[dict]
    steered_topk: list[dict]
    kl: float
    metric_name: str | None = None
    metric_baseline: float | None = None
    metric_steered: float | None = None

    def to_pandas(self) -> Any:
        """Tidy table: ``run, rank, token, id, prob, logit``."""
        import pandas as pd

        rows = [
            {"run": run, "rank": i, **t}
            for run, lst in (("baseline", self.baseline_topk), ("steered", self.steered_topk))
            for i, t in enumerate(lst)
        ]
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """Grouped horizontal bars: probability of each top-k token (of either run), baseline
        vs steered (a token outside one run's top-k is drawn at 0 there)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        base = {t["token"]: t["prob"] for t in self.baseline_topk}
        st = {t["token"]: t["prob"] for t in self.steered_topk}
        toks = list(dict.fromkeys([*st, *base]))[::-1]
        y = list(range(len(toks)))
        ax.barh([v + 0.2 for v in y], [base.get(t, 0.0) for t in toks], height=0.4, label="baseline", color="0.6")
        ax.barh([v - 0.2 for v in y], [st.get(t, 0.0) for t in toks], height=0.4, label=f"steered ×{self.coef:g}", color="#1f6fb2")
        ax.set_yticks(y, [repr(t) for t in toks])
        ax.set_xlabel("probability")
        ax.set_title(f"{self.vector_name} at {self.site} {self.layer}", fontsize=9)
        ax.legend(fontsize=8)
        ax.figure.tight_layout()
        return ax.figure

    def widget(self, model: Model, vector: Any, **kwargs: Any) -> Any:
        """The Steering panel on this prompt, vector, layer and coefficient."""
        return view(self, model, vector, **kwargs)


def steer(
    model: Model,
    prompt: str,
    vector: Any,
    *,
    site: str | None = None,
    layer: int | None = None,
    coef: float = 1.0,
    positions: Positions = "all",
    k: int = 10,
    metric: Any = None,
) -> SteerResult:
    """Next-token distribution at the end of ``prompt`` with and without ``coef * vector`` added
    to ``(site, layer)`` at ``positions``: one nnsight trace on a batch of two (row 0 baseline,
    row 1 steered); top-k and KL are computed inside the trace."""
    check_model(model)
    vec = as_steering_vector(vector, model)
    site, layer = _resolve_place(model, vec, site, layer)
    coef = _check_coef(coef)
    _check_causal(model)
    ids = model.to_tokens(prompt)
    pos = _resolve_positions(positions, ids.shape[1])
    if not (isinstance(k, int) and 1 <= k):
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = min(k, model.d_vocab)
    m = as_metric(metric).bind(model) if metric is not None else None
    batch = ids.repeat(2, 1).to(model.device)
    delta = torch.stack([torch.zeros_like(vec.vector), coef * vec.vector])
    mv = None
    place, nn = _site_place(model, site, layer), model.nn
    with torch.no_grad(), nn.trace(batch, attention_mask=torch.ones_like(batch), remote=model.remote):
        _add(_value_at(place), delta, slice(None), pos, 0)
        logits = nn.output.logits[:, -1].float()
        logp = torch.log_softmax(logits, -1)
        probs = logp.exp()
        top = torch.topk(probs, k, dim=-1)
        top_i = top.indices.save()
        top_p = top.values.save()
        top_l = logits.gather(1, top.indices).save()
        kl = (probs[0] * (logp[0] - logp[1])).sum().save()
        if m is not None:
            mv = m(logits).save()
    tok = model.tokenizer

    def rows(r: int) -> list[dict]:
        return [
            {"token": tok.decode([int(i)]), "id": int(i), "prob": float(p), "logit": float(lg)}
            for i, p, lg in zip(top_i[r], top_p[r], top_l[r])
        ]

    return SteerResult(
        model.name, prompt, vec.name, site, layer, coef, pos, rows(0), rows(1), float(kl),
        m.name if m is not None else None,
        float(mv[0]) if mv is not None else None,
        float(mv[1]) if mv is not None else None,
    )


def _check_causal(model: Model) -> None:
    if not model.causal:
        raise ValueError(f"{model.name} ({model.family}) is not a causal language model; steering reads its next-token prediction")


# ------------------------------------------------------------------------------------------
# Coefficient sweep
# ------------------------------------------------------------------------------------------


@dataclass
class SteeringSweepResult:
    """A metric of the last-position logits against the steering coefficient.

    ``values``: ``[n_coefs, n_prompts]``; ``coefs``: the coefficients (ascending as given)."""

    model_name: str
    prompts: list[str]
    vector_name: str
    site: str
    layer: int
    positions: Positions
    metric_name: str
    coefs: list[float]
    values: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """The metric averaged over prompts, one value per coefficient."""
        return self.values.mean(1)

    def to_pandas(self) -> Any:
        """Tidy table: ``coef, prompt_index, prompt, value``."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"coef": c, "prompt_index": j, "prompt": p, "value": float(self.values[i, j])}
                for i, c in enumerate(self.coefs)
                for j, p in enumerate(self.prompts)
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        """The metric vs coefficient: one thin line per prompt, the mean in bold."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        if len(self.prompts) > 1:
            for j in range(len(self.prompts)):
                ax.plot(self.coefs, self.values[:, j].tolist(), color="0.7", lw=0.8)
        ax.plot(self.coefs, self.mean.tolist(), marker="o", lw=2)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.axvline(0, color="0.5", lw=0.5)
        ax.set_xlabel(f"coefficient of {self.vector_name} at {self.site} {self.layer}")
        ax.set_ylabel(self.metric_name)
        ax.figure.tight_layout()
        return ax.figure

    def widget(self, model: Model, vector: Any, **kwargs: Any) -> Any:
        """The Steering panel in sweep mode on this sweep's first prompt."""
        return view(self, model, vector, **kwargs)


def steering_sweep(
    model: Model,
    prompts: str | Sequence[str],
    vector: Any,
    metric: Any,
    *,
    coefs: Sequence[float] = (-8, -4, -2, -1, 0, 1, 2, 4, 8),
    site: str | None = None,
    layer: int | None = None,
    positions: Positions = "all",
    progress: bool = True,
) -> SteeringSweepResult:
    """``metric`` (e.g. ``logit_diff(" positive", " negative")``) of each prompt's last-position
    logits with ``coef * vector`` added, for every coefficient: one trace per prompt, the
    coefficients as one batch; the metric is computed inside the trace."""
    check_model(model)
    vec = as_steering_vector(vector, model)
    site, layer = _resolve_place(model, vec, site, layer)
    _check_causal(model)
    texts = _texts(prompts, "prompts")
    if isinstance(coefs, (str, bytes)):
        raise TypeError(f"coefs must be a list of numbers, e.g. [-4, 0, 4], got the string {coefs!r}")
    cs = [_check_coef(c, "coefs entries") for c in coefs]
    if not cs:
        raise ValueError("coefs is empty; give at least one coefficient")
    m: Metric = as_metric(metric).bind(model)
    toks = [model.to_tokens(t) for t in texts]
    poss = [_resolve_positions(positions, t.shape[1]) for t in toks]
    delta = torch.tensor(cs)[:, None] * vec.vector[None, :]
    from tqdm.auto import tqdm

    out = torch.empty(len(cs), len(texts))
    place, nn = _site_place(model, site, layer), model.nn
    for j, (ids, pos) in enumerate(tqdm(list(zip(toks, poss)), desc="steering sweep", disable=not progress or len(texts) < 4, leave=False)):
        batch = ids.repeat(len(cs), 1).to(model.device)
        with torch.no_grad(), nn.trace(batch, attention_mask=torch.ones_like(batch), remote=model.remote):
            _add(_value_at(place), delta, slice(None), pos, 0)
            vals = m(nn.output.logits[:, -1].float()).save()
        out[:, j] = torch.as_tensor(vals).detach().float().cpu().reshape(-1)
    return SteeringSweepResult(model.name, texts, vec.name, site, layer, positions if isinstance(positions, str) else list(positions), m.name, cs, out)


# ------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------


@dataclass
class SteeredGeneration:
    """Baseline and steered continuations of ``prompt`` (generated as one batch of two)."""

    model_name: str
    prompt: str
    vector_name: str
    site: str
    layer: int
    coef: float
    positions: list[int] | None
    baseline_ids: list[int]
    steered_ids: list[int]
    baseline_tokens: list[str]
    steered_tokens: list[str]
    do_sample: bool = False
    seed: int | None = None
    cancelled: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def baseline_text(self) -> str:
        return "".join(self.baseline_tokens)

    @property
    def steered_text(self) -> str:
        return "".join(self.steered_tokens)

    def to_pandas(self) -> Any:
        """Tidy table: ``run, step, token, id``."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"run": run, "step": i, "token": t, "id": j}
                for run, ts, ids in (("baseline", self.baseline_tokens, self.baseline_ids), ("steered", self.steered_tokens, self.steered_ids))
                for i, (t, j) in enumerate(zip(ts, ids))
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        """The two continuations as text, side by side (a figure for papers)."""
        import textwrap

        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 2.5))
        ax.axis("off")
        ax.text(0.0, 1.0, "baseline\n" + textwrap.fill(self.baseline_text, 40), va="top", family="monospace", fontsize=8, transform=ax.transAxes)
        ax.text(0.52, 1.0, f"steered ×{self.coef:g}\n" + textwrap.fill(self.steered_text, 40), va="top", family="monospace", fontsize=8, transform=ax.transAxes)
        ax.set_title(repr(self.prompt)[:80], fontsize=9)
        return ax.figure

    def widget(self, model: Model, vector: Any, **kwargs: Any) -> Any:
        """The Steering panel showing this generation."""
        return view(self, model, vector, **kwargs)


class _Streamer:
    """transformers' streamer protocol: ``put`` receives the prompt first, then each step's
    ``[batch]`` new ids."""

    def __init__(self, on_step: Callable[[list[int]], None]):
        self.on_step = on_step
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        self.on_step([int(x) for x in value.reshape(-1).tolist()])

    def end(self) -> None:
        pass


def _stopper(cancel: threading.Event | None) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> torch.Tensor:
            stop = cancel is not None and cancel.is_set()
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancel()])


def _gen_args(
    model: Model, prompt: str, vector: Any, site: str | None, layer: int | None, coef: float,
    positions: Positions, max_new_tokens: int, do_sample: bool, temperature: float, top_k: int | None, seed: int | None,
) -> tuple[SteeringVector, str, int, float, torch.Tensor, list[int] | None]:
    vec = as_steering_vector(vector, model)
    site, layer = _resolve_place(model, vec, site, layer)
    coef = _check_coef(coef)
    _check_causal(model)
    ids = model.to_tokens(prompt)
    pos = _resolve_positions(positions, ids.shape[1])
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if ids.shape[1] + max_new_tokens > model.n_ctx:
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds {model.name}'s context of {model.n_ctx}"
        )
    if do_sample:
        _check_coef(temperature, "temperature")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    return vec, site, layer, coef, ids, pos


def _run_generation(
    model: Model, ids: torch.Tensor, vec: SteeringVector, site: str, layer: int, coef: float,
    pos: list[int] | None, max_new_tokens: int, do_sample: bool, temperature: float, top_k: int | None,
    seed: int | None, on_step: Callable[[list[int]], None], cancel: threading.Event | None,
) -> None:
    """One ``model.nn.generate`` of a batch of two (row 0 baseline, row 1 steered) with the
    vector added at every step by a ``tracer.all()`` loop."""
    batch = ids.repeat(2, 1).to(model.device)
    delta = torch.stack([torch.zeros_like(vec.vector), coef * vec.vector])
    n_prompt = ids.shape[1]
    # A remote generation runs on the server: no streamer or stop event can call back here, so
    # its steps are replayed from the returned ids (and cancel only stops before it starts).
    remote = bool(model.remote)
    local_hooks = {} if remote else {"streamer": _Streamer(on_step), "stopping_criteria": _stopper(cancel)}
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        **local_hooks,
        pad_token_id=model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id,
    )
    if do_sample:
        kwargs.update(temperature=float(temperature), top_k=top_k if top_k is not None else 0)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    gen = torch.Generator().manual_seed(seed if seed is not None else 0)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        warnings.filterwarnings("ignore", message=".*attention_mask.*")
        if do_sample:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        inputs = {"input_ids": batch, "attention_mask": torch.ones_like(batch)}
        # generate drops an all-ones mask, and the model then warns that BOS (= pad in the zoo
        # tokenizers) may be padding; there is no padding here
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            place = _site_place(model, site, layer)
            out = None
            with torch.no_grad(), model.nn.generate(remote=model.remote, **kwargs) as tracer:
                with tracer.invoke(inputs):
                    for step in tracer.all():
                        h = _value_at(place)
                        start = 0 if step == 0 else n_prompt + step - 1
                        _add(h, delta, slice(None), pos, start)
                if remote:  # after an open tracer.all() loop: its own invoke
                    with tracer.invoke():
                        out = tracer.result.save()
        finally:
            hf_logging.set_verbosity(verbosity)
    if out is not None:
        for new in out[:, n_prompt:].T.tolist():
            on_step([int(i) for i in new])


def _decode_rows(model: Model, steps: list[list[int]], eos: int | None) -> tuple[list[list[int]], list[bool]]:
    rows: list[list[int]] = [[], []]
    done = [False, False]
    for ids in steps:
        for r in range(2):
            if not done[r]:
                rows[r].append(ids[r])
                if eos is not None and ids[r] == eos:
                    done[r] = True
    return rows, done


def steer_generate(
    model: Model,
    prompt: str,
    vector: Any,
    *,
    site: str | None = None,
    layer: int | None = None,
    coef: float = 1.0,
    positions: Positions = "all",
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = 0,
    cancel: threading.Event | None = None,
) -> SteeredGeneration:
    """Baseline and steered continuations of ``prompt``: greedy (default) or sampled
    (``do_sample=True``, ``temperature``, ``top_k``, reproducible with ``seed``). Generation goes
    through nnsight's ``generate`` with the addition applied at every decoding step; each row
    stops at the end-of-text token (kept as the last token) or after ``max_new_tokens``.
    Setting ``cancel`` (a ``threading.Event``) stops after the current step."""
    check_model(model)
    vec, site, layer, coef, ids, pos = _gen_args(model, prompt, vector, site, layer, coef, positions, max_new_tokens, do_sample, temperature, top_k, seed)
    steps: list[list[int]] = []
    _run_generation(model, ids, vec, site, layer, coef, pos, max_new_tokens, do_sample, temperature, top_k, seed, steps.append, cancel)
    return _result(model, prompt, vec, site, layer, coef, pos, steps, do_sample, seed, cancel is not None and cancel.is_set(), max_new_tokens)


def _result(model: Model, prompt: str, vec: SteeringVector, site: str, layer: int, coef: float, pos: list[int] | None,
            steps: list[list[int]], do_sample: bool, seed: int | None, cancelled: bool, max_new_tokens: int) -> SteeredGeneration:
    rows, _ = _decode_rows(model, steps, model.tokenizer.eos_token_id)
    dec = model.tokenizer.decode
    return SteeredGeneration(
        model.name, prompt, vec.name, site, layer, coef, pos, rows[0], rows[1],
        [dec([i]) for i in rows[0]], [dec([i]) for i in rows[1]], do_sample, seed, cancelled,
        {"max_new_tokens": max_new_tokens},
    )


def steer_stream(
    model: Model,
    prompt: str,
    vector: Any,
    *,
    site: str | None = None,
    layer: int | None = None,
    coef: float = 1.0,
    positions: Positions = "all",
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = 0,
    cancel: threading.Event | None = None,
) -> Iterator[dict]:
    """:func:`steer_generate`, yielding as tokens are decoded: ``{"run": "baseline"|"steered",
    "step", "id", "token"}`` per new token of a row still running, then one final
    ``{"run": "done", "result": SteeredGeneration}``. The generation runs in a background
    thread; closing the iterator (or setting ``cancel``) stops it after the current step, and
    the model is left unsteered either way. Arguments are checked before anything runs."""
    check_model(model)
    vec, site, layer, coef, ids, pos = _gen_args(model, prompt, vector, site, layer, coef, positions, max_new_tokens, do_sample, temperature, top_k, seed)
    return _stream(model, prompt, vec, site, layer, coef, pos, ids, max_new_tokens, do_sample, temperature, top_k, seed, cancel)


def _stream(model: Model, prompt: str, vec: SteeringVector, site: str, layer: int, coef: float, pos: list[int] | None,
            ids: torch.Tensor, max_new_tokens: int, do_sample: bool, temperature: float, top_k: int | None,
            seed: int | None, cancel: threading.Event | None) -> Iterator[dict]:
    cancel = cancel if cancel is not None else threading.Event()
    q: queue.Queue = queue.Queue()
    steps: list[list[int]] = []
    eos = model.tokenizer.eos_token_id
    done = [False, False]
    dec = model.tokenizer.decode

    def on_step(new: list[int]) -> None:
        steps.append(new)
        i = len(steps) - 1
        for r, run in enumerate(("baseline", "steered")):
            if not done[r]:
                q.put({"run": run, "step": i, "id": new[r], "token": dec([new[r]])})
                if eos is not None and new[r] == eos:
                    done[r] = True

    def work() -> None:
        try:
            _run_generation(model, ids, vec, site, layer, coef, pos, max_new_tokens, do_sample, temperature, top_k, seed, on_step, cancel)
            q.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(("error", exc))

    t = threading.Thread(target=work, daemon=True, name="mi-widgets-steering")
    t.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, tuple):
                if item[0] == "error":
                    raise item[1]
                break
            yield item
        yield {"run": "done", "result": _result(model, prompt, vec, site, layer, coef, pos, steps, do_sample, seed, cancel.is_set(), max_new_tokens)}
    finally:
        if t.is_alive():
            cancel.set()
            t.join()


__all__ = [
    "STEER_SITES",
    "SteeredGeneration",
    "SteerResult",
    "SteeringVector",
    "SteeringSweepResult",
    "as_steering_vector",
    "steering_from_probe",
    "steer_generate",
    "steer_stream",
    "steer",
    "steering_sweep",
    "steering_vector",
]
