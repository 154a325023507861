"""Standard component names per architecture family: the sites (``resid_pre`` ... ``attn_pattern``)
and where each lives in a family's modules (:class:`Arch`).

One vocabulary with one meaning everywhere (docs/models.md has the table per family):

- ``resid_pre`` / ``resid_post``: the residual stream entering / leaving a block.
- ``attn_out`` / ``mlp_out``: exactly what the sublayer adds to the residual stream, after any
  post-norm (Gemma 2/3, OLMo 2) and with every bias included.
- ``resid_mid``: the stream between the two sublayers, only where it is a real stream state;
  parallel-residual blocks (GPT-J, NeoX parallel, Phi-1/2, Falcon parallel) have none.
- ``head_out``: each head's write through the attention output projection, bias excluded; it sums
  (plus the projection's bias) to ``attn_out`` except where a post-attention norm follows the
  projection (Gemma 2/3, OLMo 2): there it sums to the projection's output *before* that norm.
- ``mlp_post``: the neurons the down projection reads (gated MLPs: ``act(gate) * up``); undefined
  for mixture-of-experts blocks (each expert has its own neurons).
- ``attn_pattern``: attention probabilities.

A family this module does not know can be described by the caller: ``mw.load(path,
components={...})`` (see :func:`arch_from_components`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    "attn_out": "attention output added to the residual stream, after any post-norm [T, d_model]",
    "mlp_out": "MLP output added to the residual stream, after any post-norm [T, d_model]",
    "mlp_post": "MLP neurons the down projection reads (gated MLPs: act(gate)*up) [T, d_mlp]",
    "head_out": "each head's write through the attention output projection, bias excluded [T, n_heads, d_model]",
    "attn_pattern": "attention probabilities [n_heads, T_query, T_key]",
}

_PARALLEL = (
    "parallel residual: attention and MLP both read resid_pre and are added to the stream together, "
    "so there is no stream state between them; use resid_pre, attn_out, mlp_out or resid_post"
)
_MOE = (
    "mixture-of-experts MLP: each expert has its own neurons, so there is no single set of MLP "
    "neurons; read mlp_out (the MoE block's output, routing weights and shared experts included)"
)
_POST_NORM_HEAD = (
    "head_out is each head's write through o_proj before the post-attention norm; the heads sum "
    "(plus any o_proj bias) to the attention output before that norm, not to attn_out"
)


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
    """Module paths of one architecture family.

    ``layers``, ``embed``, ``final_norm`` and ``unembed`` are paths from the transformers model;
    ``o_proj`` (the attention output projection: its input is the per-head result z) and
    ``mlp_down`` (the MLP's down projection: its input is ``mlp_post``) are relative to a block;
    ``reads`` maps each defined site to where it is read; ``absent`` says why a site is not
    defined; ``notes`` give a family's meaning of a site where it differs from the default."""

    family: str
    layers: str
    embed: str
    final_norm: str | None
    unembed: str | None
    o_proj: str | None  # attention output projection; its input is the per-head result z
    o_proj_kind: Literal["conv1d", "linear"]
    reads: dict[str, _Read]
    mlp_down: str | None = None
    causal: bool = True
    absent: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The families
# --------------------------------------------------------------------------------------------


def _reads(*steps: str) -> dict[str, _Read]:
    """A block's reads as data: ``steps`` in the block's execution order, each a space-separated
    list of ``site=where`` read at that step (``where`` as in ``components['sites']``:
    ``module.input``, ``module.output``, ``module.output.<i>``, or ``input`` / ``output`` of the
    block itself); an empty step (a site the family does not have) keeps its place in the order."""
    return {
        site: _parse_where(site, where, order)
        for order, step in enumerate(steps)
        for site, where in (entry.split("=") for entry in step.split())
    }


def _standard_reads(attn: str, o_proj: str, mid: str, mlp_post: str, mlp_out: str = "mlp.output",
                    resid_post: str = "output") -> dict[str, _Read]:
    """The common block: resid_pre; the heads at the input of ``o_proj``; attention's output
    (element 0) and pattern (element 1); resid_mid at ``mid``; the MLP neurons at ``mlp_post``;
    ``mlp_out``; resid_post. ``mid`` / ``mlp_post`` are ``""`` where the family has no such site
    (parallel residual / mixture of experts)."""
    return _reads(
        "resid_pre=input",
        f"head_out={o_proj}.input",
        f"attn_out={attn}.output.0 attn_pattern={attn}.output.1",
        f"resid_mid={mid}" if mid else "",
        f"mlp_post={mlp_post}" if mlp_post else "",
        f"mlp_out={mlp_out}",
        f"resid_post={resid_post}",
    )


def _decoder(family: str, prefix: str, layers: str, embed: str, final_norm: str, o_proj: str,
             mlp_down: str | None, reads: dict[str, _Read], *, unembed: str = "lm_head",
             o_proj_kind: Literal["conv1d", "linear"] = "linear", absent: dict[str, str] | None = None,
             notes: dict[str, str] | None = None) -> Arch:
    """A decoder whose ``layers``, ``embed`` and ``final_norm`` sit under ``prefix``."""
    return Arch(
        family=family,
        layers=f"{prefix}{layers}",
        embed=f"{prefix}{embed}",
        final_norm=f"{prefix}{final_norm}",
        unembed=unembed,
        o_proj=o_proj,
        o_proj_kind=o_proj_kind,
        mlp_down=mlp_down,
        reads=reads,
        absent=absent or {},
        notes=notes or {},
    )


def _gpt2(prefix: str) -> Arch:
    reads = _standard_reads("attn", "attn.c_proj", "ln_2.input", "mlp.act.output")
    return _decoder("gpt2", prefix, "h", "wte", "ln_f", "attn.c_proj", "mlp.c_proj", reads, o_proj_kind="conv1d")


def _llama(prefix: str, family: str = "llama", moe: bool = False) -> Arch:
    """Pre-norm sequential blocks with ``self_attn.o_proj`` and ``mlp.down_proj``: Llama, Mistral,
    Qwen2/3, Gemma 1, OLMo 1, Phi-3 (fused qkv/gate_up), Mixtral and Qwen MoE (``moe``)."""
    reads = _standard_reads("self_attn", "self_attn.o_proj", "post_attention_layernorm.input",
                            "" if moe else "mlp.down_proj.input")
    return _decoder(family, prefix, "layers", "embed_tokens", "norm", "self_attn.o_proj",
                    None if moe else "mlp.down_proj", reads, absent={"mlp_post": _MOE} if moe else {})


def _sandwich(prefix: str, family: str, pre_norms: bool) -> Arch:
    """Blocks with a norm after each sublayer, before the residual add: Gemma 2/3 (``pre_norms``:
    also a norm before each sublayer) and OLMo 2/3 (post-norms only)."""
    reads = _reads(
        "resid_pre=input",
        "head_out=self_attn.o_proj.input",
        "attn_pattern=self_attn.output.1",
        "attn_out=post_attention_layernorm.output",
        f"resid_mid={'pre_feedforward_layernorm' if pre_norms else 'mlp'}.input",
        "mlp_post=mlp.down_proj.input",
        "mlp_out=post_feedforward_layernorm.output",
        "resid_post=output",
    )
    return _decoder(family, prefix, "layers", "embed_tokens", "norm", "self_attn.o_proj", "mlp.down_proj", reads,
                    notes={
                        "head_out": _POST_NORM_HEAD,
                        "mlp_post": "mlp_post is act(gate)*up; the down projection of it is the MLP output "
                        "before post_feedforward_layernorm, which then gives mlp_out",
                    })


def _neox(prefix: str, parallel: bool, unembed: str = "lm_head") -> Arch:
    reads = _standard_reads("attention", "attention.dense", "" if parallel else "post_attention_layernorm.input",
                            "mlp.dense_4h_to_h.input")
    # transformers 5 calls the unembedding lm_head; older releases embed_out
    return _decoder("neox", prefix, "layers", "embed_in", "final_layer_norm", "attention.dense", "mlp.dense_4h_to_h",
                    reads, unembed=unembed, absent={"resid_mid": _PARALLEL} if parallel else {})


def _parallel(family: str, prefix: str, layers: str, embed: str, final_norm: str, attn: str, o_proj: str,
              fc_out: str, mlp: str = "mlp", resid_item: int | None = None, mid: str = "") -> Arch:
    """Parallel-residual blocks: one norm (or two) feeding attention and MLP side by side, both
    added to the stream with it: GPT-J, Phi-1/2, Falcon (parallel and new decoder architecture).
    ``mid`` gives the same family's sequential variant its resid_mid (Falcon)."""
    resid_post = "output" if resid_item is None else f"output.{resid_item}"
    reads = _standard_reads(attn, f"{attn}.{o_proj}", mid, f"{mlp}.{fc_out}.input", f"{mlp}.output", resid_post)
    return _decoder(family, prefix, layers, embed, final_norm, f"{attn}.{o_proj}", f"{mlp}.{fc_out}", reads,
                    absent={} if mid else {"resid_mid": _PARALLEL})


def _falcon(prefix: str, cfg: Any) -> Arch:
    parallel = bool(cfg.new_decoder_architecture or cfg.parallel_attn)
    return _parallel("falcon", prefix, "h", "word_embeddings", "ln_f", "self_attention", "dense", "dense_4h_to_h",
                     resid_item=0, mid="" if parallel else "post_attention_layernorm.input")


def _bloom(prefix: str, cfg: Any) -> Arch:
    # BLOOM's attention and MLP modules return their output *plus the residual*; what they add
    # to the stream is the output of their last projection (``dense``, ``dense_4h_to_h``).
    reads = _reads(
        "resid_pre=input",
        "head_out=self_attention.dense.input",
        "attn_out=self_attention.dense.output",
        "attn_pattern=self_attention.output.1",
        "resid_mid=post_attention_layernorm.input",
        "mlp_post=mlp.dense_4h_to_h.input",
        "mlp_out=mlp.dense_4h_to_h.output",
        "resid_post=output.0",
    )
    return _decoder("bloom", prefix, "h", "word_embeddings", "ln_f", "self_attention.dense", "mlp.dense_4h_to_h",
                    reads)


def _opt(cfg: Any, names: set[str]) -> Arch:
    prefix = "model.decoder." if "model" in names else "decoder."
    pre_ln = bool(cfg.do_layer_norm_before)
    # [B, T, ...] inside the MLP too: _prepare_model keeps OPT's layers from flattening tokens
    mid = "final_layer_norm.input" if pre_ln else "self_attn_layer_norm.output"
    reads = _standard_reads("self_attn", "self_attn.out_proj", mid, "fc2.input", "fc2.output")
    has_final_ln = pre_ln and not getattr(cfg, "_remove_final_layer_norm", False)
    has_proj = cfg.word_embed_proj_dim != cfg.hidden_size
    final = [f"{prefix}final_layer_norm"] * has_final_ln + [f"{prefix}project_out"] * has_proj
    if len(final) > 1:
        final_norm: str | None = _CHAIN_ATTR
    else:
        final_norm = final[0] if final else None
    return Arch(
        family="opt",
        layers=f"{prefix}layers",
        embed=f"{prefix}embed_tokens",
        final_norm=final_norm,
        unembed="lm_head" if "lm_head" in names else None,
        o_proj="self_attn.out_proj",
        o_proj_kind="linear",
        mlp_down="fc2",
        reads=reads,
        notes={} if pre_ln else {
            "attn_out": "post-LN OPT: attn_out is what attention adds to the stream before the "
            "LayerNorm; resid_mid = self_attn_layer_norm(resid_pre + attn_out)",
            "mlp_out": "post-LN OPT: resid_post = final_layer_norm(resid_mid + mlp_out)",
        },
    ), final


def _bert(prefix: str, has_lm_head: bool, family: str = "bert") -> Arch:
    # BERT is post-LN: attn_out and mlp_out are the sublayer outputs before the residual add
    # and LayerNorm; resid_mid/resid_post are the normalised streams the next sublayer reads.
    return Arch(
        family="bert",
        layers=f"{prefix}encoder.layer",
        embed=f"{prefix}embeddings.word_embeddings",
        final_norm=None,
        unembed=("cls" if family == "bert" else "lm_head") if has_lm_head else None,
        o_proj="attention.output.dense",
        o_proj_kind="linear",
        mlp_down="output.dense",
        causal=False,
        reads=_reads(
            "resid_pre=input",
            "attn_pattern=attention.self.output.1",
            "head_out=attention.output.dense.input",
            "attn_out=attention.output.dense.output",
            "resid_mid=attention.output.output",
            "mlp_post=intermediate.output",
            "mlp_out=output.dense.output",
            "resid_post=output",
        ),
        notes={
            "attn_out": "post-LN: attn_out is what attention adds to the stream before the LayerNorm; "
            "resid_mid = LayerNorm(resid_pre + attn_out)",
            "mlp_out": "post-LN: resid_post = LayerNorm(resid_mid + mlp_out)",
        },
    )


_LLAMA_LIKE = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama",
    "olmo": "llama", "phi3": "phi3", "mixtral": "moe", "qwen2_moe": "moe", "qwen3_moe": "moe",
}
_SANDWICH = {"gemma2": ("gemma2", True), "gemma3_text": ("gemma2", True), "olmo2": ("olmo2", False),
             "olmo3": ("olmo2", False)}

#: Model types with a built-in component map (docs/models.md).
SUPPORTED = (
    "gpt2", "gptj", "gpt_neox", "opt", "bloom", "falcon", "phi", *_LLAMA_LIKE, *_SANDWICH, "bert", "roberta",
)

_CHAIN_ATTR = "_mw_final"  # an unregistered attribute of the transformers model (see _attach_chain)


def _refuse(mt: str, field_: str, value: Any, why: str) -> None:
    raise ValueError(
        f"{mt} config has {field_}={value!r}, which mi-widgets' component map does not implement ({why}); "
        "pass your own map with mw.load(..., components={...}) (docs/models.md)"
    )


def _check_config(mt: str, cfg: Any) -> None:
    """Config fields that change the block's algebra and that the built-in maps do not model."""
    if mt == "bloom":
        if getattr(cfg, "apply_residual_connection_post_layernorm", False):
            _refuse(mt, "apply_residual_connection_post_layernorm", True,
                    "the residual is the normalised stream, so attn_out is not resid_mid - resid_pre")
        if getattr(cfg, "pretraining_tp", 1) > 1 and getattr(cfg, "slow_but_exact", False):
            _refuse(mt, "slow_but_exact", True, "the projections are not called as modules")
    if mt in ("gpt2", "bert", "roberta") and getattr(cfg, "add_cross_attention", False):
        _refuse(mt, "add_cross_attention", True, "a cross-attention sublayer sits between attention and MLP")
    # (MoE models with some dense layers, qwen*_moe's mlp_only_layers: mlp_post stays undefined
    # for every layer, one rule per model.)


def check_supported(config: Any) -> None:
    """Refuse, before any weights are loaded, a config with no built-in component map or with a
    field the built-in map does not implement (the error names the way out: ``components=``)."""
    mt = getattr(config, "model_type", "")
    if mt not in SUPPORTED:
        raise ValueError(_no_map_message(mt, type(config).__name__))
    _check_config(mt, config)


_HINTS = {
    "gemma3": " For Gemma 3's language model, load Gemma3ForCausalLM (model type 'gemma3_text'), which has one.",
}


def _no_map_message(mt: str, what: str) -> str:
    return (
        f"model type {mt!r} ({what}) has no built-in component map.{_HINTS.get(mt, '')} Built-in: "
        f"{', '.join(SUPPORTED)}. Describe its modules yourself with mw.load(..., components={{...}}) "
        "or mw.wrap(hf_model, tokenizer, components={...}) (docs/models.md, 'Your own component map'). "
        "The raw nnsight model is still usable as model.nn."
    )


def _arch_for(hf: torch.nn.Module) -> Arch:
    mt = getattr(hf.config, "model_type", "")
    names = {n for n, _ in hf.named_children()}
    _check_config(mt, hf.config)
    if mt == "gpt2":
        return _gpt2("transformer." if "transformer" in names else "")
    if mt in _LLAMA_LIKE:
        fam = _LLAMA_LIKE[mt]
        return _llama("model." if "model" in names else "", family=fam, moe=fam == "moe")
    if mt in _SANDWICH:
        fam, pre = _SANDWICH[mt]
        return _sandwich("model." if "model" in names else "", fam, pre)
    if mt == "gpt_neox":
        parallel = bool(getattr(hf.config, "use_parallel_residual", True))
        unembed = "embed_out" if "embed_out" in names else "lm_head"
        return _neox("gpt_neox." if "gpt_neox" in names else "", parallel, unembed)
    if mt == "gptj":
        p = "transformer." if "transformer" in names else ""
        return _parallel("gptj", p, "h", "wte", "ln_f", "attn", "out_proj", "fc_out")
    if mt == "phi":
        p = "model." if "model" in names else ""
        return _parallel("phi", p, "layers", "embed_tokens", "final_layernorm", "self_attn", "dense", "fc2")
    if mt == "falcon":
        return _falcon("transformer." if "transformer" in names else "", hf.config)
    if mt == "bloom":
        return _bloom("transformer." if "transformer" in names else "", hf.config)
    if mt == "opt":
        arch, final = _opt(hf.config, names)
        if arch.final_norm == _CHAIN_ATTR:
            _attach_chain(hf, final)
        return arch
    if mt in ("bert", "roberta"):
        prefix = f"{mt}." if mt in names else ""
        return _bert(prefix, has_lm_head=any(n in names for n in ("cls", "lm_head")), family=mt)
    raise ValueError(_no_map_message(mt, type(hf).__name__))


class _Chain(torch.nn.Module):
    """Modules applied one after another (OPT's final LayerNorm then project_out), held without
    registering them, so the transformers model's parameters and state dict are unchanged."""

    def __init__(self, mods: list[torch.nn.Module]):
        super().__init__()
        object.__setattr__(self, "_mods", mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self._mods:
            x = m(x)
        return x


def _attach_chain(hf: torch.nn.Module, paths: list[str]) -> None:
    object.__setattr__(hf, _CHAIN_ATTR, _Chain([_get(hf, p) for p in paths]))


def _prepare_model(hf: torch.nn.Module) -> None:
    """Make every site a plain module input/output of shape ``[batch, tokens, ...]`` that the
    model does not change afterwards, without changing any output of the model: Gemma 2/3's
    logit soft-cap moves into ``lm_head``; OPT's layers stop flattening tokens to ``[B*T, d]``
    for their MLP; Falcon's MLP output is copied before the layer adds attention into it in
    place. Runs before nnsight wraps the model (nnsight keeps the forwards it finds)."""
    _fold_logit_softcap(hf)
    mt = getattr(hf.config, "model_type", "")
    if mt == "opt":
        _unflatten_opt(hf)
    if mt == "falcon" and (hf.config.new_decoder_architecture or hf.config.parallel_attn):
        for mod in hf.modules():
            if type(mod).__name__ == "FalconDecoderLayer" and not getattr(mod.mlp, "_mw_copy_out", False):
                mod.mlp.register_forward_hook(lambda _m, _a, out: out.clone())
                mod.mlp._mw_copy_out = True


_REMOTE_WHY = (
    "on NDIF the model runs transformers' own layers, which {what}; load the weights locally "
    "(remote=False or remote='local') to read it"
)


def _remote_arch(hf: torch.nn.Module, arch: Arch) -> Arch:
    """The map for a model that runs on NDIF, where :func:`_prepare_model` cannot reach: sites
    whose values depend on that preparation are refused by name instead of read wrongly."""
    cfg = hf.config
    mt = getattr(cfg, "model_type", "")
    drop: dict[str, str] = {}
    if mt == "opt":
        what = "flatten tokens to [batch*tokens, d] inside the MLP block"
        drop = {s: _REMOTE_WHY.format(what=what) for s in ("resid_mid", "mlp_post", "mlp_out")
                if arch.reads.get(s) is not None and arch.reads[s].module in ("final_layer_norm", "fc2")}
    if mt == "falcon" and (cfg.new_decoder_architecture or cfg.parallel_attn):
        drop = {"mlp_out": _REMOTE_WHY.format(what="add the attention output into the MLP output in place")}
    if not drop:
        return arch
    return Arch(**{**arch.__dict__, "reads": {k: v for k, v in arch.reads.items() if k not in drop},
                   "absent": {**arch.absent, **drop}})


def _unflatten_opt(hf: torch.nn.Module) -> None:
    from transformers.models.opt.modeling_opt import OPTDecoderLayer

    class _OPTDecoderLayer(OPTDecoderLayer):
        """transformers' OPTDecoderLayer.forward without the reshape to [B*T, d] before the MLP
        (LayerNorm and Linear act on the last axis, so the numbers are the same)."""

        def forward(self, hidden_states, attention_mask=None, cache=None, use_cache=False, position_ids=None,
                    **kwargs):  # type: ignore[no-untyped-def]
            drop = torch.nn.functional.dropout
            residual = hidden_states
            if self.do_layer_norm_before:
                hidden_states = self.self_attn_layer_norm(hidden_states)
            hidden_states, _ = self.self_attn(hidden_states=hidden_states, cache=cache, position_ids=position_ids,
                                              attention_mask=attention_mask, **kwargs)
            hidden_states = residual + drop(hidden_states, p=self.dropout, training=self.training)
            if not self.do_layer_norm_before:
                hidden_states = self.self_attn_layer_norm(hidden_states)
            residual = hidden_states
            if self.do_layer_norm_before:
                hidden_states = self.final_layer_norm(hidden_states)
            hidden_states = self.fc2(self.activation_fn(self.fc1(hidden_states)))
            hidden_states = residual + drop(hidden_states, p=self.dropout, training=self.training)
            if not self.do_layer_norm_before:
                hidden_states = self.final_layer_norm(hidden_states)
            return hidden_states

    layers = [m for m in hf.modules() if type(m) is OPTDecoderLayer]
    if not layers:
        return
    # the copy must compute what transformers' layer computes (checked on this model, once)
    x = torch.randn(2, 3, layers[0].embed_dim, generator=torch.Generator().manual_seed(0))
    p = next(layers[0].parameters())
    x = x.to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        ref = OPTDecoderLayer.forward(layers[0], x)
        got = _OPTDecoderLayer.forward(layers[0], x)
    if ref.shape != got.shape or not torch.allclose(ref, got, atol=1e-5, rtol=1e-4):
        raise ValueError(
            "this transformers version's OPT layer differs from the one mi-widgets knows; pass your own "
            "component map with components= (docs/models.md)"
        )
    for layer in layers:
        layer.__class__ = _OPTDecoderLayer


class _SoftcappedLinear(torch.nn.Linear):
    """An unembedding that soft-caps its logits: ``c * tanh(W h / c)`` (Gemma 2/3)."""

    logit_softcap: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.logit_softcap
        return torch.tanh(super().forward(x) / c) * c


def _fold_logit_softcap(hf: torch.nn.Module) -> None:
    """Gemma 2/3 soft-cap the logits after ``lm_head`` inside the model's forward. Move the cap
    into ``lm_head`` itself (same parameters, same state dict, same outputs), so that the
    unembedding every method calls (the logit lens, patching metrics) gives the model's logits.
    The config still says ``final_logit_softcapping`` when saved. Must run before nnsight wraps
    the model (nnsight keeps the forward it found)."""
    cfg = hf.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap is None:
        return
    head = hf.get_output_embeddings()
    if type(head) is not torch.nn.Linear or "forward" in head.__dict__:
        raise ValueError(
            f"cannot fold final_logit_softcapping into the unembedding ({type(head).__name__}); "
            "mi-widgets supports it on a plain torch Linear lm_head of a model not yet wrapped by nnsight"
        )
    head.__class__ = _SoftcappedLinear
    head.logit_softcap = float(cap)
    cfg.final_logit_softcapping = None
    to_dict = cfg.to_dict

    def to_dict_with_cap() -> dict[str, Any]:
        d = to_dict()
        d.pop("to_dict", None)  # this override lives in the config's __dict__
        d["final_logit_softcapping"] = float(cap)
        return d

    object.__setattr__(cfg, "to_dict", to_dict_with_cap)


# --------------------------------------------------------------------------------------------
# Your own component map
# --------------------------------------------------------------------------------------------


_ARCH_KEYS = ("layers", "embed", "final_norm", "unembed", "sites", "family", "causal")


def _parse_where(site: str, where: str, order: int) -> _Read:
    """``"<module>.input"``, ``"<module>.output"``, ``"<module>.output.<i>"`` (tuple element i);
    ``"input"``/``"output"`` for the block itself. Values must be ``[batch, tokens, ...]``."""
    if not isinstance(where, str) or not where:
        raise TypeError(f"components['sites'][{site!r}] must be a string like 'mlp.down_proj.input', got {where!r}")
    parts = where.split(".")
    item = None
    if parts and parts[-1].isdigit():
        item = int(parts.pop())
    if not parts or parts[-1] not in ("input", "output"):
        raise ValueError(
            f"components['sites'][{site!r}] = {where!r}: end it with .input or .output (optionally .output.0 "
            "for a tuple element), e.g. 'self_attn.output.0' or 'mlp.down_proj.input'"
        )
    io = parts.pop()
    return _Read(".".join(parts), io, order, item)  # type: ignore[arg-type]


def arch_from_components(hf: torch.nn.Module, components: Arch | dict[str, Any]) -> Arch:
    """A component map given by the caller: an :class:`Arch`, or a dict::

        {"layers": "model.layers", "embed": "model.embed_tokens",
         "final_norm": "model.norm", "unembed": "lm_head",      # None for an encoder
         "sites": {   # relative to a block, in the order the block computes them
             "resid_pre": "input",
             "head_out": "self_attn.o_proj.input",
             "attn_out": "self_attn.output.0", "attn_pattern": "self_attn.output.1",
             "resid_mid": "post_attention_layernorm.input",
             "mlp_post": "mlp.down_proj.input", "mlp_out": "mlp.output",
             "resid_post": "output"}}

    ``resid_pre`` and ``resid_post`` are required; other sites may be left out (they are then
    refused by name). ``head_out``'s module is the attention output projection; ``mlp_post``'s
    module is the MLP's down projection. Every path is checked against the model here."""
    if isinstance(components, Arch):
        arch = components
    else:
        if not isinstance(components, dict):
            raise TypeError(f"components must be a dict or an mw.Arch, got {type(components).__name__}")
        unknown = set(components) - set(_ARCH_KEYS)
        if unknown:
            raise ValueError(f"unknown components key(s) {sorted(unknown)}; allowed: {', '.join(_ARCH_KEYS)}")
        for key in ("layers", "embed", "sites"):
            if key not in components:
                raise ValueError(f"components needs {key!r} (see docs/models.md, 'Your own component map')")
        sites = components["sites"]
        if not isinstance(sites, dict):
            raise TypeError("components['sites'] must be a dict site -> 'module.input|output[.i]'")
        bad = [s for s in sites if s not in SITES]
        if bad:
            raise ValueError(f"unknown site(s) {bad} in components['sites']; choose from {', '.join(SITES)}")
        for s in ("resid_pre", "resid_post"):
            if s not in sites:
                raise ValueError(f"components['sites'] needs {s!r} (e.g. 'input' / 'output' of the block)")
        reads = {s: _parse_where(s, w, i) for i, (s, w) in enumerate(sites.items())}
        o_proj = reads["head_out"].module if "head_out" in reads else None
        if "head_out" in reads and reads["head_out"].io != "input":
            raise ValueError("components['sites']['head_out'] must be the *input* of the attention output projection")
        mlp_down = reads["mlp_post"].module if "mlp_post" in reads and reads["mlp_post"].io == "input" else None
        arch = Arch(
            family=str(components.get("family", "custom")),
            layers=components["layers"],
            embed=components["embed"],
            final_norm=components.get("final_norm"),
            unembed=components.get("unembed"),
            o_proj=o_proj,
            o_proj_kind="linear",
            mlp_down=mlp_down,
            causal=bool(components.get("causal", True)),
            reads=reads,
            absent={s: "not given in components['sites']" for s in SITES if s not in reads},
        )
    _check_paths(hf, arch)
    if arch.o_proj is not None:
        mod = _get(_get(hf, arch.layers)[0], arch.o_proj)
        kind = "conv1d" if type(mod).__name__ == "Conv1D" else "linear"
        if kind != arch.o_proj_kind:
            arch = Arch(**{**arch.__dict__, "o_proj_kind": kind})
    return arch


def _check_paths(hf: torch.nn.Module, arch: Arch) -> None:
    def where(path: str, what: str) -> Any:
        try:
            return _get(hf, path)
        except (AttributeError, IndexError, TypeError):
            raise ValueError(f"components: {what} {path!r} is not a module of {type(hf).__name__}") from None

    blocks = where(arch.layers, "layers")
    if not isinstance(blocks, (torch.nn.ModuleList, torch.nn.Sequential)):
        raise ValueError(f"components: layers {arch.layers!r} must be a ModuleList of blocks")
    where(arch.embed, "embed")
    for p, what in ((arch.final_norm, "final_norm"), (arch.unembed, "unembed")):
        if p is not None:
            where(p, what)
    for s, r in arch.reads.items():
        if r.module:
            try:
                _get(blocks[0], r.module)
            except (AttributeError, IndexError, TypeError):
                raise ValueError(f"components: site {s!r} reads {r.module!r}, which block 0 does not have") from None


# --------------------------------------------------------------------------------------------
# Dimensions
# --------------------------------------------------------------------------------------------


def _cfg(cfg: Any, *names: str) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return None


def _in_features(mod: torch.nn.Module) -> int:
    w = mod.weight
    return int(w.shape[0] if type(mod).__name__ == "Conv1D" else w.shape[1])


def _dims(hf: torch.nn.Module, arch: Arch) -> dict[str, int]:
    """n_layers, n_heads, d_model, d_head, d_mlp, d_vocab, n_ctx, read from the modules where
    they say it (heads' width from the output projection, neurons from the down projection)."""
    cfg = getattr(hf.config, "text_config", None) or hf.config
    blocks = _get(hf, arch.layers)
    block = blocks[0]
    n_heads = _cfg(cfg, "num_attention_heads", "n_head", "num_heads")
    d_model = _cfg(cfg, "hidden_size", "n_embd", "d_model")
    if n_heads is None or d_model is None:
        raise ValueError(f"{type(hf).__name__}'s config names no number of heads or hidden size")
    n_heads, d_model = int(n_heads), int(d_model)
    if arch.o_proj is not None:
        d_head = _in_features(_get(block, arch.o_proj)) // n_heads
    else:
        d_head = int(_cfg(cfg, "head_dim") or d_model // n_heads)
    if arch.mlp_down is not None:
        d_mlp = _in_features(_get(block, arch.mlp_down))
    else:
        d_mlp = int(_cfg(cfg, "intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size") or 4 * d_model)
    n_ctx = int(_cfg(cfg, "n_positions", "max_position_embeddings") or 2048)
    return {
        "n_layers": len(blocks),
        "n_heads": n_heads,
        "d_model": d_model,
        "d_head": d_head,
        "d_mlp": d_mlp,
        "d_vocab": int(cfg.vocab_size),
        "n_ctx": n_ctx,
    }


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
