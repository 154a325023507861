"""Input checks shared by every intervention, run before any forward pass: prompts, layers,
heads, writable sites, tokenisation, and clean/corrupt pairs (:func:`_validate_pairs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_each_text, check_model
from ..metrics import Metric, as_metric
from ..model import Model
from .engine import _RESID_MID_WRITABLE

#: Sites activation patching can write.
PATCH_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out")
#: Sites ablation can write (adds MLP neurons).
ABLATE_SITES = (*PATCH_SITES, "mlp_post")


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
    return check_each_text(x, what)


def _check_lm(model: Model) -> None:
    check_model(model)
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
