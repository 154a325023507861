"""Automated interpretability: LM-written descriptions of units, scored by simulation,
detection, fuzzing and intervention."""
