"""TokenActivations: texts coloured by a unit's activation; click a token for its top units."""

from __future__ import annotations

import json
from typing import Any

import torch
import traitlets

from .. import wire
from ..core._checks import check_model, check_positive_int
from ..core.decomposition.activations import TokenActivationsResult, token_activations
from ..core.model import TOKEN_SITES, Model
from ._base import Field, MIWidget, bundle, check_traits, request_handler, script_json
from .code import ShowsCode, token_activations_code


class TokenActivations(ShowsCode, MIWidget):
    """Tokens of one or more texts coloured by a neuron, dimension, head or direction.

    ``TokenActivations(model, "some text", site="mlp_post", layer=0)``; ``unit=`` picks the
    colouring unit (an int) or a direction (a vector over the site's units, e.g. a probe
    direction on ``resid_post``). Hover a token for its exact value; click it for its top-k
    units; click a unit to recolour. ``selected_token`` (flat index over the texts) and
    ``selected_unit`` are traits to read, observe and set; so are ``layer`` and ``site``
    (setting them recomputes with one nnsight trace). ``window=``/``stride=`` run texts longer
    than the model's context in overlapping windows (see :func:`mi_widgets.token_activations`).

    Long texts stay cheap in the browser: only the tokens in and near the scrolled viewport are
    rendered, and the static copy kept in a notebook's outputs holds at most ``COPY_BYTES`` of
    state (for a longer view, its first tokens, with a note saying so).
    """

    #: the static copy in a notebook's outputs keeps its state under this many bytes as the
    #: .ipynb stores it (JSON inside a JSON string); with the bundle and the saved-view output
    #: the cell's outputs stay under 200 kB
    COPY_BYTES = 130_000
    #: bytes of cached unit values (uint8, one per token and unit) in the copy in a notebook's
    #: outputs (and its saved-view output) and in a full export (``to_html``, ``export_html``)
    CACHE_BYTES = {"repr": 24_000, "export": 2_000_000}

    _stem = "token_activations"

    texts = traitlets.List(traitlets.List(traitlets.Unicode())).tag(sync=True)
    site = traitlets.Unicode("mlp_post").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    sites = traitlets.List(traitlets.Unicode()).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    n_units = traitlets.Int(0).tag(sync=True)
    unit_kind = traitlets.Unicode("neuron").tag(sync=True)
    values = traitlets.Dict().tag(sync=True)
    topk_indices = traitlets.Dict().tag(sync=True)
    topk_values = traitlets.Dict().tag(sync=True)
    selected_token = traitlets.Int(-1).tag(sync=True)
    selected_unit = traitlets.Int(-1).tag(sync=True)
    unit_label = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("ready").tag(sync=True)
    progress = traitlets.Float(1.0).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    k = traitlets.Int(10).tag(sync=True)

    def __init__(
        self,
        model: Model | None = None,
        texts: str | list[str] | None = None,
        site: str = "mlp_post",
        layer: int = 0,
        *,
        unit: int | torch.Tensor | None = None,
        unit_label: str | None = None,
        k: int = 10,
        result: TokenActivationsResult | None = None,
        dictionary: Any = None,
        window: int | None = None,
        stride: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        check_positive_int(k, "k")
        if result is not None and not isinstance(result, TokenActivationsResult):
            raise TypeError(
                f"result must be a TokenActivationsResult (from mw.token_activations or "
                f"mw.attribute), got {type(result).__name__}"
            )
        if result is None:
            if model is None or texts is None:
                raise ValueError("TokenActivations needs a model and texts (or result=)")
            check_model(model)
            if unit is not None and not isinstance(unit, torch.Tensor):
                if isinstance(unit, bool) or not isinstance(unit, int):
                    raise TypeError(f"unit must be an int (a unit index) or a direction tensor, got {type(unit).__name__}")
                s_, l_ = (dictionary.site, dictionary.layer) if dictionary is not None else (site, layer)
                model.check_site(s_, l_)
                n = dictionary.d_sae if dictionary is not None else model.site_width(s_)
                if not 0 <= unit < n:
                    raise ValueError(f"unit {unit} is out of range: {s_} at layer {l_} has {n} units (0..{n - 1})")
            direction = unit if isinstance(unit, torch.Tensor) else None
            if dictionary is not None:  # its features are the units, at its own site and layer
                site, layer = dictionary.site, dictionary.layer
            result = token_activations(
                model, texts, site, layer, direction=direction,
                direction_label=unit_label or "direction", dictionary=dictionary,
                window=window, stride=stride,
            )
        self._result = result
        self._model = result.model if result.model is not None else model
        self._updating = False
        super().__init__(k=k, **kwargs)
        n_layers = self._model.n_layers if self._model is not None else result.layer + 1
        sites = [s for s in TOKEN_SITES if self._model is None or s in self._model.sites]
        # notifications fire when the with-block exits: keep _updating set until then, so
        # the initial site/layer do not trigger a reload
        self._updating = True
        try:
            with self.hold_trait_notifications():
                self.n_layers = n_layers
                self.sites = sites
                self.texts = result.str_tokens
                self._show(result, unit if not isinstance(unit, torch.Tensor) else None)
        finally:
            self._updating = False

    @classmethod
    def from_result(cls, result: TokenActivationsResult, **kwargs: Any) -> TokenActivations:
        unit = kwargs.pop("unit", result.direction)
        return cls(result=result, unit=unit, unit_label=result.direction_label, **kwargs)

    @property
    def result(self) -> TokenActivationsResult:
        """The activations behind the current view."""
        return self._result

    def code(self) -> str:
        """Plain nnsight code (mi_widgets only loads the model) that computes what this view
        shows; its last lines print those numbers. The view's "code" button shows it."""
        return token_activations_code(self)

    @property
    def selected_position(self) -> tuple[int, int, str] | None:
        """``(text index, position, token string)`` of ``selected_token``, or ``None``."""
        i = self.selected_token
        if i < 0:
            return None
        for t, off in reversed(list(enumerate(self._result.offsets))):
            if i >= off:
                return t, i - off, self.texts[t][i - off]
        return None

    # -- state updates -------------------------------------------------------------------

    def _default_unit(self, result: TokenActivationsResult) -> int:
        if 0 <= self.selected_token < result.acts.shape[0]:
            return int(result.acts[self.selected_token].argmax())
        return int(result.acts.max(0).values.argmax())

    def _show(self, result: TokenActivationsResult, unit: int | None) -> None:
        """Push a result to the traits (inside ``_updating``)."""
        self._result = result
        self.site = result.site
        self.layer = result.layer
        self.n_units = result.n_units
        self.unit_kind = result.unit_kind
        idx, vals = result.topk(self.k)
        # unit indices fit uint16 for every site but the widest dictionaries: half of int32
        self.topk_indices = wire.encode(idx, "uint16" if result.n_units <= 65535 else "int32")
        self.topk_values = wire.encode(vals, "float16")
        if self.selected_token >= result.acts.shape[0]:
            self.selected_token = -1
        if unit is None and result.direction is not None:
            self.selected_unit = -1
            self.unit_label = f"direction: {result.direction_label}"
            self.values = wire.encode(result.unit_values(result.direction), "float32")
        else:
            unit = self._default_unit(result) if unit is None else unit
            self._set_unit(unit)

    def _set_unit(self, unit: int) -> None:
        values = self._result.unit_values(unit)  # validates
        self.selected_unit = unit
        self.unit_label = f"{self._result.unit_kind} {unit}"
        self.values = wire.encode(values, "float32")

    _check = check_traits(
        k=Field(int, min=1, max=10_000),
        selected_unit=Field(int, min=-1, max=lambda w: w.n_units - 1 if w.n_units > 0 else 10**9),
        layer=Field(int, min=0, max=lambda w: max(0, w.n_layers - 1)),
    )

    @traitlets.validate("selected_token")
    def _check_token(self, proposal: Any) -> int:
        v = proposal["value"]
        n = sum(len(t) for t in self.texts) if self.texts else 0
        if v < -1 or (n and v >= n):
            raise traitlets.TraitError(f"selected_token must be -1 or in 0..{n - 1}, got {v}")
        return v

    @traitlets.observe("selected_unit")
    def _on_unit(self, change: dict) -> None:
        if self._updating:
            return
        unit = change["new"]
        if unit < 0:
            if self._result.direction is None:
                return
            self._updating = True
            try:
                self.unit_label = f"direction: {self._result.direction_label}"
                self.values = wire.encode(self._result.unit_values(self._result.direction), "float32")
            finally:
                self._updating = False
            return
        self._updating = True
        try:
            self._set_unit(unit)
        except ValueError as exc:
            self.error = str(exc)
            self.selected_unit = change["old"]
        finally:
            self._updating = False

    @traitlets.observe("layer", "site")
    def _on_layer_site(self, change: dict) -> None:
        if self._updating:
            return
        self.load(site=self.site, layer=self.layer)

    def load(self, site: str | None = None, layer: int | None = None, progress: Any = None) -> None:
        """Recompute the view for another site/layer (one nnsight trace per text).

        Validation errors are raised (and shown in the view) before any forward pass; the
        view keeps its previous data when anything fails.
        """
        old = self._result
        site = old.site if site is None else site
        layer = old.layer if layer is None else layer
        if self._model is None:
            raise ValueError("this view has no model attached (it was built from a bare result)")
        self._updating = True
        try:
            self.status, self.progress, self.error = "loading", 0.0, ""
            if old.dictionary is not None and (site, layer) != (old.site, old.layer):
                raise ValueError(
                    f"this view shows the features of a dictionary trained on {old.site} layer {old.layer}; "
                    "open a TokenActivations without dictionary= to look at other sites and layers"
                )

            def report(done: int, total: int) -> None:
                self.progress = done / max(total, 1)
                if progress is not None:
                    progress(done, total)

            direction = old.direction
            if direction is not None and (site != old.site or self._model.site_width(site) != direction.shape[0]):
                direction = None
            result = token_activations(
                self._model, old.texts, site, layer, direction=direction,
                direction_label=old.direction_label, dictionary=old.dictionary, progress=report,
                window=old.window, stride=old.stride,
            )
            keep_direction = direction is not None and self.selected_unit < 0
            with self.hold_trait_notifications():
                self._show(result, None if keep_direction else self._default_unit(result))
                self.status, self.progress = "ready", 1.0
        except Exception as exc:
            with self.hold_trait_notifications():
                self.site, self.layer = old.site, old.layer
                self.status, self.error, self.progress = "error", str(exc), 1.0
            raise
        finally:
            self._updating = False

    @request_handler("fetch", site=Field(str), layer=Field(int))
    def _fetch(self, msg: dict, progress: Any) -> dict:
        site = msg.get("site", self.site)
        layer = msg.get("layer", self.layer)
        if not isinstance(layer, int):
            try:
                layer = int(layer)
            except (TypeError, ValueError):
                raise ValueError(f"layer must be an int, got {layer!r}") from None
        self.load(site=site, layer=layer, progress=progress)
        return {"site": self.site, "layer": self.layer, "n_units": self.n_units}

    # -- static export ----------------------------------------------------------------

    def _cache_units(self, budget: int, n_tokens: int) -> list[int]:
        """The units whose values a static copy carries: those that appear most often in the
        top-k lists (and the selected unit), at most ``budget`` of them and at most the byte
        cap of that kind of copy (``CACHE_BYTES``: one byte per token and unit)."""
        kind = "repr" if budget <= self._static_budget["repr"] else "export"
        cap = max(1, self.CACHE_BYTES[kind] // max(n_tokens, 1))
        idx = wire.decode(self.topk_indices).reshape(-1)
        counts = torch.bincount(torch.as_tensor(idx, dtype=torch.long), minlength=self.n_units)
        units = [int(u) for u in torch.argsort(counts, descending=True, stable=True).tolist() if counts[u] > 0]
        units = units[: min(budget, cap)]
        if self.selected_unit >= 0 and self.selected_unit not in units:
            units.append(self.selected_unit)
        return units

    def _static_extra(self, budget: int) -> dict:
        """Values of the units that appear most often in the top-k lists (see
        ``_cache_units``), so that a static copy can recolour by them without a kernel."""
        n = int(self._result.acts.shape[0])
        # uint8 with a per-unit scale: 1/255 of a unit's range is finer than the colour scale
        # resolves, and it halves the export against float16.
        cache = {str(u): wire.quantize(self._result.unit_values(u), 8) for u in self._cache_units(budget, n)}
        return {"unit_cache": cache}

    def static_state(self, budget: int | None = None) -> dict:
        """As :meth:`MIWidget.static_state`; the copy kept in a notebook's outputs (a budget of
        at most ``_static_budget["repr"]``) of a view whose state would pass ``COPY_BYTES``
        keeps only its first tokens (as many as fit), and says so in ``static_note``."""
        if budget is None or budget > self._static_budget["repr"]:
            return super().static_state(budget)
        state = {**self.state(), **self._static_extra(budget), "static": True}
        n = int(self._result.acts.shape[0])
        keep = self._copy_tokens(state, n)
        if keep < n:
            state = _first_tokens(state, keep)
            state["static_note"] = (
                f"This saved copy shows the first {keep:,} of {n:,} tokens; the live view (run the "
                "cell) and w.to_html() show them all."
            )
        return wire.to_static(state)

    def _copy_tokens(self, state: dict, n: int) -> int:
        """How many leading tokens fit a copy of at most ``COPY_BYTES``: the other traits, then
        per token its text (JSON, escaped again in the .ipynb) and its bytes in every per-token
        array (base64, 4/3)."""
        per_token = 0.0
        for key in ("values", "topk_indices", "topk_values"):
            per_token += len(state[key]["buffer"]) / max(n, 1)
        per_token += sum(len(w["buffer"]) for w in state["unit_cache"].values()) / max(n, 1)
        fixed = len(json.dumps(script_json({k: v for k, v in wire.to_static(state).items()
                                            if k not in ("texts", "values", "topk_indices", "topk_values", "unit_cache")})))
        fixed += 400 * (3 + len(state["unit_cache"]))  # each array's dtype/shape/scale keys
        room = self.COPY_BYTES - fixed
        keep = 0
        for toks in state["texts"]:
            for tok in toks:
                room -= len(json.dumps(script_json(tok)).encode()) - 1 + per_token * 4 / 3
                if room < 0:
                    return keep
                keep += 1
        return keep

    def _fallback_text(self) -> str:
        text = "\n".join("".join(toks) for toks in self.texts)
        if len(text) > 2000:  # the page shows it only until the view renders
            text = text[:2000] + f"… ({len(text) - 2000:,} more characters)"
        return (
            f"TokenActivations · {self._result.model_name} · {self.site} layer {self.layer} · "
            f"{self.unit_label}\n" + text
        )


def _first_tokens(state: dict, keep: int) -> dict:
    """``state`` cut to its first ``keep`` tokens (texts, per-token arrays, the selection)."""
    out = dict(state)
    texts, left = [], keep
    for toks in state["texts"]:
        if left <= 0:
            break
        texts.append(list(toks[:left]))
        left -= len(toks[:left])
    out["texts"] = texts

    def cut(w: dict) -> dict:
        shape = [keep, *w["shape"][1:]]
        row = len(w["buffer"]) // max(w["shape"][0], 1)
        return {**w, "shape": shape, "buffer": bytes(w["buffer"][: keep * row])}

    for key in ("values", "topk_indices", "topk_values"):
        out[key] = cut(state[key])
    out["unit_cache"] = {u: cut(w) for u, w in state["unit_cache"].items()}
    if out.get("selected_token", -1) >= keep:
        out["selected_token"] = -1
    return out
