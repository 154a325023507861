"""The ``palette`` trait that every view has: which colour scales its heatmaps and legends use.

``w.palette = "greyscale"`` repaints that view only (two views on a page may differ). The colours
themselves live in ``js/src/lib/colour.ts``; its tests (``js/test/palette.test.ts``) check that
each palette's ends and middle stay apart for protan, deutan and tritan vision and that its
sequential scale is monotonic in lightness.

- ``"blue_orange"`` (the default): blue negative, orange positive, white (or a dark page's
  background) at 0; white to purple for non-negative values. Safe for the common colour-vision
  deficiencies, with the largest margin of the four.
- ``"viridis"``: perceptually uniform purple → teal → yellow for both kinds of scale (0 is teal on
  a diverging one).
- ``"greyscale"``: lightness only, darker = larger (monochromacy, print).
- ``"classic"``: the colours before palettes existed, ColorBrewer RdBu ends and purple.
"""

from __future__ import annotations

from typing import Any

import traitlets

#: the names a view's ``palette`` accepts (the same list as ``PALETTES`` in js/src/lib/colour.ts)
PALETTES = ("blue_orange", "viridis", "greyscale", "classic")
#: a new view's palette: blue–orange keeps its ends apart for protan, deutan and tritan viewers
DEFAULT_PALETTE = "blue_orange"


class Palette(traitlets.Unicode):
    """A palette name; anything else raises ``traitlets.TraitError`` naming the allowed values
    (the trait keeps its value)."""

    default_value = DEFAULT_PALETTE
    info_text = f"one of {', '.join(PALETTES)}"

    def validate(self, obj: Any, value: Any) -> str:
        if isinstance(value, str) and value in PALETTES:
            return value
        try:
            shown = repr(value) if isinstance(value, (str, int, float, type(None))) else type(value).__name__
        except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
            shown = type(value).__name__
        shown = shown if len(shown) <= 40 else f"{shown[:39]}…"
        allowed = ", ".join(repr(p) for p in PALETTES)
        raise traitlets.TraitError(
            f"{self.name} must be one of {allowed} (default {DEFAULT_PALETTE!r}, colour-blind "
            f"safe), got {shown}"
        )


class HasPalette(traitlets.HasTraits):
    """Mixin of every view (``MIWidget``): the ``palette`` trait, synced to the browser."""

    palette = Palette().tag(sync=True)
