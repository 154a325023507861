"""AttentionPatterns: every head as a thumbnail, sortable by a head score; click a head for its
full pattern (fetched on demand) with token labels; hover a token for its attention to and from
the others."""

from __future__ import annotations

import re
from typing import Any

import torch
import traitlets

from .. import wire
from ..core._checks import check_model
from ..core.description.attention import (
    SCORE_KINDS,
    AttentionResult,
    HeadScores,
    attention,
    head_scores,
)
from ..core.model import Model
from ._base import Field, MIWidget, bundle, check_traits, request_handler, trait_error
from .code import ShowsCode, attention_patterns_code

SORT_KEYS = ("layer", *SCORE_KINDS)
_HEAD_RE = re.compile(r"^(\d+)\.(\d+)$")


def thumbnails(patterns: torch.Tensor, size: int) -> torch.Tensor:
    """``[n_layers * n_heads, s, s]`` thumbnails of ``patterns`` ``[L, H, T, T]``, s = min(T, size).

    Each thumbnail pixel is the *maximum* attention in its block of (query, key) cells: a
    mean would dilute a one-cell-wide stripe (previous-token, induction) to invisibility at
    256 → 64, a max keeps it at full strength.
    """
    n_layers, n_heads, t, _ = patterns.shape
    s = max(1, min(t, int(size)))
    flat = patterns.reshape(n_layers * n_heads, 1, t, t).float()
    if s == t:
        return flat[:, 0].clone()
    return torch.nn.functional.adaptive_max_pool2d(flat, s)[:, 0]


class AttentionPatterns(ShowsCode, MIWidget):
    """Attention patterns of one text: all heads as thumbnails, one head in full.

    ``AttentionPatterns(model, text)`` runs :func:`mi_widgets.core.description.attention.attention`
    (``AttentionPatterns.from_result(result)`` / ``result.widget()`` reuse a result).

    Head scores for sorting (``sort_by``: ``"layer"`` or one of ``previous_token``,
    ``duplicate_token``, ``induction``, ``bos``):

    - ``scores="text"`` (default): scored on the displayed text itself
      (:func:`~mi_widgets.core.description.attention.score_patterns`). Induction and duplicate-token scores
      only exist where a token repeats in the text (NaN otherwise, sorted last).
    - ``scores="probe"``: :func:`~mi_widgets.core.description.attention.head_scores` on ``n`` seeded random
      repeated sequences (BOS + A + A), the standard way to find induction heads on any text;
      needs the model. A :class:`~mi_widgets.core.description.attention.HeadScores` may be passed instead.

    What reaches the browser first: the tokens, the scores, and uint8 thumbnails of every head
    (``thumb_size``² each, block-max pooled, one scale). A head's full ``[T, T]`` pattern is
    fetched (uint8 with its scale, error ≤ scale / 2) when it is selected. ``selected_head``
    (``"layer.head"``, ``""`` for none) and ``sort_by`` are traits to read, observe and set.
    """

    _stem = "attention_patterns"

    model_name = traitlets.Unicode("").tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    n_layers = traitlets.Int(0).tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    thumb_size = traitlets.Int(64).tag(sync=True)
    thumbs = traitlets.Dict().tag(sync=True)
    scores = traitlets.Dict().tag(sync=True)
    score_source = traitlets.Unicode("text").tag(sync=True)
    score_note = traitlets.Unicode("").tag(sync=True)
    sort_by = traitlets.Unicode("layer").tag(sync=True)
    selected_head = traitlets.Unicode("").tag(sync=True)
    #: a token position marked in the view (its query row and key column); -1 for none
    selected_position = traitlets.Int(-1).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: Model | None = None,
        text: str | None = None,
        *,
        result: AttentionResult | None = None,
        scores: str | HeadScores = "text",
        sort_by: str = "layer",
        selected_head: str | tuple[int, int] | None = None,
        thumb_size: int = 64,
        n: int = 20,
        seq_len: int = 20,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")
        if isinstance(thumb_size, bool) or not isinstance(thumb_size, int) or not 4 <= thumb_size <= 256:
            raise ValueError(f"thumb_size must be an int in 4..256, got {thumb_size!r}")
        if not isinstance(scores, HeadScores) and not (isinstance(scores, str) and scores in ("text", "probe")):
            raise ValueError(f"scores must be 'text', 'probe' or a HeadScores, got {scores!r}")
        if selected_head is not None:
            if isinstance(selected_head, tuple):
                ok = len(selected_head) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in selected_head)
                lh = selected_head if ok else None
            else:
                m_ = _HEAD_RE.match(selected_head) if isinstance(selected_head, str) else None
                lh = (int(m_.group(1)), int(m_.group(2))) if m_ else None
                ok = selected_head == "" or lh is not None
            dims = (result.patterns.shape[0], result.patterns.shape[1]) if result is not None else (
                (model.n_layers, model.n_heads) if isinstance(model, Model) else None
            )
            if not ok or (lh is not None and dims is not None and not (0 <= lh[0] < dims[0] and 0 <= lh[1] < dims[1])):
                lim = f" with layer < {dims[0]} and head < {dims[1]}" if dims else ""
                raise ValueError(
                    f"selected_head must be 'layer.head' or (layer, head){lim}, got {selected_head!r}"
                )
        if result is None:
            if model is None or text is None:
                raise ValueError("AttentionPatterns needs a model and a text (or result=)")
            check_model(model)
            if isinstance(scores, str) and scores == "probe":
                model.check_site("attn_pattern")
            result = attention(model, text)
        model = result.model if result.model is not None else model
        if isinstance(scores, str) and scores == "probe":
            if model is None:
                raise ValueError("scores='probe' needs the model (this result has none attached)")
            scores = head_scores(model, n=n, seq_len=seq_len, seed=seed)
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._result = result
        self._model = model
        n_layers, n_heads, t, _ = result.patterns.shape
        if isinstance(scores, HeadScores):
            if tuple(scores.values.shape) != (n_layers, n_heads):
                raise ValueError(
                    f"HeadScores over {tuple(scores.values.shape)} heads for patterns over {(n_layers, n_heads)}"
                )
            table, source = scores.scores, "probe"
            note = (
                f"scores on {scores.n} random repeated sequences (BOS + A + A, {scores.seq_len} "
                f"tokens each half, seed {scores.seed}), not on this text"
            )
        else:
            table, source = result.scores, "text"
            note = "scores on this text"
            missing = [k for k in SCORE_KINDS if torch.isnan(table[k]).all()]
            if missing:
                note += (
                    f"; {' and '.join(k.replace('_', '-') for k in missing)} need a repeated token "
                    "(none here): use scores='probe'"
                )
        super().__init__(
            model_name=result.model_name,
            tokens=list(result.str_tokens),
            n_layers=n_layers,
            n_heads=n_heads,
            thumb_size=min(thumb_size, t),
            thumbs=wire.quantize(thumbnails(result.patterns, thumb_size), 8),
            scores={k: wire.encode(v.float(), "float32") for k, v in table.items()},
            score_source=source,
            score_note=note,
            sort_by=sort_by,
            **kwargs,
        )
        if isinstance(selected_head, tuple):
            self.select(*selected_head)
        elif selected_head is not None:
            self.selected_head = selected_head

    @classmethod
    def from_result(cls, result: AttentionResult, **kwargs: Any) -> AttentionPatterns:
        return cls(result=result, **kwargs)

    _write_code = staticmethod(attention_patterns_code)  # code(): see ShowsCode

    @property
    def selected(self) -> tuple[int, int] | None:
        """``(layer, head)`` of ``selected_head``, or ``None``."""
        m = _HEAD_RE.match(self.selected_head)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def select(self, layer: int, head: int) -> None:
        """Show head ``layer.head`` in full (same as clicking its thumbnail)."""
        self.selected_head = f"{int(layer)}.{int(head)}"

    def sorted_heads(self, by: str | None = None) -> list[str]:
        """Heads (``"L.H"``) in the order the view shows them for ``by`` (default ``sort_by``):
        layer order, or the score descending with NaN last (ties in layer order)."""
        by = by or self.sort_by
        heads = [f"{layer}.{h}" for layer in range(self.n_layers) for h in range(self.n_heads)]
        if by == "layer":
            return heads
        v = wire.decode(self.scores[by]).reshape(-1)
        key = [(-float(x) if x == x else float("inf"), i) for i, x in enumerate(v)]
        return [heads[i] for _, i in sorted(key)]

    _check = check_traits(
        sort_by=Field(str, choices=SORT_KEYS),
        selected_position=Field(int, min=-1, max=lambda w: len(w.tokens) - 1),
    )

    @traitlets.validate("selected_head")
    def _check_head(self, proposal: Any) -> str:
        v = proposal["value"]
        if v == "":
            return v
        m = _HEAD_RE.match(v)
        if not m or int(m.group(1)) >= self.n_layers or int(m.group(2)) >= self.n_heads:
            raise trait_error(
                "selected_head", f"'layer.head' with layer < {self.n_layers} and head < {self.n_heads} "
                "(or '' for none)", v,
            )
        return v

    # -- data --------------------------------------------------------------------------

    def head_pattern(self, layer: int, head: int) -> dict:
        """The full pattern ``[T, T]`` (query, key) of one head as a uint8 wire array with its
        scale and offset (``|decoded - exact| <= scale / 2``)."""
        for name, v, hi in (("layer", layer, self.n_layers), ("head", head, self.n_heads)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < hi:
                raise ValueError(f"{name} must be an int in 0..{hi - 1}, got {v!r}")
        return wire.quantize(self._result.patterns[layer, head], 8)

    @request_handler("head", layer=Field(int, required=True, min=0), head=Field(int, required=True, min=0))
    def _head(self, msg: dict, progress: Any) -> tuple[dict, list]:
        layer, head = msg.get("layer"), msg.get("head")
        pattern = self.head_pattern(layer, head)
        buffer = pattern.pop("buffer")
        return {"layer": layer, "head": head, "pattern": pattern}, [buffer]

    # -- static export ----------------------------------------------------------------

    #: thumbnail side in the static copy kept in a notebook's outputs (which should stay small)
    _repr_thumb = 32

    def _static_extra(self, budget: int) -> dict:
        """The selected head's full pattern (a static copy cannot fetch others); in the copy kept
        in a notebook's outputs (``budget`` below the export's), thumbnails of at most 32²."""
        sel = self.selected
        extra: dict = {"head_cache": {} if sel is None else {self.selected_head: self.head_pattern(*sel)}}
        if budget < self._static_budget["export"] and self.thumb_size > self._repr_thumb:
            extra["thumbs"] = wire.quantize(thumbnails(self._result.patterns, self._repr_thumb), 8)
            extra["thumb_size"] = self._repr_thumb
        return extra

    def _fallback_text(self) -> str:
        return (
            f"AttentionPatterns · {self.model_name} · {self.n_layers} layers × {self.n_heads} heads · "
            f"{len(self.tokens)} tokens\n" + "".join(self.tokens)
        )
