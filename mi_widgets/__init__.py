"""mi-widgets: mechanistic interpretability inside Jupyter.

>>> import mi_widgets as mw
>>> model = mw.load()                      # the embedded trained model (zoo:tiny)
>>> mw.TokenActivations(model, "The Eiffel Tower is in Paris", site="mlp_post", layer=1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import zoo
from .core.activation_store import ActivationStore
from .core.activations import TokenActivationsResult, token_activations
from .core.attention import AttentionResult, HeadScores, attention, head_scores
from .core.attribution import AttributionResult, Target, attribute
from .core.causal_tracing import CausalTracingResult, TracingResult, causal_tracing
from .core.concepts import CCSResult, ContrastDataset, InterchangeResult, ccs, fit_ccs, interchange
from .core.cot import CoTResult, CoTTrace, cot_faithfulness, generate_trace, two_hop_traces
from .core.erasure import ErasureResult, erase, fit_leace
from .core.features import FeatureData, LinearDictionary, feature_pass, logit_effects
from .core.features import SteerResult as FeatureSteerResult
from .core.features import steer as steer_feature
from .core.lens import LensResult, TunedLens, logit_lens, train_tuned_lens, tuned_lens
from .core.metrics import Metric, kl_to_clean, logit_diff, prob
from .core.model import SITES, TOKEN_SITES, Model, load, wrap
from .core.patching import (
    PATCH_SITES,
    AblationResult,
    PatchingResult,
    ablate,
    activation_patching,
    attribution_patching,
)
from .core.patchscopes import PatchscopeResult, inspection_prompt, patchscope
from .core.path_patching import PathPatchingResult, path_patching
from .core.probes import ProbeDataset, ProbeResult, probe
from .core.sae import (
    SAE,
    Crosscoder,
    SAEMetrics,
    TrainingLog,
    Transcoder,
    encode_texts,
    evaluate,
    load_sae,
    spliced_accuracy,
    top_activations,
    train_crosscoder,
    train_sae,
    train_transcoder,
)
from .core.sae import save as save_sae
from .core.steering import (
    STEER_SITES,
    SteeringVector,
    SteerResult,
    as_steering_vector,
    steer,
    steering_sweep,
    steering_vector,
)
from .core.steering import GenerationResult as SteeredGeneration
from .core.steering import SweepResult as SteeringSweepResult
from .core.steering import from_probe as steering_from_probe
from .core.steering import generate as steer_generate
from .core.steering import generate_stream as steer_stream
from .core.superposition import RecoveryCurve, ToyModel, ToyRecovery, recovery_curve, toy_recovery
from .core.synthesis import SynthesisResult, synthesize

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .widgets.ablation import Ablation
    from .widgets.attention_patterns import AttentionPatterns
    from .widgets.attribution import TokenSaliency
    from .widgets.feature_dashboard import FeatureDashboard
    from .widgets.logit_lens import LogitLens
    from .widgets.patching_grid import PatchingGrid
    from .widgets.patchscope import Patchscope
    from .widgets.probe_accuracy import ProbeAccuracy
    from .widgets.steering import Steering
    from .widgets.token_activations import TokenActivations

_WIDGETS = {
    "TokenActivations": "token_activations",
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
    "ActivationStore",
    "Crosscoder",
    "RecoveryCurve",
    "SAE",
    "SAEMetrics",
    "SynthesisResult",
    "ToyModel",
    "ToyRecovery",
    "TrainingLog",
    "Transcoder",
    "encode_texts",
    "evaluate",
    "load_sae",
    "recovery_curve",
    "save_sae",
    "spliced_accuracy",
    "synthesize",
    "top_activations",
    "toy_recovery",
    "train_crosscoder",
    "train_sae",
    "train_transcoder",
    "Ablation",
    "AttentionPatterns",
    "AttributionResult",
    "CCSResult",
    "CoTResult",
    "ContrastDataset",
    "ErasureResult",
    "InterchangeResult",
    "ccs",
    "erase",
    "fit_ccs",
    "fit_leace",
    "interchange",
    "Patchscope",
    "PatchscopeResult",
    "Target",
    "TokenSaliency",
    "attribute",
    "inspection_prompt",
    "patchscope",
    "FeatureDashboard",
    "FeatureData",
    "FeatureSteerResult",
    "LinearDictionary",
    "feature_pass",
    "logit_effects",
    "steer_feature",
    "CoTTrace",
    "STEER_SITES",
    "SteerResult",
    "SteeredGeneration",
    "Steering",
    "SteeringSweepResult",
    "SteeringVector",
    "as_steering_vector",
    "cot_faithfulness",
    "generate_trace",
    "steer",
    "steer_generate",
    "steer_stream",
    "steering_from_probe",
    "steering_sweep",
    "steering_vector",
    "two_hop_traces",
    "AttentionResult",
    "HeadScores",
    "LensResult",
    "LogitLens",
    "TunedLens",
    "train_tuned_lens",
    "tuned_lens",
    "CausalTracingResult",
    "PathPatchingResult",
    "TracingResult",
    "PATCH_SITES",
    "AblationResult",
    "Metric",
    "PatchingGrid",
    "PatchingResult",
    "ProbeAccuracy",
    "ProbeDataset",
    "ProbeResult",
    "SITES",
    "TOKEN_SITES",
    "Model",
    "TokenActivations",
    "TokenActivationsResult",
    "ablate",
    "activation_patching",
    "attention",
    "attribution_patching",
    "head_scores",
    "logit_lens",
    "causal_tracing",
    "path_patching",
    "kl_to_clean",
    "load",
    "logit_diff",
    "probe",
    "prob",
    "token_activations",
    "wrap",
    "zoo",
]
