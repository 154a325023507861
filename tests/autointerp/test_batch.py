"""Batch autointerp over a dictionary (mi_widgets/core/autointerp/batch.py): the SQLite cache
makes a second run call no language model, a failing feature (malformed JSON) or Ctrl-C keeps
every finished feature, and the explanations reach data.explanations."""

from __future__ import annotations

import re
import warnings

import pytest
from _ai_server import chat_reply, oracle

from mi_widgets.core.autointerp.batch import Cache, autointerp
from mi_widgets.core.autointerp.client import OpenAIClient
from mi_widgets.core.autointerp.scoring import LMScorer
from mi_widgets.zoo.corpus import CITIES, PEOPLE

LEXICON = {"city names": CITIES, "names of people": PEOPLE}
KW = dict(scores=("simulation", "detection"), n_top=3, n_quantile=2, n_contrast=1, n_negative=3, n_baseline=1)


def scripted(broken: set[int] = frozenset()):
    """Explains feature 0 as "city names", others as "names of people" (malformed JSON for the
    features in ``broken``); scoring prompts are judged by the rule oracle."""
    judge = oracle(LEXICON)

    def script(body, n):
        user = body["messages"][-1]["content"]
        m = re.match(r"Feature (\d+)\.", user)
        if m:
            f = int(m.group(1))
            if f in broken:
                return (200, {}, b'{"choices": [{"message": ')
            return chat_reply("Explanation: " + ("city names" if f == 0 else "names of people"))
        return judge(body, n)

    return script


def test_second_run_makes_no_calls_and_returns_the_same(server, city_data, tmp_path):
    server.script = scripted()
    lm = OpenAIClient(server.url, "m", retries=0)
    path = tmp_path / "ai.sqlite"
    city_data.explanations.clear()
    first = autointerp(city_data, [0, 1, 2], explainer=lm, scorer=LMScorer(lm), cache=path, progress=False, **KW)
    n_calls = len(server.requests)
    assert first.complete and first.cached == 0 and n_calls > 3
    assert first.explanations[0].text == "city names" and city_data.explanations[1] == "names of people"
    assert first.scores[0].values["simulation"] > 0.9 > first.scores[1].values["simulation"]
    assert len(Cache(path)) == 3
    again = autointerp(city_data, [0, 1, 2], explainer=lm, scorer=LMScorer(lm), cache=path, progress=False, **KW)
    assert len(server.requests) == n_calls, "a cached feature called the language model"
    assert again.cached == 3
    assert {f: s.values for f, s in again.scores.items()} == {f: s.values for f, s in first.scores.items()}
    # another seed is another key: it calls again
    autointerp(city_data, [0], explainer=lm, scorer=LMScorer(lm), cache=path, progress=False, seed=1, **KW)
    assert len(server.requests) > n_calls


def test_malformed_reply_loses_nothing_and_a_rerun_finishes(server, city_data, tmp_path):
    server.script = scripted(broken={1})
    lm = OpenAIClient(server.url, "m", retries=0)
    path = tmp_path / "ai.sqlite"
    with pytest.warns(UserWarning, match="feature 1 failed"):
        out = autointerp(city_data, [0, 1, 2], explainer=lm, scorer=LMScorer(lm), cache=path, progress=False, **KW)
    assert not out.complete and set(out.explanations) == {0, 2}
    assert "malformed JSON" in out.errors[1]
    assert len(Cache(path)) == 2
    server.script = scripted()
    before = len(server.requests)
    out2 = autointerp(city_data, [0, 1, 2], explainer=lm, scorer=LMScorer(lm), cache=path, progress=False, **KW)
    explain_calls = [r for r in server.requests[before:] if re.match(r"Feature \d+\.", r["messages"][-1]["content"])]
    assert out2.complete and out2.cached == 2
    assert [re.match(r"Feature (\d+)", r["messages"][-1]["content"]).group(1) for r in explain_calls] == ["1"]
    with pytest.raises(Exception, match="malformed JSON"):
        server.script = scripted(broken={3})
        autointerp(city_data, [3], explainer=lm, scores=(), cache=path, progress=False, on_error="raise")


def test_interrupt_keeps_finished_features(city_data, tmp_path):
    path = tmp_path / "ai.sqlite"

    def stop_after_first(done, total):
        if done == 1:
            raise KeyboardInterrupt

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = autointerp(city_data, [0, 1, 2], scores=(), cache=path, progress=stop_after_first)
    assert any("interrupted" in str(x.message) for x in w)
    assert not out.complete and list(out.explanations) == [0]
    assert len(Cache(path)) == 1
    rest = autointerp(city_data, [0, 1, 2], scores=(), cache=path, progress=False)
    assert rest.complete and rest.cached == 1 and len(Cache(path)) == 3


def test_bad_input_raises_before_any_work(city_data, tmp_path, server):
    with pytest.raises(ValueError, match="feature"):
        autointerp(city_data, [0, 99], cache=tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match="on_error"):
        autointerp(city_data, [0], on_error="ignore")
    with pytest.raises(TypeError, match="explainer"):
        autointerp(city_data, [0], explainer="gpt")
    with pytest.raises(TypeError, match="cache"):
        autointerp(city_data, [0], cache=3)
    assert server.requests == []


def test_cache_key_separates_dictionaries_and_texts(tiny, city_data, tmp_path):
    """Another dictionary at the same site (or the same one over other texts) is another key:
    its features are explained afresh, not read from the first one's cache."""
    from mi_widgets.core.autointerp.batch import fingerprint
    from mi_widgets.core.decomposition.features import LinearDictionary, feature_pass

    path = tmp_path / "ai.sqlite"
    autointerp(city_data, [0], scores=(), cache=path, progress=False)
    sae = city_data.sae
    other = LinearDictionary(sae.W_enc * 1.5, sae.b_enc, sae.W_dec, site=sae.site, layer=sae.layer)
    data2 = feature_pass(tiny, other, city_data.texts[:24], progress=False)
    assert fingerprint(data2) != fingerprint(city_data)
    out = autointerp(data2, [0], scores=(), cache=path, progress=False)
    assert out.cached == 0 and len(Cache(path)) == 2
    assert autointerp(city_data, [0], scores=(), cache=path, progress=False).cached == 1
