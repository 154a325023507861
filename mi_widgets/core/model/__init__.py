"""The model layer: :func:`load` (zoo, Hugging Face id, local directory, NDIF), the
:class:`Model` wrapper, and the standard component names per family (:mod:`.families`)."""

from .families import SITES, TOKEN_SITES, Arch, _get
from .model import Model, load, wrap

__all__ = ["SITES", "TOKEN_SITES", "Arch", "Model", "_get", "load", "wrap"]
