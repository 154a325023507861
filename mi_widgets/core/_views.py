"""How a result finds its view without core importing any widget module.

Results inherit :class:`Viewable` (``.widget()``, notebook display). The mapping from result
type to view lives on the widgets side (``mi_widgets.widgets.registry``); the package that owns
both rooms installs the lookup with :func:`set_view_finder` when it is imported, so core never
names a widget module, not even lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_finder: Callable[..., Any] | None = None


def set_view_finder(finder: Callable[..., Any]) -> None:
    """Install ``finder(result, *args, **kwargs) -> view`` (done by ``mi_widgets/__init__.py``)."""
    global _finder
    _finder = finder


def view(result: Any, *args: Any, **kwargs: Any) -> Any:
    """The interactive view of ``result`` (the widgets side decides which)."""
    if _finder is None:
        raise ImportError("no view registry installed: import mi_widgets (the views live in mi_widgets.widgets)")
    return _finder(result, *args, **kwargs)


class Viewable:
    """Mixin for results that have a view: ``.widget(...)`` returns it."""

    def widget(self, *args: Any, **kwargs: Any) -> Any:
        """The interactive view of this result (arguments go to the view's constructor)."""
        return view(self, *args, **kwargs)


class DisplaysAsView(Viewable):
    """A :class:`Viewable` that a notebook displays as its view (falling back to its repr where
    the view cannot be built, e.g. without anywidget)."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        try:
            w = self.widget()
        except (ImportError, FileNotFoundError):
            return {"text/plain": repr(self)}
        return w._repr_mimebundle_(include=include, exclude=exclude)
