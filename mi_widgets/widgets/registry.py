"""Which view shows which result: the one place that maps core result types to widgets.

Core results inherit ``mi_widgets.core._views.Viewable``; their ``.widget(...)`` and notebook
display call :func:`view`, installed by ``mi_widgets/__init__.py``. A new view registers its
result type here with :func:`register` (subclasses find their parent's view unless they have
their own)."""

from __future__ import annotations

import dataclasses
import importlib
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


def _shows(result_type: type, module: str, view: str) -> Callable[..., Any]:
    """Register ``<module>.<view>.from_result`` (imported when first used) as the view of
    ``result_type``; returns the factory."""

    def factory(r: Any, **kw: Any) -> Any:
        return getattr(importlib.import_module(f"{__package__}.{module}"), view).from_result(r, **kw)

    return register(result_type)(factory)


_shows(TokenActivationsResult, "token_activations", "TokenActivations")
_shows(AttentionResult, "attention_patterns", "AttentionPatterns")
_shows(LensResult, "logit_lens", "LogitLens")
_shows(PatchscopeResult, "patchscope", "Patchscope")
_shows(FeatureData, "feature_dashboard", "FeatureDashboard")
_shows(ProbeResult, "probe_accuracy", "ProbeAccuracy")
_patching = _shows(PatchingResult, "patching_grid", "PatchingGrid")
_shows(AblationResult, "ablation", "Ablation")


@register(AttributionResult)
def _attribution(r: AttributionResult, **kw: Any) -> Any:
    from .attribution import TokenSaliency

    return TokenSaliency.from_result(r.to_token_activations(), attribution=r, **kw)


@register(SAE)
def _dictionary(sae: SAE, model: Any = None, texts: Any = None, **kw: Any) -> Any:
    from .feature_dashboard import FeatureDashboard

    return FeatureDashboard(model, sae, texts, **kw)


@register(TracingResult)
@register(PathPatchingResult)
def _patching_display_only(r: PatchingResult, **kw: Any) -> Any:
    # Display only: the grid's own sweeps and per-cell top-k re-run activation patching, which
    # is not this computation, so the view gets no model to re-run.
    return _patching(dataclasses.replace(r, model=None, metric=None), **kw)


def _steering(r: Any, prompt: str, model: Any, vector: Any, **kw: Any) -> Any:
    """The Steering panel on ``model`` with ``r``'s vector, layer and site."""
    from .steering import Steering

    return Steering(model, prompt, {r.vector_name: vector}, layer=r.layer, site=r.site, **kw)


@register(SteerResult)
def _steer(r: SteerResult, model: Any, vector: Any, **kw: Any) -> Any:
    return _steering(r, r.prompt, model, vector, coef=r.coef, **kw)


@register(SteeringSweepResult)
def _sweep(r: SteeringSweepResult, model: Any, vector: Any, **kw: Any) -> Any:
    w = _steering(r, r.prompts[0], model, vector, **kw)
    w.show_sweep(r)
    return w


@register(SteeredGeneration)
def _generation(r: SteeredGeneration, model: Any, vector: Any, **kw: Any) -> Any:
    w = _steering(r, r.prompt, model, vector, coef=r.coef, **kw)
    w.show_generation(r)
    return w


from ..core.circuits.circuit import Circuit  # noqa: E402
from ..core.validation.verdict import Verdict  # noqa: E402

_shows(Circuit, "circuit_graph", "CircuitGraph")
_shows(Verdict, "hypothesis_card", "HypothesisCard")
