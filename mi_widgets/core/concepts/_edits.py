"""Shared by the concept interventions: where a concept edit may be written, a forward with the edit
(nnsight trace, :func:`edited_run`) and the same edit through a torch hook (:func:`hooked_logits`, so
gradients reach a learned rotation), length grouping and single-token answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ..model import Model, _get
from .probes import (
    ProbeDataset,
)

EDIT_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")


def check_edit_site(model: Model, site: str, layer: int) -> tuple[str, int]:
    """Validate ``(site, layer)``; layer ``-1`` means the embedding (``resid_pre`` of block 0)."""
    model.check_site(site)
    if site not in EDIT_SITES:
        raise ValueError(f"site {site!r} cannot be edited by a concept intervention; choose one of {', '.join(EDIT_SITES)}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"layer must be an int (-1 for the embedding), got {layer!r}")
    if layer == -1:
        return "resid_pre", 0
    model.check_layer(layer)
    return site, layer


def unembed_path(model: Model) -> str:
    from ..interventions.engine import _unembed_path

    return _unembed_path(model)


def edited_run(
    model: Model,
    ids: torch.Tensor,
    site: str,
    layer: int,
    fn: Callable[[torch.Tensor], torch.Tensor] | None,
    *,
    reads: list[int] = (),  # type: ignore[assignment]
    all_logits: bool = False,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """One nnsight trace over ``ids`` ``[B, T]`` with ``site`` at ``layer`` replaced by
    ``fn(value)`` (``fn=None``: no edit). Returns ``(logits, {layer: resid_post [B, T, d]})``
    with logits ``[B, vocab]`` at the last position (``all_logits``: ``[B, T, vocab]``); reads
    of ``resid_post`` and the embedding (layer ``-1``) come after the edit where it precedes them."""
    site, layer = check_edit_site(model, site, layer)
    r = model.arch.reads[site]
    unembed = _get(model.nn, unembed_path(model), envoy=True)
    saved: dict[int, Any] = {}
    mask = torch.ones(ids.shape, dtype=torch.long, device=model.device)
    # envoys looked up here: the trace body names no Model (a remote request ships what it names)
    blocks = [model._module(i, "") for i in range(model.n_layers)]
    edit_env, io, at_block_input = model._module(layer, r.module), r.io, r.io == "input" and not r.module
    with torch.no_grad(), model.nn.trace(ids.to(model.device), attention_mask=mask, remote=model.remote):
        for i, block in enumerate(blocks):
            edit_here = fn is not None and i == layer
            if edit_here and at_block_input:
                block.input = fn(block.input)
                edit_here = False
            if i == 0 and -1 in reads:
                saved[-1] = block.input.save()
            if edit_here:
                env = edit_env
                if io == "input":
                    env.input = fn(env.input)
                else:
                    v = env.output
                    env.output = (fn(v[0]), *v[1:]) if isinstance(v, tuple) else fn(v)
            if i in reads:
                out = block.output
                saved[i] = (out[0] if isinstance(out, tuple) else out).save()
        logits = unembed.output.save()
    lg = logits.detach().float().cpu()
    lg = lg if all_logits else lg[:, -1]
    return lg, {k: v.detach().float().cpu() for k, v in saved.items()}


def hooked_logits(model: Model, ids: torch.Tensor, site: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Last-position logits ``[B, vocab]`` with ``site`` at ``layer`` replaced by ``fn(value)``
    through a torch forward hook, differentiable with respect to whatever ``fn`` closes over."""
    site, layer = check_edit_site(model, site, layer)
    r = model.arch.reads[site]
    block = _get(model.hf, model.arch.layers)[layer]
    mod = _get(block, r.module) if r.module else block

    if r.io == "input":

        def pre(_m: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: fn(kwargs[key])}

        h = mod.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(_m: Any, _args: Any, out: Any) -> Any:
            return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

        h = mod.register_forward_hook(post)
    try:
        ids = ids.to(model.device)
        out = model.hf(ids, attention_mask=torch.ones_like(ids))
    finally:
        h.remove()
    return out.logits[:, -1].float()


def by_length(model: Model, texts: list[str]) -> tuple[list[torch.Tensor], dict[int, list[int]]]:
    """Token ids per text and the text indices grouped by token length (batches need no padding)."""
    ids = [model.to_tokens(t) for t in texts]
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        groups.setdefault(x.shape[1], []).append(i)
    return ids, groups


def pair_edits(
    pairs: Sequence[tuple[int, int]], ids: list[torch.Tensor], src: torch.Tensor, pos: list[int],
    edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Iterator[tuple[list[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]:
    """Interchange runs of ``(base, source)`` text pairs, batched by the base's token length:
    per batch the pairs' indices ``js``, the base token ids ``[n, T]`` and the write ``fn`` that
    sets each base's vector at ``pos[base]`` to ``edit(base vector, source vector)``, the source
    vector being ``src[source]`` (``[N, d]``, one read vector per text)."""
    groups: dict[int, list[int]] = {}
    for j, (b, _) in enumerate(pairs):
        groups.setdefault(ids[b].shape[1], []).append(j)
    for js in groups.values():
        base = torch.cat([ids[pairs[j][0]] for j in js])
        s = src[[pairs[j][1] for j in js]]
        p = torch.tensor([pos[pairs[j][0]] for j in js])
        bi = torch.arange(len(js))

        def fn(h: torch.Tensor, s: torch.Tensor = s, p: torch.Tensor = p, bi: torch.Tensor = bi) -> torch.Tensor:
            h = h.clone()
            h[bi, p] = edit(h[bi, p], s.to(h.dtype))
            return h

        yield js, base, fn


def single_token(model: Model, word: str, what: str) -> int:
    """The id of ``word`` as one token (no special tokens), or a ValueError naming ``what``."""
    if not isinstance(word, str) or word == "":
        raise ValueError(f"{what} must be a non-empty str, got {word!r}")
    ids = model.tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{what} {word!r} is {len(ids)} tokens for {model.name}; give a single-token answer (with its leading space)")
    return int(ids[0])


#: The answer tokens of the zoo's concept datasets (class 0, class 1).
ZOO_ANSWERS = {"sentiment": (" negative", " positive"), "truth": (" false", " true")}

def _resolve_answers(model: Model, dataset: ProbeDataset, answers: Sequence[str] | None) -> tuple[tuple[str, str], tuple[int, int]]:
    if answers is None:
        if dataset.name not in ZOO_ANSWERS:
            raise ValueError(f"give answers=(answer for class {dataset.classes[0]}, answer for class {dataset.classes[-1]}): the tokens whose logit difference is the behaviour")
        answers = ZOO_ANSWERS[dataset.name]
    if isinstance(answers, str) or len(answers) != 2:
        raise ValueError(f"answers must be two single-token strings (lower class first), got {answers!r}")
    a = (str(answers[0]), str(answers[1]))
    return a, (single_token(model, a[0], "answers[0]"), single_token(model, a[1], "answers[1]"))


def overlay_widget(probe_result: Any, name: str, overlay: dict[tuple[str, int], float], **kwargs: Any) -> Any:
    """Draw ``overlay`` (per-layer accuracies) as curve ``name`` on ``probe_result``'s
    ProbeAccuracy view (the layers it shares with the probe) and return the view."""
    if probe_result is None:
        raise ValueError("pass the ProbeResult of the same dataset, e.g. r.widget(mw.probe(model, dataset)): "
                         "this result is drawn as a curve on its axes")
    shared = {k: v for k, v in overlay.items() if k in probe_result.layers}
    if not shared:
        raise ValueError(f"none of this result's layers {sorted(overlay)} were probed in that ProbeResult "
                         f"({probe_result.layers})")
    probe_result.add_overlay(name, shared)
    return probe_result.widget(**kwargs)


def _layers_arg(model: Model, layers: Any) -> list[int]:
    if layers == "all":
        return [-1, *range(model.n_layers)]
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be 'all', an int or a non-empty list of ints (-1 = embedding), got {layers!r}")
    out = []
    for v in layers:
        if v != -1:
            model.check_layer(v)
        out.append(int(v))
    return out
