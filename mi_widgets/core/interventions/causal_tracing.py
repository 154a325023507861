"""Causal tracing (ROME, Meng et al. 2022): where does a model recall a fact about a subject?

:func:`causal_tracing` corrupts the *subject* by adding Gaussian noise to its tokens' input
embeddings (the output of the token embedding, before position embeddings), then restores one
clean activation at a time, at one (layer, position), and measures how much of the clean
prediction comes back::

    value = (m(corrupted + restored) - m(corrupted)) / (m(clean) - m(corrupted))

so 0 = the corrupted run and 1 = the clean run. ``m`` defaults to the probability of the clean
run's top-1 token at the last position; ``m(corrupted)`` and ``m(corrupted + restored)`` are
averaged over ``n_samples`` noise draws *before* normalising (as ROME averages probabilities).

Noise (reproducible): ``torch.Generator().manual_seed(seed)`` on the CPU draws, for each prompt
in order, ``torch.randn(n_samples, n_subject_tokens, d_embed)`` (the embedding width: d_model, or OPT's word_embed_proj_dim) (float32), multiplied by the
noise scale: ``noise`` if given, else 3 x the standard deviation of the embedding matrix's
entries (ROME uses 3 x the std of subject embeddings). The same draws are used for the
corrupted baseline and for every restoration.

Sites: ``resid_post`` (the block's output), ``attn_out``, ``mlp_out`` by default, and
``resid_pre`` (the block's input; its layer 0 is the embedding, which ROME's grid leaves out:
``resid_pre[L + 1] == resid_post[L]``). ``window=k`` restores
``attn_out``/``mlp_out`` at ``k`` consecutive layers around the plotted one (ROME's
``range(max(0, L - k//2), min(n_layers, L + ceil(k/2)))``, clamped at both ends); ``resid_post``
and ``resid_pre`` are always restored at the single layer (as in ROME).

All restorations of one layer (every position x every noise sample) run as one batch (split
by ``batch_size`` rows); hooks are removed in ``finally`` blocks, so an error or an interrupt
leaves the model unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model
from .._views import view
from ..metrics import Metric, Prob, as_metric
from ..model import Model, _get
from ..model.remote import require_local
from .batching import _progress, _rows_per_batch
from .checks import _check_lm, _check_prompts, _tokens
from .patching import PatchingResult, _label

#: Sites causal tracing restores.
TRACE_SITES = ("resid_post", "attn_out", "mlp_out")
#: Every site causal tracing can restore (``resid_pre`` adds the embedding row, layer 0).
TRACEABLE_SITES = ("resid_pre", *TRACE_SITES)
#: ROME's noise multiplier (x the std of the embeddings).
NOISE_MULTIPLIER = 3.0


@dataclass(repr=False)
class TracingResult(PatchingResult):
    """One site's causal-tracing grid (``dims = ("layer", "position")``): a
    :class:`~mi_widgets.core.patching.PatchingResult` whose "corrupt" prompt is the clean prompt
    with noised subject tokens. ``per_pair`` holds one grid per prompt; ``clean_baseline`` /
    ``corrupt_baseline`` the raw metric clean and corrupted (mean over noise samples).
    ``subject_positions``: the noised token positions of each prompt (marked ``*`` in labels)."""

    subject_positions: list[list[int]] = field(default_factory=list)
    window: int = 1

    @property
    def position_labels(self) -> list[str]:
        subj = set(self.subject_positions[0]) if self.subject_positions else set()
        return [
            _label(self.clean_tokens[0][p]) + ("*" if p in subj else "")
            for p in (self.positions or [])
        ]

    def widget(self, **kwargs: Any) -> Any:
        """The grid in a :class:`~mi_widgets.PatchingGrid` (display only: the grid's own sweeps
        and per-cell top-k re-run activation patching, which is not this computation)."""
        return view(self, **kwargs)


@dataclass(repr=False)
class CausalTracingResult:
    """Grids of :func:`causal_tracing`, one :class:`TracingResult` per site (``result["mlp_out"]``).

    ``noise_scale``: the std of the added noise; ``answer``: the clean top-1 token of each prompt
    (what the default metric measures); ``subject_positions``: the noised positions per prompt.
    """

    model_name: str
    prompts: list[str]
    subjects: list[str]
    subject_positions: list[list[int]]
    results: dict[str, TracingResult]
    noise_scale: float
    n_samples: int
    window: int
    seed: int
    answer: list[str]

    @property
    def sites(self) -> list[str]:
        return list(self.results)

    def __getitem__(self, site: str) -> TracingResult:
        if site not in self.results:
            raise KeyError(f"no grid for site {site!r}; this result has {', '.join(self.results)}")
        return self.results[site]

    def __repr__(self) -> str:
        parts = []
        for s, r in self.results.items():
            a = r.argmax()
            parts.append(
                f"{s}: max {float(r.values.max()):.3f} at layer {a['layer']}, {a['token']!r}"
            )
        return (
            f"CausalTracingResult({self.model_name}, {len(self.prompts)} prompt"
            f"{'s' if len(self.prompts) != 1 else ''}, subject {self.subjects[0]!r}, noise "
            f"{self.noise_scale:.3g} x {self.n_samples}, window {self.window}; "
            + "; ".join(parts)
            + ")"
        )

    def to_pandas(self) -> Any:
        """Tidy table of every site: ``site, layer, position, token, subject, value``."""
        import pandas as pd

        frames = []
        subj = set(self.subject_positions[0])
        for s, r in self.results.items():
            df = r.to_pandas().drop(columns=["corrupt_token"])
            df.insert(0, "site", s)
            df["subject"] = df["position"].isin(subj)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def plot(self) -> Any:
        """Matplotlib figure with one heatmap per site (layers down, tokens across; ``*`` marks
        the noised subject tokens)."""
        import matplotlib.pyplot as plt

        n = len(self.results)
        t = len(next(iter(self.results.values())).positions or [])
        layers = len(next(iter(self.results.values())).layers)
        fig, axes = plt.subplots(
            1,
            n,
            figsize=(n * max(4.0, 0.55 * t + 2.5), max(2.5, 0.35 * layers + 1.5)),
            squeeze=False,
        )
        for ax, r in zip(axes[0], self.results.values()):
            r.plot(ax=ax)
            ax.set_title(f"{r.site} (window {r.window})", fontsize=10)
        fig.suptitle(
            f"{self.model_name} · causal tracing · normalised {next(iter(self.results.values())).metric_name}",
            fontsize=10,
        )
        fig.tight_layout()
        return fig

    def widget(self, **kwargs: Any) -> Any:
        """The ``resid_post`` grid's widget (else the first site's); imported lazily."""
        r = self.results.get("resid_post") or next(iter(self.results.values()))
        return r.widget(**kwargs)


# --------------------------------------------------------------------------------------------


def subject_positions(model: Model, prompt: str, subject: str) -> list[int]:
    """Token positions of ``prompt`` (as ``model.to_tokens`` gives them) that overlap the first
    occurrence of the substring ``subject``. Raises ``ValueError`` if it does not occur."""
    if not isinstance(subject, str) or subject.strip() == "":
        raise ValueError(
            f"subject must be a non-empty string (a substring of the prompt), got {subject!r}"
        )
    a = prompt.find(subject)
    if a < 0:
        raise ValueError(
            f"subject {subject!r} does not occur in the prompt {prompt!r}; give the subject exactly "
            "as it is written in the prompt (case and spaces included)"
        )
    b = a + len(subject)
    ids = model.to_tokens(prompt)[0].tolist()
    spans = _char_spans(model, prompt, ids)
    pos = [i for i, (s, e) in enumerate(spans) if e > s and s < b and e > a]
    if not pos:  # pragma: no cover - defensive
        raise ValueError(f"subject {subject!r} covers no token of {prompt!r}")
    return pos


def _char_spans(model: Model, prompt: str, ids: list[int]) -> list[tuple[int, int]]:
    tok = model.tokenizer
    try:
        enc = tok(prompt, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            return [tuple(x) for x in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        pass
    # slow tokenizers: cumulative decoding (special tokens take no characters)
    spans, prev = [], 0
    special = set(getattr(tok, "all_special_ids", []) or [])
    for i, t in enumerate(ids):
        if t in special:
            spans.append((prev, prev))
            continue
        text = tok.decode([x for x in ids[: i + 1] if x not in special])
        end = min(len(text), len(prompt))
        spans.append((prev, end))
        prev = end
    return spans


def _window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


def _module_for(model: Model, site: str, layer: int) -> tuple[torch.nn.Module, Any]:
    r = model.arch.reads[site]
    block = _get(model.hf, model.arch.layers)[layer]
    if site == "resid_pre":
        return block, "input"  # type: ignore[return-value]
    return (_get(block, r.module) if r.module else block), r.item


def _set_out(output: Any, item: int | None, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(output, tuple):
        k = 0 if item is None else item
        return output[:k] + (fn(output[k]),) + output[k + 1 :]
    return fn(output)


def _last_logits(model: Model, ids: torch.Tensor) -> torch.Tensor:
    hf = model.hf
    kw: dict[str, Any] = {}
    if "logits_to_keep" in inspect.signature(hf.forward).parameters:
        kw["logits_to_keep"] = 1
    ids = ids.to(model.device)
    return hf(ids, attention_mask=torch.ones_like(ids), **kw).logits[:, -1].float()


def causal_tracing(
    model: Model,
    prompts: str | Sequence[str],
    subject: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor] | None = None,
    sites: Sequence[str] = TRACE_SITES,
    noise: float | None = None,
    n_samples: int = 10,
    window: int = 1,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    progress: bool = True,
) -> CausalTracingResult:
    """ROME-style causal tracing of ``prompts`` (a string, or a list of prompts with the same
    token length, whose grids are averaged) with the substring ``subject`` (one string, or one
    per prompt) noised; see the module docstring for the exact recipe and normalisation.

    ``metric``: a :mod:`~mi_widgets.core.metrics` object or callable on last-position logits
    ``[batch, vocab] -> [batch]``; default ``prob`` of each prompt's clean top-1 token.
    ``noise``: the noise std (default 3 x the embedding matrix's std). ``n_samples``: noise draws
    averaged per cell. ``window``: layers restored together for ``attn_out``/``mlp_out``.
    Returns a :class:`CausalTracingResult` with a ``layers x positions`` grid per site.
    Raises ``ValueError`` before any forward pass for invalid inputs, and when the noise leaves
    the metric unchanged (e.g. ``noise=0``), where the normalisation is undefined.
    """
    check_model(model)
    _check_lm(model)
    require_local(
        model, "causal_tracing",
        "it hooks the torch modules; use activation_patching with a corrupted prompt (runs "
        "remotely) or load the model without remote",
    )
    texts = _check_prompts(prompts, "prompts")
    subs = [subject] * len(texts) if isinstance(subject, str) else list(subject)
    if len(subs) != len(texts):
        raise ValueError(
            f"give one subject or one per prompt: {len(texts)} prompts, {len(subs)} subjects"
        )
    if isinstance(sites, str):
        sites = (sites,)
    sites = list(dict.fromkeys(sites))
    if not sites:
        raise ValueError(f"sites must name at least one of {', '.join(TRACE_SITES)}")
    for s in sites:
        if s not in TRACEABLE_SITES:
            raise ValueError(
                f"unknown site {s!r} for causal tracing; choose from {', '.join(TRACEABLE_SITES)}"
            )
        model.check_site(s)
    for name, v, lo in (("n_samples", n_samples, 1), ("window", window, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if noise is not None and (
        isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0 or noise == float("inf")
    ):
        raise ValueError(
            f"noise must be a finite non-negative number (the noise std) or None, got {noise!r}"
        )
    toks = _tokens(model, texts, "prompts")
    lengths = {x.shape[1] for x in toks}
    if len(lengths) > 1:
        raise ValueError(
            "every prompt must have the same token length so the grids line up; got "
            + ", ".join(f"{t!r}: {x.shape[1]}" for t, x in zip(texts, toks))
        )
    subj_pos = [subject_positions(model, t, s) for t, s in zip(texts, subs)]
    if metric is None:
        m: Metric | None = None
    else:
        m = as_metric(metric).bind(model)
        m.check_batch(len(texts))

    hf = model.hf
    embed = _get(hf, model.arch.embed)
    dev = model.device
    n_l, t_len = model.n_layers, toks[0].shape[1]
    scale = (
        float(noise)
        if noise is not None
        else NOISE_MULTIPLIER * float(embed.weight.detach().float().std())
    )
    gen = torch.Generator().manual_seed(int(seed))
    noises = [
        torch.randn(n_samples, len(p), embed.weight.shape[1], generator=gen) * scale for p in subj_pos
    ]

    with torch.no_grad():
        clean_logits = torch.cat([_last_logits(model, x) for x in toks]).cpu()
    answers = [int(i) for i in clean_logits.argmax(-1)]
    if m is None:
        m = Prob(answers).bind(model)
    clean_cache = [model.run(x, [(s, layer) for s in sites for layer in range(n_l)]) for x in toks]
    n_p = len(texts)
    all_p = torch.arange(n_p)
    m_clean = m(clean_logits, pairs=all_p, clean_logits=clean_logits).float().cpu()

    def forward(i: int, rows: int, samples: torch.Tensor, writes: list) -> torch.Tensor:
        """Logits of ``rows`` noised copies of prompt i; ``writes``: (module, item, row positions, value)."""
        nz = noises[i][samples].to(dev)
        pos = torch.tensor(subj_pos[i], device=dev)

        def add_noise(_m: Any, _a: Any, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, pos] = out[:, pos] + nz.to(out.dtype)
            return out

        hooks = [embed.register_forward_hook(add_noise)]
        try:
            for mod, item, rpos, val in writes:

                def restore(_m: Any, _a: Any, out: Any, rpos=rpos, val=val, item=item) -> Any:
                    def fn(x: torch.Tensor) -> torch.Tensor:
                        x = x.clone()
                        ar = torch.arange(x.shape[0], device=x.device)
                        x[ar, rpos] = val.to(x.dtype)
                        return x

                    return _set_out(out, item, fn)

                def restore_in(_m: Any, args: tuple, kwargs: dict, rpos=rpos, val=val) -> Any:
                    x = args[0] if args else kwargs["hidden_states"]
                    x = x.clone()
                    x[torch.arange(x.shape[0], device=x.device), rpos] = val.to(x.dtype)
                    if args:
                        return (x, *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": x}

                if item == "input":
                    hooks.append(mod.register_forward_pre_hook(restore_in, with_kwargs=True))
                else:
                    hooks.append(mod.register_forward_hook(restore))
            with torch.no_grad():
                return _last_logits(model, toks[i].expand(rows, -1)).cpu()
        finally:
            for h in hooks:
                h.remove()

    def score(i: int, logits: torch.Tensor) -> torch.Tensor:
        pairs = torch.full((logits.shape[0],), i, dtype=torch.long)
        return m(logits, pairs=pairs, clean_logits=clean_logits[pairs]).float().cpu()

    # corrupted baseline, checked before the sweep
    m_corrupt = torch.empty(n_p)
    for i in range(n_p):
        m_corrupt[i] = score(i, forward(i, n_samples, torch.arange(n_samples), [])).mean()
    gap = m_clean - m_corrupt
    for i in range(n_p):
        if not torch.isfinite(gap[i]) or abs(float(gap[i])) < 1e-6:
            raise ValueError(
                f"{m.name} is the same on the clean and the noised prompt {texts[i]!r} (clean "
                f"{float(m_clean[i]):.6g}, noised {float(m_corrupt[i]):.6g}; noise std {scale:.3g}), so the "
                "normalised value (m - m_corrupted) / (m_clean - m_corrupted) is undefined. Use a larger "
                "noise (noise=None gives 3 x the embedding std) or a metric the noise changes."
            )

    per_row = _rows_per_batch(batch_size, t_len)
    cells = [(p, k) for p in range(t_len) for k in range(n_samples)]  # rows of one layer
    chunks = [cells[s : s + per_row] for s in range(0, len(cells), per_row)]
    raw = {s: torch.zeros(n_p, n_l, t_len) for s in sites}
    bar = _progress(len(sites) * n_l * n_p * len(chunks), progress, "causal tracing")
    try:
        for s in sites:
            w = 1 if s.startswith("resid") else window
            for layer in range(n_l):
                restored = _window_layers(layer, w, n_l)
                for i in range(n_p):
                    acc = torch.zeros(t_len)
                    for chunk in chunks:
                        rpos = torch.tensor([p for p, _ in chunk])
                        samples = torch.tensor([k for _, k in chunk])
                        writes = []
                        for lay in restored:
                            mod, item = _module_for(model, s, lay)
                            clean_val = clean_cache[i][(s, lay)]  # [T, d]
                            writes.append((mod, item, rpos.to(dev), clean_val[rpos].to(dev)))
                        vals = score(i, forward(i, len(chunk), samples, writes))
                        acc.index_add_(0, rpos, vals)
                        bar.update(1)
                    raw[s][i, layer] = acc / n_samples
    finally:
        bar.close()

    str_toks = [model.to_str_tokens(x) for x in toks]
    results: dict[str, TracingResult] = {}
    for s in sites:
        per_pair = (raw[s] - m_corrupt[:, None, None]) / gap[:, None, None]
        results[s] = TracingResult(
            model_name=model.name,
            site=s,
            direction="restore",
            metric_name=m.name,
            dims=("layer", "position"),
            values=per_pair.mean(0),
            per_pair=per_pair,
            layers=list(range(n_l)),
            positions=list(range(t_len)),
            heads=None,
            clean=texts,
            corrupt=[f"{t} (noised {sub!r})" for t, sub in zip(texts, subs)],
            clean_tokens=str_toks,
            corrupt_tokens=str_toks,
            clean_baseline=m_clean,
            corrupt_baseline=m_corrupt,
            normalized=True,
            model=model,
            subject_positions=subj_pos,
            window=1 if s.startswith("resid") else window,
        )
    return CausalTracingResult(
        model_name=model.name,
        prompts=texts,
        subjects=subs,
        subject_positions=subj_pos,
        results=results,
        noise_scale=scale,
        n_samples=n_samples,
        window=window,
        seed=int(seed),
        answer=[model.token_str(a) for a in answers],
    )


__all__ = ["CausalTracingResult", "TracingResult", "causal_tracing", "subject_positions"]
