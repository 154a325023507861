"""Logit lens: what the residual stream would predict if the model stopped at each layer.

Every row (the embedding, then each requested site of each block) goes through the model's own
final norm and unembedding inside one nnsight trace; only the top-k ids and probabilities, the
target's probability and rank and the KL divergence to the final distribution leave the trace.
Nothing vocabulary-sized is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .model import Model, _get

if TYPE_CHECKING:  # pragma: no cover
    from ..widgets.logit_lens import LogitLens

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
            pieces = [model.tokenizer.decode([i]) for i in ids]
            raise ValueError(
                f"target {target!r} is {len(ids)} tokens ({pieces}); give a string that is exactly one "
                "token (often with a leading space, e.g. ' Paris') or a token id"
            )
        return int(ids[0])
    raise ValueError(f"target must be a one-token string or a token id, got {type(target).__name__}")


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (tuple, list)) else x


@dataclass
class LensResult:
    """Logit lens of one text.

    Rows are ``layer_names`` (``"embed"`` first, then ``"<site> <layer>"``; the last row is the
    model's own output distribution). ``top_ids``/``top_probs`` are ``[rows, T, k]``; ``kl`` is
    ``[rows, T]``: KL(final ‖ row) in nats. With a target, ``target_prob`` and ``target_rank``
    (0 = top-1) are ``[rows, T]``.
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
    model: Model | None = field(default=None, repr=False, compare=False)

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[2])

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
        ax.set_title(f"{self.model_name} · logit lens · {label}")
        fig.colorbar(im, ax=ax, fraction=0.03)
        return fig

    def widget(self, **kwargs: Any) -> LogitLens:
        from ..widgets.logit_lens import LogitLens

        return LogitLens.from_result(self, **kwargs)


def logit_lens(
    model: Model,
    text: str,
    sites: str | list[str] = "resid_post",
    k: int = 5,
    target: str | int | None = None,
) -> LensResult:
    """Logit lens of ``text``: the embedding and ``sites`` (``resid_post`` and/or ``resid_mid``)
    of every block, through the model's final norm and unembedding, at every position.

    One nnsight trace. The last block's ``resid_post`` row is read from the model's own logits,
    so it is exactly the model's output distribution. ``target`` (a one-token string or an id)
    adds its probability and rank per row and position.
    """
    _check_lens_model(model)
    sites = _check_sites(model, sites)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = min(k, model.d_vocab)
    tid = _target_id(model, target)
    ids = model.to_tokens(text)  # validates the text before any forward

    norm = _get(model.hf, model.arch.final_norm)
    unembed = _get(model.hf, model.arch.unembed)
    layers = _get(model.nn, model.arch.layers, envoy=True)
    names = ["embed"] + [f"{s} {layer}" for layer in range(model.n_layers) for s in sites]
    last_is_output = sites[-1] == "resid_post"

    def lens_stats(resid: torch.Tensor, final: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple:
        # Call the modules' forward functions directly: going through __call__ inside the
        # trace would fire nnsight's hooks for a module that is not part of the model's run.
        logits = type(unembed).forward(unembed, type(norm).forward(norm, resid)).float()
        logp = torch.log_softmax(logits, -1)
        del logits
        top = torch.topk(logp, k, dim=-1)
        final_p, _, neg_entropy = final
        # KL(final || row) = sum p_f log p_f - sum p_f log p_row
        kl = neg_entropy - torch.einsum("tv,tv->t", final_p, logp)
        tp = tr = None
        if tid is not None:
            t = logp[..., tid]
            # rank = #tokens more probable; a float 0/1 mask sums ~8x faster than a bool one
            # (a - b > 0 iff a > b for IEEE floats), exact for vocabularies below 2**24.
            tp, tr = t.exp(), (logp - t[..., None]).gt_(0).sum(-1).long()
        return top.indices, top.values.exp(), kl, tp, tr

    # Only values saved inside the trace come out of it; the defaults are set outside.
    target_prob = target_rank = None
    with torch.no_grad(), model.nn.trace(ids.to(model.device), remote=model.remote):
        resids = [layers[0].input]
        for layer in range(model.n_layers):
            block = layers[layer]
            for s in sites:
                r = model.arch.reads[s]
                env = block if r.module == "" else _get(block, r.module, envoy=True)
                resids.append(_first(env.input if r.io == "input" else env.output))
        out_logits = _get(model.nn, model.arch.unembed, envoy=True).output
        final_logp = torch.log_softmax(_first(out_logits)[0].float(), -1)
        final_p = final_logp.exp()
        final = (final_p, final_logp, torch.einsum("tv,tv->t", final_p, final_logp))
        rows = [lens_stats(x[0], final) for x in (resids[:-1] if last_is_output else resids)]
        if last_is_output:
            top = torch.topk(final_logp, k, dim=-1)
            t = final_logp[..., tid] if tid is not None else None
            rows.append(
                (
                    top.indices,
                    top.values.exp(),
                    torch.zeros(final_logp.shape[:-1], device=final_logp.device),
                    None if t is None else t.exp(),
                    None if t is None else (final_logp > t[..., None]).sum(-1),
                )
            )
        top_ids = torch.stack([r[0] for r in rows]).cpu().save()
        top_probs = torch.stack([r[1] for r in rows]).float().cpu().save()
        kl = torch.stack([r[2] for r in rows]).float().clamp_min(0).cpu().save()
        if tid is not None:
            target_prob = torch.stack([r[3] for r in rows]).float().cpu().save()
            target_rank = torch.stack([r[4] for r in rows]).cpu().save()

    vocab = {int(i): model.tokenizer.decode([int(i)]) for i in torch.unique(top_ids).tolist()}
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
        target=None if tid is None else model.tokenizer.decode([tid]),
        target_id=tid,
        target_prob=target_prob,
        target_rank=target_rank,
        model=model,
    )
