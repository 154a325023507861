"""Decomposition: what a layer's activations are made of. Neurons and directions per token
(:mod:`.activations`), sparse dictionaries (:mod:`.sae`: SAEs, transcoders, crosscoders, trained
from an :mod:`.activation_store`), the feature dashboard's dataset pass (:mod:`.features`), toy
superposition (:mod:`.superposition`) and feature synthesis (:mod:`.synthesis`)."""
