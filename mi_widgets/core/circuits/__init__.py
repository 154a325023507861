"""Circuits: which subgraph of edges does a task (EAP, EAP-IG, exact edge patching, ACDC)."""
