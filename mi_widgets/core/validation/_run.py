"""Forward passes with a head's output replaced: by a function of it, by a hand-set attention
pattern over its own values, or (for :func:`~.direct_effect.direct_effect`) with later heads frozen.

These hook the torch modules directly, as path patching does: the replacement needs the head's
values (a slice of the query/key/value projection) inside the same forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..interventions.path_patching import _receiver_columns
from ..model import Model, _get
from ..model.remote import require_local


def _run(
    model: Model,
    ids: torch.Tensor,
    pre: dict[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    post: dict[tuple[int, str], Callable[[torch.Tensor], Any]] | None = None,
    attentions: bool = False,
) -> Any:
    """The Hugging Face output of one forward on ``ids`` ``[B, T]``. ``pre``: layer -> fn(z) on
    the attention output projection's input (all heads, ``[B, T, n_heads * d_head]``); ``post``:
    (layer, module path in the block) -> fn(output) (return ``None`` to keep the output)."""
    blocks = _get(model.hf, model.arch.layers)
    hooks = []
    try:
        for layer, fn in (pre or {}).items():
            hooks.append(
                _get(blocks[layer], model.arch.o_proj).register_forward_pre_hook(
                    lambda _m, a, fn=fn: (fn(a[0]), *a[1:])
                )
            )
        for (layer, mod), fn in (post or {}).items():
            hooks.append(
                _get(blocks[layer], mod).register_forward_hook(lambda _m, _a, o, fn=fn: fn(o))
            )
        ids = ids.to(model.device)
        with torch.no_grad():
            return model.hf(ids, attention_mask=torch.ones_like(ids), output_attentions=attentions)
    finally:
        for h in hooks:
            h.remove()


def _check_local(model: Model, what: str) -> None:
    require_local(model, what, "it hooks the torch modules; load the model without remote= to run it")
    if model.arch.o_proj is None:
        raise ValueError(f"{what} needs attention heads; {model.name} has no output projection")


def run_head_replaced(
    model: Model,
    ids: torch.Tensor,
    head: tuple[int, int],
    *,
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    pattern: torch.Tensor | None = None,
) -> Any:
    """Forward with head ``(layer, h)``'s output ``z`` ``[B, T, d_head]`` replaced by ``fn(z)``, or by
    ``pattern @ v`` with ``pattern`` ``[B, T, T]`` (query, key) and ``v`` the head's own values."""
    layer, h = head
    dh = model.d_head
    sl = slice(h * dh, (h + 1) * dh)
    store: dict[str, torch.Tensor] = {}
    post = {}
    if pattern is not None:
        ((mod, cols),) = _receiver_columns(model, h, ["v"])
        cols = cols.to(model.device)

        def save_v(out: Any) -> None:
            o = out[0] if isinstance(out, tuple) else out
            store["v"] = o[..., cols].detach()

        post[(layer, mod)] = save_v

    def replace(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        if pattern is not None:
            p = pattern.to(z.device, torch.float32)
            z[..., sl] = torch.einsum("bqk,bkd->bqd", p, store["v"].float()).to(z.dtype)
        else:
            assert fn is not None
            new = torch.as_tensor(fn(z[..., sl].clone()))
            if new.shape != z[..., sl].shape:
                raise ValueError(
                    f"the replacement function must return the head's output shape "
                    f"{list(z[..., sl].shape)}, got {list(new.shape)}"
                )
            z[..., sl] = new.to(z.device, z.dtype)
        return z

    return _run(model, ids, {layer: replace}, post)


__all__ = ["run_head_replaced"]
