"""The trained zoo model ``tiny``: tokenizer, planted behaviours, and its ground_truth.json.

Everything runs on the shipped weights in mi_widgets/zoo/models/tiny (CPU, ~30 s). The
thresholds sit a little below what ``python -m mi_widgets.zoo.measure tiny`` measured; the last
tests re-measure the cheap figures and compare them with ground_truth.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mi_widgets.zoo import corpus, measure

# MI_WIDGETS_TINY_DIR: check a retrained model (with its ground_truth.json) before shipping it.
TINY = Path(os.environ.get("MI_WIDGETS_TINY_DIR") or measure.model_dir("tiny"))

# Thresholds (measured values are in ground_truth.json; see docs/zoo.md).
FACTS_TRAIN_MIN = 0.95
FACTS_HELDOUT_MIN = 0.90
SENTIMENT_PROBE_MIN = 0.9
SENTIMENT_OOD_MIN = 0.85
EMBED_PROBE_MAX = 0.65
TRUTH_PROBE_MIN = 0.85
TWO_HOP_FOLLOWS_STEP_MIN = 0.9
TOL = 0.03  # fresh measurement vs recorded figure (accuracies)




@pytest.fixture(scope="module")
def gt() -> dict:
    return json.loads((TINY / "ground_truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mt():
    return measure.load(TINY)


@pytest.fixture(scope="module")
def facts(mt):
    model, tok = mt
    return {
        split: measure.fact_accuracy(model, tok, corpus.fact_prompts(split))
        for split in ("train", "heldout")
    }


@pytest.fixture(scope="module")
def sentiment(mt):
    return measure.sentiment_probe(*mt)


@pytest.fixture(scope="module")
def patching(mt):
    return measure.patching(*mt)


# -- corpus ----------------------------------------------------------------------------------


def test_corpus_is_deterministic():
    a = corpus.training_rows(seed=0, n_rows=3000)
    assert a == corpus.training_rows(seed=0, n_rows=3000)
    assert a != corpus.training_rows(seed=1, n_rows=3000)
    assert corpus.eval_sets() == corpus.eval_sets()


def test_corpus_plants_what_it_claims():
    rows = corpus.training_rows()
    text = "\n".join(rows)
    # Held-out templates never occur in training, with any subject.
    for item in corpus.fact_prompts("heldout"):
        assert item["prompt"] not in text, item["prompt"]
    # OOD sentiment adjectives never occur in a row with a verdict.
    ood = set(corpus.POSITIVE_OOD + corpus.NEGATIVE_OOD)
    for r in rows:
        if corpus.VERDICT_PROMPT in r:
            assert not ood & set(r.replace(".", " ").split()), r
    # Every training template is followed by every city: the template does not give the city.
    for t in corpus.TRAIN_TEMPLATES:
        stem = t.split("{s}")[1].split("{c}")[0]  # e.g. " is in "
        cities = {c for c in corpus.CITIES if stem + c in text}
        assert cities == set(corpus.CITIES), t
    assert len(corpus.FACTS) >= 40
    assert {c for _, c, _ in corpus.FACTS} == set(corpus.CITIES)


# -- tokenizer and config --------------------------------------------------------------------


def test_tokenizer_round_trip_and_single_tokens():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TINY))
    cfg = json.loads((TINY / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == 0
    assert tok.convert_ids_to_tokens(0) == "<|endoftext|>"
    text = "The Eiffel Tower is in Paris. Overall the review is positive."
    ids = tok(text)["input_ids"]
    raw = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == 0 and ids[1:] == raw and 0 not in raw
    assert tok.decode(raw) == text
    for w in corpus.required_single_tokens():
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1, w
    vocab_size = len(tok)
    assert vocab_size in range(1000, 2001)


def test_model_config():
    cfg = json.loads((TINY / "config.json").read_text(encoding="utf-8"))
    assert cfg["model_type"] == "gpt2"
    assert cfg["bos_token_id"] == cfg["eos_token_id"] == cfg["pad_token_id"] == 0
    assert cfg["attn_implementation"] == "eager"
    assert (TINY / "model.safetensors").stat().st_size < 8_000_000


# -- planted behaviours ----------------------------------------------------------------------


def test_fact_recall(facts):
    assert facts["train"]["accuracy"] >= FACTS_TRAIN_MIN
    assert facts["heldout"]["accuracy"] >= FACTS_HELDOUT_MIN


def test_fact_is_read_in_block_0(facts):
    """Logit lens at the final position: no city at the embedding, the city after block 0."""
    for split in ("train", "heldout"):
        lens = facts[split]["logit_lens_top1_by_layer"]
        assert lens["embed"] == 0.0
        assert lens["after block 0"] >= 0.95


def test_fact_answers_come_from_the_subject(mt):
    """Same template, different subjects -> different cities (not a template prior)."""
    model, tok = mt
    a = measure.fact_accuracy(
        model,
        tok,
        [
            {"prompt": "The Eiffel Tower is in", "answer": " Paris", "template": "t"},
            {"prompt": "The Colosseum is in", "answer": " Rome", "template": "t"},
            {
                "prompt": "Tourists travel to see the Eiffel Tower in",
                "answer": " Paris",
                "template": "t",
            },
        ],
    )
    assert a["accuracy"] == 1.0, a["misses"]


def test_sentiment_probe(sentiment, gt):
    layer = gt["figures"]["sentiment_probe"]["first_layer_probe_ge_0.9"]
    assert layer is not None and layer != "embed"
    assert sentiment["probe_test_accuracy"][layer] >= SENTIMENT_PROBE_MIN
    # At the embedding the neutral readout token carries no sentiment.
    assert sentiment["probe_test_accuracy"]["embed"] <= EMBED_PROBE_MAX


def test_sentiment_probe_transfers_to_ood_adjectives(sentiment, gt):
    layer = gt["figures"]["sentiment_probe"]["first_layer_probe_ge_0.9"]
    assert sentiment["probe_ood_accuracy"][layer] >= SENTIMENT_OOD_MIN
    assert sentiment["verdict_accuracy_ood"] >= SENTIMENT_OOD_MIN


@pytest.fixture(scope="module")
def truth(mt):
    return measure.truth_probe(*mt)


def test_truth_probe(truth, gt):
    layer = gt["figures"]["truth_probe"]["first_layer_probe_ge_0.9"]
    assert layer not in (None, "embed")
    assert truth["probe_test_accuracy"][layer] >= TRUTH_PROBE_MIN
    assert truth["probe_test_accuracy"]["embed"] <= EMBED_PROBE_MAX
    assert truth["says_true_false_accuracy"] >= TRUTH_PROBE_MIN


@pytest.fixture(scope="module")
def hop(mt):
    return measure.two_hop(*mt)


def test_two_hop_answer_follows_the_written_step(hop):
    assert hop["step"]["accuracy"] >= TWO_HOP_FOLLOWS_STEP_MIN
    assert hop["corrupt_step"]["accuracy"] >= TWO_HOP_FOLLOWS_STEP_MIN


def test_patching_localisation(patching, gt):
    rec = gt["figures"]["patching"]
    assert patching["n_pairs"] >= 10
    assert patching["cells_ge_0.5"] == rec["cells_ge_0.5"]
    mean = patching["mean_effect"]
    # Patching the whole last-layer residual at the final position restores the clean answer,
    # the BOS position never matters.
    assert mean["' in' (final)"][-1] >= 0.95
    assert max(mean["BOS"]) <= 0.05
    for g, vals in mean.items():
        assert vals == pytest.approx(rec["mean_effect"][g], abs=0.02), g


# -- ground_truth.json agrees with a fresh measurement ---------------------------------------


def test_ground_truth_size(mt, gt):
    model, _ = mt
    assert gt["size"] == measure.size(model, TINY)


def test_ground_truth_facts(facts, gt):
    rec = gt["figures"]["facts"]
    assert facts["train"]["accuracy"] == pytest.approx(rec["train_templates"]["accuracy"], abs=TOL)
    assert facts["heldout"]["accuracy"] == pytest.approx(
        rec["heldout_templates"]["accuracy"], abs=TOL
    )
    assert rec["prompts_heldout"] == [it["prompt"] for it in corpus.fact_prompts("heldout")]


def test_ground_truth_sentiment(sentiment, gt):
    rec = gt["figures"]["sentiment_probe"]
    for key in ("probe_test_accuracy", "probe_ood_accuracy"):
        for layer, v in rec[key].items():
            assert sentiment[key][layer] == pytest.approx(v, abs=TOL), (key, layer)
    assert sentiment["first_layer_probe_ge_0.9"] == rec["first_layer_probe_ge_0.9"]


def test_ground_truth_truth_probe_and_two_hop(truth, hop, gt):
    rec = gt["figures"]["truth_probe"]
    for layer, v in rec["probe_test_accuracy"].items():
        assert truth["probe_test_accuracy"][layer] == pytest.approx(v, abs=TOL), layer
    for variant, v in gt["figures"]["two_hop"].items():
        assert hop[variant]["accuracy"] == pytest.approx(v["accuracy"], abs=TOL), variant


def test_residual_readout_matches_hidden_states(mt):
    """measure.run's hooks read the same residual stream as output_hidden_states."""
    model, tok = mt
    ids = measure.encode(tok, ["The Eiffel Tower is in", "Big Ben is in"])
    _, resid = measure.run(model, ids)
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([ids[0]]), output_hidden_states=True).hidden_states
    for L in range(model.config.n_layer):  # hidden_states[L] = input of block L
        assert torch.allclose(resid[L, 0], hs[L][0, -1], atol=1e-5)


# -- the recorded figures, recomputed without zoo.measure ----------------------------------


def _plain_fact_figures(model, tok, items):
    """Top-1 accuracy of each answer and the logit lens after block 0 at the final position,
    with plain torch forward hooks and one unpadded forward per prompt (no measure.run)."""
    block0_out: list[torch.Tensor] = []
    h = model.transformer.h[0].register_forward_hook(lambda m, a, o: block0_out.append(o[0] if isinstance(o, tuple) else o))
    hits = lens = 0
    try:
        with torch.no_grad():
            for it in items:
                ids = torch.tensor([tok(it["prompt"])["input_ids"]])
                answer = tok(it["answer"], add_special_tokens=False)["input_ids"]
                assert len(answer) == 1
                logits = model(input_ids=ids).logits[0, -1]
                r = block0_out.pop()[0, -1]
                hits += int(logits.argmax()) == answer[0]
                lens += int(model.lm_head(model.transformer.ln_f(r)).argmax()) == answer[0]
    finally:
        h.remove()
    return hits / len(items), lens / len(items)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_recorded_fact_figures_agree_with_a_plain_torch_measurement(mt, gt, split):
    model, tok = mt
    rec = gt["figures"]["facts"][f"{split}_templates"]
    acc, lens = _plain_fact_figures(model, tok, corpus.fact_prompts(split))
    assert acc == pytest.approx(rec["accuracy"], abs=TOL)
    assert lens == pytest.approx(rec["logit_lens_top1_by_layer"]["after block 0"], abs=TOL)
