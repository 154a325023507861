"""Hard to break (issue 16): every public entry point given bad input raises a clear
TypeError/ValueError saying what was wrong and what to pass, before any forward pass, and
leaves the model usable. One table: (id, call, expected exception, message regex)."""

from __future__ import annotations

import math
import re

import pytest
import torch

import mi_widgets as mw

NAN = float("nan")
MODEL_MSG = r"model must be a mi_widgets Model.*got NoneType"


class Ctx:
    """What a row's call may use: the tiny GPT-2 (d_model 32, d_mlp 128), an SAE of its width,
    an SAE of the wrong width, a probe dataset and a chain-of-thought trace."""

    def __init__(self, model: mw.Model) -> None:
        self.m = model
        self.d = model.d_model
        self.sae = mw.SAE(model.d_model, 16, site="resid_post", layer=1)
        self.wide = mw.SAE(model.d_model + 5, 16, site="resid_post", layer=1)
        self.ds = mw.ProbeDataset(texts=["The food was wonderful."] * 4 + ["The food was awful."] * 4,
                                  labels=[1] * 4 + [0] * 4)
        self.trace = mw.CoTTrace(steps=["The Eiffel Tower is in Paris.", "Paris is in France."], answer=" France")


M = mw.logit_diff(" Paris", " Rome")
P = "The Eiffel Tower is in Paris"

# model=None to every public function that takes a model: one TypeError naming what to pass.
_NONE_MODEL = [
    ("token_activations", lambda c: mw.token_activations(None, P)),
    ("activation_patching", lambda c: mw.activation_patching(None, P, P, M)),
    ("attribution_patching", lambda c: mw.attribution_patching(None, P, P, M)),
    ("ablate", lambda c: mw.ablate(None, P, M, "0.1")),
    ("causal_tracing", lambda c: mw.causal_tracing(None, P, "Eiffel")),
    ("path_patching", lambda c: mw.path_patching(None, P, P, M, "0.1", "1.0")),
    ("logit_lens", lambda c: mw.logit_lens(None, P)),
    ("tuned_lens", lambda c: mw.tuned_lens(None, P, None)),
    ("train_tuned_lens", lambda c: mw.train_tuned_lens(None, [P])),
    ("attention", lambda c: mw.attention(None, P)),
    ("head_scores", lambda c: mw.head_scores(None)),
    ("attribute", lambda c: mw.attribute(None, P, " Paris")),
    ("patchscope", lambda c: mw.patchscope(None, P)),
    ("steer", lambda c: mw.steer(None, P, torch.zeros(c.d), layer=0)),
    ("steering_sweep", lambda c: mw.steering_sweep(None, P, torch.zeros(c.d), M, layer=0)),
    ("steer_generate", lambda c: mw.steer_generate(None, P, torch.zeros(c.d), layer=0)),
    ("steer_stream", lambda c: next(iter(mw.steer_stream(None, P, torch.zeros(c.d), layer=0)))),
    ("steering_vector", lambda c: mw.steering_vector(None, "good", "bad", layer=0)),
    ("probe", lambda c: mw.probe(None, c.ds)),
    ("interchange", lambda c: mw.interchange(None, c.ds)),
    ("erase", lambda c: mw.erase(None, c.ds, 0)),
    ("ccs", lambda c: mw.ccs(None, c.ds)),
    ("feature_pass", lambda c: mw.feature_pass(None, c.sae, [P])),
    ("steer_feature", lambda c: mw.steer_feature(None, c.sae, 0, P)),
    ("logit_effects", lambda c: mw.logit_effects(None, c.sae, 0)),
    ("synthesize", lambda c: mw.synthesize(None, c.sae, 0)),
    ("train_sae", lambda c: mw.train_sae(None, "resid_post", 0, 16)),
    ("train_transcoder", lambda c: mw.train_transcoder(None, 0, 16)),
    ("train_crosscoder", lambda c: mw.train_crosscoder(None, [0, 1], 16)),
    ("evaluate", lambda c: mw.evaluate(c.sae, None, [P])),
    ("top_activations", lambda c: mw.top_activations(c.sae, None, 0, [P])),
    ("encode_texts", lambda c: mw.encode_texts(c.sae, None, [P])),
    ("spliced_accuracy", lambda c: mw.spliced_accuracy(c.sae, None, [P], [" Paris"])),
    ("cot_faithfulness", lambda c: mw.cot_faithfulness(None, c.trace)),
    ("generate_trace", lambda c: mw.generate_trace(None, P)),
    ("direct_effect", lambda c: mw.direct_effect(None, P, M, "0.1")),
    ("validate", lambda c: mw.validate(mw.Hypothesis("0.1", "a head", ablation=mw.AblationPrediction(mw.PromptTask([P], M), 0.1)), "not a model")),
    ("TokenActivations", lambda c: mw.TokenActivations("gpt2", P)),
    ("AttentionPatterns", lambda c: mw.AttentionPatterns(42, P)),
]

ROWS = [(f"{name}(model=None)", call, TypeError, MODEL_MSG if name not in
         ("validate", "TokenActivations", "AttentionPatterns") else r"must be a mi_widgets Model.*got (str|int)")
        for name, call in _NONE_MODEL]

ROWS += [
    # unclear errors
    ("token_activations(direction='sentiment')",
     lambda c: mw.token_activations(c.m, P, "resid_post", 0, direction="sentiment"), TypeError, r"direction.*vector of numbers"),
    ("synthesize(n_positions=200)",
     lambda c: mw.synthesize(c.m, site="resid_post", layer=0, unit=0, n_positions=200), ValueError, r"n_positions.*at most"),
    ("synthesize(n_positions=0)",
     lambda c: mw.synthesize(c.m, site="resid_post", layer=0, unit=0, n_positions=0), ValueError, r"n_positions"),
    ("Model.run(out-of-vocabulary token)",
     lambda c: c.m.run(torch.tensor([[0, 10**6]]), [("resid_post", 0)]), ValueError, r"token id.*vocabulary"),
    ("Model.run(negative token)",
     lambda c: c.m.run(torch.tensor([[0, -3]]), [("resid_post", 0)]), ValueError, r"token id.*vocabulary"),
    ("Model.run(> n_ctx tokens)",
     lambda c: c.m.run(torch.zeros(1, c.m.n_ctx + 1, dtype=torch.long), [("resid_post", 0)]), ValueError, r"at most"),
    ("Model.run(float token ids)",
     lambda c: c.m.run(torch.tensor([[0.0, 1.5]]), [("resid_post", 0)]), TypeError, r"integer"),
    ("Model.run(list tokens)",
     lambda c: c.m.run([[0, 1]], [("resid_post", 0)]), TypeError, r"tensor"),
    ("Model.run(reads=('resid_post', 0))",
     lambda c: c.m.run(c.m.to_tokens(P), ("resid_post", 0)), TypeError, r"reads.*list of \(site, layer\)"),
    ("Model.run(reads=['resid_post'])",
     lambda c: c.m.run(c.m.to_tokens(P), ["resid_post"]), TypeError, r"reads.*\(site, layer\)"),
    ("TokenActivations(k=-1)", lambda c: mw.TokenActivations(c.m, P, k=-1), ValueError, r"k must be >= 1"),
    ("TokenActivations(k=0)", lambda c: mw.TokenActivations(c.m, P, k=0), ValueError, r"k must be >= 1"),
    ("TokenSaliency(result=None)", lambda c: mw.TokenSaliency(None), TypeError, r"TokenSaliency.*result"),
    # silently wrong: NaN/inf/complex vectors
    ("token_activations(direction=nan)",
     lambda c: mw.token_activations(c.m, P, "resid_post", 0, direction=torch.full((c.d,), NAN)), ValueError, r"NaN or inf"),
    ("token_activations(direction=inf)",
     lambda c: mw.token_activations(c.m, P, "resid_post", 0, direction=torch.full((c.d,), math.inf)), ValueError, r"NaN or inf"),
    ("token_activations(direction=complex)",
     lambda c: mw.token_activations(c.m, P, "resid_post", 0, direction=torch.ones(c.d, dtype=torch.complex64)), TypeError, r"complex"),
    ("token_activations(direction 2-D)",
     lambda c: mw.token_activations(c.m, P, "resid_post", 0, direction=torch.ones(2, c.d)), ValueError, r"1-D"),
    ("TokenActivations(unit=nan vector)",
     lambda c: mw.TokenActivations(c.m, P, "resid_post", 0, unit=torch.full((c.d,), NAN)), ValueError, r"NaN or inf"),
    ("TokenActivations(unit=99999)",
     lambda c: mw.TokenActivations(c.m, P, "resid_post", 0, unit=99999), ValueError, r"unit 99999.*0\.\.31"),
    ("attribute(Target.direction(nan))",
     lambda c: mw.attribute(c.m, P, mw.Target.direction("resid_post", 0, torch.full((c.d,), NAN))), ValueError, r"NaN or inf"),
    ("attribute(Target.direction(complex))",
     lambda c: mw.attribute(c.m, P, mw.Target.direction("resid_post", 0, torch.ones(c.d, dtype=torch.complex64))), TypeError, r"complex"),
    ("interchange(directions=nan)",
     lambda c: mw.interchange(c.m, c.ds, layers=0, directions=torch.full((c.d,), NAN), answers=[" Paris", " Rome"]), ValueError, r"NaN or inf"),
    ("synthesize(direction=nan)",
     lambda c: mw.synthesize(c.m, site="resid_post", layer=0, direction=torch.full((c.d,), NAN)), ValueError, r"NaN or inf"),
    ("synthesize(direction=complex)",
     lambda c: mw.synthesize(c.m, site="resid_post", layer=0, direction=torch.ones(c.d, dtype=torch.complex64)), TypeError, r"complex"),
    ("steer_feature(coef=nan)", lambda c: mw.steer_feature(c.m, c.sae, 0, P, coef=NAN), ValueError, r"coef must be (finite|a finite number)"),
    ("steer(vector=nan)", lambda c: mw.steer(c.m, P, torch.full((c.d,), NAN), layer=0), ValueError, r"NaN or inf"),
    ("steer(coef=inf)", lambda c: mw.steer(c.m, P, torch.ones(c.d), layer=0, coef=math.inf), ValueError, r"coef must be (finite|a finite number)"),
    # silently wrong: a bare string iterated per character
    ("ProbeDataset(texts=str)", lambda c: mw.ProbeDataset(texts="ab", labels=[0, 1]), TypeError, r"texts must be a list of strings"),
    ("evaluate(texts=str)", lambda c: mw.evaluate(c.sae, c.m, P), TypeError, r"texts must be a list of strings"),
    ("encode_texts(texts=str)", lambda c: mw.encode_texts(c.sae, c.m, P), TypeError, r"texts must be a list of strings"),
    ("top_activations(texts=str)", lambda c: mw.top_activations(c.sae, c.m, 0, P), TypeError, r"texts must be a list of strings"),
    ("steering_sweep(coefs='12')",
     lambda c: mw.steering_sweep(c.m, P, torch.ones(c.d), M, layer=0, coefs="12"), TypeError, r"coefs must be a list of numbers"),
    ("steering_sweep(coefs=[nan])",
     lambda c: mw.steering_sweep(c.m, P, torch.ones(c.d), M, layer=0, coefs=[0, NAN]), ValueError, r"coefs.*finite.*nan"),
    ("cot_faithfulness(edits='remove')",
     lambda c: mw.cot_faithfulness(c.m, c.trace, edits="remove"), TypeError, r"edits must be a list of strings"),
    ("probe(layers='01')", lambda c: mw.probe(c.m, c.ds, layers="01"), ValueError, r"layers"),
    ("activation_patching(layers='01')", lambda c: mw.activation_patching(c.m, P, P, M, layers="01"), ValueError, r"layers"),
    ("logit_lens(k=0)", lambda c: mw.logit_lens(c.m, P, k=0), ValueError, r"k must be (>= 1|a positive int)"),
    ("steer(k=0)", lambda c: mw.steer(c.m, P, torch.ones(c.d), layer=0, k=0), ValueError, r"k must be (>= 1|a positive int)"),
    ("top_activations(k=0)", lambda c: mw.top_activations(c.sae, c.m, 0, [P], k=0), ValueError, r"k must be >= 1"),
    ("logit_effects(k=0)", lambda c: mw.logit_effects(c.m, c.sae, 0, k=0), ValueError, r"k must be >= 1"),
    # checked before compute: wrong-width dictionaries, heads, units, noise
    ("top_activations(wrong-width SAE)", lambda c: mw.top_activations(c.wide, c.m, 0, [P]), ValueError, r"d_in=37.*32 wide"),
    ("spliced_accuracy(wrong-width SAE)",
     lambda c: mw.spliced_accuracy(c.wide, c.m, [P], [" Paris"]), ValueError, r"d_in=37.*32 wide"),
    ("evaluate(wrong-width SAE)", lambda c: mw.evaluate(c.wide, c.m, [P]), ValueError, r"d_in=37.*32 wide"),
    ("encode_texts(wrong-width SAE)", lambda c: mw.encode_texts(c.wide, c.m, [P]), ValueError, r"d_in=37.*32 wide"),
    ("synthesize(wrong-width SAE)", lambda c: mw.synthesize(c.m, c.wide, 0), ValueError, r"d_in=37.*32 wide"),
    ("AttentionPatterns(selected_head='9.9')",
     lambda c: mw.AttentionPatterns(c.m, P, selected_head="9.9"), ValueError, r"selected_head"),
    ("AttentionPatterns(selected_head=(0, 99))",
     lambda c: mw.AttentionPatterns(c.m, P, selected_head=(0, 99)), ValueError, r"selected_head"),
    ("causal_tracing(noise=nan)", lambda c: mw.causal_tracing(c.m, P, "Eiffel", M, noise=NAN), ValueError, r"noise"),
    ("causal_tracing(noise=-1)", lambda c: mw.causal_tracing(c.m, P, "Eiffel", M, noise=-1.0), ValueError, r"noise"),
    ("causal_tracing(noise=inf)", lambda c: mw.causal_tracing(c.m, P, "Eiffel", M, noise=math.inf), ValueError, r"noise"),
    # found by a second pass over the same entry points
    ("ContrastDataset(pos=str)", lambda c: mw.ContrastDataset(pos="ab", neg="cd", labels=[0, 1]), TypeError,
     r"pos must be a list of strings"),
    ("attribute(baseline=nan)", lambda c: mw.attribute(c.m, P, " Paris", baseline=torch.full((c.d,), NAN)), ValueError,
     r"baseline.*NaN or inf"),
    ("top_activations(feature=1.5)", lambda c: mw.top_activations(c.sae, c.m, 1.5, [P]), TypeError, r"feature must be an int"),
    ("synthesize(unit=1.5)", lambda c: mw.synthesize(c.m, site="resid_post", layer=0, unit=1.5), TypeError, r"unit.*must be an int"),
    ("synthesize(lr=nan)", lambda c: mw.synthesize(c.m, site="resid_post", layer=0, unit=1, lr=NAN), ValueError, r"lr must be finite"),
    ("evaluate(dictionary=None)", lambda c: mw.evaluate(None, c.m, [P]), TypeError, r"dictionary must be an SAE"),
    ("top_activations(dictionary=None)", lambda c: mw.top_activations(None, c.m, 0, [P]), TypeError, r"dictionary must be an SAE"),
    ("encode_texts(dictionary=None)", lambda c: mw.encode_texts(None, c.m, [P]), TypeError, r"dictionary must be an SAE"),
    ("spliced_accuracy(prompts=str)", lambda c: mw.spliced_accuracy(c.sae, c.m, P, " Paris"), TypeError,
     r"prompts must be a list of strings"),
    ("Model.next_tokens(k=0)", lambda c: c.m.next_tokens(P, k=0), ValueError, r"k must be an int >= 1"),
    # linked views, the offline export, automated interpretability
    ("link()", lambda c: mw.link(), ValueError, r"link needs at least two views, got 0"),
    ("link([a, b])", lambda c: mw.link([c.views[0], c.views[1]]), TypeError, r"separate arguments.*mw\.link\(\*views\)"),
    ("link(a, a)", lambda c: mw.link(c.views[0], c.views[0]), ValueError, r"same view twice"),
    ("link(on='colour')", lambda c: mw.link(*c.views, on="colour"), ValueError, r"on must be one of"),
    ("link(on=None)", lambda c: mw.link(*c.views, on=None), ValueError, r"on must be one of"),
    ("link(view, 'lens')", lambda c: mw.link(c.views[0], "lens"), ValueError, r"str cannot link on position"),
    ("export_html(123)", lambda c: mw.export_html(123), TypeError, r"notebook must be the path of an \.ipynb"),
    ("export_html(missing file)", lambda c: mw.export_html("/nonexistent/x.ipynb"), FileNotFoundError, r"no notebook at"),
    ("export_html(not JSON)", lambda c: mw.export_html(c.not_a_notebook), ValueError, r"is not a Jupyter notebook"),
    ("export_html(out=3)", lambda c: mw.export_html(c.not_a_notebook, 3), TypeError, r"out must be a path"),
    ("explain(feature='0')", lambda c: mw.explain("0", c.fdata), ValueError, r"feature must be an int in 0\.\.15"),
    ("explain(feature=99)", lambda c: mw.explain(99, c.fdata), ValueError, r"feature must be an int in 0\.\.15"),
    ("explain(examples=None)", lambda c: mw.explain(0, None), TypeError, r"examples must be a FeatureData"),
    ("explain(explainer=42)", lambda c: mw.explain(0, c.fdata, 42), TypeError, r"explainer must be"),
    ("score_explanation(None)", lambda c: mw.score_explanation(None, 0, c.fdata), TypeError, r"explanation must be a string"),
    ("score_explanation(scores='vibes')",
     lambda c: mw.score_explanation("x", 0, c.fdata, scores="vibes"), ValueError, r"scores must name some of"),
    ("score_explanation(scores=[])", lambda c: mw.score_explanation("x", 0, c.fdata, scores=[]), ValueError, r"scores must name"),
    ("score_explanation(feature=-1)", lambda c: mw.score_explanation("x", -1, c.fdata), ValueError, r"feature must be an int"),
    ("score_explanation(coef='big')",
     lambda c: mw.score_explanation("x", 0, c.fdata, coef="big"), TypeError, r"coef must be a number"),
    # window=, vocab=, the illusion check and causal scrubbing
    ("token_activations(window=0)", lambda c: mw.token_activations(c.m, P, window=0), ValueError, r"window must be in 2\.\."),
    ("token_activations(window='128')", lambda c: mw.token_activations(c.m, P, window="128"), TypeError, r"window must be an int"),
    ("token_activations(stride > window)",
     lambda c: mw.token_activations(c.m, P, window=16, stride=32), ValueError, r"stride must be in 1\.\.15"),
    ("logit_lens(vocab=str)", lambda c: mw.logit_lens(c.m, P, vocab=" Paris"), TypeError, r"not a bare string"),
    ("logit_lens(vocab=[])", lambda c: mw.logit_lens(c.m, P, vocab=[]), ValueError, r"vocab is empty"),
    ("logit_lens(vocab duplicates)", lambda c: mw.logit_lens(c.m, P, vocab=[" Paris", " Paris"]), ValueError, r"twice"),
    ("illusion_check(model=None)", lambda c: mw.illusion_check(None, c.ds, 0, torch.ones(c.d)), TypeError, MODEL_MSG),
    ("illusion_check(direction=nan)",
     lambda c: mw.illusion_check(c.m, c.ds, 0, torch.full((c.d,), NAN)), ValueError, r"NaN or inf"),
    ("illusion_check(direction=list)",
     lambda c: mw.illusion_check(c.m, c.ds, 0, [1.0] * c.d), TypeError, r"direction must be a torch tensor"),
    ("illusion_check(site='mlp_out')",
     lambda c: mw.illusion_check(c.m, c.ds, 0, torch.ones(c.d), site="mlp_out"), ValueError, r"site must be 'resid_pre'"),
    ("causal_scrub(circuit=str)", lambda c: mw.causal_scrub("0.1", [P, P], M, [0, 0]), TypeError, r"circuit must be a Circuit"),
    ("score_explanation(baseline='x')",
     lambda c: mw.score_explanation("x", 0, c.fdata, baseline="other"), TypeError, r"baseline must be a list"),
]


@pytest.fixture(scope="module")
def ctx(models, tmp_path_factory):
    c = Ctx(models["gpt2"])
    # built before the table runs (they run forwards): two views of one text, a feature pass
    c.views = (mw.TokenActivations(c.m, P, "resid_post", 0), mw.TokenActivations(c.m, P, "resid_post", 1))
    c.fdata = mw.feature_pass(c.m, c.sae, [P, "The Colosseum is in Rome"], k=2, progress=False)
    c.not_a_notebook = tmp_path_factory.mktemp("bad") / "notes.ipynb"
    c.not_a_notebook.write_text("these are notes, not JSON", encoding="utf-8")
    return c


@pytest.fixture()
def counted(ctx):
    calls = []
    h = ctx.m.hf.register_forward_pre_hook(lambda *a: calls.append(1))
    yield calls
    h.remove()


@pytest.mark.parametrize(("call", "exc", "msg"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_before_any_forward(ctx, counted, call, exc, msg):
    with pytest.raises(exc, match=msg):
        call(ctx)
    assert not counted, "a forward pass ran before the error"


def test_model_still_usable_after_the_bad_inputs(ctx):
    for _, call, _exc, _msg in ROWS:
        try:
            call(ctx)
        except Exception:  # noqa: BLE001 - the table test checks each error
            pass
    out = ctx.m.run(ctx.m.to_tokens(P), [("resid_post", 0)])
    assert torch.isfinite(out[("resid_post", 0)]).all()
    assert not list(ctx.m.hf.modules())[0]._forward_hooks


# ---- byte-level tokens of a multi-byte character ------------------------------------------

@pytest.mark.parametrize("text", ["\u200f", "\U0001F600", "\u4e2d\u6587", "caf\u00e9 \u05e9\u05dc"])
def test_partial_byte_tokens_show_as_escapes_not_replacement_chars(bpe_tokenizer, models, text):
    model = models["gpt2"]
    toks = model.to_str_tokens(text)
    assert all("\ufffd" not in t for t in toks), toks
    ids = model.to_tokens(text)[0].tolist()
    # a token that decodes to a whole character is left as it was
    for i, t in zip(ids, toks):
        whole = bpe_tokenizer.decode([i])
        if "\ufffd" not in whole:
            assert t == whole
        else:
            assert re.fullmatch(r"(?:[^\\]|\\x[0-9a-f]{2})+", t), t


def test_table_counts():
    """The table covers every kind of bad input the hostile pass reported."""
    assert len(ROWS) >= 70
