"""Concepts: where a model represents a variable, and whether it uses it. Probes with controls
and OOD sets (:mod:`.probes`), CCS (:mod:`.ccs`), interchange interventions and DAS
(:mod:`.interchange`), LEACE erasure (:mod:`.erasure`); the edit machinery they share is
:mod:`._edits`."""
