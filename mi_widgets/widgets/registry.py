"""Which view shows which result: the one place that maps core result types to widgets.

Core results inherit ``mi_widgets.core._views.Viewable``; their ``.widget(...)`` and notebook
display call :func:`view`, installed by ``mi_widgets/__init__.py``. A new view registers its
result type here with :func:`register` (subclasses find their parent's view unless they have
their own)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

_VIEWS: dict[type, Callable[..., Any]] = {}


def register(result_type: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register(MyResult) def _(result, *args, **kwargs) -> view``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _VIEWS[result_type] = fn
        return fn

    return deco


def view(result: Any, *args: Any, **kwargs: Any) -> Any:
    """The view of ``result``: the factory registered for its type or its nearest base."""
    for cls in type(result).__mro__:
        if cls in _VIEWS:
            return _VIEWS[cls](result, *args, **kwargs)
    raise TypeError(f"{type(result).__name__} has no interactive view (use .plot() or .to_pandas())")


# -- the views -------------------------------------------------------------------------------
# Result types are imported here (the widgets room may import core); each factory imports its
# widget module when first used, so `import mi_widgets` stays light.

from ..core.concepts.probes import ProbeResult  # noqa: E402
from ..core.decomposition.activations import TokenActivationsResult  # noqa: E402
from ..core.decomposition.features import FeatureData  # noqa: E402
from ..core.decomposition.sae import SAE  # noqa: E402
from ..core.description.attention import AttentionResult  # noqa: E402
from ..core.description.attribution import AttributionResult  # noqa: E402
from ..core.description.lens import LensResult  # noqa: E402
from ..core.description.patchscopes import PatchscopeResult  # noqa: E402
from ..core.description.steering import SteeredGeneration, SteeringSweepResult, SteerResult  # noqa: E402
from ..core.interventions.ablation import AblationResult  # noqa: E402
from ..core.interventions.causal_tracing import TracingResult  # noqa: E402
from ..core.interventions.patching import PatchingResult  # noqa: E402
from ..core.interventions.path_patching import PathPatchingResult  # noqa: E402


@register(TokenActivationsResult)
def _token_activations(r: TokenActivationsResult, **kw: Any) -> Any:
    from .token_activations import TokenActivations

    return TokenActivations.from_result(r, **kw)


@register(AttributionResult)
def _attribution(r: AttributionResult, **kw: Any) -> Any:
    from .attribution import TokenSaliency

    return TokenSaliency.from_result(r.to_token_activations(), **kw)


@register(AttentionResult)
def _attention(r: AttentionResult, **kw: Any) -> Any:
    from .attention_patterns import AttentionPatterns

    return AttentionPatterns.from_result(r, **kw)


@register(LensResult)
def _lens(r: LensResult, **kw: Any) -> Any:
    from .logit_lens import LogitLens

    return LogitLens.from_result(r, **kw)


@register(PatchscopeResult)
def _patchscope(r: PatchscopeResult, **kw: Any) -> Any:
    from .patchscope import Patchscope

    return Patchscope.from_result(r, **kw)


@register(FeatureData)
def _features(r: FeatureData, **kw: Any) -> Any:
    from .feature_dashboard import FeatureDashboard

    return FeatureDashboard.from_result(r, **kw)


@register(SAE)
def _dictionary(sae: SAE, model: Any = None, texts: Any = None, **kw: Any) -> Any:
    from .feature_dashboard import FeatureDashboard

    return FeatureDashboard(model, sae, texts, **kw)


@register(ProbeResult)
def _probe(r: ProbeResult, **kw: Any) -> Any:
    from .probe_accuracy import ProbeAccuracy

    return ProbeAccuracy.from_result(r, **kw)


@register(PatchingResult)
def _patching(r: PatchingResult, **kw: Any) -> Any:
    from .patching_grid import PatchingGrid

    return PatchingGrid.from_result(r, **kw)


@register(TracingResult)
@register(PathPatchingResult)
def _patching_display_only(r: PatchingResult, **kw: Any) -> Any:
    # Display only: the grid's own sweeps and per-cell top-k re-run activation patching, which
    # is not this computation, so the view gets no model to re-run.
    return _patching(dataclasses.replace(r, model=None, metric=None), **kw)


@register(AblationResult)
def _ablation(r: AblationResult, **kw: Any) -> Any:
    from .ablation import Ablation

    return Ablation.from_result(r, **kw)


@register(SteerResult)
def _steer(r: SteerResult, model: Any, vector: Any, **kw: Any) -> Any:
    from .steering import Steering

    return Steering(model, r.prompt, {r.vector_name: vector}, layer=r.layer, site=r.site, coef=r.coef, **kw)


@register(SteeringSweepResult)
def _sweep(r: SteeringSweepResult, model: Any, vector: Any, **kw: Any) -> Any:
    from .steering import Steering

    w = Steering(model, r.prompts[0], {r.vector_name: vector}, layer=r.layer, site=r.site, **kw)
    w.show_sweep(r)
    return w


@register(SteeredGeneration)
def _generation(r: SteeredGeneration, model: Any, vector: Any, **kw: Any) -> Any:
    from .steering import Steering

    w = Steering(model, r.prompt, {r.vector_name: vector}, layer=r.layer, site=r.site, coef=r.coef, **kw)
    w.show_generation(r)
    return w


from ..core.circuits.circuit import Circuit  # noqa: E402


@register(Circuit)
def _circuit(r: Circuit, **kw: Any) -> Any:
    from .circuit_graph import CircuitGraph

    return CircuitGraph.from_result(r, **kw)


from ..core.validation.verdict import Verdict  # noqa: E402


@register(Verdict)
def _verdict(r: Verdict, **kw: Any) -> Any:
    from .hypothesis_card import HypothesisCard

    return HypothesisCard.from_result(r, **kw)
