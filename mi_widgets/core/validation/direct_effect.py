"""The direct effect of a head: path patching from the head to the logits.

:func:`direct_effect` ablates one head (zero, mean or resample, as
:func:`~mi_widgets.core.interventions.ablation.ablate`) while every head in later layers is frozen
at its clean output, so a backup head that would notice the ablation and repair it (self-repair,
as in ``zoo:ioi_backup``) cannot. Compare it with the plain ablation: where they differ, something
downstream compensates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from .._checks import check_model
from ..interventions.ablation import AblationResult
from ..interventions.batching import _groups, _progress
from ..interventions.checks import _check_lm, _check_prompts, _tokens
from ..interventions.path_patching import _head
from ..metrics import Metric, as_metric
from ..model import Model
from ._run import _check_local, _run


def direct_effect(
    model: Model,
    prompts: str | Sequence[str],
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    head: str,
    kind: Literal["zero", "mean", "resample"] = "resample",
    reference: str | Sequence[str] | None = None,
    *,
    progress: bool = True,
) -> AblationResult:
    """The metric with ``head`` ablated (``kind`` as in :func:`~mi_widgets.core.interventions.ablation.ablate`)
    while every head in later layers is frozen at its clean output: path patching from ``head``
    to the logits (its direct effect). Unlike a plain ablation this cannot be undone by a backup
    head that notices the ablation. Returns an ``AblationResult`` whose ``kind`` says
    ``"<kind>, later heads frozen"``."""
    check_model(model)
    _check_lm(model)
    _check_local(model, "direct_effect")
    prompt_l = _check_prompts(prompts, "prompts")
    layer, h = _head(model, head, "head")
    if kind not in ("zero", "mean", "resample"):
        raise ValueError(f"kind must be 'zero', 'mean' or 'resample', got {kind!r}")
    if kind == "resample" and reference is None:
        raise ValueError("kind='resample' needs reference prompts (reference=[...])")
    m = as_metric(metric).bind(model)
    m.check_batch(len(prompt_l))
    toks = _tokens(model, prompt_l, "prompts")
    ref_l = _check_prompts(reference, "reference") if reference is not None else None
    ref_toks = _tokens(model, ref_l, "reference") if ref_l is not None else None
    if kind == "resample":
        assert ref_toks is not None
        for i, a in enumerate(toks):
            r = ref_toks[i % len(ref_toks)]
            if r.shape[1] != a.shape[1]:
                raise ValueError(
                    f"prompts[{i}] and reference[{i % len(ref_toks)}] tokenise to different "
                    f"lengths ({a.shape[1]} vs {r.shape[1]}); resampling needs equal lengths"
                )
    dh, n_layers = model.d_head, model.n_layers
    sl = slice(h * dh, (h + 1) * dh)

    def capture(ids: torch.Tensor, layers: list[int]) -> tuple[dict[int, torch.Tensor], Any]:
        zs: dict[int, torch.Tensor] = {}

        def keep(li: int) -> Callable[[torch.Tensor], torch.Tensor]:
            def fn(z: torch.Tensor) -> torch.Tensor:
                zs[li] = z.detach().clone()
                return z

            return fn

        out = _run(model, ids, {li: keep(li) for li in layers})
        return zs, out

    mean_z = None
    if kind == "mean":
        src = ref_toks if ref_toks is not None else toks
        tot, cnt = torch.zeros(dh), 0
        for _t, idx in _groups([a.shape[1] for a in src]).items():
            zs, _ = capture(torch.cat([src[i] for i in idx]), [layer])
            tot += zs[layer][..., sl].float().sum((0, 1)).cpu()
            cnt += len(idx) * _t
        mean_z = tot / cnt

    groups = _groups([a.shape[1] for a in toks])
    clean = torch.zeros(len(prompt_l))
    ablated = torch.zeros(len(prompt_l))
    bar = _progress(len(groups), progress, f"direct effect of {head}")
    try:
        for _t, idx in groups.items():
            ids = torch.cat([toks[i] for i in idx])
            zs, out = capture(ids, list(range(layer, n_layers)))
            logits = out.logits[:, -1].float()
            rows = torch.tensor(idx)
            clean[rows] = m(logits, pairs=rows.to(logits.device), clean_logits=logits).float().cpu()
            if kind == "zero":
                val: torch.Tensor = torch.zeros(dh)
            elif kind == "mean":
                assert mean_z is not None
                val = mean_z
            else:
                assert ref_toks is not None
                rz, _ = capture(torch.cat([ref_toks[i % len(ref_toks)] for i in idx]), [layer])
                val = rz[layer][..., sl]

            def at_sender(z: torch.Tensor, val: torch.Tensor = val) -> torch.Tensor:
                z = z.clone()
                z[..., sl] = val.to(z.device, z.dtype)
                return z

            pre: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {layer: at_sender}
            for li in range(layer + 1, n_layers):
                pre[li] = lambda z, li=li, zs=zs: zs[li].to(z.dtype)
            lg = _run(model, ids, pre).logits[:, -1].float()
            ablated[rows] = m(lg, pairs=rows.to(lg.device), clean_logits=logits).float().cpu()
            bar.update(1)
    finally:
        bar.close()
    return AblationResult(
        model_name=model.name,
        kind=f"{kind}, later heads frozen",
        metric_name=m.name,
        components=[f"{layer}.{h}"],
        prompts=prompt_l,
        clean=clean,
        ablated=ablated,
        model=model,
        reference=ref_l,
    )


__all__ = ["direct_effect"]
