"""Circuit discovery refuses what it cannot do before any forward: a non-model, and a remote model
(the edge graph recomputes blocks from local weights), leaving the model usable."""

from __future__ import annotations

import pytest

import mi_widgets as mw
from mi_widgets.core.model.remote import record_jobs

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Anna and Paul went to the store, Ruth gave a drink to"
METHODS = {
    "edge_attribution_patching": lambda m: mw.edge_attribution_patching(m, CLEAN, CORRUPT, mw.logit_diff(" Mary", " John")),
    "edge_patching": lambda m: mw.edge_patching(m, CLEAN, CORRUPT, mw.logit_diff(" Mary", " John")),
    "acdc": lambda m: mw.acdc(m, CLEAN, CORRUPT, mw.logit_diff(" Mary", " John"), threshold=0.5),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_a_remote_model_is_refused_before_any_job(name):
    remote = mw.load("zoo:ioi", remote="local")
    with record_jobs() as jobs, pytest.raises(ValueError, match="local models only"):
        METHODS[name](remote)
    assert jobs.count == 0


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("bad", [None, "zoo:ioi"])
def test_a_non_model_is_a_clear_type_error(name, bad):
    with pytest.raises(TypeError, match="must be a mi_widgets Model"):
        METHODS[name](bad)
