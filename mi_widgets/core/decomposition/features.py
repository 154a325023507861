"""Dictionary features over a dataset: the data behind a feature dashboard.

A *dictionary* is any object with ``encode(x[..., d_in]) -> f[..., d_sae]`` (non-negative
feature activations), ``decode(f)``, ``W_dec [d_sae, d_in]``, ``d_in``, ``d_sae``, ``site`` and
``layer`` (an SAE of ``mi_widgets.core.sae``, or :class:`LinearDictionary` built from chosen
directions).

:func:`feature_pass` runs the model over texts in batches, reads the dictionary's site inside
one nnsight trace per batch (the trace stops right after that layer), encodes, and keeps only
reductions with memory bounded by ``d_sae`` (never by the number of tokens):

- per feature: tokens counted, firings (activation > 0), sum and max of the activation;
- an activation histogram of the non-zero activations with ``n_bins`` equal bins over
  ``[0, 2^e)``, ``2^e`` the smallest power of two above the feature's max (bins merge pairwise
  when the max crosses a power of two, so the streamed counts equal a histogram over all tokens);
- the top-``k`` activating tokens (a running top-k per feature: each batch's top-k merged with
  the kept one), each with a context window of token ids and of the feature's activation;
- a uniform random sample (``reservoir``) of each feature's firings, with contexts, from which
  :meth:`FeatureData.feature` draws examples per activation band (equal-width intervals of
  ``[0, max]``, as SAE-Vis does).

It can run in a background thread (``background=True``): the returned :class:`FeatureData` is
filled batch by batch and readable at any time (``.n_texts_done``), ``.stop()`` ends it before
the next batch, ``.wait()`` joins it.

Logit effects (:func:`logit_effects`): the decoder direction mapped to the residual stream (via
the MLP's output projection for ``mlp_post``) through the final norm's *linear part* (centering
for LayerNorm and the elementwise weight; the per-token division by the norm is a positive
scale that does not change the ranking and is ignored, as is the bias, which does not depend on
the feature) and the unembedding: ``W_dec[f] @ W_U``.

:func:`steer_feature` adds ``coef * W_dec[f]`` at the site the dictionary writes (its ``out_site`` for a
transcoder, else the site it reads; all positions) or ablates the
feature (subtracts ``f(x) * W_dec[f]``, its contribution to the reconstruction) and reports the
next-token distribution before and after.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_finite, check_model, check_positive_int
from .._views import DisplaysAsView
from ..model import Model, _get
from ..model.remote import require_local

#: Sites a dictionary can read (one vector per token).
FEATURE_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")

# --------------------------------------------------------------------------------------------
# A dictionary from explicit matrices
# --------------------------------------------------------------------------------------------


class LinearDictionary:
    """A ReLU dictionary from explicit matrices: ``f = relu((x - b_dec) @ W_enc + b_enc)``,
    ``decode(f) = f @ W_dec + b_dec``. Useful to look at chosen directions (probe directions,
    mean differences) as features, and as a small real dictionary in tests."""

    def __init__(
        self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
        b_dec: torch.Tensor | None = None, *, site: str, layer: int,
    ) -> None:
        W_enc = torch.as_tensor(W_enc, dtype=torch.float32)
        W_dec = torch.as_tensor(W_dec, dtype=torch.float32)
        d_in, d_sae = W_enc.shape
        if W_dec.shape != (d_sae, d_in):
            raise ValueError(f"W_dec must be [d_sae, d_in] = [{d_sae}, {d_in}], got {list(W_dec.shape)}")
        b_enc = torch.as_tensor(b_enc, dtype=torch.float32).reshape(-1)
        if b_enc.shape[0] != d_sae:
            raise ValueError(f"b_enc must have {d_sae} entries, got {b_enc.shape[0]}")
        self.W_enc, self.b_enc, self.W_dec = W_enc, b_enc, W_dec
        self.b_dec = torch.zeros(d_in) if b_dec is None else torch.as_tensor(b_dec, dtype=torch.float32)
        self.d_in, self.d_sae = int(d_in), int(d_sae)
        self.site, self.layer = site, int(layer)
        self.names: list[str] = []  # feature names, where known (from_token_classes sets them)

    @classmethod
    def from_directions(
        cls, directions: torch.Tensor, thresholds: torch.Tensor | float = 0.0, *, site: str, layer: int
    ) -> LinearDictionary:
        """Features ``relu(x @ d_i - threshold_i)`` for unit-normalised rows ``d_i`` of
        ``directions [n, d_in]``; decoder rows are the same unit directions."""
        d = torch.as_tensor(directions, dtype=torch.float32)
        if d.ndim != 2:
            raise ValueError(f"directions must be [n_features, d_in], got shape {list(d.shape)}")
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        th = torch.as_tensor(thresholds, dtype=torch.float32).expand(d.shape[0])
        return cls(d.T.contiguous(), -th, d.clone(), site=site, layer=layer)

    @classmethod
    def from_token_classes(
        cls, model: Model, texts: list[str], classes: dict[str, Any], *, site: str, layer: int,
    ) -> LinearDictionary:
        """One feature per token class (``{name: set of token strings}``): the direction is the
        mean site activation on the class's tokens minus the mean on all other tokens, and the
        threshold sits halfway between the two means' projections, so the feature fires on the
        class (a supervised, planted feature with a known answer). ``.names`` lists the classes."""
        from .activations import check_texts, check_token_site

        texts = check_texts(texts)
        check_token_site(model, site, layer)
        acts, toks = [], []
        for t in texts:
            ids = model.to_tokens(t)
            acts.append(model.run(ids, [(site, layer)])[(site, layer)])
            toks += model.to_str_tokens(ids)
        x = torch.cat(acts)
        dirs, ths = [], []
        for name, members in classes.items():
            inside = torch.tensor([tok in members for tok in toks])
            if not inside.any() or inside.all():
                raise ValueError(f"token class {name!r} matches {'no' if not inside.any() else 'every'} token of the texts")
            d = x[inside].mean(0) - x[~inside].mean(0)
            d = d / d.norm()
            ths.append(0.5 * float(x[inside].mean(0) @ d + x[~inside].mean(0) @ d))
            dirs.append(d)
        out = cls.from_directions(torch.stack(dirs), torch.tensor(ths), site=site, layer=layer)
        out.names = list(classes)
        return out

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def __repr__(self) -> str:
        return f"LinearDictionary(d_in={self.d_in}, d_sae={self.d_sae}, site={self.site!r}, layer={self.layer})"


def model_lock(model: Model) -> threading.RLock:
    """One lock per model: a background pass and an interactive intervention never trace the
    same model at once (nnsight hooks the shared modules)."""
    lock = model.__dict__.get("_mw_trace_lock")
    if lock is None:
        lock = model.__dict__.setdefault("_mw_trace_lock", threading.RLock())
    return lock


def check_dictionary(model: Model, sae: Any) -> None:
    """Raise ``ValueError`` naming what is missing or inconsistent (before any forward)."""
    missing = [a for a in ("encode", "decode", "W_dec", "d_in", "d_sae", "site", "layer") if not hasattr(sae, a)]
    if missing:
        raise ValueError(
            f"the dictionary ({type(sae).__name__}) lacks {', '.join(missing)}; it needs encode(), "
            "decode(), W_dec [d_sae, d_in], d_in, d_sae, site and layer"
        )
    if getattr(sae.W_dec, "ndim", 2) != 2:
        raise ValueError(
            f"W_dec has shape {list(sae.W_dec.shape)}: a dictionary across several layers (crosscoder) is "
            "not supported by the feature dashboard yet; pass a single-layer SAE or transcoder"
        )
    out_site = getattr(sae, "out_site", None)
    if out_site is not None and out_site not in FEATURE_SITES:
        raise ValueError(f"the dictionary writes site {out_site!r}; feature dashboards take one of {', '.join(FEATURE_SITES)}")
    if sae.site not in FEATURE_SITES:
        raise ValueError(f"the dictionary reads site {sae.site!r}; feature dashboards take one of {', '.join(FEATURE_SITES)}")
    model.check_site(sae.site, sae.layer)
    width = model.site_width(sae.site)
    if int(sae.d_in) != width:
        raise ValueError(f"the dictionary's d_in is {sae.d_in} but {sae.site} of {model.name} has {width} units per token")
    d_out = model.site_width(out_site) if out_site is not None else int(sae.d_in)
    if tuple(sae.W_dec.shape) != (int(sae.d_sae), d_out):
        raise ValueError(f"W_dec must be [d_sae, d_out] = [{sae.d_sae}, {d_out}], got {list(sae.W_dec.shape)}")


def write_site(sae: Any) -> str:
    """Where the decoder writes: ``out_site`` for a transcoder, else the site it reads."""
    return getattr(sae, "out_site", None) or sae.site


def _check_feature(sae: Any, feature: Any) -> int:
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < int(sae.d_sae):
        raise ValueError(f"feature must be an int in 0..{int(sae.d_sae) - 1}, got {feature!r}")
    return feature


def default_texts(n: int = 1024) -> list[str]:
    """The first ``n`` rows of the embedded corpus (``mi_widgets.zoo.corpus.training_rows``)."""
    from ...zoo.corpus import training_rows

    return training_rows(n_rows=n)


# --------------------------------------------------------------------------------------------
# Streaming reductions
# --------------------------------------------------------------------------------------------


class FeatureStats:
    """Per-feature reductions of a stream of activations, memory bounded by ``d_sae``.

    :meth:`update` takes one batch: ``acts [B, T, d_sae]``, ``ids [B, T]`` token ids,
    ``lengths [B]`` (tokens of each row; the rest is padding), ``text_index [B]`` and
    ``counted [B, T]`` (tokens that enter the statistics; the rest only appear in contexts).
    """

    def __init__(
        self, d_sae: int, *, k: int = 20, context: tuple[int, int] = (12, 4), n_bins: int = 64,
        reservoir: int = 48, seed: int = 0,
    ) -> None:
        if n_bins < 2 or n_bins & (n_bins - 1):
            raise ValueError(f"n_bins must be a power of two >= 2, got {n_bins}")
        if k < 1 or reservoir < 0:
            raise ValueError("k must be >= 1 and reservoir >= 0")
        self.d_sae, self.k, self.n_bins, self.R = d_sae, k, n_bins, reservoir
        self.before, self.after = int(context[0]), int(context[1])
        W = self.before + 1 + self.after
        self.n_tokens = 0
        self.n_fire = torch.zeros(d_sae, dtype=torch.long)
        self.act_sum = torch.zeros(d_sae, dtype=torch.float64)
        self.max_act = torch.zeros(d_sae)
        self.hist = torch.zeros(d_sae, n_bins, dtype=torch.long)
        self.hist_exp = torch.full((d_sae,), -1000, dtype=torch.long)  # hi = 2^exp; -1000: none yet
        self.top = _Examples(d_sae, k, W, float("-inf"))
        self.res = _Examples(d_sae, reservoir, W, float("inf"))  # ordered by random key, ascending
        self.gen = torch.Generator().manual_seed(seed)

    # -- one batch -----------------------------------------------------------------------

    def update(self, acts: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
               text_index: torch.Tensor, counted: torch.Tensor) -> None:
        acts = acts.detach().float().cpu()
        B, T, F = acts.shape
        counted = counted.cpu()
        flat = acts.reshape(B * T, F)
        cmask = counted.reshape(B * T)
        a = flat[cmask]  # [N, F] counted tokens
        self.n_tokens += int(a.shape[0])
        fire = a > 0
        self.n_fire += fire.sum(0)
        self.act_sum += a.double().sum(0)
        if a.shape[0]:
            self.max_act = torch.maximum(self.max_act, a.max(0).values)
        self._hist(a, fire)
        rows = torch.nonzero(cmask).reshape(-1)  # flat index into [B*T] of each counted token
        if a.shape[0] == 0:
            return
        # top-k by activation (only firing tokens enter)
        kk = min(self.k, a.shape[0])
        score = a.masked_fill(~fire, float("-inf"))
        vals, where = torch.topk(score, kk, dim=0)  # [kk, F]
        self.top.merge(vals.T, rows[where.T], flat, ids, lengths, text_index, T, self, descending=True)
        if self.R:
            keys = torch.rand(a.shape, generator=self.gen).masked_fill(~fire, float("inf"))
            kr = min(self.R, a.shape[0])
            kv, kw = torch.topk(keys, kr, dim=0, largest=False)
            self.res.merge(kv.T, rows[kw.T], flat, ids, lengths, text_index, T, self, descending=False)

    def _hist(self, a: torch.Tensor, fire: torch.Tensor) -> None:
        if not bool(fire.any()):
            return
        bmax = a.max(0).values
        _, e = torch.frexp(bmax)  # bmax < 2^e
        new_exp = torch.where(bmax > 0, torch.maximum(self.hist_exp, e.long()), self.hist_exp)
        shift = (new_exp - self.hist_exp).clamp(min=0)
        shift = torch.where(self.hist_exp == -1000, torch.zeros_like(shift), shift)
        for s in torch.unique(shift).tolist():
            if s == 0:
                continue
            fs = torch.nonzero(shift == s).reshape(-1)
            g = 1 << min(int(s), self.n_bins.bit_length() - 1)
            merged = self.hist[fs].reshape(len(fs), self.n_bins // g, g).sum(-1)
            self.hist[fs] = 0
            self.hist[fs, : self.n_bins // g] = merged
        self.hist_exp = new_exp
        tok, feat = torch.nonzero(fire, as_tuple=True)
        vals = a[tok, feat]
        hi = torch.ldexp(torch.ones_like(vals), self.hist_exp[feat].to(torch.int32))
        b = torch.floor(vals / hi * self.n_bins).long()
        self.hist.view(-1).index_add_(0, feat * self.n_bins + b, torch.ones_like(b))

    def hist_edges(self, f: int) -> torch.Tensor:
        """Bin edges ``[n_bins + 1]`` of feature ``f``'s histogram (empty when it never fired)."""
        e = int(self.hist_exp[f])
        if e == -1000:
            return torch.zeros(0)
        return torch.linspace(0.0, 2.0**e, self.n_bins + 1)


class _Examples:
    """Per-feature kept tokens: score, text, position, context ids and activations."""

    def __init__(self, F: int, k: int, W: int, fill: float) -> None:
        self.k, self.W, self.fill = k, W, fill
        self.score = torch.full((F, k), fill)
        self.text = torch.full((F, k), -1, dtype=torch.long)
        self.pos = torch.full((F, k), -1, dtype=torch.long)
        self.act = torch.zeros(F, k)
        self.ctx_ids = torch.full((F, k, W), -1, dtype=torch.int32)
        self.ctx_act = torch.zeros(F, k, W)

    def merge(self, score: torch.Tensor, row: torch.Tensor, flat: torch.Tensor, ids: torch.Tensor,
              lengths: torch.Tensor, text_index: torch.Tensor, T: int, st: FeatureStats,
              descending: bool) -> None:
        """Merge candidates ``score [F, c]`` (sorted, best first) at flat rows ``row [F, c]``
        into the kept ones."""
        if self.k == 0:
            return
        # only features with a candidate that can enter their kept list (>= / <= the worst kept
        # one: a tie may still win on the earlier token) do any work; late in a pass that is few
        worst = self.score[:, -1:]
        better = (score >= worst) if descending else (score <= worst)
        n_better = (better & torch.isfinite(score)).sum(1)
        need = torch.nonzero(n_better).reshape(-1)
        if need.numel() == 0:
            return
        # candidates come sorted (best first), so the ones that can enter are a prefix
        c = int(n_better.max())
        score, row = score[need, :c], row[need, :c]
        F = int(need.numel())
        b, p = row // T, row % T
        feat = need.unsqueeze(1)
        act = flat[row, feat]
        offs = torch.arange(-st.before, st.after + 1)
        cp = p.unsqueeze(-1) + offs  # [F, c, W]
        bb = b.unsqueeze(-1).expand_as(cp)
        ok = (cp >= 0) & (cp < lengths[bb])
        cpc = cp.clamp(0, T - 1)
        c_ids = torch.where(ok, ids[bb, cpc].to(torch.int32), torch.full_like(cp, -1, dtype=torch.int32))
        c_act = torch.where(ok, flat[bb * T + cpc, feat.unsqueeze(-1).expand_as(cp)], torch.zeros(()))
        valid = torch.isfinite(score)
        all_score = torch.cat([self.score[need], torch.where(valid, score, torch.full_like(score, self.fill))], 1)
        # ties go to the earlier token (text, then position), whatever the batching: sort by that
        # key first, then stably by score
        text_new = torch.where(valid, text_index[b], -1)
        where = torch.cat([self.text[need], text_new], 1) * (1 << 20) + torch.cat([self.pos[need], p], 1)
        where = torch.where(torch.isfinite(all_score), where, torch.full_like(where, 1 << 62))
        first = torch.sort(where, dim=1, stable=True).indices
        second = torch.sort(torch.gather(all_score, 1, first), dim=1, descending=descending, stable=True).indices
        order = torch.gather(first, 1, second)[:, : self.k]

        def pick(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            both = torch.cat([old[need], new], 1)
            idx = order.reshape(F, self.k, *([1] * (both.ndim - 2))).expand(F, self.k, *both.shape[2:])
            return torch.gather(both, 1, idx)

        self.score[need] = torch.gather(all_score, 1, order)
        self.text[need] = pick(self.text, text_new)
        self.pos[need] = pick(self.pos, torch.where(valid, p, -1))
        self.act[need] = pick(self.act, act)
        self.ctx_ids[need] = pick(self.ctx_ids, c_ids)
        self.ctx_act[need] = pick(self.ctx_act, c_act)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class FeatureExample:
    """One token where a feature fires: ``text`` index, ``position`` in it, ``activation``, and
    a context window (``tokens``/``token_ids``/``acts``; ``center`` is the token's index in it)."""

    text: int
    position: int
    activation: float
    tokens: list[str]
    token_ids: list[int]
    acts: list[float]
    center: int

    def to_dict(self) -> dict:
        return {"text": self.text, "position": self.position, "activation": self.activation,
                "tokens": self.tokens, "token_ids": self.token_ids, "acts": self.acts, "center": self.center}


@dataclass
class FeatureInfo:
    """Everything a dashboard shows for one feature."""

    index: int
    frequency: float  # firings / tokens counted
    n_fire: int
    max_act: float
    mean_act: float  # mean activation over firings
    hist_counts: list[int]
    hist_edges: list[float]
    top: list[FeatureExample]
    bands: list[dict]  # {lo, hi, fraction (of the sampled firings in the band), examples}
    logits_pos: list[dict]  # {token, id, value}
    logits_neg: list[dict]
    explanation: str = ""


@dataclass
class FeatureData(DisplaysAsView):
    """Result of :func:`feature_pass`: per-feature statistics and examples (filled while a
    background pass runs; ``complete`` once it ended normally)."""

    model_name: str
    site: str
    layer: int
    d_sae: int
    texts: list[str]
    stats: FeatureStats
    explanations: dict[int, str] = field(default_factory=dict)
    n_texts_done: int = 0
    complete: bool = False
    error: str = ""
    n_bands: int = 4
    per_band: int = 5
    model: Model | None = field(default=None, repr=False, compare=False)
    sae: Any = field(default=None, repr=False, compare=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    _thread: threading.Thread | None = field(default=None, repr=False, compare=False)
    _logits: dict[int, tuple[list[dict], list[dict]]] = field(default_factory=dict, repr=False, compare=False)
    _listeners: list = field(default_factory=list, repr=False, compare=False)

    # -- running -------------------------------------------------------------------------

    _finished: bool = field(default=False, repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._finished

    @property
    def progress(self) -> float:
        return self.n_texts_done / max(len(self.texts), 1)

    def stop(self) -> None:
        """Ask a background pass to stop before its next batch (results so far are kept)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> FeatureData:
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    # -- reading ------------------------------------------------------------------------

    def summary(self) -> dict[str, torch.Tensor]:
        """``frequency``, ``max_act``, ``mean_act``, ``n_fire`` per feature (copies)."""
        with self._lock:
            st = self.stats
            n = max(st.n_tokens, 1)
            return {
                "frequency": st.n_fire.double() / n,
                "max_act": st.max_act.clone(),
                "mean_act": st.act_sum / st.n_fire.clamp(min=1),
                "n_fire": st.n_fire.clone(),
            }

    def _example(self, ex: _Examples, f: int, j: int) -> FeatureExample:
        ids = ex.ctx_ids[f, j].tolist()
        keep = [i for i, t in enumerate(ids) if t >= 0]
        first = keep[0]
        toks = [self._decode(ids[i]) for i in keep]
        return FeatureExample(
            text=int(ex.text[f, j]), position=int(ex.pos[f, j]), activation=float(ex.act[f, j]),
            tokens=toks, token_ids=[ids[i] for i in keep], acts=[float(ex.ctx_act[f, j, i]) for i in keep],
            center=self.stats.before - first,
        )

    def _decode(self, i: int) -> str:
        if self.model is None:
            return str(i)
        return self.model.token_str(int(i))

    def top_examples(self, f: int) -> list[FeatureExample]:
        with self._lock:
            ex = self.stats.top
            return [self._example(ex, f, j) for j in range(ex.k) if ex.text[f, j] >= 0]

    def band_examples(self, f: int) -> list[dict]:
        """Examples of feature ``f`` from ``n_bands`` equal-width bands of ``[0, max]`` (highest
        first), drawn from the uniform sample of its firings."""
        with self._lock:
            st, ex = self.stats, self.stats.res
            m = float(st.max_act[f])
            sampled = [j for j in range(ex.k) if ex.text[f, j] >= 0]
            bands = []
            if m <= 0 or not sampled:
                return bands
            acts = ex.act[f]
            n_s = len(sampled)
            for b in reversed(range(self.n_bands)):
                lo, hi = m * b / self.n_bands, m * (b + 1) / self.n_bands
                inb = [j for j in sampled if (acts[j] > lo or (b == 0 and acts[j] > 0)) and (acts[j] <= hi or b == self.n_bands - 1)]
                bands.append({
                    "lo": lo, "hi": hi, "fraction": len(inb) / n_s,
                    "examples": [self._example(ex, f, j) for j in inb[: self.per_band]],
                })
            return bands

    def logit_effects(self, f: int, k: int = 10) -> tuple[list[dict], list[dict]]:
        if f not in self._logits:
            if self.model is None or self.sae is None:
                return [], []
            self._logits[f] = logit_effects(self.model, self.sae, f, k=k)
        return self._logits[f]

    def feature(self, f: int) -> FeatureInfo:
        """All the dashboard data of feature ``f`` (from the results so far)."""
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.d_sae:
            raise ValueError(f"feature must be an int in 0..{self.d_sae - 1}, got {f!r}")
        with self._lock:
            st = self.stats
            nf = int(st.n_fire[f])
            info = FeatureInfo(
                index=f, frequency=nf / max(st.n_tokens, 1), n_fire=nf, max_act=float(st.max_act[f]),
                mean_act=float(st.act_sum[f]) / max(nf, 1), hist_counts=st.hist[f].tolist(),
                hist_edges=st.hist_edges(f).tolist(), top=self.top_examples(f), bands=self.band_examples(f),
                logits_pos=[], logits_neg=[], explanation=self.explanations.get(f, ""),
            )
        info.logits_pos, info.logits_neg = self.logit_effects(f)
        return info

    def to_pandas(self) -> Any:
        """One row per feature: feature, frequency, max_act, mean_act, n_fire, explanation."""
        import pandas as pd

        s = self.summary()
        return pd.DataFrame({
            "feature": range(self.d_sae), "frequency": s["frequency"].numpy(), "max_act": s["max_act"].numpy(),
            "mean_act": s["mean_act"].numpy(), "n_fire": s["n_fire"].numpy(),
            "explanation": [self.explanations.get(i, "") for i in range(self.d_sae)],
        })

    def plot(self, feature: int | None = None) -> Any:
        """Matplotlib figure: the feature's activation histogram and its top logit effects
        (default: the feature with the largest max activation)."""
        import matplotlib.pyplot as plt

        if feature is None:
            feature = int(self.summary()["max_act"].argmax())
        info = self.feature(feature)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.2))
        if info.hist_edges:
            e = info.hist_edges
            ax1.bar(e[:-1], info.hist_counts, width=e[1] - e[0], align="edge", color="#b2182b")
        ax1.set_xlabel("activation (non-zero)")
        ax1.set_ylabel("tokens")
        ax1.set_title(f"feature {feature} · freq {info.frequency:.3g} · max {info.max_act:.3g}")
        rows = info.logits_neg[::-1] + info.logits_pos[::-1]
        ax2.barh(range(len(rows)), [r["value"] for r in rows],
                 color=["#2166ac" if r["value"] < 0 else "#b2182b" for r in rows])
        ax2.set_yticks(range(len(rows)), [repr(r["token"]) for r in rows], fontsize=7)
        ax2.set_title("logit effects (W_dec[f] @ W_U)")
        fig.tight_layout()
        return fig


# --------------------------------------------------------------------------------------------
# The dataset pass
# --------------------------------------------------------------------------------------------


def _read_site(model: Model, site: str, layer: int, tokens: torch.Tensor, mask: torch.Tensor, sae: Any) -> torch.Tensor:
    """Feature activations ``[B, T, d_sae]``: one nnsight trace that reads the site, encodes it
    inside the trace and stops the forward there."""
    r = model.arch.reads[site]
    env, io, item = model._module(layer, r.module), r.io, r.item  # the trace body names no Model
    # A remote model sends the site's values back and they are encoded here: the dictionary
    # stays off the request (its weights would travel with every batch) and d_in < d_sae.
    encoder = None if model.remote else sae
    with torch.no_grad(), model.nn.trace(tokens.to(model.device), attention_mask=mask.to(model.device),
                                         remote=model.remote) as tracer:
        raw = env.input if io == "input" else env.output
        x = raw[item] if (item is not None and isinstance(raw, (tuple, list))) else raw
        acts = (encoder.encode(x) if encoder is not None else x).save()
        tracer.stop()
    if encoder is None:
        with torch.no_grad():
            params = list(sae.parameters()) if callable(getattr(sae, "parameters", None)) else []
            acts = sae.encode(acts.to(params[0].device if params else acts.device))
    return acts


def feature_pass(
    model: Model,
    sae: Any,
    texts: list[str] | None = None,
    *,
    k: int = 20,
    context: tuple[int, int] = (12, 4),
    n_bins: int = 64,
    reservoir: int = 48,
    n_bands: int = 4,
    per_band: int = 5,
    batch_size: int = 32,
    skip_bos: bool = True,
    explanations: dict[int, str] | None = None,
    seed: int = 0,
    background: bool = False,
    progress: Any = None,
) -> FeatureData:
    """Run ``model`` over ``texts`` (default: :func:`default_texts`) in batches of
    ``batch_size`` (right-padded, similar lengths together) and reduce the dictionary's
    activations to :class:`FeatureData` (see the module docstring).

    ``skip_bos``: the BOS token is left out of the statistics (it only appears in contexts).
    ``progress``: a callable ``progress(done_texts, total_texts)`` called after each batch,
    ``False`` for no bar, ``True``/``None`` (default) for a tqdm bar. ``background=True`` runs in a thread and returns at once. Interrupting a foreground
    pass (Ctrl-C) returns the results so far with ``complete=False`` (and a warning).
    """
    check_model(model)
    check_dictionary(model, sae)
    if texts is None:
        texts = default_texts()
    from .activations import check_texts

    texts = check_texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(context) != 2 or min(context) < 0:
        raise ValueError(f"context must be (tokens before, tokens after), both >= 0, got {context!r}")
    if explanations is not None and not isinstance(explanations, dict):
        raise ValueError("explanations must be a dict {feature index: text}")
    token_ids = [model.to_tokens(t)[0] for t in texts]  # validates lengths before any forward
    stats = FeatureStats(int(sae.d_sae), k=k, context=context, n_bins=n_bins, reservoir=reservoir, seed=seed)
    data = FeatureData(
        model_name=model.name, site=sae.site, layer=int(sae.layer), d_sae=int(sae.d_sae), texts=texts,
        stats=stats, explanations={int(a): str(b) for a, b in (explanations or {}).items()},
        n_bands=n_bands, per_band=per_band, model=model, sae=sae,
    )
    order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bos = model.tokenizer.bos_token_id
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else (bos or 0)

    callback = progress if callable(progress) else None
    show_bar = progress is None or progress is True

    def run() -> None:
        bar = None
        if callback is None and show_bar and not background:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc=f"features {sae.site} L{sae.layer}", unit="text", leave=False)
        try:
            for idx in batches:
                if data._stop.is_set():
                    break
                lens = torch.tensor([len(token_ids[i]) for i in idx])
                T = int(lens.max())
                ids = torch.full((len(idx), T), pad, dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, : lens[r]] = token_ids[i]
                mask = (torch.arange(T) < lens.unsqueeze(1)).long()
                with model_lock(model):
                    acts = _read_site(model, sae.site, int(sae.layer), ids, mask, sae)
                counted = mask.bool()
                if skip_bos and bos is not None:
                    counted[:, 0] &= ids[:, 0] != bos
                with data._lock:
                    stats.update(acts, ids, lens, torch.tensor(idx), counted)
                    data.n_texts_done += len(idx)
                if callback is not None:
                    callback(data.n_texts_done, len(texts))
                if bar is not None:
                    bar.update(len(idx))
                for cb in list(data._listeners):
                    cb(data)
            data.complete = not data._stop.is_set()
        except KeyboardInterrupt:
            warnings.warn(
                f"feature pass interrupted after {data.n_texts_done}/{len(texts)} texts; returning partial results",
                stacklevel=3,
            )
        except Exception as exc:
            data.error = f"{type(exc).__name__}: {exc}"
            if not background:
                raise
        finally:
            if bar is not None:
                bar.close()
            data._finished = True
            for cb in list(data._listeners):
                cb(data)

    if background:
        data._thread = threading.Thread(target=run, name="mw-feature-pass", daemon=True)
        data._thread.start()
    else:
        run()
    return data


# --------------------------------------------------------------------------------------------
# Logit effects and interventions
# --------------------------------------------------------------------------------------------


def residual_direction(model: Model, sae: Any, feature: int) -> torch.Tensor:
    """The decoder direction of ``feature`` as a residual-stream vector ``[d_model]`` (mapped
    through the MLP's output projection for ``mlp_post``; the projection's bias is left out)."""
    d = sae.W_dec[feature].detach().float().cpu()
    if write_site(sae) == "mlp_post":
        # through the MLP's down projection (the map's ``mlp_down``); where a post-norm follows it
        # (Gemma 2/3, OLMo 2) the residual write is not linear in the neurons
        if model.arch.mlp_down is None or "mlp_out" not in model.arch.reads:
            raise ValueError(f"{model.family}: mlp_post features have no linear write into the residual stream "
                             "(no single down projection); use a dictionary on mlp_out or resid_*")
        if "norm" in model.arch.reads["mlp_out"].module:
            raise ValueError(f"{model.family}: a post-norm follows the MLP's down projection, so an mlp_post "
                             "feature's write into the residual stream is not a fixed vector; use mlp_out")
        proj = _get(_get(model.hf, model.arch.layers)[int(sae.layer)], model.arch.mlp_down)
        w = proj.weight.detach().float().cpu()
        d = d @ w if type(proj).__name__ == "Conv1D" else w @ d
    return d


def logit_effects(model: Model, sae: Any, feature: int, k: int = 10) -> tuple[list[dict], list[dict]]:
    """Top ``k`` positive and negative entries of ``W_dec[feature] @ W_U`` (see the module
    docstring for how the final norm is treated): lists of ``{token, id, value}``."""
    check_model(model)
    require_local(model, "logit_effects", "it reads the unembedding weights here; load the model without remote to see a feature's logit effects")
    check_dictionary(model, sae)
    _check_feature(sae, feature)
    check_positive_int(k, "k")
    if not model.causal:
        return [], []
    d = residual_direction(model, sae, feature)
    if model.arch.final_norm is not None:
        norm = _get(model.hf, model.arch.final_norm)
        if isinstance(norm, torch.nn.LayerNorm) or "LayerNorm" in type(norm).__name__:
            d = d - d.mean()
        w = getattr(norm, "weight", None)
        if w is not None:
            d = d * w.detach().float().cpu()
    W_U = model.hf.get_output_embeddings().weight.detach().float().cpu()  # [vocab, d_model]
    eff = W_U @ d
    k = min(k, eff.shape[0])
    pos = torch.topk(eff, k)
    neg = torch.topk(-eff, k)
    dec = model.tokenizer.decode
    return (
        [{"token": dec([int(i)]), "id": int(i), "value": float(v)} for v, i in zip(pos.values, pos.indices)],
        [{"token": dec([int(i)]), "id": int(i), "value": -float(v)} for v, i in zip(neg.values, neg.indices)],
    )


@dataclass
class FeatureSteerResult:
    """Next-token distributions of ``prompt`` without and with the intervention."""

    prompt: str
    feature: int
    mode: str
    coef: float
    probs_before: torch.Tensor  # [vocab]
    probs_after: torch.Tensor
    tokenizer: Any = field(repr=False, default=None)

    def topk(self, which: str = "after", k: int = 10) -> list[dict]:
        """Top-k next tokens of one run: ``{token, id, prob, other}`` (``other``: the same
        token's probability in the other run)."""
        p, q = (self.probs_after, self.probs_before) if which == "after" else (self.probs_before, self.probs_after)
        top = torch.topk(p, min(k, p.shape[0]))
        return [
            {"token": self.tokenizer.decode([int(i)]), "id": int(i), "prob": float(v), "other": float(q[i])}
            for v, i in zip(top.values, top.indices)
        ]

    @property
    def kl(self) -> float:
        """KL(before ‖ after) in nats."""
        p, q = self.probs_before.double(), self.probs_after.double()
        return float((p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log())).sum())

    def to_pandas(self, k: int = 10) -> Any:
        import pandas as pd

        rows = [{"run": w, "rank": r, **t} for w in ("before", "after") for r, t in enumerate(self.topk(w, k))]
        return pd.DataFrame(rows)


def steer_feature(
    model: Model, sae: Any, feature: int, prompt: str, *, mode: str = "steer", coef: float = 1.0,
) -> FeatureSteerResult:
    """Next-token distribution of ``prompt`` before and after an intervention on ``feature`` at
    the dictionary's site, at every position: ``mode="steer"`` adds ``coef * W_dec[feature]``;
    ``mode="ablate"`` subtracts ``f(x) * W_dec[feature]`` (the feature's share of the
    reconstruction, with ``f(x)`` its activation on the unmodified site value). One plain
    nnsight trace each; ``resid_mid`` is written through the attention output
    (``resid_mid = resid_pre + attn_out``) so that the residual stream itself changes."""
    check_model(model)
    check_dictionary(model, sae)
    _check_feature(sae, feature)
    if mode not in ("steer", "ablate"):
        raise ValueError(f"mode must be 'steer' or 'ablate', got {mode!r}")
    if not model.causal:
        raise ValueError(f"{model.name} is not a causal language model; it predicts no next token")
    coef = check_finite(coef, "coef")
    ids = model.to_tokens(prompt)
    direction = sae.W_dec[feature].detach()
    site, layer = write_site(sae), int(sae.layer)
    separate = site != sae.site  # a transcoder: the activation is read at sae.site
    n = model.n_layers
    if separate and model.arch.reads[sae.site].order >= model.arch.reads[site].order:
        raise ValueError(f"cannot ablate: {sae.site} is computed after {site} in a block")
    acts: dict[str, torch.Tensor] = {}

    def edit(x: torch.Tensor) -> torch.Tensor:
        d = direction.to(x.device, x.dtype)
        if mode == "steer":
            return x + coef * d
        f = acts["f"] if separate else sae.encode(x)[..., feature]
        return x - f.unsqueeze(-1).to(x.dtype) * d

    unembed = model.hf.get_output_embeddings()
    unembed_env = None
    for name, mod in model.hf.named_modules():
        if mod is unembed and name:
            unembed_env = _get(model.nn, name, envoy=True)
    if unembed_env is None:  # pragma: no cover
        raise ValueError(f"cannot find the unembedding of {model.name}")

    # Envoys and plain values looked up here: the trace body names no Model (a remote request
    # ships what the body names).
    rs = model.arch.reads[sae.site]
    read_env, read_io, read_item = model._module(layer, rs.module), rs.io, rs.item
    if site == "resid_pre" or (site == "resid_post" and layer + 1 < n):
        kind, block = "block_input", model._module(layer if site == "resid_pre" else layer + 1, "")
        w_env, w_io, w_item = block, "input", None
    elif site == "resid_post":
        kind, block = "block_output", model._module(layer, "")
        w_env, w_io, w_item = block, "output", None
    elif site == "resid_mid":
        ra = model.arch.reads["attn_out"]
        kind, block = "resid_mid", model._module(layer, "")
        w_env, w_io, w_item = model._module(layer, ra.module), ra.io, ra.item
    else:
        rw = model.arch.reads[site]
        kind, block = "site", None
        w_env, w_io, w_item = model._module(layer, rw.module), rw.io, rw.item

    def run(intervene: bool) -> torch.Tensor:
        kw = {"attention_mask": torch.ones_like(ids).to(model.device)}
        with torch.no_grad(), model.nn.trace(ids.to(model.device), remote=model.remote, **kw):
            if intervene and separate and mode == "ablate":
                raw = read_env.input if read_io == "input" else read_env.output
                x_in = raw[read_item] if (read_item is not None and isinstance(raw, (tuple, list))) else raw
                acts["f"] = sae.encode(x_in)[..., feature]
            if intervene:
                if kind == "block_input":
                    block.input = edit(block.input)
                elif kind == "block_output":
                    out = block.output
                    if isinstance(out, tuple):
                        block.output = (edit(out[0]), *out[1:])
                    else:
                        block.output = edit(out)
                elif kind == "resid_mid":
                    h = block.input
                    out = w_env.output
                    a = out[0] if isinstance(out, tuple) else out
                    cur = h + a
                    new_a = a + (edit(cur) - cur)
                    w_env.output = (new_a, *out[1:]) if isinstance(out, tuple) else new_a
                else:
                    raw = w_env.input if w_io == "input" else w_env.output
                    if isinstance(raw, tuple):
                        new = (*raw[: w_item or 0], edit(raw[w_item or 0]), *raw[(w_item or 0) + 1 :])
                    else:
                        new = edit(raw)
                    if w_io == "input":
                        w_env.input = new
                    else:
                        w_env.output = new
            logits = unembed_env.output[0, -1].save()
        return torch.softmax(logits.float().cpu(), -1)

    with model_lock(model):
        before = run(False)
        after = run(True)
    return FeatureSteerResult(prompt, feature, mode, coef, before, after, tokenizer=model.tokenizer)
