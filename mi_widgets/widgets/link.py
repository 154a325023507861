"""Linked views: one selection shared by several views, kept in the kernel.

``mw.link(tokens_view, lens_view, grid_view, on="position")`` observes each view's selection
traits with traitlets observers and sets the others' when one changes. Because it runs in the
kernel (not in the browser), it behaves the same in JupyterLab, Notebook 7, VS Code and marimo,
and a selection set from Python propagates like a click.

What joins a selection, per ``on``:

- ``"position"`` (a token index of one shared text): ``TokenActivations.selected_token`` (one
  text), ``LogitLens.selected_position``, ``AttentionPatterns.selected_position`` and the
  position of ``PatchingGrid.selected_cell`` (a grid with a position axis). The views' tokens
  must be the same; positions map by index.
- ``"head"`` (``(layer, head)``): ``AttentionPatterns.selected_head``,
  ``Ablation.selected_component`` (heads the result ablated) and ``PatchingGrid.selected_cell``
  of a grid with a head axis.
- ``"layer"``: ``ProbeAccuracy.selected_layer``, ``PatchingGrid.selected_cell``'s layer and
  ``TokenActivations.layer`` (which recomputes the view).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ON = ("position", "head", "layer")


class _Adapter:
    """How one view reads and writes the linked value."""

    def __init__(self, view: Any, traits: list[str], get: Callable[[], Any], put: Callable[[Any], None],
                 tokens: list[str] | None = None) -> None:
        self.view, self.traits, self.get, self.put, self.tokens = view, traits, get, put, tokens


def _name(view: Any) -> str:
    return type(view).__name__


def _position_adapter(view: Any) -> _Adapter:
    from .attention_patterns import AttentionPatterns
    from .logit_lens import LogitLens
    from .patching_grid import PatchingGrid
    from .token_activations import TokenActivations

    if isinstance(view, TokenActivations):
        if len(view.texts) != 1:
            raise ValueError(
                f"cannot link a TokenActivations of {len(view.texts)} texts on position; show one text"
            )

        def put_token(p: Any) -> None:
            view.selected_token = -1 if p is None else p

        return _Adapter(view, ["selected_token"], lambda: None if view.selected_token < 0 else view.selected_token,
                        put_token, list(view.texts[0]))
    if isinstance(view, (LogitLens, AttentionPatterns)):
        def put_pos(p: Any) -> None:
            view.selected_position = -1 if p is None else p

        return _Adapter(view, ["selected_position"],
                        lambda: None if view.selected_position < 0 else view.selected_position,
                        put_pos, list(view.tokens))
    if isinstance(view, PatchingGrid):
        if "position" not in view.dims:
            raise ValueError(f"cannot link this PatchingGrid on position: its axes are {list(view.dims)}")

        def put_cell(p: Any) -> None:
            if p is None:
                view.selected_cell = {}
                return
            if p not in view.positions:
                return  # the grid has no column for that position: its selection stays
            cell = dict(view.selected_cell) or {"layer": view.layers[0]}
            if "head" in view.dims and "head" not in cell:
                cell["head"] = view.heads[0]
            cell["position"] = p
            view.selected_cell = cell

        return _Adapter(view, ["selected_cell"], lambda: view.selected_cell.get("position"), put_cell,
                        list(view.clean_tokens))
    raise ValueError(
        f"{_name(view)} cannot link on position; views that can: TokenActivations, LogitLens, "
        "AttentionPatterns, PatchingGrid"
    )


def _head_adapter(view: Any) -> _Adapter:
    from .ablation import Ablation, _parse_head
    from .attention_patterns import AttentionPatterns
    from .patching_grid import PatchingGrid

    if isinstance(view, AttentionPatterns):
        def put_head(v: Any) -> None:
            view.selected_head = "" if v is None else f"{v[0]}.{v[1]}"

        return _Adapter(view, ["selected_head"], lambda: view.selected, put_head)
    if isinstance(view, Ablation):
        def put_comp(v: Any) -> None:
            label = "" if v is None else f"{v[0]}.{v[1]}"
            if label == "" or label in view.components:
                view.selected_component = label

        return _Adapter(view, ["selected_component"], lambda: _parse_head(view.selected_component), put_comp)
    if isinstance(view, PatchingGrid):
        if "head" not in view.dims:
            raise ValueError(f"cannot link this PatchingGrid on head: its axes are {list(view.dims)}")

        def get_cell() -> Any:
            c = view.selected_cell
            return (c["layer"], c["head"]) if "head" in c else None

        def put_cell(v: Any) -> None:
            if v is None:
                view.selected_cell = {}
                return
            if v[0] not in view.layers or v[1] not in view.heads:
                return
            cell = {"layer": v[0], "head": v[1]}
            if "position" in view.dims:
                cell["position"] = view.selected_cell.get("position", view.positions[0])
            view.selected_cell = cell

        return _Adapter(view, ["selected_cell"], get_cell, put_cell)
    raise ValueError(f"{_name(view)} cannot link on head; views that can: AttentionPatterns, Ablation, PatchingGrid")


def _layer_adapter(view: Any) -> _Adapter:
    from .patching_grid import PatchingGrid
    from .probe_accuracy import ProbeAccuracy
    from .token_activations import TokenActivations

    if isinstance(view, ProbeAccuracy):
        def put_probe(v: Any) -> None:
            if v is None or any(layer == v for _, layer in view.result.layers):
                view.selected_layer = v

        return _Adapter(view, ["selected_layer"], lambda: view.selected_layer, put_probe)
    if isinstance(view, PatchingGrid):
        def put_cell(v: Any) -> None:
            if v is None:
                view.selected_cell = {}
                return
            if v not in view.layers:
                return
            cell = dict(view.selected_cell)
            cell["layer"] = v
            if "position" in view.dims and "position" not in cell:
                cell["position"] = view.positions[0]
            if "head" in view.dims and "head" not in cell:
                cell["head"] = view.heads[0]
            view.selected_cell = cell

        return _Adapter(view, ["selected_cell"], lambda: view.selected_cell.get("layer"), put_cell)
    if isinstance(view, TokenActivations):
        def put_layer(v: Any) -> None:
            if v is not None and 0 <= v < view.n_layers:
                view.layer = v

        return _Adapter(view, ["layer"], lambda: view.layer, put_layer)
    raise ValueError(f"{_name(view)} cannot link on layer; views that can: ProbeAccuracy, PatchingGrid, TokenActivations")


_ADAPTERS = {"position": _position_adapter, "head": _head_adapter, "layer": _layer_adapter}


class Link:
    """A selection shared by views (see :func:`link`). ``value`` is the shared selection
    (a position, a ``(layer, head)`` or a layer; ``None`` for none); ``errors`` lists the
    messages of views that refused a value; ``unlink()`` stops the sharing."""

    def __init__(self, views: tuple[Any, ...], on: str) -> None:
        if len(views) == 1 and isinstance(views[0], (list, tuple)):
            raise TypeError("pass the views as separate arguments: mw.link(a, b) or mw.link(*views), not a list")
        if not isinstance(on, str) or on not in ON:
            raise ValueError(f"on must be one of {list(ON)}, got {on!r}")
        if len(views) < 2:
            raise ValueError(f"link needs at least two views, got {len(views)}")
        if len({id(v) for v in views}) != len(views):
            raise ValueError("link got the same view twice")
        self.on = on
        self.views = list(views)
        self._adapters = [_ADAPTERS[on](v) for v in views]
        if on == "position":
            first = self._adapters[0]
            for a in self._adapters[1:]:
                if a.tokens != first.tokens:
                    raise ValueError(
                        f"cannot link on position: {_name(first.view)} shows {_clip(first.tokens)} but "
                        f"{_name(a.view)} shows {_clip(a.tokens)}; positions map by index, so the texts must be the same"
                    )
        self.errors: list[str] = []
        self._busy = False
        self._observers: list[tuple[Any, Callable, list[str]]] = []
        for a in self._adapters:
            def handler(change: dict, a: _Adapter = a) -> None:
                self._changed(a)

            a.view.observe(handler, names=a.traits)
            self._observers.append((a.view, handler, a.traits))
        self.value: Any = None
        start = next((a for a in self._adapters if a.get() is not None), None)
        if start is not None:
            self._changed(start)

    def _changed(self, source: _Adapter) -> None:
        if self._busy:
            return  # a change this link made: never echo it back (no loops)
        value = source.get()
        if value == self.value:
            return
        self._busy = True
        try:
            self.value = value
            for a in self._adapters:
                if a is source or a.get() == value:
                    continue
                try:
                    a.put(value)
                except Exception as exc:  # noqa: BLE001 - one view refusing must not stop the others
                    self.errors.append(f"{_name(a.view)}: {exc}"[:300])
        finally:
            self._busy = False

    def set(self, value: Any) -> None:
        """Select ``value`` in every linked view (as a click in the first one would)."""
        self._adapters[0].put(value)
        self._changed(self._adapters[0])

    def unlink(self) -> None:
        """Stop sharing the selection (each view keeps what it shows)."""
        for view, handler, traits in self._observers:
            view.unobserve(handler, names=traits)
        self._observers = []

    @property
    def linked(self) -> bool:
        return bool(self._observers)

    def __repr__(self) -> str:
        names = ", ".join(_name(v) for v in self.views)
        return f"Link(on={self.on!r}, views=[{names}], value={self.value!r}{'' if self.linked else ', unlinked'})"


def _clip(tokens: list[str] | None, n: int = 8) -> str:
    tokens = tokens or []
    return repr(tokens[:n])[:-1] + (", …]" if len(tokens) > n else "]")


def link(*views: Any, on: str = "position") -> Link:
    """Share one selection between views, kernel-side: a click (or a trait set from Python) in
    one selects the same position / head / layer in the others. Returns a :class:`Link`;
    ``.unlink()`` stops it. Views whose texts differ refuse to link on position."""
    return Link(views, on)
