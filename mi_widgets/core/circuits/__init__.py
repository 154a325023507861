"""Circuits: which subgraph of edges does a task (EAP, EAP-IG, exact edge patching, ACDC)."""

from .acdc import acdc
from .circuit import Circuit, edge_id
from .eap import edge_attribution_patching
from .edge_patching import edge_patching

__all__ = ["Circuit", "acdc", "edge_attribution_patching", "edge_id", "edge_patching"]
