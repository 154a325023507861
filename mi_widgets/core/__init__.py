"""The science, grouped by the field: ``model`` (loading, names per family, remote),
``decomposition``, ``description``, ``interventions``, ``concepts``, ``circuits``,
``autointerp``, ``validation``; ``metrics`` is the task vocabulary they share. Core imports
no view: results find theirs through :mod:`._views`."""
