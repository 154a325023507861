"""Scores of explanations (mi_widgets/core/autointerp/scoring.py): metrics on hand-computed
answers, the expected value over digit logprobs, the language-model scorer against a scripted
server that judges like the rule scorer (so both paths must agree number for number), and bad
input."""

from __future__ import annotations

import math

import pytest
from _ai_server import oracle

from mi_widgets.core.autointerp.client import OpenAIClient
from mi_widgets.core.autointerp.scoring import (
    LMScorer,
    RuleSimulator,
    _expected_numbers,
    auc,
    classification,
    pearson,
    score_explanation,
)
from mi_widgets.zoo.corpus import CITIES, PEOPLE

LEXICON = {"city names": CITIES, "names of people": PEOPLE}


def test_metrics_on_hand_computed_answers():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([0, 0, 0], [1, 2, 3]) == 0.0  # a constant prediction carries no information
    assert pearson([1, 0, 0, 1], [2, 0, 1, 1]) == pytest.approx(0.7071067811865475)
    # AUC: 3 positives x 2 negatives; pairs won: (0.9>0.4, 0.9>0.1, 0.4=0.4 -> 1/2, 0.4>0.1, 0.05<both)
    assert auc([1, 1, 1, 0, 0], [0.9, 0.4, 0.05, 0.4, 0.1]) == pytest.approx((2 + 1.5 + 0) / 6)
    c = classification([True, True, True, False, False], [True, True, False, True, False], [1, 1, 0, 1, 0])
    assert c["balanced_accuracy"] == pytest.approx(0.5 * (2 / 3 + 1 / 2))
    assert c["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_expected_value_over_digit_tokens():
    lp = [("7", [("7", math.log(0.5)), ("10", math.log(0.25)), ("x", math.log(0.25))]),
          (",", [(",", 0.0)]),
          ("1", [("1", math.log(0.6)), (" 2", math.log(0.4))]),
          ("0", [("0", 0.0)])]  # continues "10": not a number of its own
    assert _expected_numbers(lp) == pytest.approx([(0.5 * 7 + 0.25 * 10) / 0.75, 0.6 * 1 + 0.4 * 2])


@pytest.mark.parametrize("logprobs", [False, True], ids=["parsed", "logprobs"])
def test_lm_scorer_agrees_with_the_rule_scorer(server, city_data, logprobs):
    """The scripted endpoint judges exactly like RuleSimulator(LEXICON), so every score of the
    LM path (prompt formatting, batching, parsing or expected values, order shuffling) equals the
    rule path's; detection/fuzzing AUC on parsed 0/1 answers equals balanced accuracy."""
    server.script = oracle(LEXICON, logprobs=logprobs)
    lm = LMScorer(OpenAIClient(server.url, "oracle", retries=0), logprobs=logprobs, batch=5)
    kw = dict(baseline=["names of people"], n_top=4, n_quantile=4, n_negative=6, n_prompts=6)
    got = score_explanation("city names", 0, city_data, scorer=lm, **kw)
    want = score_explanation("city names", 0, city_data, scorer=RuleSimulator(LEXICON), **kw)
    for k in ("simulation", "detection_balanced_accuracy", "detection_f1", "fuzzing_balanced_accuracy", "fuzzing_f1"):
        assert got.values[k] == pytest.approx(want.values[k]), k
        assert got.baseline[k] == pytest.approx(want.baseline[k]), k
    # the intervention pick is P(A) from the logprobs: the oracle puts 0.9 on its answer, so a
    # decided pair earns 0.9 instead of 1 (0.1 instead of 0): credit = 0.5 + 0.8 (rule - 0.5)
    shrink = 0.8 if logprobs else 1.0
    assert got.values["intervention"] == pytest.approx(0.5 + shrink * (want.values["intervention"] - 0.5))
    assert got.baseline["intervention"] == pytest.approx(0.5 + shrink * (want.baseline["intervention"] - 0.5))
    assert got.values["simulation"] > 0.9 and got.values["intervention"] > 0.5
    if not logprobs:
        assert got.values["detection_auc"] == pytest.approx(got.values["detection_balanced_accuracy"])
    asked = [r for r in server.requests if r.get("logprobs")]
    assert (len(asked) == len(server.requests)) if logprobs else not asked
    assert all(len(r["messages"]) == 2 for r in server.requests)


def test_parallel_simulation_keeps_order_and_overlaps_calls(server, city_data):
    """workers=4: the same simulation score as one at a time, in well under the serial time
    (each scripted reply takes 0.2 s)."""
    import time

    judge = oracle(LEXICON)
    server.script = lambda body, n: ("sleep", 0.2, judge(body, n))
    kw = dict(scores=("simulation",), baseline=[], n_top=4, n_quantile=4, n_negative=4)
    t = time.monotonic()
    par = score_explanation("city names", 0, city_data, scorer=LMScorer(OpenAIClient(server.url, "o"), workers=4), **kw)
    took = time.monotonic() - t
    n = par.counts["simulation"] and len(server.requests)
    ser = score_explanation("city names", 0, city_data, scorer=RuleSimulator(LEXICON), **kw)
    assert par.values["simulation"] == pytest.approx(ser.values["simulation"]) and par.values["simulation"] > 0.9
    assert n >= 8 and took < 0.2 * n * 0.6, (n, took)


def test_bad_input_raises_before_any_work(city_data, server):
    with pytest.raises(TypeError, match="explanation"):
        score_explanation(3, 0, city_data)
    with pytest.raises(ValueError, match="scores"):
        score_explanation("x", 0, city_data, scores=("vibes",))
    with pytest.raises(ValueError, match="feature"):
        score_explanation("x", 99, city_data)
    with pytest.raises(TypeError, match="scorer"):
        score_explanation("x", 0, city_data, scorer=object())
    with pytest.raises(TypeError, match="FeatureData"):
        score_explanation("x", 0, {"texts": []})
    with pytest.raises(ValueError, match="unknown templates"):
        LMScorer(OpenAIClient(server.url, "m"), templates={"simulaton": "{explanation}"})
    assert server.requests == []


def test_city_feature_ground_truth(city_data):
    """Ground truth on zoo:tiny (corpus.py plants 20 one-token cities; feature 0 is the city
    class's mean-difference direction at resid_pre 0, see conftest): the correct rule "city
    names" beats two wrong rules ("names of people"; common function words) and the random
    baseline on every score, and its simulation and detection are near perfect. Intervention:
    steering the direction raises city tokens (its logit effects are cities: tied embeddings)."""
    sim = RuleSimulator(LEXICON)
    wrong = ["names of people", "fires on tokens matching /^\\s*(?:the|is|in|a)$/"]
    res = {e: score_explanation(e, 0, city_data, scorer=sim, n_prompts=16) for e in ["city names", *wrong]}
    right = res["city names"]
    print("\n" + "\n".join(str(s) for s in res.values()))
    assert right.counts["intervention"] == 16 and right.counts["detection"] >= 20
    for k, v in right.values.items():
        assert v > right.baseline[k], (k, v, right.baseline[k])
        for w in wrong:
            assert v > res[w].values[k], (k, w, v, res[w].values[k])
    assert right.values["simulation"] > 0.9 and right.values["detection_balanced_accuracy"] > 0.9
    assert right.values["intervention"] > 0.6
