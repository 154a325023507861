"""Hypotheses and verdicts on the compiled zoo, whose answers are known by construction.

- ``zoo:induction`` head 1.2 is an induction head (``compiled._build_induction``): a correct
  description of it passes every test; "a previous-token head" (true of 0.1, not of 1.2) fails with
  counterexamples at first occurrences; the hand-set induction pattern replaces it.
- ``zoo:ioi_backup`` head 2.3 is the name mover and 3.0 its backup: zero-ablation of 2.3 is repaired
  by 3.0, so a zero-ablation test understates 2.3 while mean/resample ablation and the direct effect
  (later heads frozen) do not, and the verdict flags the disagreement.
"""

from __future__ import annotations

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.validation import (
    AblationPrediction,
    ActivationPrediction,
    AttentionPrediction,
    Hypothesis,
    PromptTask,
    ReplacementPrediction,
    Verdict,
    direct_effect,
    validate,
)
from mi_widgets.zoo import compiled as C


def seen_before(toks, i):
    """Induction: fires at a token that occurred earlier (not at BOS)."""
    return None if i == 0 else toks[i] in toks[1:i]


def after_earlier_copy(toks, i):
    """Induction: attends to the token after each earlier occurrence of the current token."""
    return [j + 1 for j in range(1, i) if toks[j] == toks[i]]


def previous(toks, i):
    return [i - 1] if i > 0 else []


@pytest.fixture(scope="module")
def ind():
    return mw.load("zoo:induction")


@pytest.fixture(scope="module")
def ind_data():
    corpus, _ = C.induction_texts(n=6, seq_len=10, seed=11)
    prompts, answers = C.induction_texts(n=12, seq_len=8, seed=12, cut=12)
    neutral, _ = C.induction_texts(n=3, seq_len=8, seed=13, cut=9)  # no repeat to predict
    task = PromptTask(prompts, mw.prob(answers), "induction")
    return corpus, task, neutral


@pytest.fixture(scope="module")
def correct(ind, ind_data):
    corpus, task, neutral = ind_data
    hyp = Hypothesis(
        "1.2",
        "induction head: at a repeated token, attends to the token after its earlier occurrence and copies it",
        activation=ActivationPrediction(seen_before, corpus),
        attention=AttentionPrediction(after_earlier_copy, corpus),
        ablation=AblationPrediction(task, drop_at_least=0.5),
        replacement=ReplacementPrediction(task, "pattern", neutral=neutral),
    )
    return validate(hyp, ind, progress=False)


@pytest.fixture(scope="module")
def wrong(ind, ind_data):
    corpus, task, _ = ind_data
    hyp = Hypothesis(
        "1.2",
        "previous-token head: active everywhere, attends to the previous token",
        activation=ActivationPrediction(lambda t, i: None if i == 0 else True, corpus),
        attention=AttentionPrediction(previous, corpus),
        replacement=ReplacementPrediction(task, "pattern"),
    )
    return validate(hyp, ind, progress=False)


def test_correct_induction_hypothesis_passes_every_test(correct):
    assert isinstance(correct, Verdict)
    names = [t.name for t in correct.tests]
    for kind in ("zero", "mean", "resample"):
        assert f"ablation ({kind})" in names
    assert correct.passed, correct
    assert correct.test("activation: detection accuracy").figure > 0.99
    assert correct.test("attention: mass on predicted keys").figure > 0.99
    assert not correct.disagreements and not correct.counterexamples


def test_hand_set_induction_pattern_recovers_the_induction_metric(correct):
    kept = correct.test("replacement: metric kept")
    assert kept.figure >= 0.9
    assert abs(correct.test("replacement: loss change on neutral text").figure) < 0.05


def test_previous_token_hypothesis_fails_with_counterexamples(wrong):
    assert not wrong.passed
    for name in ("activation: detection accuracy", "attention: mass on predicted keys",
                 "replacement: metric kept"):  # fmt: skip
        assert not wrong.test(name).passed, name
    ce = wrong.test("activation: detection accuracy").counterexamples
    assert ce and all(c.kind == "predicted, silent" for c in ce)
    # each counterexample is a first occurrence: 1.2 has nothing to copy there
    for c in ce:
        assert c.activation < 1e-3
    att = wrong.test("attention: mass on predicted keys").counterexamples
    assert att and all(c.activation < 0.5 for c in att)
    table = wrong.counterexamples_table()
    assert {"test", "rank", "context", "activation"} <= set(table.columns)
    assert "FAILS" in repr(wrong)


@pytest.fixture(scope="module")
def ioi_task():
    prompts = C.ioi_prompts(n=20, seed=31)
    ref = C.ioi_reference(prompts, seed=32)
    task = PromptTask([p["text"] for p in prompts],
                mw.logit_diff([p["io"] for p in prompts], [p["s"] for p in prompts]), "IOI")  # fmt: skip
    return task, [p["text"] for p in ref]


def test_zero_ablation_understates_the_name_mover_that_a_backup_repairs(ioi_task):
    model = mw.load("zoo:ioi_backup")
    task, ref = ioi_task
    hyp = Hypothesis(
        "2.3",
        "name mover: copies IO to the output",
        ablation=AblationPrediction(task, drop_at_least=5.0, reference=ref),
    )
    v = validate(hyp, model, progress=False)
    zero, mean, res = (v.test(f"ablation ({k})") for k in ("zero", "mean", "resample"))
    assert not zero.passed and abs(zero.figure) < 0.5  # the backup 3.0 repairs it
    assert mean.passed and res.passed and res.figure > 8
    assert v.disagreements and "zero" in v.disagreements[0]
    # path patching to the logits (later heads frozen) shows the whole effect, even with zeros
    d = direct_effect(model, task.prompts, task.metric, "2.3", "zero", progress=False)
    assert d.clean_mean - d.ablated_mean > 8
    r = direct_effect(model, task.prompts, task.metric, "2.3", "resample", ref, progress=False)
    assert r.clean_mean - r.ablated_mean > 8
    # ... and the backup's own direct effect is nil: it is silent on clean runs
    b = direct_effect(model, task.prompts, task.metric, "3.0", "zero", progress=False)
    assert abs(b.clean_mean - b.ablated_mean) < 0.05


def test_direction_hypothesis_reads_the_planted_prev_block(ind, ind_data):
    # In zoo:induction head 0.1 writes a one-hot of the previous token into the 'prev' block.
    corpus, _, _ = ind_data
    lay = C.layout("induction")
    vocab = C.induction_vocab()
    w = " apple"
    vec = torch.zeros(ind.d_model)
    vec[lay.idx("prev", vocab.index(w))] = 1.0
    hyp = Hypothesis(("resid_pre", 1, vec), "the previous token was ' apple'",
                     activation=ActivationPrediction(lambda t, i: t[i - 1] == w if i else None,
                                                     corpus + [" apple river apple stone"]))  # fmt: skip
    v = validate(hyp, ind, progress=False)
    assert v.passed, v


def test_verdict_table_and_plot(correct):
    df = correct.to_pandas()
    assert list(df.columns[:5]) == ["test", "figure", "threshold", "direction", "passed"]
    assert df["passed"].all()
    fig = correct.plot()
    assert len(fig.axes) == 1
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_bad_input_is_refused_before_any_forward(ind, ind_data):
    corpus, task, _ = ind_data
    act = ActivationPrediction(seen_before, corpus)
    with pytest.raises(ValueError, match="out of range"):
        validate(Hypothesis("7.0", "x", activation=act), ind)
    with pytest.raises(ValueError, match="at least one testable part"):
        Hypothesis("1.2", "x")
    with pytest.raises(ValueError, match="attention="):
        Hypothesis("1.2", "x", replacement=ReplacementPrediction(task))
    with pytest.raises(ValueError, match="kinds"):
        AblationPrediction(task, 0.5, kinds=("half",))
    with pytest.raises(TypeError):
        ActivationPrediction("not a function", corpus)
    with pytest.raises(ValueError, match="give the model"):
        validate(Hypothesis("1.2", "x", activation=act))
    vec = torch.ones(ind.d_model)
    with pytest.raises(ValueError, match="heads and neurons"):
        validate(
            Hypothesis(("resid_pre", 1, vec), "x", ablation=AblationPrediction(task, 0.1)), ind
        )
    one = PromptTask([task.prompts[0]], mw.prob(" apple"), "one")
    with pytest.raises(ValueError, match="same token length"):
        validate(Hypothesis("1.2", "x", ablation=AblationPrediction(one, 0.1)), ind)


def test_sae_feature_hypothesis_on_a_hand_set_dictionary(ind, ind_data):
    # An SAE whose feature 0 reads the 'prev' entry of ' apple' (zoo:induction head 0.1 writes a
    # one-hot of the previous token there): by construction it fires exactly after ' apple'.
    from mi_widgets.core.decomposition.sae import SAE

    corpus, _, _ = ind_data
    lay, vocab = C.layout("induction"), C.induction_vocab()
    sae = SAE(ind.d_model, 4, "relu", site="resid_pre", layer=1)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[lay.idx("prev", vocab.index(" apple")), 0] = 1.0
    texts = corpus + [" apple river apple stone", " cloud apple table"]
    right = validate(Hypothesis((sae, 0), "fires right after ' apple'",
                                activation=ActivationPrediction(
                                    lambda t, i: t[i - 1] == " apple" if i else None, texts)),
                     ind, progress=False)  # fmt: skip
    assert right.passed, right
    wrong = validate(Hypothesis((sae, 0), "fires on ' apple'",
                                activation=ActivationPrediction(
                                    lambda t, i: t[i] == " apple" if i else None, texts)),
                     ind, progress=False)  # fmt: skip
    assert not wrong.passed
    kinds = {c.kind for c in wrong.counterexamples}
    # from the corpus, both ways; token edits add the reverse (an ' apple' edited in before a
    # non-' apple' token makes the feature fire where the description says it is silent)
    assert kinds == {"predicted, silent", "silent prediction, fires", "silent prediction, fires (edited)"}
    assert not [c for c in right.counterexamples if c.kind.endswith("(edited)")]


def test_neuron_hypothesis_fails_where_the_mlp_is_zero(ind, ind_data):
    # zoo:induction's MLPs are all zero by construction: no neuron does anything.
    corpus, task, _ = ind_data
    hyp = Hypothesis(("mlp_post", 0, 3), "an induction neuron",
                     activation=ActivationPrediction(seen_before, corpus),
                     ablation=AblationPrediction(task, drop_at_least=0.1))  # fmt: skip
    v = validate(hyp, ind, progress=False)
    assert not v.passed
    for kind in ("zero", "mean", "resample"):
        assert abs(v.test(f"ablation ({kind})").figure) < 1e-4
    assert abs(v.test("activation: correlation").figure) < 1e-6


def test_gradient_guided_edits_find_what_the_corpus_cannot(ind):
    """The planted unit (zoo:induction's 'prev' block for ' apple' at resid_pre 1, written by head
    0.1) fires exactly when the previous token is ' apple'. A wrong, broader description ("' apple'
    occurred earlier") agrees with it on every last position of this corpus, so corpus search finds
    nothing; a one-token edit replacing the previous ' apple' (another ' apple' earlier keeps the
    description's call) silences the unit: a counterexample. The right description has none."""
    lay, vocab, w = C.layout("induction"), C.induction_vocab(), " apple"
    vec = torch.zeros(ind.d_model)
    vec[lay.idx("prev", vocab.index(w))] = 1.0
    others = [x for x in vocab if x != w][:6]
    corpus = [f"{a}{w}{b}{w}{c}" for a, b, c in zip(others, others[1:], others[2:])]
    corpus += [f"{a}{b}{c}{w}" for a, b, c in zip(others, others[2:], others[4:])]  # negatives
    last = lambda rule: (lambda t, i: rule(t, i) if i == len(t) - 1 else None)  # noqa: E731
    broad = ActivationPrediction(last(lambda t, i: w in t[:i]), corpus)
    exact = ActivationPrediction(last(lambda t, i: t[i - 1] == w), corpus)
    v_broad = validate(Hypothesis(("resid_pre", 1, vec), "' apple' occurred earlier", activation=broad), ind, progress=False)
    v_exact = validate(Hypothesis(("resid_pre", 1, vec), "the previous token was ' apple'", activation=exact), ind, progress=False)
    natural = [c for c in v_broad.counterexamples if not c.kind.endswith("(edited)")]
    edited = [c for c in v_broad.counterexamples if c.kind == "predicted, silent (edited)"]
    assert natural == []  # the corpus alone cannot refute the broad description
    assert edited, v_broad
    for c in edited:
        assert c.activation < v_broad.test("activation: detection accuracy").detail["activation_threshold"]
        assert "' apple' ->" in c.edit and f"{w}" in c.context  # the edit removed the previous ' apple'
    assert [c for c in v_exact.counterexamples if c.kind.endswith("(edited)")] == []
    assert validate(Hypothesis(("resid_pre", 1, vec), "x", activation=ActivationPrediction(
        last(lambda t, i: w in t[:i]), corpus, n_edit_targets=0)), ind, progress=False).counterexamples == []
