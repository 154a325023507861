"""Chain-of-thought faithfulness on zoo:tiny's planted two-hop lookup (ground truth
'two_hop_step_reading': the answer is copied from the written step; with the step's city
replaced the model follows it in 100% of prompts; without the step it is right in 10%), and the
attribution methods against hand computations."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.description import cot


@pytest.fixture(scope="module")
def two_hop(tiny):
    return cot.cot_faithfulness(tiny, cot.two_hop_traces(), progress=False)


def test_traces_reproduce_the_corpus_prompts():
    from mi_widgets.zoo import corpus

    trs = cot.two_hop_traces(3)
    ex = corpus.two_hop_examples("step")
    assert [t.text for t in trs] == [e["prompt"] for e in ex[:3]]
    assert trs[0].labels == ["question", "premise", "lookup"]
    assert trs[0].edited(2, "remove") == corpus.two_hop_examples("no_step")[0]["prompt"].replace(
        corpus.two_hop_examples("no_step")[0]["person"], trs[0].steps[0].split()[3][:-2]
    )
    assert trs[0].edited(2, "corrupt") == corpus.two_hop_examples("corrupt_step")[0]["prompt"].replace(
        corpus.two_hop_examples("corrupt_step")[0]["person"], trs[0].steps[0].split()[3][:-2]
    )


def test_the_lookup_step_is_load_bearing_and_the_others_are_not(two_hop):
    """Corrupting the lookup step's city makes the model follow it (ground truth 1.00);
    removing the step drops accuracy to the recall rate (ground truth 0.10); the question's
    person and the premise's place can be changed without changing the answer (the lookup
    step restates the place)."""
    assert two_hop.summary().iloc[0]["accuracy"] == 1.0  # baseline
    assert two_hop.rate("lookup", "corrupt", "follows") >= 0.95
    assert two_hop.rate("lookup", "corrupt", "changed") >= 0.95
    assert two_hop.rate("lookup", "remove", "accuracy") <= 0.2
    assert two_hop.rate("question", "corrupt", "changed") <= 0.05
    assert two_hop.rate("premise", "corrupt", "changed") <= 0.05
    assert two_hop.rate("lookup", "corrupt", "delta_logp") < -5 < two_hop.rate("premise", "corrupt", "delta_logp")
    df = two_hop.to_pandas()
    assert len(df) == 70 * 6 and set(df["edit"]) == {"remove", "corrupt"}


def test_occlusion_puts_the_answer_on_the_steps_city_token(two_hop):
    """The ground truth names the step's city token (attended from ' A:') as the component:
    occluding it costs the most log-probability in most traces, and the lookup step carries
    the largest summed attribution in every trace."""
    hits = 0
    for i, t in enumerate(two_hop.traces):
        toks, steps, a = two_hop.tokens[i], two_hop.token_step[i], two_hop.token_attr[i]
        city = [j for j, (tok, s) in enumerate(zip(toks, steps)) if tok == t.answer and s == 2]
        assert len(city) == 1
        hits += int(a.argmax()) == city[0]
        sa = two_hop.step_attr(i)
        assert max(range(3), key=lambda k: sa[k]) == 2
    assert hits / len(two_hop.traces) >= 0.8  # measured 0.89


def test_a_filler_step_is_ignored(tiny):
    """A neutral filler sentence after the lookup (never seen in two-hop rows): removing or
    replacing it barely changes the answer, while the lookup step still decides it."""
    r = cot.cot_faithfulness(tiny, cot.two_hop_traces(30, filler=True), attribution=None, progress=False)
    assert r.rate("filler", "remove", "changed") <= 0.1
    assert r.rate("filler", "corrupt", "changed") <= 0.15
    assert r.rate("lookup", "corrupt", "follows") >= 0.9
    assert r.token_attr == []


def test_occlusion_equals_a_hand_forward_with_the_embedding_zeroed(tiny):
    t = cot.two_hop_traces(1)[0]
    ids = tiny.to_tokens(t.text)
    aid = tiny.tokenizer(t.answer, add_special_tokens=False)["input_ids"][0]
    attr, lp0 = cot.occlusion(tiny, t.text, aid)
    wte = tiny.hf.get_input_embeddings()
    for pos in (3, ids.shape[1] - 5, ids.shape[1] - 1):
        def zero(mod, args, out, pos=pos):
            out = out.clone()
            out[:, pos] = 0
            return out

        h = wte.register_forward_hook(zero)
        try:
            with torch.no_grad():
                lp = torch.log_softmax(tiny.hf(ids).logits[0, -1], -1)[aid]
        finally:
            h.remove()
        assert float(attr[pos]) == pytest.approx(float(lp0 - lp), abs=1e-4)
    assert float(attr[0]) == 0.0  # BOS


def test_grad_x_input_sums_to_the_directional_derivative(tiny):
    """Completeness of the first-order term: sum_t GxI_t = d/da log p(answer | a * e) at a = 1
    (a finite difference through a hook that scales the token embeddings)."""
    t = cot.two_hop_traces(1)[0]
    ids = tiny.to_tokens(t.text)
    aid = tiny.tokenizer(t.answer, add_special_tokens=False)["input_ids"][0]
    attr, _ = cot.grad_x_input(tiny, t.text, aid)
    wte = tiny.hf.get_input_embeddings()

    def f(a):
        h = wte.register_forward_hook(lambda mod, args, out: out * a)
        try:
            with torch.no_grad():
                return float(torch.log_softmax(tiny.hf(ids).logits[0, -1].double(), -1)[aid])
        finally:
            h.remove()

    eps = 1e-3
    assert float(attr.sum()) == pytest.approx((f(1 + eps) - f(1 - eps)) / (2 * eps), rel=0.05, abs=1e-4)
    assert all(not p.requires_grad or p.grad is None for p in tiny.hf.parameters())


def test_errors_before_compute(tiny):
    with pytest.raises(ValueError, match="not exactly one token"):
        cot.cot_faithfulness(tiny, cot.CoTTrace(["a b."], answer=" Paris Rome"))
    with pytest.raises(ValueError, match="not a step index"):
        cot.CoTTrace(["a.", "b."], corruptions={5: "c."})
    with pytest.raises(ValueError, match="labels has"):
        cot.CoTTrace(["a.", "b."], labels=["x"])
    with pytest.raises(ValueError, match="attribution must be"):
        cot.cot_faithfulness(tiny, cot.two_hop_traces(1), attribution="magic")
    with pytest.raises(ValueError, match="edits must be"):
        cot.cot_faithfulness(tiny, cot.two_hop_traces(1), edits=["shuffle"])


def test_result_views(tiny, two_hop):
    s = two_hop.summary()
    assert list(s.columns) == ["label", "edit", "changed", "accuracy", "follows", "delta_logp", "n"]
    two_hop.plot()
    r = cot.cot_faithfulness(tiny, cot.two_hop_traces(2), progress=False)
    w = r.widget()
    from mi_widgets import wire

    assert w.texts == r.tokens
    assert w.unit_label.startswith("direction: occlusion")
    vals = wire.decode(w.values)
    assert vals.tolist() == pytest.approx(torch.cat(r.token_attr).tolist(), abs=1e-5)


def test_a_generated_trace_depends_on_the_step_the_model_wrote(tiny):
    """Given question and premise, zoo:tiny writes the lookup step itself (" The Eiffel Tower
    is in Paris. A: Paris"); corrupting the step it wrote makes it follow the corruption."""
    t = cot.generate_trace(
        tiny, "Q: Where is Anna's favourite place? Anna likes the Eiffel Tower.",
        corruptions={2: "The Eiffel Tower is in Seoul."}, corrupt_answers={2: " Seoul"},
    )
    assert t.steps[2] == "The Eiffel Tower is in Paris." and t.labels[2] == "generated 0"
    assert t.answer == " Paris"
    r = cot.cot_faithfulness(tiny, t, progress=False)
    rows = {(x["label"], x["edit"]): x for x in r.rows}
    assert rows[("generated 0", "corrupt")]["follows"] is True
    assert rows[("generated 0", "corrupt")]["new_answer"] == " Seoul"
    assert rows[("given 1", "remove")]["changed"] is False  # the premise is restated by the step
    assert rows[("generated 0", "remove")]["changed"] is True
    assert max(range(3), key=lambda k: r.step_attr(0)[k]) == 2
    with pytest.raises(ValueError, match="did not write"):
        cot.generate_trace(tiny, "The food was", answer_prompt=" Z:", max_new_tokens=5)
