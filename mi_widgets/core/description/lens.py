"""Logit lens: what the residual stream would predict if the model stopped at each layer.

Every row (the embedding, then each requested site of each block) goes through the model's own
final norm and unembedding inside one nnsight trace; only the top-k ids and probabilities, the
target's probability and rank and the KL divergence to the final distribution leave the trace.
Nothing vocabulary-sized is kept.

The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the
Tuned Lens") puts a learned affine translator ``h + W h + b`` (initialised to the identity) in
front of the same final norm and unembedding, one per row, trained to minimise KL(final ‖ row)
on text. :func:`train_tuned_lens` trains one; ``logit_lens(..., lens=tuned)`` (or
:func:`tuned_lens`) applies it with the same single trace and the same :class:`LensResult`.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._checks import check_model
from .._views import DisplaysAsView
from ..model import Model, _get
from ..model.remote import require_local, server_module

LENS_SITES = ("resid_mid", "resid_post")


def _check_lens_model(model: Model) -> None:
    if not model.causal or model.arch.final_norm is None or model.arch.unembed is None:
        raise ValueError(
            f"the logit lens needs a causal language model with a final norm and an unembedding; "
            f"{model.name} ({model.family}) has none. Use a GPT-2, Llama or NeoX model."
        )
    if not hasattr(model.hf, model.arch.unembed.split(".")[0]):
        raise ValueError(f"{model.name} has no unembedding ({model.arch.unembed}); load it as a causal LM")


def _check_sites(model: Model, sites: str | list[str] | tuple[str, ...]) -> list[str]:
    sites = [sites] if isinstance(sites, str) else list(sites)
    if not sites:
        raise ValueError(f"sites must name at least one of {', '.join(LENS_SITES)}")
    for s in sites:
        if s not in LENS_SITES:
            raise ValueError(f"logit lens site must be one of {', '.join(LENS_SITES)}, got {s!r}")
        model.check_site(s)
    order = {s: model.arch.reads[s].order for s in sites}
    return sorted(dict.fromkeys(sites), key=order.__getitem__)


def _target_id(model: Model, target: str | int | None) -> int | None:
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"target must be a one-token string or a token id, got {target!r}")
    if isinstance(target, int):
        if not 0 <= target < model.d_vocab:
            raise ValueError(f"target id {target} is out of range 0..{model.d_vocab - 1}")
        return target
    if isinstance(target, str):
        ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [model.token_str(i) for i in ids]
            raise ValueError(
                f"target {target!r} is {len(ids)} tokens ({pieces}); give a string that is exactly one "
                "token (often with a leading space, e.g. ' Paris') or a token id"
            )
        return int(ids[0])
    raise ValueError(f"target must be a one-token string or a token id, got {type(target).__name__}")


def _vocab_ids(model: Model, vocab: Any) -> list[int] | None:
    """Token ids of a ``vocab=`` restriction (in the order given), validated before any forward:
    a list (tuple, range, 1-D integer tensor or array) of one-token strings and/or ids, non-empty,
    in range, each token once."""
    if vocab is None:
        return None
    if isinstance(vocab, (str, bytes)):
        raise TypeError(
            f"vocab must be a list of token strings or ids, not a bare string ({vocab!r}); pass a "
            f"list, e.g. vocab=[{vocab!r}]"
        )
    if hasattr(vocab, "tolist") and hasattr(vocab, "ndim"):  # torch tensor / numpy array
        if vocab.ndim != 1:
            raise TypeError(f"vocab as an array must be 1-D token ids, got {vocab.ndim}-D")
        vocab = vocab.tolist()
    if not isinstance(vocab, (list, tuple, range)):
        raise TypeError(
            f"vocab must be a list of token strings or ids (or None for the full vocabulary), "
            f"got {type(vocab).__name__}"
        )
    if len(vocab) == 0:
        raise ValueError("vocab is empty; give at least one token string or id, or vocab=None for the full vocabulary")
    ids: list[int | None] = [None] * len(vocab)
    strings = {}
    for i, v in enumerate(vocab):
        if isinstance(v, str):
            strings[i] = v
            continue
        try:
            if isinstance(v, bool):
                raise TypeError
            t = operator.index(v)  # ints, numpy integers
        except TypeError:
            raise TypeError(f"vocab[{i}] must be a token string or an int id, got {type(v).__name__} {v!r}") from None
        if not 0 <= t < model.d_vocab:
            raise ValueError(f"vocab[{i}] = {t} is out of range 0..{model.d_vocab - 1}")
        ids[i] = t
    if strings:
        pieces = model.tokenizer(list(strings.values()), add_special_tokens=False)["input_ids"]
        for (i, text), got in zip(strings.items(), pieces):
            if len(got) != 1:
                shown = [model.token_str(t) for t in got]
                raise ValueError(
                    f"vocab[{i}] = {text!r} is {len(got)} tokens ({shown}); each string must be exactly one "
                    "token (often with a leading space, e.g. ' Paris'), or give token ids"
                )
            ids[i] = int(got[0])
    seen: dict[int, int] = {}
    for i, t in enumerate(ids):
        if t in seen:
            raise ValueError(
                f"vocab has {model.token_str(t)!r} (id {t}) twice, at positions {seen[t]} and {i}; "  # type: ignore[arg-type]
                "give each token once"
            )
        seen[t] = i  # type: ignore[index]
    return [int(t) for t in ids]  # type: ignore[arg-type]


def _restricted_head(model: Model) -> tuple[bool, float | None]:
    """``(has_bias, softcap)`` of the unembedding, which a ``vocab=`` lens slices by rows: it must
    be a torch Linear (optionally the soft-capping one of Gemma 2/3)."""
    head = _get(model.hf, model.arch.unembed)
    cap = getattr(head, "logit_softcap", None)
    if not isinstance(head, torch.nn.Linear) or (type(head) is not torch.nn.Linear and cap is None):
        raise ValueError(
            f"vocab= slices the unembedding's rows, but {model.name}'s unembedding is a "
            f"{type(head).__name__}, not a torch Linear; use vocab=None"
        )
    return head.bias is not None, None if cap is None else float(cap)


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (tuple, list)) else x


@dataclass(repr=False)
class LensResult(DisplaysAsView):
    """Logit lens of one text.

    Rows are ``layer_names`` (``"embed"`` first, then ``"<site> <layer>"``; the last row is the
    model's own output distribution). ``top_ids``/``top_probs`` are ``[rows, T, k]``; ``kl`` is
    ``[rows, T]``: KL(final ‖ row) in nats. ``final_ids`` are the model's own top-1 next tokens
    (one id per position; in ``vocab``) and ``final_prob`` ``[rows, T]`` each row's
    probability of that token (the default target of the
    view's line). With a target, ``target_prob`` and ``target_rank`` (0 = top-1) are ``[rows, T]``.
    ``lens`` is ``"logit"`` or ``"tuned"`` (then ``tuned`` is the :class:`TunedLens` used).

    ``vocab_ids``: the restricted vocabulary (token ids, in the order given to
    ``logit_lens(..., vocab=...)``) that every probability, rank and KL here is normalised over,
    or ``None`` for the full vocabulary. Ids (``top_ids``, ``final_ids``, ``target_id``) are
    always the model's token ids, and ``vocab`` maps the ids shown to their strings.
    """

    model_name: str
    text: str
    str_tokens: list[str]
    token_ids: list[int]
    layer_names: list[str]
    top_ids: torch.Tensor
    top_probs: torch.Tensor
    kl: torch.Tensor
    vocab: dict[int, str]
    target: str | None = None
    target_id: int | None = None
    target_prob: torch.Tensor | None = None
    target_rank: torch.Tensor | None = None
    final_prob: torch.Tensor | None = None
    final_ids: list[int] | None = None
    vocab_ids: list[int] | None = None
    lens: str = "logit"
    tuned: TunedLens | None = field(default=None, repr=False, compare=False)
    model: Model | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"LensResult({self.lens} lens, {self.model_name}, {len(self.layer_names)} rows × "
            f"{len(self.str_tokens)} positions, k={self.k}, "
            f"{'' if self.vocab_ids is None else f'vocab restricted to {len(self.vocab_ids)} tokens, '}"
            f"text={self.text!r})"
        )

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[2])

    def kl_by_layer(self) -> torch.Tensor:
        """Mean KL(final ‖ row) over positions, in nats, one value per row ``[rows]``."""
        return self.kl.mean(1)

    def kl_table(self, other: LensResult | TunedLens | None = None) -> Any:
        """Per-layer mean KL to the final distribution (nats) of this lens next to another's:
        a DataFrame indexed by layer with one column per lens (``"logit"``, ``"tuned"``).

        ``other`` is a result for the same text, or a :class:`TunedLens` to run on it. For a
        tuned-lens result with a model attached, the logit lens is run for comparison when
        ``other`` is not given.
        """
        import pandas as pd

        if isinstance(other, TunedLens):
            other = self._rerun(lens=other)
        elif other is None and self.lens == "tuned" and self.model is not None:
            other = self._rerun(lens=None)
        cols = {self.lens: self.kl_by_layer().tolist()}
        if other is not None:
            if other.layer_names != self.layer_names or other.token_ids != self.token_ids:
                raise ValueError("kl_table compares two lenses of the same text and rows")
            if other.vocab_ids != self.vocab_ids:
                raise ValueError("kl_table compares two lenses over the same vocab=; these were restricted differently")
            if other.lens == self.lens:
                raise ValueError(f"both results use the {self.lens} lens; pass the other lens's result")
            cols[other.lens] = other.kl_by_layer().tolist()
        order = [c for c in ("logit", "tuned") if c in cols]
        df = pd.DataFrame({c: cols[c] for c in order}, index=pd.Index(self.layer_names, name="layer"))
        return df

    def _rerun(self, lens: TunedLens | None) -> LensResult:
        if self.model is None:
            raise ValueError("this result has no model attached; pass the other lens's result")
        sites = sorted({n.split(" ")[0] for n in self.layer_names[1:]}, key=LENS_SITES.index)
        return logit_lens(self.model, self.text, sites=sites, k=self.k, target=self.target_id, lens=lens, vocab=self.vocab_ids)

    def top1(self) -> list[list[str]]:
        """Top-1 token strings ``[rows][T]``."""
        return [[self.vocab[int(i)] for i in row] for row in self.top_ids[:, :, 0]]

    def to_pandas(self) -> Any:
        """Tidy table: one row per (layer, position, rank) with columns layer, position, token,
        rank, pred_token, prob (plus pred_id, kl and, with a target, target_prob/target_rank)."""
        import pandas as pd

        rows = []
        for r, name in enumerate(self.layer_names):
            for p, tok in enumerate(self.str_tokens):
                extra = {"kl": float(self.kl[r, p])}
                if self.target_prob is not None:
                    extra["target_prob"] = float(self.target_prob[r, p])
                    extra["target_rank"] = int(self.target_rank[r, p])
                for k in range(self.k):
                    i = int(self.top_ids[r, p, k])
                    rows.append(
                        {
                            "layer": name,
                            "position": p,
                            "token": tok,
                            "rank": k,
                            "pred_token": self.vocab[i],
                            "pred_id": i,
                            "prob": float(self.top_probs[r, p, k]),
                            **extra,
                        }
                    )
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None, value: str = "prob") -> Any:
        """Matplotlib figure: layers × positions grid of top-1 tokens shaded by their
        probability (``value="target_prob"`` shades by the target's probability)."""
        import matplotlib.pyplot as plt

        if value == "target_prob":
            if self.target_prob is None:
                raise ValueError("this lens has no target; run logit_lens(..., target=...)")
            shade = self.target_prob.numpy()
        elif value == "prob":
            shade = self.top_probs[:, :, 0].numpy()
        else:
            raise ValueError("value must be 'prob' or 'target_prob'")
        n_rows, t = shade.shape
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * t + 2), 0.4 * n_rows + 1.2))
        else:
            fig = ax.figure
        im = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        for r, row in enumerate(self.top1()):
            for p, tok in enumerate(row):
                ax.text(
                    p, r, repr(tok)[1:-1][:10], ha="center", va="center", fontsize=7,
                    color="white" if shade[r, p] > 0.6 else "black",
                )
        ax.set_xticks(range(t), [repr(s)[1:-1] for s in self.str_tokens], rotation=60, fontsize=8)
        ax.set_yticks(range(n_rows), self.layer_names, fontsize=8)
        label = f"p({self.target!r})" if value == "target_prob" else "top-1 probability"
        ax.set_title(f"{self.model_name} · {self.lens} lens · {label}")
        fig.colorbar(im, ax=ax, fraction=0.03)
        return fig


def logit_lens(
    model: Model,
    text: str,
    sites: str | list[str] = "resid_post",
    k: int = 5,
    target: str | int | None = None,
    lens: TunedLens | None = None,
    vocab: list[str | int] | None = None,
) -> LensResult:
    """Logit lens of ``text``: the embedding and ``sites`` (``resid_post`` and/or ``resid_mid``)
    of every block, through the model's final norm and unembedding, at every position.

    One nnsight trace. The last block's ``resid_post`` row is read from the model's own logits,
    so it is exactly the model's output distribution. ``target`` (a one-token string or an id)
    adds its probability and rank per row and position. ``lens`` (a :class:`TunedLens`) puts
    each row's trained translator before the norm (every row, the last one included): the
    tuned lens, in the same single trace.

    ``vocab`` (a list of one-token strings and/or token ids, each once) restricts the lens to
    those tokens: each row's logits are ``norm(resid) @ W_U[vocab].T (+ bias[vocab])``, only
    ``len(vocab)`` rows of the unembedding, and the softmax runs over them. Every number is then
    *renormalised over the restricted vocabulary*: top-k, the target's probability and rank
    (the target must be in ``vocab``) and KL(final ‖ row), with the final distribution restricted
    and renormalised the same way. They are not the model's full-vocabulary probabilities; for
    those use ``vocab=None``. The model's own forward still computes its full logits once (the
    last row is read from them, sliced). ``result.vocab_ids`` records the restriction.
    """
    check_model(model)
    _check_lens_model(model)
    sites = _check_sites(model, sites)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    vids = _vocab_ids(model, vocab)
    has_bias, softcap = (False, None) if vids is None else _restricted_head(model)
    k = min(k, model.d_vocab if vids is None else len(vids))
    tid = _target_id(model, target)
    tcol = tid  # the target's column in the (restricted) logits
    if vids is not None and tid is not None:
        if tid not in vids:
            raise ValueError(
                f"target {model.token_str(tid)!r} (id {tid}) is not in vocab; add it to vocab or pass vocab=None"
            )
        tcol = vids.index(tid)
    names = ["embed"] + [f"{s} {layer}" for layer in range(model.n_layers) for s in sites]
    if lens is not None:
        if not isinstance(lens, TunedLens):
            raise ValueError(f"lens must be a TunedLens (from train_tuned_lens or TunedLens.load), got {type(lens).__name__}")
        lens.check(model, names)
    ids = model.to_tokens(text)  # validates the text before any forward

    # the modules the trace body calls, as the server's (see remote.server_module)
    norm = server_module(_get(model.nn, model.arch.final_norm, envoy=True))
    unembed = server_module(_get(model.nn, model.arch.unembed, envoy=True))
    layers = _get(model.nn, model.arch.layers, envoy=True)
    # the tuned lens reads its last row through its translator; the logit lens from the logits
    last_is_output = sites[-1] == "resid_post" and lens is None
    if lens is not None:
        lens = lens.to(model.device)
    sub = None if vids is None else torch.tensor(vids, dtype=torch.long, device=model.device)

    def lens_stats(resid: torch.Tensor, row: int, final: tuple, final_top: torch.Tensor, head_rows: tuple | None) -> tuple:
        if lens is not None:
            resid = lens.translate(row, resid.float()).to(resid.dtype)
        # Call the modules' forward functions directly: going through __call__ inside the
        # trace would fire nnsight's hooks for a module that is not part of the model's run.
        h = type(norm).forward(norm, resid)
        if head_rows is None:
            logits = type(unembed).forward(unembed, h).float()
        else:  # vocab=: only those rows of the unembedding
            logits = torch.nn.functional.linear(h, *head_rows).float()
            if softcap is not None:  # Gemma 2/3's unembedding (see families._SoftcappedLinear)
                logits = torch.tanh(logits / softcap) * softcap
        logp = torch.log_softmax(logits, -1)
        del logits
        top = torch.topk(logp, k, dim=-1)
        final_p, _, neg_entropy = final
        # KL(final || row) = sum p_f log p_f - sum p_f log p_row
        kl = neg_entropy - torch.einsum("tv,tv->t", final_p, logp)
        fp = logp.gather(-1, final_top[:, None])[:, 0].exp()
        tp = tr = None
        if tid is not None:
            t = logp[..., tcol]
            # rank = #tokens more probable; a float 0/1 mask sums ~8x faster than a bool one
            # (a - b > 0 iff a > b for IEEE floats), exact for vocabularies below 2**24.
            tp, tr = t.exp(), (logp - t[..., None]).gt_(0).sum(-1).long()
        return top.indices, top.values.exp(), kl, tp, tr, fp

    # Envoys looked up outside the trace: its body names no Model (a remote request ships
    # what the body names).
    plan = []
    for layer in range(model.n_layers):
        block = layers[layer]
        for s in sites:
            r = model.arch.reads[s]
            plan.append((block if r.module == "" else _get(block, r.module, envoy=True), r.io))
    first_block, out_env = layers[0], _get(model.nn, model.arch.unembed, envoy=True)
    # Only values saved inside the trace come out of it; the defaults are set outside.
    target_prob = target_rank = None
    with torch.no_grad(), model.nn.trace(ids.to(model.device), remote=model.remote):
        resids = [first_block.input]
        for env, io in plan:
            resids.append(_first(env.input if io == "input" else env.output))
        out_logits = _first(out_env.output)[0]
        head_rows = None
        if sub is not None:
            out_logits = out_logits[..., sub]
            head_rows = (unembed.weight[sub], unembed.bias[sub] if has_bias else None)
        final_logp = torch.log_softmax(out_logits.float(), -1)
        final_p = final_logp.exp()
        final = (final_p, final_logp, torch.einsum("tv,tv->t", final_p, final_logp))
        final_top = final_logp.argmax(-1)
        rows = [
            lens_stats(x[0], i, final, final_top, head_rows)
            for i, x in enumerate(resids[:-1] if last_is_output else resids)
        ]
        if last_is_output:
            top = torch.topk(final_logp, k, dim=-1)
            t = final_logp[..., tcol] if tid is not None else None
            rows.append(
                (
                    top.indices,
                    top.values.exp(),
                    torch.zeros(final_logp.shape[:-1], device=final_logp.device),
                    None if t is None else t.exp(),
                    None if t is None else (final_logp > t[..., None]).sum(-1),
                    final_p.gather(-1, final_top[:, None])[:, 0],
                )
            )
        top_ids = torch.stack([r[0] for r in rows]).cpu().save()
        top_probs = torch.stack([r[1] for r in rows]).float().cpu().save()
        kl = torch.stack([r[2] for r in rows]).float().clamp_min(0).cpu().save()
        final_prob = torch.stack([r[5] for r in rows]).float().cpu().save()
        final_ids = final_top.cpu().save()
        if tid is not None:
            target_prob = torch.stack([r[3] for r in rows]).float().cpu().save()
            target_rank = torch.stack([r[4] for r in rows]).cpu().save()

    if vids is not None:  # restricted columns back to the model's token ids
        top_ids, final_ids = sub.cpu()[top_ids], sub.cpu()[final_ids]  # type: ignore[union-attr]
    used = torch.cat([torch.unique(top_ids), final_ids]).unique().tolist()
    vocab = {int(i): model.token_str(int(i)) for i in used}
    return LensResult(
        model_name=model.name,
        text=text,
        str_tokens=model.to_str_tokens(ids),
        token_ids=ids[0].tolist(),
        layer_names=names,
        top_ids=top_ids,
        top_probs=top_probs,
        kl=kl,
        vocab=vocab,
        target=None if tid is None else model.token_str(tid),
        target_id=tid,
        target_prob=target_prob,
        target_rank=target_rank,
        final_prob=final_prob,
        final_ids=final_ids.tolist(),
        vocab_ids=vids,
        lens="logit" if lens is None else "tuned",
        tuned=lens,
        model=model,
    )


def tuned_lens(
    model: Model,
    text: str,
    lens: TunedLens,
    k: int = 5,
    target: str | int | None = None,
    vocab: list[str | int] | None = None,
) -> LensResult:
    """The tuned lens of ``text``: :func:`logit_lens` with ``lens``'s translators, on the sites
    the lens was trained for. Same :class:`LensResult` (``lens="tuned"``); ``vocab`` restricts
    it as in :func:`logit_lens`."""
    check_model(model)
    if not isinstance(lens, TunedLens):
        raise ValueError(f"lens must be a TunedLens (from train_tuned_lens or TunedLens.load), got {type(lens).__name__}")
    return logit_lens(model, text, sites=lens.sites, k=k, target=target, lens=lens, vocab=vocab)


# -- tuned lens ---------------------------------------------------------------------------

#: corpus seeds of the default training and evaluation text (the zoo model trained on seed 0)
TRAIN_SEED, EVAL_SEED = 1, 2


class TunedLens(torch.nn.Module):
    """Per-row affine translators of a tuned lens: row ``i`` maps a residual ``h`` to
    ``h + h @ weight[i].T + bias[i]`` before the final norm and unembedding. ``weight`` and
    ``bias`` start at zero (the identity, i.e. the logit lens).

    ``rows`` are :class:`LensResult` row names (``"embed"``, ``"resid_post 0"``, ...). Train one
    with :func:`train_tuned_lens`; ``save(path)`` / ``TunedLens.load(path)`` keep it as
    safetensors (``.safetensors``) or a torch state dict (any other suffix). ``steps`` counts
    the optimisation steps taken, ``history`` the mean training loss (summed KL over rows, nats)
    every step, ``interrupted`` whether training was stopped early.
    """

    def __init__(self, rows: list[str], d_model: int, model_name: str = "") -> None:
        super().__init__()
        if not rows:
            raise ValueError("a tuned lens needs at least one row")
        self.rows = list(rows)
        self.d_model = int(d_model)
        self.model_name = model_name
        self.weight = torch.nn.Parameter(torch.zeros(len(rows), d_model, d_model))
        self.bias = torch.nn.Parameter(torch.zeros(len(rows), d_model))
        self.steps = 0
        self.history: list[float] = []
        self.interrupted = False

    @classmethod
    def identity(cls, model: Model, sites: str | list[str] = "resid_post") -> TunedLens:
        """An untrained lens (every translator the identity): the logit lens."""
        _check_lens_model(model)
        sites = _check_sites(model, sites)
        rows = ["embed"] + [f"{s} {layer}" for layer in range(model.n_layers) for s in sites]
        return cls(rows, model.d_model, model.name)

    @property
    def sites(self) -> list[str]:
        return sorted({r.split(" ")[0] for r in self.rows[1:]}, key=LENS_SITES.index)

    def __repr__(self) -> str:
        return (
            f"TunedLens({self.model_name!r}, rows={len(self.rows)}, d_model={self.d_model}, "
            f"steps={self.steps}{', interrupted' if self.interrupted else ''})"
        )

    def check(self, model: Model, names: list[str]) -> None:
        """Raise ``ValueError`` unless this lens fits ``model`` and covers ``names``."""
        if self.d_model != model.d_model or (self.model_name and self.model_name != model.name):
            raise ValueError(
                f"this tuned lens was trained for {self.model_name!r} (d_model={self.d_model}), not "
                f"{model.name!r} (d_model={model.d_model}); train one with train_tuned_lens(model)"
            )
        missing = [n for n in names if n not in self.rows]
        if missing:
            raise ValueError(
                f"this tuned lens has no translator for {missing}; it was trained for sites "
                f"{self.sites}: pass sites={self.sites} or train one with those sites"
            )

    def translate(self, row: int | str, h: torch.Tensor) -> torch.Tensor:
        """Row ``row``'s translator applied to ``h`` ``[..., d_model]`` (float32)."""
        i = self.rows.index(row) if isinstance(row, str) else int(row)
        return h + h @ self.weight[i].T + self.bias[i]

    # -- persistence --------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        return {
            "format": "mi_widgets.tuned_lens/1",
            "rows": "\n".join(self.rows),
            "d_model": str(self.d_model),
            "model_name": self.model_name,
            "steps": str(self.steps),
            "interrupted": str(int(self.interrupted)),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the translators to ``path``: safetensors for a ``.safetensors`` suffix, else a
        torch state dict (``torch.save``), with the row names and model name alongside."""
        path = Path(path)
        tensors = {"weight": self.weight.detach().cpu().contiguous(), "bias": self.bias.detach().cpu().contiguous()}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(path), metadata=self._meta())
        else:
            torch.save({"state_dict": tensors, "meta": self._meta()}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TunedLens:
        """Read a lens written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no tuned lens at {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
            else:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                meta, tensors = blob.get("meta", {}), blob["state_dict"]
        except Exception as exc:
            raise ValueError(f"{path} is not a tuned lens saved by mi_widgets (TunedLens.save): {exc}") from exc
        if meta.get("format") != "mi_widgets.tuned_lens/1":
            raise ValueError(f"{path} is not a tuned lens saved by mi_widgets (TunedLens.save)")
        lens = cls(meta["rows"].split("\n"), int(meta["d_model"]), meta.get("model_name", ""))
        with torch.no_grad():
            lens.weight.copy_(tensors["weight"])
            lens.bias.copy_(tensors["bias"])
        lens.steps = int(meta.get("steps", 0))
        lens.interrupted = meta.get("interrupted") == "1"
        return lens

    # -- evaluation ---------------------------------------------------------------------

    def kl_table(self, model: Model, texts: list[str] | None = None, batch_size: int = 64) -> Any:
        """Mean KL(final ‖ row) per row, in nats per token, over ``texts`` (default: 128
        held-out rows of the embedded corpus, a seed neither the model nor the default lens
        trained on), for the logit lens and this tuned lens: a DataFrame indexed by layer with
        columns ``logit`` and ``tuned``."""
        import pandas as pd

        self.check(model, self.rows)
        texts = _check_texts(model, texts, EVAL_SEED, 128)
        hs, final_logp = _collect(model, texts, self.rows, batch_size, progress=False)
        head = _frozen_head(model)
        logit, tuned = [], []
        with torch.no_grad():
            p = final_logp.exp()
            neg_h = (p * final_logp).sum(-1)
            lens = self.to(final_logp.device)
            for i, h in enumerate(hs):
                for out, x in ((logit, h), (tuned, lens.translate(i, h))):
                    logp = torch.log_softmax(head(x), -1)
                    out.append(float((neg_h - (p * logp).sum(-1)).clamp_min(0).mean()))
        return pd.DataFrame({"logit": logit, "tuned": tuned}, index=pd.Index(self.rows, name="layer"))


def _check_texts(model: Model, texts: list[str] | None, seed: int, n: int) -> list[str]:
    if texts is None:
        from ...zoo import corpus

        return corpus.training_rows(seed=seed, n_rows=n)
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts is empty; give at least one string (or None for the embedded corpus)")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t:
            raise ValueError(f"texts[{i}] must be a non-empty string, got {t!r}")
    return list(texts)


def _frozen_head(model: Model) -> Any:
    """``h -> logits`` through the final norm and unembedding with detached parameters, so that
    gradients reach the translators only and the model's parameters never get a ``.grad``."""
    norm = _get(model.hf, model.arch.final_norm)
    unembed = _get(model.hf, model.arch.unembed)
    p_norm = {n: p.detach() for n, p in norm.named_parameters()}
    p_un = {n: p.detach() for n, p in unembed.named_parameters()}
    dtype = next(iter(p_un.values())).dtype

    def head(h: torch.Tensor) -> torch.Tensor:
        x = torch.func.functional_call(norm, p_norm, (h.to(dtype),))
        return torch.func.functional_call(unembed, p_un, (x,)).float()

    return head


def _collect(
    model: Model, texts: list[str], rows: list[str], batch_size: int, progress: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Residuals of every row ``[N, d_model]`` (float32) and the final log-probabilities
    ``[N, vocab]`` at every real token of ``texts`` (right-padded batches, causal models, so
    padding never reaches a real position)."""
    seqs = []
    for t in texts:
        ids = model.tokenizer(t, return_tensors="pt")["input_ids"][0][: model.n_ctx]
        if len(ids):
            seqs.append(ids)
    if not seqs:
        raise ValueError("the texts produced no tokens")
    layers = _get(model.nn, model.arch.layers, envoy=True)
    reads = []
    for name in rows[1:]:
        site, layer = name.split(" ")
        reads.append((int(layer), model.arch.reads[site]))
    hs: list[list[torch.Tensor]] = [[] for _ in rows]
    finals = []
    # envoys looked up outside the trace, whose body names no Model (see logit_lens)
    plan = []
    for layer, r in reads:
        plan.append((layers[layer] if r.module == "" else _get(layers[layer], r.module, envoy=True), r.io))
    first_block, out_env = layers[0], _get(model.nn, model.arch.unembed, envoy=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seqs), desc="tuned lens: reading residuals", unit="text", leave=False)
    try:
        for b in range(0, len(seqs), batch_size):
            chunk = seqs[b : b + batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.bool)
            for i, x in enumerate(chunk):
                ids[i, : len(x)] = x
                mask[i, : len(x)] = True
            saved = []
            with torch.no_grad(), model.nn.trace(ids.to(model.device), remote=model.remote):
                saved.append(first_block.input.save())
                for env, io in plan:
                    saved.append(_first(env.input if io == "input" else env.output).save())
                out = out_env.output.save()
            m = mask.to(model.device)
            for i, x in enumerate(saved):
                hs[i].append(_first(x)[m].float())
            finals.append(torch.log_softmax(_first(out)[m].float(), -1))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return [torch.cat(h) for h in hs], torch.cat(finals)


def train_tuned_lens(
    model: Model,
    texts: list[str] | None = None,
    *,
    sites: str | list[str] = "resid_post",
    steps: int = 300,
    lr: float = 1e-3,
    batch_tokens: int = 256,
    n_texts: int = 512,
    seed: int = 0,
    progress: bool = True,
    callback: Any = None,
) -> TunedLens:
    """Train a tuned lens for ``model``: one affine translator per row (the embedding and each
    ``sites`` of each block, the last block included), initialised to the identity and trained
    with Adam to minimise the mean KL(final ‖ translated row) in nats per token.

    ``texts``: training strings (default: ``n_texts`` rows of the embedded corpus,
    ``mi_widgets.zoo.corpus``, at a seed the zoo model did not train on). The residuals are
    read once (batched nnsight traces, no gradient), then ``steps`` steps of ``batch_tokens``
    random tokens each. A tqdm bar shows the loss. Ctrl-C (KeyboardInterrupt) stops training
    and returns the lens as trained so far (``interrupted=True``); the model is never modified
    (its parameters are only read, detached). ``callback(step, loss)`` is called after every step.
    """
    check_model(model)
    require_local(model, "train_tuned_lens", "training needs gradients through local weights; train the lens on a local copy and use it with tuned_lens")
    _check_lens_model(model)
    lens = TunedLens.identity(model, sites)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise ValueError(f"batch_tokens must be a positive int, got {batch_tokens!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    texts = _check_texts(model, texts, TRAIN_SEED, n_texts)
    lens = lens.to(model.device)
    bar = None
    try:
        hs, final_logp = _collect(model, texts, lens.rows, 64, progress)
        p = final_logp.exp()
        neg_h = (p * final_logp).sum(-1)
        head = _frozen_head(model)
        opt = torch.optim.Adam(lens.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        n = p.shape[0]
        H = torch.stack(hs)  # [rows, N, d]
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="tuned lens", unit="step", leave=False)
        for step in range(steps):
            idx = torch.randint(n, (min(batch_tokens, n),), generator=gen).to(p.device)
            h = H[:, idx]  # all rows at once: [rows, B, d]
            x = h + torch.einsum("rbd,red->rbe", h, lens.weight) + lens.bias[:, None]
            logp = torch.log_softmax(head(x.reshape(-1, x.shape[-1])), -1).reshape(len(hs), len(idx), -1)
            # sum over rows of the mean KL(final || row) per token
            loss = (neg_h[idx] - (p[idx] * logp).sum(-1)).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lens.steps += 1
            lens.history.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(kl=f"{lens.history[-1] / len(hs):.3f}")
            if callback is not None:
                callback(step, lens.history[-1])
    except KeyboardInterrupt:
        lens.interrupted = True
        warnings.warn(
            f"tuned-lens training interrupted after {lens.steps} of {steps} steps; the lens keeps "
            "the translators trained so far and the model is unchanged",
            stacklevel=2,
        )
    finally:
        if bar is not None:
            bar.close()
    return lens
