"""Patchscope: click a (layer, position) of a source prompt, read what the state decodes to.

See docs/widget_protocol.md ("Patchscope", section in the report of this view) and
``mi_widgets.core.description.patchscopes`` for the method.

Traits (snake_case, same names in TS):

- ``source_prompt`` / ``source_tokens``: the source text and its tokens (shown literally);
- ``target_prompt`` / ``target_tokens`` / ``target_position``: the inspection prompt, its tokens
  and the position that gets the patched state;
- ``n_layers``: residual layers ``0..n_layers`` are rows of the grid (``n_layers`` = after the
  last block); ``target_layers``: the target layers each click decodes at;
- ``selected_layer`` / ``selected_position``: the clicked source cell (``-1`` for none);
- ``decoded`` (``list[str]``, one per target layer) and ``decoded_probs`` (first token's
  probability): what the selected cell decodes to; ``baseline``: the unpatched continuation;
- ``done_cells``: ``"layer,position"`` of every cell computed so far (cached);
- ``status`` (``ready``/``loading``/``error``), ``progress`` (0..1), ``error``;
- static copies also carry ``decoded_cache``: ``{"layer,position": {"texts", "probs"}}`` for the
  computed cells (up to the export budget).

Request ``"decode"`` ``{layer, position}`` → ``{layer, position, texts, probs}``: one batched
generation over the target layers (progress reported per batch), cached per cell.
"""

from __future__ import annotations

import math
from typing import Any

import traitlets

from ..core.description.patchscopes import PatchscopeResult, inspection_prompt, patchscope
from ..core.model import Model
from ._base import Field, Items, MIWidget, ReportsWork, bundle, check_traits, request_handler
from .code import ShowsCode, patchscope_code


class Patchscope(ShowsCode, ReportsWork, MIWidget):
    """A layers × positions grid over the source prompt's tokens; click a cell to decode that
    residual state through the inspection prompt at every target layer (one batched nnsight
    generation, run in Python on request and cached).

    ``Patchscope(model, "The Eiffel Tower is in")``; ``PatchscopeResult.widget()`` builds one
    from a result (its cells are pre-filled). ``w.decode(layer, position)`` does from Python
    what a click does; ``w.precompute()`` fills every cell (so that ``to_html()`` carries them).
    """

    _stem = "patchscope"

    source_prompt = traitlets.Unicode("").tag(sync=True)
    source_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    target_prompt = traitlets.Unicode("").tag(sync=True)
    target_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    target_position = traitlets.Int(0).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    target_layers = Items(traitlets.Int()).tag(sync=True)
    n_tokens = traitlets.Int(4).tag(sync=True)
    selected_layer = traitlets.Int(-1).tag(sync=True)
    selected_position = traitlets.Int(-1).tag(sync=True)
    decoded = traitlets.List(traitlets.Unicode()).tag(sync=True)
    decoded_probs = traitlets.List(traitlets.Float()).tag(sync=True)
    baseline = traitlets.Unicode("").tag(sync=True)
    done_cells = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(
        self,
        model: Model,
        source: str,
        *,
        target_prompt: str | None = None,
        target_position: int | None = None,
        target_layers: Any = "all",
        n_tokens: int = 4,
        layer: int | None = None,
        position: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        if not isinstance(model, Model):
            raise ValueError(f"Patchscope needs a mi_widgets Model, got {type(model).__name__}")
        if target_prompt is None:
            target_prompt, default_pos = inspection_prompt(model)
            target_position = default_pos if target_position is None else target_position
        self._model = model
        self._memo: dict[tuple[int, int], tuple[list[str], list[float]]] = {}
        super().__init__(**kwargs)
        src_ids = model.to_tokens(source)
        tgt_ids = model.to_tokens(target_prompt)
        t_pos = -1 if target_position is None else target_position
        if isinstance(t_pos, bool) or not isinstance(t_pos, int) or not -tgt_ids.shape[1] <= t_pos < tgt_ids.shape[1]:
            raise ValueError(
                f"target_position must be an int in {-tgt_ids.shape[1]}..{tgt_ids.shape[1] - 1}, got {target_position!r}"
            )
        tl = list(range(model.n_layers + 1)) if target_layers == "all" else target_layers
        if isinstance(tl, int) and not isinstance(tl, bool):
            tl = [tl]
        if not isinstance(tl, (list, tuple, range)) or not tl or any(
            isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= model.n_layers for x in tl
        ):
            raise ValueError(f"target_layers must be 'all' or a non-empty list of ints in 0..{model.n_layers}")
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or not 1 <= n_tokens <= 64:
            raise ValueError(f"n_tokens must be an int in 1..64, got {n_tokens!r}")
        with self.hold_trait_notifications():
            self.source_prompt = source
            self.source_tokens = model.to_str_tokens(src_ids)
            self.target_prompt = target_prompt
            self.target_tokens = model.to_str_tokens(tgt_ids)
            self.target_position = t_pos % tgt_ids.shape[1]
            self.n_layers = model.n_layers
            self.target_layers = list(tl)
            self.n_tokens = n_tokens
        if layer is not None or position is not None:
            self.decode(model.n_layers if layer is None else layer, -1 if position is None else position)

    _check = check_traits(
        # rows 0..n_layers (n_layers: after the last block); -1: none selected
        selected_layer=Field(int, min=-1, max=lambda w: w.n_layers),
        selected_position=Field(int, min=-1, max=lambda w: len(w.source_tokens) - 1),
        target_position=Field(int, min=0, max=lambda w: max(len(w.target_tokens) - 1, 0)),
        target_layers=Field(list, min=1, max=10_000, items=Field(int, min=0, max=lambda w: w.n_layers)),
        n_tokens=Field(int, min=1, max=64),
    )

    @classmethod
    def from_result(cls, result: PatchscopeResult, **kwargs: Any) -> Patchscope:
        """A view of ``result``'s source and inspection prompts. With a source × target table
        the result's cells are pre-filled; the first source layer is selected."""
        if result.model is None:
            raise ValueError("this PatchscopeResult has no model attached; the view needs one")
        kwargs.setdefault("target_layers", result.target_layers if result.target_layers is not None else "all")
        w = cls(
            result.model, result.source_text, target_prompt=result.target_prompt,
            target_position=result.target_position, n_tokens=result.n_tokens, **kwargs,
        )
        w.baseline = result.baseline
        if result.target_layers is not None and list(result.target_layers) == w.target_layers:
            for i, sl in enumerate(result.source_layers):
                w._memo[(sl, result.source_position)] = (
                    list(result.texts[i]), [float(p) for p in result.first_prob[i].tolist()]
                )
            w.done_cells = [f"{lay},{pos}" for lay, pos in w._memo]
            w._select(result.source_layers[0], result.source_position)
        return w

    _write_code = staticmethod(patchscope_code)  # code(): see ShowsCode

    # -- compute -------------------------------------------------------------------------

    def _select(self, layer: int, position: int) -> None:
        texts, probs = self._memo[(layer, position)]
        with self.hold_trait_notifications():
            self.selected_layer, self.selected_position = layer, position
            self.decoded, self.decoded_probs = texts, probs

    def decode(self, layer: int, position: int, progress: Any = None) -> dict:
        """Decode the source state at ``(layer, position)`` at every target layer (cached);
        selects that cell. Returns ``{layer, position, texts, probs}``."""
        n_src = len(self.source_tokens)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be an int in 0..{self.n_layers} (resid_pre; {self.n_layers} = after the last block), got {layer!r}")
        if isinstance(position, bool) or not isinstance(position, int) or not -n_src <= position < n_src:
            raise ValueError(f"position must be an int in {-n_src}..{n_src - 1}, got {position!r}")
        position %= n_src
        key = (layer, position)
        if key not in self._memo:
            self.status, self.progress, self.error = "loading", 0.0, ""

            def report(done: int, total: int) -> None:
                self.progress = done / max(total, 1)
                if progress is not None:
                    progress(done, total)

            try:
                rows = len(self.target_layers) + 1
                r = patchscope(
                    self._model, self.source_prompt, [layer], position,
                    target_prompt=self.target_prompt, target_position=self.target_position,
                    target_layers=list(self.target_layers), n_tokens=self.n_tokens,
                    batch_size=max(1, math.ceil(rows / 4)), progress=report,
                )
            except Exception as exc:
                self.status, self.error, self.progress = "error", str(exc), 1.0
                raise
            self._memo[key] = (list(r.texts[0]), [float(p) for p in r.first_prob[0].tolist()])
            with self.hold_trait_notifications():
                self.baseline = r.baseline
                self.done_cells = [*self.done_cells, f"{layer},{position}"]
                self.status, self.progress = "ready", 1.0
        self._select(layer, position)
        texts, probs = self._memo[key]
        return {"layer": layer, "position": position, "texts": texts, "probs": probs}

    def precompute(self, progress: Any = None) -> None:
        """Decode every (layer, position) cell (so that a static export carries them all)."""
        n = (self.n_layers + 1) * len(self.source_tokens)
        done = 0
        sel = (self.selected_layer, self.selected_position)
        for p in range(len(self.source_tokens)):
            for layer in range(self.n_layers + 1):
                self.decode(layer, p)
                done += 1
                if progress is not None:
                    progress(done, n)
        if sel[0] >= 0:
            self._select(*sel)

    @request_handler("decode")
    def _decode(self, msg: dict, progress: Any) -> dict:
        try:
            layer, position = int(msg["layer"]), int(msg["position"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"decode needs integer 'layer' and 'position', got {msg!r}") from None
        return self.decode(layer, position, progress=progress)

    # -- static export ----------------------------------------------------------------

    def _static_extra(self, budget: int) -> dict:
        keys = list(self._memo)
        sel = (self.selected_layer, self.selected_position)
        keys = ([sel] if sel in self._memo else []) + [k for k in keys if k != sel]
        cache = {
            f"{lay},{pos}": {"texts": self._memo[(lay, pos)][0], "probs": self._memo[(lay, pos)][1]}
            for lay, pos in keys[: max(budget, 1)]
        }
        return {"decoded_cache": cache, "done_cells": list(cache)}

    def _fallback_text(self) -> str:
        lines = [f"Patchscope · {''.join(self.source_tokens)}"]
        if self.selected_layer >= 0:
            lines.append(f"source layer {self.selected_layer}, position {self.selected_position}:")
            lines += [f"  target layer {tl}: {t}" for tl, t in zip(self.target_layers, self.decoded)]
        return "\n".join(lines)
