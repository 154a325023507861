"""mi-widgets: mechanistic interpretability inside Jupyter.

>>> import mi_widgets as mw
>>> model = mw.load()                      # the embedded trained model (zoo:tiny)
>>> mw.TokenActivations(model, "The Eiffel Tower is in Paris", site="mlp_post", layer=1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import zoo
from .core import _views
from .core.autointerp.batch import AutointerpResult, autointerp
from .core.autointerp.client import LocalLM, OpenAIClient
from .core.autointerp.explain import Explanation, RuleExplainer, explain
from .core.autointerp.scoring import LMScorer, RuleSimulator, Scores, score_explanation
from .core.circuits import Circuit, acdc, edge_attribution_patching, edge_patching
from .core.concepts.ccs import CCSResult, ContrastDataset, ccs, fit_ccs
from .core.concepts.erasure import ErasureResult, erase, fit_leace
from .core.concepts.interchange import InterchangeResult, interchange
from .core.concepts.probes import ProbeDataset, ProbeResult, probe
from .core.decomposition.activation_store import ActivationStore
from .core.decomposition.activations import TokenActivationsResult, token_activations
from .core.decomposition.features import (
    FeatureData,
    FeatureSteerResult,
    LinearDictionary,
    feature_pass,
    logit_effects,
    steer_feature,
)
from .core.decomposition.sae import (
    SAE,
    Crosscoder,
    SAEMetrics,
    TrainingLog,
    Transcoder,
    encode_texts,
    evaluate,
    load_sae,
    save_sae,
    spliced_accuracy,
    top_activations,
    train_crosscoder,
    train_sae,
    train_transcoder,
)
from .core.decomposition.superposition import (
    RecoveryCurve,
    ToyModel,
    ToyRecovery,
    recovery_curve,
    toy_recovery,
)
from .core.decomposition.synthesis import SynthesisResult, synthesize
from .core.description.attention import AttentionResult, HeadScores, attention, head_scores
from .core.description.attribution import AttributionResult, Target, attribute
from .core.description.cot import (
    CoTResult,
    CoTTrace,
    cot_faithfulness,
    generate_trace,
    two_hop_traces,
)
from .core.description.lens import LensResult, TunedLens, logit_lens, train_tuned_lens, tuned_lens
from .core.description.patchscopes import PatchscopeResult, inspection_prompt, patchscope
from .core.description.steering import (
    STEER_SITES,
    SteeredGeneration,
    SteeringSweepResult,
    SteeringVector,
    SteerResult,
    as_steering_vector,
    steer,
    steer_generate,
    steer_stream,
    steering_from_probe,
    steering_sweep,
    steering_vector,
)
from .core.interventions.ablation import AblationResult, ablate
from .core.interventions.attribution_patching import attribution_patching
from .core.interventions.causal_tracing import CausalTracingResult, TracingResult, causal_tracing
from .core.interventions.checks import PATCH_SITES
from .core.interventions.patching import PatchingResult, activation_patching
from .core.interventions.path_patching import PathPatchingResult, path_patching
from .core.metrics import Metric, kl_to_clean, logit_diff, prob
from .core.model import SITES, TOKEN_SITES, Arch, Model, load, wrap
from .core.validation import (
    AblationPrediction,
    ActivationPrediction,
    AttentionPrediction,
    CircuitPrediction,
    Hypothesis,
    IllusionCheck,
    PromptTask,
    ReplacementPrediction,
    SubspacePrediction,
    Verdict,
    causal_scrub,
    direct_effect,
    illusion_check,
    validate,
)

__version__ = "0.1.0"


def _find_view(result: Any, *args: Any, **kwargs: Any) -> Any:
    from .widgets.registry import view

    return view(result, *args, **kwargs)


_views.set_view_finder(_find_view)

if TYPE_CHECKING:  # pragma: no cover
    from .widgets.ablation import Ablation
    from .widgets.attention_patterns import AttentionPatterns
    from .widgets.attribution import TokenSaliency
    from .widgets.circuit_graph import CircuitGraph
    from .widgets.export import export_html
    from .widgets.feature_dashboard import FeatureDashboard
    from .widgets.hypothesis_card import HypothesisCard
    from .widgets.link import Link, link
    from .widgets.logit_lens import LogitLens
    from .widgets.patching_grid import PatchingGrid
    from .widgets.patchscope import Patchscope
    from .widgets.probe_accuracy import ProbeAccuracy
    from .widgets.steering import Steering
    from .widgets.token_activations import TokenActivations

_WIDGETS = {
    "TokenActivations": "token_activations",
    "CircuitGraph": "circuit_graph",
    "HypothesisCard": "hypothesis_card",
    "Link": "link",
    "export_html": "export",
    "link": "link",
    "PatchingGrid": "patching_grid",
    "ProbeAccuracy": "probe_accuracy",
    "LogitLens": "logit_lens",
    "AttentionPatterns": "attention_patterns",
    "Steering": "steering",
    "FeatureDashboard": "feature_dashboard",
    "Patchscope": "patchscope",
    "TokenSaliency": "attribution",
    "Ablation": "ablation",
}


def __getattr__(name: str) -> Any:
    # Widgets import anywidget/ipywidgets: load them only when asked for, so that
    # `import mi_widgets` for the science stays light.
    if name in _WIDGETS:
        import importlib

        module = importlib.import_module(f".widgets.{_WIDGETS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'mi_widgets' has no attribute {name!r}")


__all__ = [
    "ablate",
    "Ablation",
    "AblationPrediction",
    "AblationResult",
    "acdc",
    "activation_patching",
    "ActivationPrediction",
    "ActivationStore",
    "Arch",
    "as_steering_vector",
    "attention",
    "AttentionPatterns",
    "AttentionPrediction",
    "AttentionResult",
    "attribute",
    "attribution_patching",
    "AttributionResult",
    "autointerp",
    "AutointerpResult",
    "causal_tracing",
    "CausalTracingResult",
    "ccs",
    "CCSResult",
    "Circuit",
    "CircuitGraph",
    "ContrastDataset",
    "cot_faithfulness",
    "CoTResult",
    "CoTTrace",
    "Crosscoder",
    "direct_effect",
    "causal_scrub",
    "CircuitPrediction",
    "illusion_check",
    "IllusionCheck",
    "edge_attribution_patching",
    "edge_patching",
    "encode_texts",
    "erase",
    "ErasureResult",
    "evaluate",
    "explain",
    "Explanation",
    "export_html",
    "feature_pass",
    "FeatureDashboard",
    "FeatureData",
    "FeatureSteerResult",
    "fit_ccs",
    "fit_leace",
    "generate_trace",
    "head_scores",
    "HeadScores",
    "Hypothesis",
    "HypothesisCard",
    "inspection_prompt",
    "interchange",
    "InterchangeResult",
    "kl_to_clean",
    "LensResult",
    "LinearDictionary",
    "Link",
    "link",
    "LMScorer",
    "load",
    "load_sae",
    "LocalLM",
    "logit_diff",
    "logit_effects",
    "logit_lens",
    "LogitLens",
    "Metric",
    "Model",
    "OpenAIClient",
    "PATCH_SITES",
    "PatchingGrid",
    "PatchingResult",
    "Patchscope",
    "patchscope",
    "PatchscopeResult",
    "path_patching",
    "PathPatchingResult",
    "prob",
    "probe",
    "ProbeAccuracy",
    "ProbeDataset",
    "ProbeResult",
    "PromptTask",
    "recovery_curve",
    "RecoveryCurve",
    "ReplacementPrediction",
    "SubspacePrediction",
    "RuleExplainer",
    "RuleSimulator",
    "SAE",
    "SAEMetrics",
    "save_sae",
    "score_explanation",
    "Scores",
    "SITES",
    "spliced_accuracy",
    "steer",
    "steer_feature",
    "steer_generate",
    "STEER_SITES",
    "steer_stream",
    "SteeredGeneration",
    "Steering",
    "steering_from_probe",
    "steering_sweep",
    "steering_vector",
    "SteeringSweepResult",
    "SteeringVector",
    "SteerResult",
    "SynthesisResult",
    "synthesize",
    "Target",
    "token_activations",
    "TOKEN_SITES",
    "TokenActivations",
    "TokenActivationsResult",
    "TokenSaliency",
    "top_activations",
    "toy_recovery",
    "ToyModel",
    "ToyRecovery",
    "TracingResult",
    "train_crosscoder",
    "train_sae",
    "train_transcoder",
    "train_tuned_lens",
    "TrainingLog",
    "Transcoder",
    "tuned_lens",
    "TunedLens",
    "two_hop_traces",
    "validate",
    "Verdict",
    "wrap",
    "zoo",
]
