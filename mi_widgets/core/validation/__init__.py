"""Validation: descriptions turned into predictions (activation, attention, ablation, replacement,
counterexamples) with verdicts; :func:`direct_effect` for a head's effect that no backup can hide;
:func:`illusion_check` for a direction that looks causal only by switching on a dormant pathway."""

from .circuit import CircuitPrediction, ScrubResult, causal_scrub
from .direct_effect import direct_effect
from .hypothesis import (
    AblationPrediction,
    ActivationPrediction,
    AttentionPrediction,
    Hypothesis,
    PromptTask,
    ReplacementPrediction,
    SubspacePrediction,
    validate,
)
from .illusion import IllusionCheck, illusion_check
from .verdict import Counterexample, TestResult, Verdict

__all__ = [
    "AblationPrediction",
    "ActivationPrediction",
    "AttentionPrediction",
    "CircuitPrediction",
    "Counterexample",
    "Hypothesis",
    "IllusionCheck",
    "ReplacementPrediction",
    "ScrubResult",
    "PromptTask",
    "SubspacePrediction",
    "TestResult",
    "Verdict",
    "causal_scrub",
    "direct_effect",
    "illusion_check",
    "validate",
]
