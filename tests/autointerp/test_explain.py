"""Explanations (mi_widgets/core/autointerp/explain.py, records.py): what the explainer is
shown, the rule explainer on zoo:tiny's planted city feature, rules as predicates, and an LM
explainer through a scripted OpenAI-compatible server (its prompt carries the examples)."""

from __future__ import annotations

import pytest
from _ai_server import chat_reply

from mi_widgets.core.autointerp.client import OpenAIClient
from mi_widgets.core.autointerp.explain import EXPLAIN_TEMPLATE, RuleExplainer, explain, parse_rule
from mi_widgets.core.autointerp.records import feature_records
from mi_widgets.zoo.corpus import CITIES

CITY_TOKENS = {" " + c for c in CITIES}


def test_records_split_shown_from_scored_windows(city_data):
    """Top windows alternate between explainer and scorer; contrast and negative windows never
    fire and are disjoint; every scored activating window peaks on a city token."""
    r = feature_records(city_data, 0, n_top=5, n_quantile=4, n_contrast=3, n_negative=5)
    top = city_data.top_examples(0)
    assert [x.activation for x in top[0::2][:5]] == [max(x.acts) for x in r.top]
    shown = {(x.text, x.position) for x in r.top + r.quantile}
    scored_pos = [x for x in r.scored if x.kind in ("top", "quantile")]
    assert scored_pos and not shown & {(x.text, x.position) for x in scored_pos}
    assert len(r.contrast) == 3 and all(max(x.acts) <= 0 for x in r.contrast)
    negs = [x for x in r.scored if x.kind == "negative"]
    assert len(negs) == 5 and all(max(x.acts) <= 0 for x in negs)
    assert not {(x.text, x.position) for x in r.contrast} & {(x.text, x.position) for x in negs}
    for x in scored_pos:
        assert x.tokens[max(range(len(x.acts)), key=x.acts.__getitem__)] in CITY_TOKENS


def test_rule_explainer_writes_a_city_rule(city_data):
    """Ground truth: the planted feature fires on city tokens, so the rule lists cities only and
    matches a held-out city it was never shown no more than the corpus allows: it matches
    every city it names and no person or filler word."""
    e = explain(0, city_data, RuleExplainer())
    m = parse_rule(e.text)
    named = [c for c in CITIES if m(" " + c)]
    assert len(named) >= 5, e.text
    assert not any(m(" " + w) for w in ("Anna", "Oscar", "the", "in", "Tower", "."))
    assert e.explainer == "rule" and e.prompt == ""


def test_parse_rule_forms():
    assert parse_rule("fires on tokens matching /^\\s*(?:Paris|Rome)$/")(" Rome")
    assert not parse_rule("fires on tokens matching /^\\s*(?:Paris|Rome)$/")(" Romeo")
    assert parse_rule("tokens in {cat, Dog}")(" dog")
    assert parse_rule("city names", {"city names": ["Paris"]})(" Paris")
    assert parse_rule("something vague") is None
    assert parse_rule("matching /abc/i")("xABCx")
    with pytest.raises(ValueError, match="does not compile"):
        parse_rule("matching /(unclosed/")


def test_lm_explainer_sees_examples_and_template_fields(server, city_data):
    server.script = lambda body, n: chat_reply("Explanation: names of cities\nmore text")
    lm = OpenAIClient(server.url, "explainer-model", retries=0)
    e = explain(0, city_data, lm, n_top=4, n_quantile=2, n_contrast=2)
    assert e.text == "names of cities" and e.explainer == "explainer-model"
    msgs = server.requests[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[1]["content"] == e.prompt
    recs = feature_records(city_data, 0, n_top=4, n_quantile=2, n_contrast=2, n_negative=0)
    # the top windows appear with their activating tokens marked, the contrast ones unmarked
    for r in recs.top:
        peak = r.tokens[max(range(len(r.acts)), key=r.acts.__getitem__)]
        assert f"<<{peak}>>" in e.prompt
    for r in recs.contrast:
        assert "".join(r.tokens).replace("\n", "\\n") in e.prompt
    # a user template with the documented fields
    server.script = lambda body, n: chat_reply("cities")
    custom = "F{feature} max {max_act}\n{top_examples}\n--\n{quantile_examples}\n--\n{contrast_examples}\n{top_activations}"
    e2 = explain(0, city_data, lm, template=custom, n_top=2, n_quantile=1, n_contrast=1)
    assert e2.prompt.startswith("F0 max ") and e2.text == "cities"
    with pytest.raises(ValueError, match="unknown field"):
        explain(0, city_data, lm, template="{nonsense}")
    assert "{top_examples}" in EXPLAIN_TEMPLATE


def test_bad_input_raises_before_any_request(server, city_data):
    lm = OpenAIClient(server.url, "m")
    with pytest.raises(ValueError, match="feature"):
        explain(-1, city_data, lm)
    with pytest.raises(TypeError, match="explainer"):
        explain(0, city_data, "gpt-4")
    with pytest.raises(TypeError, match="FeatureData"):
        explain(0, [["tokens"]], lm)
    with pytest.raises(ValueError, match="n_top"):
        explain(0, city_data, lm, n_top=-2)
    assert server.requests == []
