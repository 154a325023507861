"""Feature synthesis: the input that most excites a feature, neuron or direction.

A soft prompt (``n_positions`` free input embeddings after the BOS token) is optimised by
gradient ascent on the target's value at the last position, with a penalty pulling every soft
embedding towards its nearest real token embedding (squared distance, relative to the mean
squared embedding norm). The result is read back as text through the nearest tokens (cosine),
and re-scored with those real tokens, so the soft optimum can be compared with what real text
reaches. Gradients need a plain torch forward, so this runs ``model.hf`` with forward hooks
(local models only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import (
    check_dictionary_width,
    check_finite,
    check_index,
    check_model,
    check_positive_int,
    check_str_list,
    check_vector,
)
from ..model import Model, _get
from ..model.remote import require_local
from .activation_store import STORE_SITES, special_ids


def _site_module(model: Model, site: str, layer: int) -> tuple[torch.nn.Module, str, int | None]:
    r = model.arch.reads[site]
    block = _get(model.hf, model.arch.layers)[layer]
    return (_get(block, r.module) if r.module else block), r.io, r.item


class _Capture:
    """Forward hook that keeps a site's value (with its graph)."""

    def __init__(self, model: Model, site: str, layer: int):
        mod, io, item = _site_module(model, site, layer)
        self.value: torch.Tensor | None = None
        if io == "input":

            def pre(_m: Any, args: tuple, kwargs: dict) -> None:
                self.value = args[0] if args else next(iter(kwargs.values()))

            self.handle = mod.register_forward_pre_hook(pre, with_kwargs=True)
        else:

            def post(_m: Any, _a: Any, out: Any) -> None:
                v = out[item if item is not None else 0] if isinstance(out, (tuple, list)) else out
                self.value = v

            self.handle = mod.register_forward_hook(post)

    def remove(self) -> None:
        self.handle.remove()


@dataclass
class SynthesisResult:
    """``value``: the target at the last position with the optimised soft prompt;
    ``projected_value``: the same with each soft embedding replaced by its nearest token
    (``projected_tokens``); ``nearest[i]``: the 5 nearest tokens (cosine) of soft position ``i``;
    ``best_token`` / ``best_token_value``: the single real token (after BOS) that maximises the
    target; ``history``: the value per step."""

    label: str
    value: float
    projected_value: float
    projected_tokens: list[str]
    nearest: list[list[tuple[str, float]]]
    best_token: str
    best_token_value: float
    history: list[float]
    embeddings: torch.Tensor = field(repr=False)

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            [
                {"position": i, "rank": r, "token": tok, "cosine": c}
                for i, near in enumerate(self.nearest)
                for r, (tok, c) in enumerate(near)
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        ax.plot(self.history, label="soft prompt")
        ax.axhline(self.best_token_value, color="grey", ls="--", label=f"best real token {self.best_token!r}")
        ax.axhline(self.projected_value, color="C2", ls=":", label="nearest tokens: " + "".join(self.projected_tokens))
        ax.set_xlabel("step")
        ax.set_ylabel("activation")
        ax.set_title(f"feature synthesis: {self.label}")
        ax.legend(fontsize=7)
        return ax.figure


def _objective(model: Model, dictionary: Any, feature: int | None, site: str | None, layer: int | None, unit: int | None, direction: torch.Tensor | None) -> tuple[str, int, Any, str]:
    """(site, layer, fn(value [B, T, d]) -> [B, T], label). Dictionary features are scored on
    their pre-activation while optimising (an inactive ReLU has no gradient)."""
    if dictionary is not None:
        if feature is None:
            raise ValueError(f"give feature= an index in 0..{dictionary.d_sae - 1} of the dictionary")
        try:
            check_index(feature, dictionary.d_sae, "feature")
        except ValueError:
            raise ValueError(
                f"give feature= an index in 0..{dictionary.d_sae - 1} of the dictionary, got {feature!r}"
            ) from None
        if getattr(dictionary, "layers", None) and len(dictionary.layers) > 1:
            raise ValueError("feature synthesis takes a single-site dictionary, not a crosscoder")
        site, layer = dictionary.site, dictionary.layer
        model.check_site(site, layer)
        f = int(feature)
        return site, layer, lambda v: dictionary.pre_acts(v.float())[..., f], f"feature {f} ({site} L{layer})"
    if site is None or layer is None:
        raise ValueError("give dictionary= and feature=, or site= and layer= with unit= or direction=")
    model.check_site(site, layer)
    if site not in STORE_SITES:
        raise ValueError(f"site must be one of {', '.join(STORE_SITES)}")
    width = model.site_width(site)
    if (unit is None) == (direction is None):
        raise ValueError("give exactly one of unit= (an index) or direction= (a vector)")
    if unit is not None:
        u = check_index(unit, width, f"unit (of {site}'s {width} units)")
        return site, layer, lambda v: v[..., u].float(), f"{site} L{layer} unit {u}"
    d = check_vector(direction, width, "direction", site)
    d = d / d.norm().clamp_min(1e-12)
    return site, layer, lambda v: v.float() @ d.to(v.device), f"{site} L{layer} direction"


def synthesize(
    model: Model,
    dictionary: Any = None,
    feature: int | None = None,
    *,
    site: str | None = None,
    layer: int | None = None,
    unit: int | None = None,
    direction: torch.Tensor | None = None,
    n_positions: int = 3,
    steps: int = 150,
    lr: float = 0.05,
    reg: float = 2.0,
    seed: int = 0,
    vocab_texts: list[str] | None = None,
    prefix: str | None = None,
    progress: bool = False,
) -> SynthesisResult:
    """Optimise ``n_positions`` soft input embeddings (after BOS) to maximise a dictionary
    feature (``dictionary``, ``feature``), a unit (``site``, ``layer``, ``unit``) or a direction
    (``site``, ``layer``, ``direction``) at the last position. ``vocab_texts``: if given, the
    "real tokens" (the regulariser's targets, the nearest-token reading and the single-token
    baseline) are those occurring in these texts; BPE fragments that never occur on their own
    keep untrained embeddings, and a soft prompt would otherwise settle next to them.
    ``prefix``: real text placed before the soft positions (default: BOS alone), to ask which
    tokens excite the target in that context. ``reg`` weights the pull towards
    real token embeddings (the target is measured in units of the best single token's value,
    and the pull is off for the first half of the steps, then ramps up). Returns a :class:`SynthesisResult`."""
    check_model(model)
    require_local(
        model, "feature synthesis",
        "it takes gradients through the model; load the model without remote",
    )
    check_positive_int(n_positions, "n_positions")
    check_positive_int(steps, "steps")
    if check_finite(lr, "lr") <= 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if check_finite(reg, "reg") < 0:
        raise ValueError(f"reg must be >= 0, got {reg!r}")
    if vocab_texts is not None:
        check_str_list(vocab_texts, "vocab_texts")
    n_pre = model.to_tokens(prefix).shape[1] if prefix is not None else 1
    if n_pre + n_positions > model.n_ctx:
        raise ValueError(
            f"n_positions={n_positions} after {n_pre} prefix token(s) does not fit {model.name}'s "
            f"context of {model.n_ctx}; pass n_positions at most {model.n_ctx - n_pre}"
        )
    if dictionary is not None:
        check_dictionary_width(dictionary, model)
    site, layer, score, label = _objective(model, dictionary, feature, site, layer, unit, direction)
    emb = model.hf.get_input_embeddings().weight.detach()
    dev = emb.device
    bos = model.tokenizer.bos_token_id
    specials = special_ids(model)
    allowed: set[int] = set(range(emb.shape[0]))
    if vocab_texts is not None:
        allowed = {int(i) for t in vocab_texts for i in model.tokenizer(t, add_special_tokens=False)["input_ids"]}
    real = torch.tensor(sorted(i for i in allowed if i not in specials), device=dev)
    if len(real) == 0:
        raise ValueError("no candidate tokens: vocab_texts produced no non-special tokens")
    E = emb[real]
    e_scale = E.pow(2).sum(-1).mean()
    g = torch.Generator().manual_seed(seed)
    # start at the mean embedding (no token favoured) plus a little noise
    noise = torch.randn(n_positions, E.shape[1], generator=g).to(dev) * E.std(0)
    soft = (E.mean(0) + 0.1 * noise).clone().requires_grad_(True)
    if prefix is not None:
        prefix = emb[model.to_tokens(prefix)[0].to(dev)]
    else:
        prefix = emb[[bos]] if bos is not None else emb[:0]
    cap = _Capture(model, site, layer)
    params = [p for p in model.hf.parameters()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)

    def run(x: torch.Tensor) -> torch.Tensor:
        model.hf(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long, device=dev))
        assert cap.value is not None
        return score(cap.value)[:, -1]

    history: list[float] = []
    try:
        with torch.no_grad():  # every real token alone after BOS: the bar to beat, and the unit
            single = torch.cat([prefix[None].expand(len(E), -1, -1), E[:, None]], 1)
            vals = torch.cat([run(single[i : i + 512]) for i in range(0, len(single), 512)])
            b = int(vals.argmax())
            unit_scale = max(abs(float(vals[b])), 1e-3)
        opt = torch.optim.Adam([soft], lr=lr * float(e_scale.sqrt()) / emb.shape[1] ** 0.5)
        it: Any = range(steps)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="synthesis", leave=False)
        for step in it:
            ramp = max(0.0, 2 * (step + 1) / steps - 1)  # explore first, then settle near real tokens
            x = torch.cat([prefix, soft])[None]
            val = run(x)[0]
            d2 = torch.cdist(soft, E).pow(2).min(-1).values / e_scale
            loss = -val / unit_scale + reg * ramp * d2.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(val.detach()))
        with torch.no_grad():
            final_soft = soft.detach()
            value = float(run(torch.cat([prefix, final_soft])[None])[0])
            cos = torch.nn.functional.normalize(final_soft, dim=-1) @ torch.nn.functional.normalize(E, dim=-1).T
            top = torch.topk(cos, 5, dim=-1)
            nearest = [[(model.token_str(int(real[j])), float(c)) for c, j in zip(cv, jv)] for cv, jv in zip(top.values, top.indices)]
            proj_ids = real[top.indices[:, 0]]
            projected = float(run(torch.cat([prefix, emb[proj_ids]])[None])[0])
    finally:
        cap.remove()
        for p, w in zip(params, was):
            p.requires_grad_(w)
    return SynthesisResult(
        label=label,
        value=value,
        projected_value=projected,
        projected_tokens=[model.token_str(int(i)) for i in proj_ids],
        nearest=nearest,
        best_token=model.token_str(int(real[b])),
        best_token_value=float(vals[b]),
        history=history,
        embeddings=final_soft.cpu(),
    )
