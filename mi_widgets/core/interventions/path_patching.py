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
``layer x head`` grid. Supported: GPT-2 (fused ``c_attn``), Llama/Mistral/Qwen (``q_proj``,
``k_proj``, ``v_proj``) and GPT-NeoX (fused ``query_key_value``, per-head ``[q|k|v]`` layout).
With grouped-query attention (fewer key/value heads than query heads) a receiver's keys and
values belong to its key/value head, which the other query heads of its group share: a ``k``,
``v`` or ``resid`` path then reaches the whole group (queries stay per head). BERT is not a
causal LM and is refused.
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


def _receiver_columns(
    model: Model, head: int, parts: list[str]
) -> list[tuple[str, torch.Tensor]]:
    """``(projection module relative to the block, output columns)`` holding ``head``'s
    query/key/value (``parts`` among q, k, v) in this architecture."""
    d, dh, nh = model.d_model, model.d_head, model.n_heads
    block = _get(model.hf, model.arch.layers)[0]
    fam = model.family

    def span(start: int) -> torch.Tensor:
        return torch.arange(start, start + dh)

    out: list[tuple[str, torch.Tensor]] = []
    if fam == "gpt2":
        where = {"q": 0, "k": 1, "v": 2}
        for p in parts:
            out.append(("attn.c_attn", span(where[p] * d + head * dh)))
    elif fam == "llama":
        n_kv = getattr(model.hf.config, "num_key_value_heads", None) or nh
        kv = head // (nh // n_kv)
        for p in parts:
            out.append((f"self_attn.{p}_proj", span((head if p == "q" else kv) * dh)))
    elif fam == "neox":
        where = {"q": 0, "k": 1, "v": 2}
        for p in parts:
            out.append(("attention.query_key_value", span(head * 3 * dh + where[p] * dh)))
    else:  # pragma: no cover - refused earlier
        raise ValueError(f"path_patching does not support {fam} models")
    for mod, _ in out:
        _get(block, mod)  # a renamed module fails here, before any forward
    return out


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
    pass for invalid heads, receivers not after every sender, or non-GPT-2 models.
    """
    check_model(model)
    _check_lm(model)
    require_local(
        model, "path_patching",
        "it hooks the torch modules; use activation_patching(site='head_out') (runs remotely) "
        "or load the model without remote",
    )
    if model.family not in ("gpt2", "llama", "neox"):
        raise ValueError(
            f"path_patching supports GPT-2, Llama-family and GPT-NeoX models; {model.name} is {model.family}"
        )
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
        for mod, cols in _receiver_columns(model, h, parts):
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
                out = hf(ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
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
