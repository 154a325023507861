"""Validation: descriptions turned into predictions (activation, ablation, replacement,
counterexamples) with verdicts."""
