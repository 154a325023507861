"""LogitLens: layers × positions grid of the lens's top-1 tokens, shaded by probability.

Hover a cell for its top-k; click a position for the target token's probability across layers
(a line); switch between the logit lens and a tuned lens. See docs/widget_protocol.md
("LogitLens") for the traits, requests and DOM hooks.
"""

from __future__ import annotations

import threading
from typing import Any

import traitlets

from .. import wire
from ..core.description.lens import LENS_SITES, LensResult, TunedLens, _target_id, logit_lens
from ._base import Field, MIWidget, bundle, check_traits, request_handler
from .code import ShowsCode, logit_lens_code

LENSES = ("logit", "tuned")


class LogitLens(ShowsCode, MIWidget):
    """Interactive view of a :class:`~mi_widgets.core.description.lens.LensResult`.

    Grid: one row per lens row (``"embed"``, ``"resid_post 0"``, ...), one column per token;
    each cell shows the row's top-1 prediction at that position, shaded by its probability.
    Hover a cell → its top-k with probabilities. Click a cell or a token → the probability of
    the target token at that position across layers, as a line; the target is the model's final
    top-1 at that position unless a target token is chosen (``set_target`` / the view's box,
    one request, one trace). With a tuned lens (``tuned=`` or a tuned-lens result) the view
    switches between the logit and tuned lens (request ``"lens"``, one trace, then cached).

    ``LogitLens.from_result(result, tuned=None)``; ``result.widget()`` does the same.
    """

    _stem = "logit_lens"

    model_name = traitlets.Unicode("").tag(sync=True)
    text = traitlets.Unicode("").tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    layer_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    final_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    lens = traitlets.Unicode("logit").tag(sync=True)
    lenses = traitlets.List(traitlets.Unicode()).tag(sync=True)
    k = traitlets.Int(5).tag(sync=True)
    top_ids = traitlets.Dict().tag(sync=True)
    top_probs = traitlets.Dict().tag(sync=True)
    kl = traitlets.Dict().tag(sync=True)
    final_prob = traitlets.Dict().tag(sync=True)
    vocab = traitlets.Dict().tag(sync=True)
    target = traitlets.Unicode("").tag(sync=True)
    target_id = traitlets.Int(-1).tag(sync=True)
    target_prob = traitlets.Dict().tag(sync=True)
    selected_position = traitlets.Int(-1).tag(sync=True)
    can_compute = traitlets.Bool(False).tag(sync=True)
    status = traitlets.Unicode("ready").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, result: LensResult, *, tuned: TunedLens | None = None, **kwargs: Any) -> None:
        if not isinstance(result, LensResult):
            raise TypeError(f"LogitLens shows a LensResult, got {type(result).__name__}")
        if tuned is not None and not isinstance(tuned, TunedLens):
            raise ValueError(f"tuned must be a TunedLens, got {type(tuned).__name__}")
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._model = result.model
        self._tuned = tuned if tuned is not None else result.tuned
        self._sites = sorted({n.split(" ")[0] for n in result.layer_names[1:]}, key=LENS_SITES.index)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int | None], LensResult] = {(result.lens, result.target_id): result}
        super().__init__(**kwargs)
        lenses = ["logit"]
        if self._tuned is not None:
            if self._model is not None:
                self._tuned.check(self._model, result.layer_names)
            lenses.append("tuned")
        if result.lens == "tuned" and self._model is None:
            lenses = ["tuned"]
        with self.hold_trait_notifications():
            self.model_name = result.model_name
            self.text = result.text
            self.tokens = list(result.str_tokens)
            self.layer_names = list(result.layer_names)
            self.lenses = lenses
            self.can_compute = self._model is not None
            ids = result.final_ids or result.top_ids[-1, :, 0].tolist()
            self.final_tokens = [result.vocab.get(i, str(i)) for i in ids]
            self._show(result)

    @property
    def result(self) -> LensResult:
        """The result behind the current view (current lens and target)."""
        return self._result

    _write_code = staticmethod(logit_lens_code)  # code(): see ShowsCode

    _check = check_traits(
        selected_position=Field(int, min=-1, max=lambda w: len(w.tokens) - 1),
        k=Field(int, min=1, max=lambda w: w._result.top_ids.shape[-1] if hasattr(w, "_result") else 1000),
        lens=Field(str, choices=lambda w: w.lenses or LENSES),
    )

    # -- state ----------------------------------------------------------------------------

    @staticmethod
    def _payload(result: LensResult) -> dict:
        out = {
            "top_ids": wire.encode(result.top_ids, "int32"),
            "top_probs": wire.encode(result.top_probs, "float16"),
            "kl": wire.encode(result.kl, "float16"),
            "final_prob": wire.encode(result.final_prob, "float16") if result.final_prob is not None else {},
            "vocab": {str(i): t for i, t in result.vocab.items()},
            "target_prob": wire.encode(result.target_prob, "float16") if result.target_prob is not None else {},
        }
        return out

    def _show(self, result: LensResult) -> None:
        self._result = result
        with self.hold_trait_notifications():
            for name, value in self._payload(result).items():
                setattr(self, name, value)
            self.lens = result.lens
            self.k = result.k
            self.target = result.target or ""
            self.target_id = -1 if result.target_id is None else int(result.target_id)

    def _get(self, lens: str, target_id: int | None) -> LensResult:
        key = (lens, target_id)
        if key not in self._cache:
            if self._model is None:
                raise ValueError("this view has no model attached, so it cannot compute another lens or target")
            self._cache[key] = logit_lens(
                self._model,
                self.text,
                sites=self._sites,
                k=self._result.k if hasattr(self, "_result") else 5,
                target=target_id,
                lens=self._tuned if lens == "tuned" else None,
                # a view of a restricted lens keeps its restriction when it recomputes
                vocab=getattr(self._result, "vocab_ids", None) if hasattr(self, "_result") else None,
            )
        return self._cache[key]

    # -- Python API -------------------------------------------------------------------------

    def set_lens(self, lens: str) -> None:
        """Show the ``"logit"`` or ``"tuned"`` lens (the current target kept)."""
        if lens not in LENSES:
            raise ValueError(f"lens must be one of {list(LENSES)}, got {lens!r}")
        if lens not in self.lenses:
            raise ValueError(
                "this view has no tuned lens; pass tuned=train_tuned_lens(model) to result.widget()"
            )
        with self._lock:
            self._show(self._get(lens, self._result.target_id))

    def set_target(self, target: str | int | None) -> None:
        """Track ``target`` (a one-token string or an id; ``None``/``""``: the model's final top-1
        at each position) in the line of the clicked position."""
        if target == "" or target is None:
            tid = None
        else:
            if self._model is None:
                raise ValueError("this view has no model attached, so it cannot tokenize a new target")
            tid = _target_id(self._model, target)
        with self._lock:
            self._show(self._get(self._result.lens, tid))

    def target_line(self, position: int) -> list[float]:
        """The probabilities the line of ``position`` shows, one per row (float32, before the
        view's float16 transport)."""
        if not 0 <= position < len(self.tokens):
            raise ValueError(f"position must be in 0..{len(self.tokens) - 1}, got {position}")
        r = self._result
        src = r.target_prob if r.target_prob is not None else r.final_prob
        return [float(x) for x in src[:, position]]

    # -- requests ---------------------------------------------------------------------------

    @request_handler("lens", lens=Field(str))
    def _lens_request(self, msg: dict, progress: Any) -> dict:
        self._set_busy(lambda: self.set_lens(str(msg.get("lens", ""))))
        return {"lens": self.lens}

    @request_handler("target", token=Field(object))
    def _target_request(self, msg: dict, progress: Any) -> dict:
        token = msg.get("token", "")
        if not isinstance(token, (str, int)) or isinstance(token, bool):
            raise ValueError(f"token must be a string or a token id, got {token!r}")
        self._set_busy(lambda: self.set_target(token))
        return {"target": self.target, "target_id": self.target_id}

    def _set_busy(self, fn: Any) -> None:
        self.status = "loading"
        try:
            fn()
        except Exception as exc:
            self.status = "ready"
            self.error = str(exc)
            raise
        self.error = ""
        self.status = "ready"

    # -- static export ----------------------------------------------------------------------

    def _static_extra(self, budget: int) -> dict:
        """Both lenses' payloads (current target), so that a static copy can switch lens."""
        cache = {}
        for lens in self.lenses:
            try:
                cache[lens] = self._payload(self._get(lens, self._result.target_id))
            except ValueError:
                continue
        return {"lens_cache": cache}

    def _fallback_text(self) -> str:
        r = self._result
        return f"LogitLens · {r.model_name} · {r.lens} lens · {r.text!r}"
