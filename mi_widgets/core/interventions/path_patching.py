"""Path patching (Wang et al. 2022, "Interpretability in the Wild"): the effect of a *sender*
head on the output that flows only through given *receiver* heads' queries, keys or values.

For each prompt pair and sender head ``S``, with receivers ``R`` and input ``q|k|v``:

1. Run the clean and the corrupt prompt; cache every head's output (the per-head input ``z`` of
   the attention output projection) on the clean run, and the sender's on the corrupt run.
2. Run the clean prompt with the sender's output replaced by its corrupt value and *every other
   head frozen* to its clean output (MLPs are recomputed, as in Wang et al.); record the
   receivers' queries/keys/values as computed from that modified residual stream.
3. Run the clean prompt again, replacing only the receivers' recorded inputs (their own head's
   slice of q, k or v; ``receiver_input="resid"`` replaces all three, i.e. the head's whole input);
   everything downstream is recomputed normally. The metric is read on this run's logits.

Direction convention (the same normalisation as
:func:`~mi_widgets.core.patching.activation_patching` with ``direction="noise"``)::

    value = (m(path-patched) - m(corrupt)) / (m(clean) - m(corrupt))

so 1 = the path does not matter (the clean run's metric), 0 = corrupting this path alone does
as much as corrupting the whole input; the *effect* of the path is ``1 - value``, comparable to
``1 - activation_patching(..., site="head_out", direction="noise")`` for the sender (its total
effect). Values may leave [0, 1] (a path can over- or under-shoot).

``sender="all"`` sweeps every head in the layers before the first receiver and returns a
``layer x head`` grid. Supported: every causal family with a built-in component map
(docs/models.md): GPT-2 (fused ``c_attn``), Llama/Mistral/Qwen2/Qwen3/Gemma 1-3/OLMo 1-3/Mixtral/
Qwen-MoE (``q_proj``, ``k_proj``, ``v_proj``; OLMo 2/3: a head's query and key are its slice of
``q_norm``/``k_norm``, which normalise all heads together), GPT-J, OPT, Phi-1/2 (separate
projections), Phi-3 (fused ``qkv_proj``), GPT-NeoX and BLOOM (fused, per-head ``[q|k|v]``) and
Falcon (fused: per-head, multi-query or grouped layout). Heads are frozen at the input of the
attention output projection, so a sender is one query head's write even under grouped-query
attention, and blocks with parallel attention and MLP (GPT-J, NeoX, Phi-1/2, Falcon) need
nothing special: the MLPs are recomputed from whatever stream they read. With grouped-query
(or multi-query) attention a receiver's keys and values belong to its key/value head, which the
other query heads of its group share: a ``k``, ``v`` or ``resid`` path then reaches the whole
group, as TransformerLens' ``hook_k``/``hook_v`` do (queries stay per head). Encoders (BERT) are
refused, and so is a model type whose attention layout mi-widgets does not know (a custom
component map), by name.
All rows (prompt pairs of one length x senders) run batched; hooks live inside ``try/finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

from .._checks import check_model
from .._views import view
from ..metrics import Metric
from ..model import Model, _get
from ..model.remote import require_local
from .ablation import _parse_head
from .batching import _groups, _progress, _rows_per_batch
from .checks import _check_lm, _validate_pairs
from .patching import PatchingResult, _baselines, _result

RECEIVER_INPUTS = ("q", "k", "v", "resid")


@dataclass(repr=False)
class PathPatchingResult(PatchingResult):
    """A :class:`~mi_widgets.core.patching.PatchingResult` over senders (``dims = ("layer",
    "head")``; cells that were not senders are NaN) for paths into ``receivers``'
    ``receiver_input``. ``effect`` = ``1 - values`` (normalised)."""

    receivers: list[str] = field(default_factory=list)
    receiver_input: str = "q"

    @property
    def effect(self) -> torch.Tensor:
        return 1.0 - self.values

    def value(self, head: str) -> float:
        """The (normalised) value of sender ``"L.H"``."""
        lh = _parse_head(head)
        if lh is None or lh[0] not in self.layers or lh[1] not in (self.heads or []):
            raise KeyError(f"{head!r} is not a sender in this result")
        return float(self.values[self.layers.index(lh[0]), (self.heads or []).index(lh[1])])

    def strongest(self) -> str:
        """The sender ``"L.H"`` whose path has the largest ``|effect|`` (NaN cells skipped)."""
        e = torch.nan_to_num(self.effect.abs(), nan=-1.0)
        li, hi = (int(i) for i in torch.unravel_index(torch.argmax(e), e.shape))
        return f"{self.layers[li]}.{(self.heads or [])[hi]}"

    def __repr__(self) -> str:
        s = self.strongest()
        return (
            f"PathPatchingResult({self.model_name}, senders → {','.join(self.receivers)} "
            f"({self.receiver_input}), {self.metric_name}, {self.n_pairs} pair"
            f"{'s' if self.n_pairs != 1 else ''}, strongest path {s}: effect "
            f"{1 - self.value(s):.3f})"
        )

    def widget(self, **kwargs: Any) -> Any:
        """The grid in a :class:`~mi_widgets.PatchingGrid` (display only: the grid's own sweeps
        and per-cell top-k re-run activation patching, which is not this computation)."""
        return view(self, **kwargs)


def _head(model: Model, x: Any, what: str) -> tuple[int, int]:
    lh = None
    if isinstance(x, str):
        lh = _parse_head(x.strip())
    elif (
        isinstance(x, (tuple, list))
        and len(x) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in x)
    ):
        lh = (int(x[0]), int(x[1]))
    if lh is None:
        raise ValueError(
            f"{what} must be a head 'L.H' (e.g. '1.2') or a (layer, head) pair, got {x!r}"
        )
    layer, h = lh
    if not 0 <= layer < model.n_layers:
        raise ValueError(
            f"{what} {x!r}: layer {layer} is out of range ({model.name} has layers 0..{model.n_layers - 1})"
        )
    if not 0 <= h < model.n_heads:
        raise ValueError(
            f"{what} {x!r}: head {h} is out of range ({model.name} has heads 0..{model.n_heads - 1} per layer)"
        )
    return layer, h


#: model types whose blocks read the stream through a pre-attention norm module (relative to a
#: block) that feeds the query/key/value projections directly
_ATTN_NORM = {
    "gpt2": "ln_1", "gptj": "ln_1", "gpt_neox": "input_layernorm", "phi": "input_layernorm",
    "bloom": "input_layernorm", "llama": "input_layernorm", "mistral": "input_layernorm",
    "qwen2": "input_layernorm", "qwen3": "input_layernorm", "gemma": "input_layernorm",
    "olmo": "input_layernorm", "phi3": "input_layernorm", "mixtral": "input_layernorm",
    "qwen2_moe": "input_layernorm", "qwen3_moe": "input_layernorm", "gemma2": "input_layernorm",
    "gemma3_text": "input_layernorm",
}
#: model types with separate q_proj / k_proj / v_proj modules under ``self_attn``
_SEPARATE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "mixtral", "qwen2_moe",
             "qwen3_moe", "gemma2", "gemma3_text", "olmo2", "olmo3", "phi", "opt", "gptj")


@dataclass(frozen=True)
class QKV:
    """Where a family computes each head's query, key and value: ``module[kind]`` (relative to a
    block) is the module whose output holds them, ``cols(kind, head)`` the output columns of
    query head ``head``'s query, or of its key/value head's key/value (grouped-query and
    multi-query attention share a key/value head across ``n_heads // n_kv`` query heads).
    ``norm`` is the module (relative to a block) whose output those projections read, ``None``
    where they read the stream without one (post-norm blocks); ``attn`` the attention module."""

    model_type: str
    attn: str
    norm: str | None
    module: dict[str, str]
    layout: str  # "separate", "gpt2", "phi3", "per_head", "falcon_grouped", "falcon_mq"
    n_heads: int
    n_kv: int
    d_head: int

    def kv_head(self, head: int) -> int:
        return head // (self.n_heads // self.n_kv)

    def cols(self, kind: str, head: int) -> torch.Tensor:
        dh, nh, kv = self.d_head, self.n_heads, self.kv_head(head)
        i = "qkv".index(kind)
        lay = self.layout
        if lay == "separate":
            start = (head if kind == "q" else kv) * dh
        elif lay == "gpt2":
            start = i * nh * dh + head * dh
        elif lay == "phi3":
            start = head * dh if kind == "q" else nh * dh + (i - 1) * self.n_kv * dh + kv * dh
        elif lay == "per_head":
            start = (head * 3 + i) * dh
        elif lay == "falcon_grouped":
            rep = nh // self.n_kv
            start = (kv * (rep + 2) + (head % rep if kind == "q" else rep + i - 1)) * dh
        elif lay == "falcon_mq":
            start = (head if kind == "q" else nh + i - 1) * dh
        else:  # pragma: no cover
            raise AssertionError(lay)
        return torch.arange(start, start + dh)


def qkv_layout(model: Model, what: str = "path_patching") -> QKV:
    """The :class:`QKV` layout of ``model``'s attention; ``ValueError`` naming the family for a
    model whose query/key/value modules mi-widgets does not know (a custom component map)."""
    hf = model.hf
    cfg = getattr(hf.config, "text_config", None) or hf.config
    mt = getattr(cfg, "model_type", "")
    nh, dh = model.n_heads, model.d_head
    block = _get(hf, model.arch.layers)[0]
    norm: str | None = _ATTN_NORM.get(mt)
    if mt in _SEPARATE:
        attn = {"opt": "self_attn", "gptj": "attn"}.get(mt, "self_attn")
        mods = {k: f"{attn}.{k}_proj" for k in "qkv"}
        if mt in ("olmo2", "olmo3"):
            # OLMo 2 normalises all heads' queries (keys) together after the projection: a head's
            # query is its slice of q_norm's output
            mods.update(q=f"{attn}.q_norm", k=f"{attn}.k_norm")
        if mt == "opt":
            norm = "self_attn_layer_norm" if getattr(cfg, "do_layer_norm_before", True) else None
        n_kv = _get(block, f"{attn}.k_proj").weight.shape[0] // dh
        lay = QKV(mt, attn, norm, mods, "separate", nh, n_kv, dh)
    elif mt == "gpt2":
        lay = QKV(mt, "attn", norm, dict.fromkeys("qkv", "attn.c_attn"), "gpt2", nh, nh, dh)
    elif mt == "phi3":
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or nh)
        lay = QKV(mt, "self_attn", norm, dict.fromkeys("qkv", "self_attn.qkv_proj"), "phi3", nh, n_kv, dh)
    elif mt == "gpt_neox":
        lay = QKV(mt, "attention", norm, dict.fromkeys("qkv", "attention.query_key_value"), "per_head",
                  nh, nh, dh)
    elif mt == "bloom":
        lay = QKV(mt, "self_attention", norm, dict.fromkeys("qkv", "self_attention.query_key_value"),
                  "per_head", nh, nh, dh)
    elif mt == "falcon":
        mods = dict.fromkeys("qkv", "self_attention.query_key_value")
        two = bool(cfg.new_decoder_architecture) and getattr(cfg, "num_ln_in_parallel_attn", 2) == 2
        norm = "ln_attn" if two else "input_layernorm"
        if cfg.new_decoder_architecture:
            lay = QKV(mt, "self_attention", norm, mods, "falcon_grouped", nh, int(cfg.num_kv_heads), dh)
        elif cfg.multi_query:
            lay = QKV(mt, "self_attention", norm, mods, "falcon_mq", nh, 1, dh)
        else:
            lay = QKV(mt, "self_attention", norm, mods, "per_head", nh, nh, dh)
    else:
        raise ValueError(
            f"{what} does not know where {model.name} ({model.family}, model type {mt!r}) computes "
            "its heads' queries, keys and values; supported model types: gpt2, gptj, gpt_neox, opt, "
            f"bloom, falcon, phi, phi3, {', '.join(m for m in _SEPARATE if m not in ('phi', 'opt', 'gptj'))}"
        )
    for mod in {*lay.module.values(), *([lay.norm] if lay.norm else [])}:
        try:
            _get(block, mod)  # a renamed module fails here, before any forward
        except AttributeError:
            raise ValueError(
                f"{what}: {model.name} ({mt}) has no module {mod!r} in its blocks; this transformers "
                "version lays the attention out differently from the one mi-widgets knows"
            ) from None
    return lay


def _receiver_columns(
    model: Model, head: int, parts: list[str], lay: QKV | None = None
) -> list[tuple[str, torch.Tensor]]:
    """``(module relative to the block, output columns)`` holding ``head``'s query/key/value
    (``parts`` among q, k, v) in this architecture."""
    lay = lay or qkv_layout(model)
    return [(lay.module[p], lay.cols(p, head)) for p in parts]


def _freeze(
    clean_z: torch.Tensor,
    corrupt_z: torch.Tensor | None,
    g: torch.Tensor,
    rows: list,
    layer: int,
    dh: int,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """c_proj input of every row: the clean z of its pair, with its sender's slice from the
    corrupt run where the sender is in ``layer``."""

    def fn(z: torch.Tensor) -> torch.Tensor:
        out = clean_z[g].clone()
        for r, (_, (sl, sh)) in enumerate(rows):
            if sl == layer and corrupt_z is not None:
                c = slice(sh * dh, (sh + 1) * dh)
                out[r, :, c] = corrupt_z[int(g[r]), :, c]
        return out.to(z.dtype)

    return fn


def _patch(recorded: torch.Tensor, cols: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A q/k/v projection's output with the receivers' columns taken from ``recorded``."""

    def fn(qkv: torch.Tensor) -> torch.Tensor:
        out = qkv.clone()
        out[..., cols] = recorded[..., cols].to(out.dtype)
        return out

    return fn


def path_patching(
    model: Model,
    clean: str | Sequence[str],
    corrupt: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    sender: str | tuple[int, int] | Sequence[Any] | Literal["all"],
    receivers: str | Sequence[Any],
    receiver_input: Literal["q", "k", "v", "resid"] = "q",
    *,
    normalize: bool = True,
    batch_size: int | None = None,
    progress: bool = True,
) -> PathPatchingResult:
    """Path patching from ``sender`` (``"L.H"``, a list of heads, or ``"all"`` for every head in
    the layers before the first receiver) to the ``receiver_input`` (``"q"``, ``"k"``, ``"v"`` or
    ``"resid"`` = all three) of ``receivers`` (``"L.H"`` or a list). See the module docstring for
    the recipe and the direction convention (1 = clean, 0 = corrupt; path effect = 1 - value).

    ``clean``/``corrupt``: prompt pairs of equal token length per pair (as in activation
    patching). Returns a :class:`PathPatchingResult` ``layer x head`` grid over senders (NaN for
    heads that were not senders), averaged over pairs. Raises ``ValueError`` before any forward
    pass for invalid heads, receivers not after every sender, or a model whose attention layout is unknown.
    """
    check_model(model)
    _check_lm(model)
    require_local(
        model, "path_patching",
        "it hooks the torch modules; use activation_patching(site='head_out') (runs remotely) "
        "or load the model without remote",
    )
    lay = qkv_layout(model)
    if receiver_input not in RECEIVER_INPUTS:
        raise ValueError(
            f"receiver_input must be one of {', '.join(RECEIVER_INPUTS)}, got {receiver_input!r}"
        )
    rec_l = (
        [receivers]
        if isinstance(receivers, str)
        or (
            isinstance(receivers, tuple)
            and len(receivers) == 2
            and all(isinstance(v, int) for v in receivers)
        )
        else list(receivers)
    )
    if not rec_l:
        raise ValueError("receivers must name at least one head 'L.H'")
    recs = list(dict.fromkeys(_head(model, r, "receiver") for r in rec_l))
    first = min(layer for layer, _ in recs)
    if isinstance(sender, str) and sender == "all":
        if first == 0:
            raise ValueError(
                "receivers in layer 0 have no earlier heads to send to them; pick later receivers"
            )
        sends = [(layer, h) for layer in range(first) for h in range(model.n_heads)]
    else:
        s_l = (
            [sender]
            if isinstance(sender, str)
            or (
                isinstance(sender, tuple)
                and len(sender) == 2
                and all(isinstance(v, int) for v in sender)
            )
            else list(sender)
        )
        if not s_l:
            raise ValueError("sender must be a head 'L.H', a list of heads, or 'all'")
        sends = list(dict.fromkeys(_head(model, s, "sender") for s in s_l))
    for layer, h in sends:
        if layer >= first:
            bad = [f"{a}.{b}" for a, b in recs if a <= layer]
            raise ValueError(
                f"receivers must come after the sender: sender {layer}.{h} is in layer {layer} but receiver"
                f"{'s' if len(bad) > 1 else ''} {', '.join(bad)} {'are' if len(bad) > 1 else 'is'} not in a later layer"
            )
    layers = sorted({layer for layer, _ in sends})
    heads = sorted({h for _, h in sends})
    spec = _validate_pairs(
        model, clean, corrupt, metric, "head_out", "all", layers, "noise", heads, "path patching"
    )
    m = spec.metric

    hf = model.hf
    blocks = _get(hf, model.arch.layers)
    dh = model.d_head
    parts = {"q": ["q"], "k": ["k"], "v": ["v"], "resid": ["q", "k", "v"]}[receiver_input]
    # (layer, projection module) -> receiver columns of that module's output
    rec_cols: dict[tuple[int, str], torch.Tensor] = {}
    for layer, h in recs:
        for mod, cols in _receiver_columns(model, h, parts, lay):
            prev = rec_cols.get((layer, mod), torch.empty(0, dtype=torch.long))
            rec_cols[(layer, mod)] = torch.unique(torch.cat([prev, cols]))
    dev = model.device

    def run(ids: torch.Tensor, pre: dict, post: dict) -> torch.Tensor:
        """Last-position logits; ``pre``: layer -> fn(z) on the output projection's input;
        ``post``: (layer, projection module) -> fn(output)."""
        hooks = []
        try:
            for layer, fn in pre.items():
                hooks.append(
                    _get(blocks[layer], model.arch.o_proj).register_forward_pre_hook(
                        lambda _m, a, fn=fn: (fn(a[0]), *a[1:])
                    )
                )
            for (layer, mod), fn in post.items():
                hooks.append(
                    _get(blocks[layer], mod).register_forward_hook(lambda _m, _a, o, fn=fn: fn(o))
                )
            ids = ids.to(dev)
            with torch.no_grad():
                out = hf(ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)
            return out.logits[:, -1].float()
        finally:
            for hk in hooks:
                hk.remove()

    def save(store: dict, key: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(x: torch.Tensor) -> torch.Tensor:
            store[key] = x.detach().clone()
            return x

        return fn

    groups = _groups(spec.lengths)
    n = spec.n
    clean_logits = torch.empty(n, model.d_vocab)
    corrupt_logits = torch.empty(n, model.d_vocab)
    caches = {}
    for t, idx in groups.items():
        ct = torch.cat([spec.ctoks[i] for i in idx])
        xt = torch.cat([spec.xtoks[i] for i in idx])
        cz: dict[int, torch.Tensor] = {}
        xz: dict[int, torch.Tensor] = {}
        clean_logits[idx] = run(
            ct, {layer: save(cz, layer) for layer in range(model.n_layers)}, {}
        ).cpu()
        corrupt_logits[idx] = run(xt, {layer: save(xz, layer) for layer in layers}, {}).cpu()
        caches[t] = (ct, cz, xz)
    m_clean, m_corrupt = _baselines(spec, clean_logits, corrupt_logits, normalize)

    raw = torch.full((n, len(layers), len(heads)), float("nan"))
    plan = []
    for t, idx in groups.items():
        rows = [(g, s) for g in range(len(idx)) for s in sends]
        per = _rows_per_batch(batch_size, t)
        plan += [(t, rows[k : k + per]) for k in range(0, len(rows), per)]
    bar = _progress(len(plan), progress, "path patching")
    try:
        for t, rows in plan:
            idx = groups[t]
            ct, cz, xz = caches[t]
            g = torch.tensor([r[0] for r in rows], device=dev)
            ids = ct[g.cpu()]

            recorded: dict[tuple[int, str], torch.Tensor] = {}
            run(
                ids,
                {
                    layer: _freeze(cz[layer], xz.get(layer), g, rows, layer, dh)
                    for layer in range(model.n_layers)
                },
                {key: save(recorded, key) for key in rec_cols},
            )

            logits = run(
                ids,
                {},
                {key: _patch(recorded[key], rec_cols[key].to(dev)) for key in rec_cols},
            )
            pairs = torch.tensor([idx[r[0]] for r in rows])
            vals = m(
                logits,
                pairs=pairs.to(logits.device),
                clean_logits=clean_logits[pairs].to(logits.device),
            )
            for (_, (sl, sh)), p, v in zip(rows, pairs.tolist(), vals.float().cpu().tolist()):
                raw[p, layers.index(sl), heads.index(sh)] = v
            bar.update(1)
    finally:
        bar.close()

    base = _result(model, spec, "head_out", "noise", raw, m_clean, m_corrupt, normalize)
    rec_names = [f"{a}.{b}" for a, b in recs]
    base.site = f"head_out → {','.join(rec_names)} ({receiver_input})"
    return PathPatchingResult(
        **{f.name: getattr(base, f.name) for f in fields(PatchingResult)},
        receivers=rec_names,
        receiver_input=receiver_input,
    )


__all__ = ["PathPatchingResult", "RECEIVER_INPUTS", "path_patching"]
