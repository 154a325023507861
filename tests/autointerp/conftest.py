"""Fixtures of the autointerp tests: the scripted chat-completions server (_ai_server.py) and
the planted city feature of zoo:tiny (built as tests/decomposition/test_features.py builds it)."""

from __future__ import annotations

import pytest
import torch
from _ai_server import ScriptedServer

from mi_widgets.core.decomposition.features import LinearDictionary, default_texts, feature_pass
from mi_widgets.zoo.corpus import CITIES

CITY_TOKENS = {" " + c for c in CITIES}


@pytest.fixture
def server():
    s = ScriptedServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def city_texts():
    return default_texts(96)


@pytest.fixture(scope="session")
def city_data(tiny, city_texts):
    """Feature 0: the planted city class at resid_pre 0 (mean difference; fires on city tokens);
    features 1..6: random directions with thresholds (fire on arbitrary tokens)."""
    city = LinearDictionary.from_token_classes(tiny, city_texts[:48], {"city": CITY_TOKENS}, site="resid_pre", layer=0)
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(6, tiny.d_model, generator=g)
    rand = rand / rand.norm(dim=1, keepdim=True)
    sae = LinearDictionary(torch.cat([city.W_enc, rand.T], 1), torch.cat([city.b_enc, torch.linspace(-0.2, 0.2, 6)]),
                           torch.cat([city.W_dec, rand]), site="resid_pre", layer=0)
    return feature_pass(tiny, sae, city_texts, progress=False)
