"""HypothesisCard in a real JupyterLab, driven by headless chromium (issue 15).

One notebook (one kernel): cell 0 validates a wrong description of zoo:induction's head 1.2 ("a
previous-token head"; compiled._build_induction makes 1.2 an induction head, see
tests/validation/test_hypothesis.py) and shows ``verdict.widget()``. Ground truth: the activation
and attention tests fail with counterexamples (1.2 is silent at first occurrences and attends to
the token after the earlier copy, not to the previous token), while the ablation tests pass
(ablating 1.2 does destroy the induction task), so the card mixes PASS and FAIL rows. One hostile
counterexample (markup as the context) is added to the attention test before the card is made.
DOM hooks: docs/widget_protocol.md ("HypothesisCard") and js/src/hypothesis_card.ts.
"""

from __future__ import annotations

import pytest
from _browser import display_token, has_class
from playwright.sync_api import expect

from ._notebook import view_notebook

pytestmark = pytest.mark.e2e

HOSTILE = '<img src=x onerror="window.__pwned=7">[[</script><script>window.__pwned=8</script>]] &amp;'
DESCRIPTION = "previous-token head <b>(wrong)</b>"
ATTENTION = "attention: mass on predicted keys"

nb = view_notebook("hypothesis_card.ipynb", f"""
import mi_widgets as mw
from mi_widgets.core.validation import (AblationPrediction, ActivationPrediction, AttentionPrediction,
                                        Counterexample, Hypothesis, PromptTask, validate)
from mi_widgets.zoo import compiled as C
m = mw.load("zoo:induction")
corpus, _ = C.induction_texts(n=4, seq_len=8, seed=11)
prompts, answers = C.induction_texts(n=8, seq_len=8, seed=12, cut=12)
hyp = Hypothesis("1.2", {DESCRIPTION!r},
                 activation=ActivationPrediction(lambda t, i: None if i == 0 else True, corpus),
                 attention=AttentionPrediction(lambda t, i: [i - 1] if i > 0 else [], corpus),
                 ablation=AblationPrediction(PromptTask(prompts, mw.prob(answers), "induction"), 0.5))
v = validate(hyp, m, progress=False)
v.test({ATTENTION!r}).counterexamples.append(
    Counterexample("attends elsewhere", 0, 1, "<b>", {HOSTILE!r}, 0.0, 1.0))
card = v.widget()
card
""")


def card_root(nb):
    return nb.view(".mw-hypothesis-card", ready="tr.mw-test")


def test_rows_and_marks_are_the_verdicts(nb):
    root = card_root(nb)
    tests = nb.py_json("[[t.name, bool(t.passed)] for t in v.tests]")
    names = [n for n, _ in tests]
    # ground truth: the wrong description fails activation/attention, ablating 1.2 still hurts
    assert {"activation: detection accuracy", ATTENTION, "ablation (zero)"} <= set(names)
    assert not dict(tests)[ATTENTION] and dict(tests)["ablation (zero)"]
    rows = root.locator("tr.mw-test")
    expect(rows).to_have_count(len(tests))
    assert rows.locator(".mw-name").all_text_contents() == names
    assert rows.locator(".mw-badge").all_text_contents() == ["PASS" if p else "FAIL" for _, p in tests]
    for i, (_, passed) in enumerate(tests):
        expect(rows.nth(i).locator(".mw-badge")).to_have_class(has_class("mw-pass" if passed else "mw-fail"))
    header = root.locator(".mw-header .mw-badge")
    expect(header).to_have_text("FAILS")
    expect(header).to_have_class(has_class("mw-fail"))
    expect(root.locator(".mw-title")).to_have_text("zoo:induction · 1.2")
    # the description literally (markup is text)
    assert root.locator(".mw-description").text_content() == DESCRIPTION
    assert root.locator(".mw-description b").count() == 0
    # nothing selected: every counterexample of the verdict is listed
    total = nb.py_json("len(v.counterexamples)")
    expect(root.locator(".mw-ce")).to_have_count(total)
    assert nb.py_json("card.selected_test") == -1


def test_click_a_row_selects_it_in_python_and_lists_its_counterexamples(nb):
    root = card_root(nb)
    rows = root.locator("tr.mw-test")
    k = nb.py_json(f"[t.name for t in v.tests].index({ATTENTION!r})")
    rows.nth(k).click()
    assert nb.wait_py("card.selected_test", k) == k
    expect(rows.nth(k)).to_have_class(has_class("mw-selected"))
    expect(rows.nth(k)).to_have_attribute("aria-selected", "true")
    expect(root.locator("tr.mw-test.mw-selected")).to_have_count(1)
    ces = nb.py_json(f"[[c.kind, c.context] for c in v.tests[{k}].counterexamples]")
    assert len(ces) >= 2  # the real ones and the hostile one
    items = root.locator(".mw-panel .mw-ce")
    expect(items).to_have_count(len(ces))
    expect(root.locator(".mw-panel-title")).to_have_text(f"counterexamples: {ATTENTION} ({len(ces)})")
    assert items.locator(".mw-ce-kind").all_text_contents() == [kind for kind, _ in ces]
    assert items.locator(".mw-ce-context").all_text_contents() == [display_token(c) for _, c in ces]
    # the hostile context is shown as text, nothing of it became markup or ran
    assert HOSTILE in items.locator(".mw-ce-context").all_text_contents()
    assert root.locator(".mw-panel img, .mw-panel script").count() == 0
    nb.assert_no_markup_ran()

    # a second click on the same row clears the selection, in Python too
    rows.nth(k).click()
    assert nb.wait_py("card.selected_test", -1) == -1
    expect(root.locator("tr.mw-test.mw-selected")).to_have_count(0)
    expect(items).to_have_count(nb.py_json("len(v.counterexamples)"))


def test_selection_from_python_and_the_keyboard(nb):
    root = card_root(nb)
    rows = root.locator("tr.mw-test")
    j = nb.py_json("[t.name for t in v.tests].index('activation: detection accuracy')")
    nb.py(f"card.selected_test = {j}")
    expect(rows.nth(j)).to_have_class(has_class("mw-selected"))
    n = nb.py_json(f"len(v.tests[{j}].counterexamples)")
    assert n >= 1
    expect(root.locator(".mw-panel .mw-ce")).to_have_count(n)
    kinds = root.locator(".mw-panel .mw-ce-kind").all_text_contents()
    assert kinds == nb.py_json(f"[c.kind for c in v.tests[{j}].counterexamples]")
    # a passing row has no counterexamples: Enter on it says so
    p = nb.py_json("[bool(t.passed) for t in v.tests].index(True)")
    rows.nth(p).focus()
    nb.page.keyboard.press("Enter")
    assert nb.wait_py("card.selected_test", p) == p
    expect(root.locator(".mw-panel .mw-ce-none")).to_have_text("none")
    expect(root.locator(".mw-panel .mw-ce")).to_have_count(0)
