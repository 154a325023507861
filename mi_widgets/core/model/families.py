"""Standard component names per architecture family: the sites (``resid_pre`` ... ``attn_pattern``)
and where each lives in a family's modules (:class:`Arch`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

SITES = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "mlp_post",
    "head_out",
    "attn_pattern",
)

#: Sites that give one vector per token (usable by TokenActivations).
TOKEN_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post", "head_out")

_SITE_HELP = {
    "resid_pre": "residual stream entering the block [T, d_model]",
    "resid_mid": "residual stream between attention and MLP [T, d_model]",
    "resid_post": "residual stream leaving the block [T, d_model]",
    "attn_out": "attention output written to the residual stream [T, d_model]",
    "mlp_out": "MLP output written to the residual stream [T, d_model]",
    "mlp_post": "MLP neuron activations after the nonlinearity [T, d_mlp]",
    "head_out": "each head's write into the residual stream, bias excluded [T, n_heads, d_model]",
    "attn_pattern": "attention probabilities [n_heads, T_query, T_key]",
}


@dataclass(frozen=True)
class _Read:
    """Where a site lives in a block: module path relative to the block, input or output,
    tuple element, and its rank in the block's execution order (nnsight reads must follow
    execution order)."""

    module: str
    io: Literal["input", "output"]
    order: int
    item: int | None = None


@dataclass(frozen=True)
class Arch:
    """Module paths of one architecture family."""

    family: str
    layers: str
    embed: str
    final_norm: str | None
    unembed: str | None
    o_proj: str  # attention output projection; its input is the per-head result z
    o_proj_kind: Literal["conv1d", "linear"]
    reads: dict[str, _Read]


def _gpt2(prefix: str) -> Arch:
    return Arch(
        family="gpt2",
        layers=f"{prefix}h",
        embed=f"{prefix}wte",
        final_norm=f"{prefix}ln_f",
        unembed="lm_head",
        o_proj="attn.c_proj",
        o_proj_kind="conv1d",
        reads={
            "resid_pre": _Read("", "input", 0),
            "head_out": _Read("attn.c_proj", "input", 1),
            "attn_out": _Read("attn", "output", 2, 0),
            "attn_pattern": _Read("attn", "output", 2, 1),
            "resid_mid": _Read("ln_2", "input", 3),
            "mlp_post": _Read("mlp.act", "output", 4),
            "mlp_out": _Read("mlp", "output", 5),
            "resid_post": _Read("", "output", 6),
        },
    )


def _llama(prefix: str) -> Arch:
    return Arch(
        family="llama",
        layers=f"{prefix}layers",
        embed=f"{prefix}embed_tokens",
        final_norm=f"{prefix}norm",
        unembed="lm_head",
        o_proj="self_attn.o_proj",
        o_proj_kind="linear",
        reads={
            "resid_pre": _Read("", "input", 0),
            "head_out": _Read("self_attn.o_proj", "input", 1),
            "attn_out": _Read("self_attn", "output", 2, 0),
            "attn_pattern": _Read("self_attn", "output", 2, 1),
            "resid_mid": _Read("post_attention_layernorm", "input", 3),
            "mlp_post": _Read("mlp.down_proj", "input", 4),
            "mlp_out": _Read("mlp", "output", 5),
            "resid_post": _Read("", "output", 6),
        },
    )


def _neox(prefix: str, parallel: bool, unembed: str = "lm_head") -> Arch:
    reads = {
        "resid_pre": _Read("", "input", 0),
        "head_out": _Read("attention.dense", "input", 1),
        "attn_out": _Read("attention", "output", 2, 0),
        "attn_pattern": _Read("attention", "output", 2, 1),
        "mlp_post": _Read("mlp.dense_4h_to_h", "input", 4),
        "mlp_out": _Read("mlp", "output", 5),
        "resid_post": _Read("", "output", 6),
    }
    if not parallel:
        reads["resid_mid"] = _Read("post_attention_layernorm", "input", 3)
    return Arch(
        family="neox",
        layers=f"{prefix}layers",
        embed=f"{prefix}embed_in",
        final_norm=f"{prefix}final_layer_norm",
        unembed=unembed,  # transformers 5 calls it lm_head; older releases embed_out
        o_proj="attention.dense",
        o_proj_kind="linear",
        reads=reads,
    )


def _bert(prefix: str, has_lm_head: bool) -> Arch:
    # BERT is post-LN: attn_out and mlp_out are the sublayer outputs before the residual add
    # and LayerNorm; resid_mid/resid_post are the normalised streams the next sublayer reads.
    return Arch(
        family="bert",
        layers=f"{prefix}encoder.layer",
        embed=f"{prefix}embeddings.word_embeddings",
        final_norm=None,
        unembed="cls" if has_lm_head else None,
        o_proj="attention.output.dense",
        o_proj_kind="linear",
        reads={
            "resid_pre": _Read("", "input", 0),
            "attn_pattern": _Read("attention.self", "output", 1, 1),
            "head_out": _Read("attention.output.dense", "input", 2),
            "attn_out": _Read("attention.output.dense", "output", 3),
            "resid_mid": _Read("attention.output", "output", 4),
            "mlp_post": _Read("intermediate", "output", 5),
            "mlp_out": _Read("output.dense", "output", 6),
            "resid_post": _Read("", "output", 7),
        },
    )


def _arch_for(hf: torch.nn.Module) -> Arch:
    mt = getattr(hf.config, "model_type", "")
    names = {n for n, _ in hf.named_children()}
    if mt == "gpt2":
        return _gpt2("transformer." if "transformer" in names else "")
    if mt in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "phi3"):
        return _llama("model." if "model" in names else "")
    if mt == "gpt_neox":
        parallel = bool(getattr(hf.config, "use_parallel_residual", True))
        unembed = "embed_out" if "embed_out" in names else "lm_head"
        return _neox("gpt_neox." if "gpt_neox" in names else "", parallel, unembed)
    if mt in ("bert", "roberta"):
        prefix = f"{mt}." if mt in names else ""
        return _bert(prefix, has_lm_head=any(n in names for n in ("cls", "lm_head")))
    raise ValueError(
        f"model type {mt!r} ({type(hf).__name__}) has no component map yet; supported families: "
        "GPT-2, Llama/Mistral/Qwen, GPT-NeoX, BERT. The raw nnsight model is still usable as "
        "model.nn."
    )


def _get(root: Any, path: str, envoy: bool = False) -> Any:
    obj = root
    for part in path.split(".") if path else []:
        if part.isdigit():
            obj = obj[int(part)]
        else:
            # nnsight serves `.input`/`.output` on every envoy, so a submodule with that name
            # (BERT's `attention.output`) lives at `E_output` on the envoy tree.
            obj = getattr(obj, f"E_{part}" if envoy and part in ("input", "output") else part)
    return obj
