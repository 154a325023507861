"""Interventions: run the model with some components' values replaced. One execution engine
with its caches (:mod:`.engine`) serves every sweep: activation and attribution patching grids
(:mod:`.patching`), ablation (:mod:`.ablation`), causal tracing (:mod:`.causal_tracing`), path
patching (:mod:`.path_patching`) and the circuits room's edge patching. Input checks shared by
all interventions live in :mod:`.checks`."""
