"""Validation: descriptions turned into predictions (activation, attention, ablation, replacement,
counterexamples) with verdicts; :func:`direct_effect` for a head's effect that no backup can hide."""

from .direct_effect import direct_effect
from .hypothesis import (
    AblationPrediction,
    ActivationPrediction,
    AttentionPrediction,
    Hypothesis,
    PromptTask,
    ReplacementPrediction,
    validate,
)
from .verdict import Counterexample, TestResult, Verdict

__all__ = [
    "AblationPrediction",
    "ActivationPrediction",
    "AttentionPrediction",
    "Counterexample",
    "Hypothesis",
    "ReplacementPrediction",
    "PromptTask",
    "TestResult",
    "Verdict",
    "direct_effect",
    "validate",
]
