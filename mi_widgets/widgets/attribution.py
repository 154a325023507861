"""Token saliency: the TokenActivations view showing an attribution result (no recompute)."""

from __future__ import annotations

from typing import Any

from ..core.decomposition.activations import TokenActivationsResult
from ..core.description.attribution import AttributionResult
from .code import ShowsCode, token_saliency_code
from .token_activations import TokenActivations


class TokenSaliency(TokenActivations):
    """``TokenActivations`` coloured by per-token attributions (``AttributionResult.widget()``).

    The values are fixed by the attribution run, so the site/layer selectors hold only the
    result's own entry and changing them recomputes nothing. ``attribution``: the
    :class:`~mi_widgets.core.description.attribution.AttributionResult` the values come from
    (``AttributionResult.widget()`` passes it), which ``code()`` writes out.
    """

    def __init__(
        self, result: TokenActivationsResult, *, attribution: AttributionResult | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(result, TokenActivationsResult):
            raise TypeError(
                "TokenSaliency shows an attribution result: pass mw.attribute(...).to_token_activations() "
                f"(or call .widget() on the AttributionResult), got {type(result).__name__}"
            )
        if attribution is not None and not isinstance(attribution, AttributionResult):
            raise TypeError(f"attribution must be an AttributionResult, got {type(attribution).__name__}")
        self._attribution = attribution
        super().__init__(result=result, unit=result.direction, unit_label=result.direction_label, **kwargs)
        self._updating = True
        try:
            self.sites = [result.site]
            self.n_layers = 1
        finally:
            self._updating = False

    @classmethod
    def from_result(cls, result: TokenActivationsResult, **kwargs: Any) -> TokenSaliency:
        return cls(result, **kwargs)

    @property
    def attribution(self) -> AttributionResult | None:
        return self._attribution

    _write_code = staticmethod(token_saliency_code)
    code = ShowsCode.code  # TokenActivations' own code() writes activations, not attributions

    # Not an observer: the values come from the attribution, not from a site of the model.
    def _on_layer_site(self, change: dict) -> None:
        return None

    def load(self, site: str | None = None, layer: int | None = None, progress: Any = None) -> None:
        if (site or self.site) != self._result.site or (layer if layer is not None else self.layer) != 0:
            raise ValueError(
                "this saliency view shows one attribution result; run attribute() again for "
                "another target or method"
            )
