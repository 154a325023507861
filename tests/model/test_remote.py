"""NDIF: every public computation under ``remote="local"`` (nnsight's LocalSimulationBackend:
each request serialised exactly as for NDIF, deserialised with mi_widgets' modules hidden, run
here) gives the plain local numbers; the methods that cannot run remotely say so before any work;
``remote=True`` builds the model from a config-only directory and sends requests that serialise
without local weights; a patching sweep is a fixed number of jobs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.concepts.ccs import ContrastDataset
from mi_widgets.core.concepts.probes import ProbeDataset
from mi_widgets.core.decomposition.features import LinearDictionary, default_texts
from mi_widgets.core.model import _get
from mi_widgets.core.model.remote import record_jobs

TOL = 1e-5
CLEAN, CORRUPT = "The Eiffel Tower is in", "The Colosseum Tower is in"  # same length on zoo:tiny
MD = mw.logit_diff(" Paris", " Rome")


@pytest.fixture(scope="module")
def remote():
    return mw.load("zoo:tiny", remote="local")


@pytest.fixture(scope="module")
def meta_client():
    """What remote=True sees, run by the local simulation: the Model's own ``hf`` is the meta
    model built from the config (as under remote=True), while its nnsight envoys wrap real
    weights (the server's). A method that reads weights here instead of inside a trace fails."""
    from mi_widgets import zoo
    from mi_widgets.core.model import Model

    real = mw.load("zoo:tiny")
    meta = mw.load(str(zoo.path("zoo:tiny")), remote=True)
    assert {p.device.type for p in meta.hf.parameters()} == {"meta"}
    return Model(real.nn, meta.hf, real.tokenizer, "zoo:tiny", remote="local")


def close(a, b, tol=TOL):
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape
    assert torch.allclose(a.nan_to_num(0), b.nan_to_num(0), atol=tol, rtol=0), float((a - b).abs().max())
    assert torch.equal(a.isnan(), b.isnan())


def _sae(m, site="resid_pre", layer=1):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(m.d_model, 6, generator=g) / m.d_model**0.5
    return LinearDictionary(W, torch.zeros(6), W.T.clone(), site=site, layer=layer)


# -- loading ------------------------------------------------------------------------------


def test_remote_local_runs_every_trace_through_the_simulation(tiny, remote):
    assert remote.remote == "local" and tiny.remote is False
    ids = remote.to_tokens(CLEAN)
    with record_jobs() as jobs:
        remote.run(ids, [("resid_pre", 0)])
    assert jobs.count == 1 and 0 < jobs.total_bytes < 100_000  # the Model is not in the request
    with record_jobs() as jobs:
        tiny.run(ids, [("resid_pre", 0)])
    assert jobs.count == 0


def test_bad_remote_values_are_refused():
    with pytest.raises(ValueError, match="remote must be False, True"):
        mw.load("zoo:tiny", remote="yes")
    with pytest.raises(ValueError, match="remote must be False, True"):
        mw.load("zoo:tiny", remote=1)


@pytest.fixture(scope="module")
def config_only_dir(tmp_path_factory):
    """A Hugging Face directory with config.json and tokenizer files and no weights (what a
    Hub id gives before any download)."""
    from mi_widgets import zoo

    src = zoo.path("zoo:tiny")
    d = tmp_path_factory.mktemp("config_only")
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".pt")):
            shutil.copy(f, d / f.name)
    assert (d / "config.json").exists() and not list(d.glob("*.safetensors"))
    json.loads((d / "config.json").read_text())
    return d


class _Sent(Exception):
    pass


@pytest.fixture
def capture_requests(monkeypatch):
    """Replace NDIF: RemoteBackend serialises the request as it would before POSTing it, records
    its size and stops."""
    from nnsight.intervention.backends.remote import RemoteBackend

    sent: list[int] = []

    def call(self, tracer=None):
        sent.append(len(self._serialize(tracer)))
        raise _Sent()

    monkeypatch.setattr(RemoteBackend, "__call__", call)
    return sent


def test_remote_true_builds_the_meta_model_from_config_only(config_only_dir, tiny, capture_requests, monkeypatch):
    from nnsight.modeling import huggingface

    # the request names the model by its Hub id, which nnsight canonicalises through the Hub
    # (offline here): the directory stands for the id "mi-widgets/tiny"
    monkeypatch.setitem(huggingface._ID_CACHE, str(config_only_dir), "mi-widgets/tiny")
    m = mw.load(str(config_only_dir), remote=True)
    assert m.remote is True
    assert {p.device.type for p in m.hf.parameters()} == {"meta"}
    assert (m.family, m.n_layers, m.n_heads, m.d_model) == (tiny.family, tiny.n_layers, tiny.n_heads, tiny.d_model)
    assert m.device.type == "cpu"  # inputs stay on the CPU and travel with the request
    ids = m.to_tokens(CLEAN)
    # every read (head_out too: its per-head product is computed in the trace) builds a request
    # without any local weight
    for call in (
        lambda: m.run(ids, [("head_out", 1), ("mlp_post", 2)]),
        lambda: m.next_tokens(CLEAN),
        lambda: mw.activation_patching(m, CLEAN, CORRUPT, MD, progress=False),
        lambda: mw.logit_lens(m, CLEAN),
        lambda: mw.steer(m, CLEAN, torch.ones(m.d_model), layer=1),
    ):
        with pytest.raises(_Sent):
            call()
    assert len(capture_requests) == 5 and max(capture_requests) < 200_000


# -- head_out inside the trace ---------------------------------------------------------------


def test_head_out_equals_z_times_local_output_projection(tiny, remote):
    """Independent reference: the projection's input caught with a torch hook, times the local
    weights per head (Model._head_out)."""
    ids = tiny.to_tokens(CLEAN)
    proj = _get(_get(tiny.hf, tiny.arch.layers)[2], tiny.arch.o_proj)
    caught = {}
    h = proj.register_forward_pre_hook(lambda _m, args: caught.setdefault("z", args[0].detach()))
    try:
        with torch.no_grad():
            tiny.hf(ids)
    finally:
        h.remove()
    ref = tiny._head_out(2, caught["z"][0])
    close(tiny.run(ids, [("head_out", 2)])[("head_out", 2)], ref)
    close(remote.run(ids, [("head_out", 2)])[("head_out", 2)], ref)


# -- every public computation: remote="local" == local --------------------------------------

SENT = ProbeDataset.from_zoo("sentiment", n=40, n_ood=0)


def numbers(x, depth=0):
    """Every number in a result (tensors, arrays, floats, ints; through dataclasses, dicts and
    lists), in a fixed order."""
    import dataclasses

    import numpy as np

    if isinstance(x, torch.Tensor):
        return [x.detach().float().reshape(-1)]
    if isinstance(x, np.ndarray) and x.dtype.kind in "fiu":
        return [torch.tensor(x, dtype=torch.float32).reshape(-1)]
    if isinstance(x, (float, int)) and not isinstance(x, bool):
        return [torch.tensor([float(x)])]
    if depth > 4:
        return []
    if isinstance(x, dict):
        return [t for k in sorted(x, key=str) for t in numbers(x[k], depth + 1)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in numbers(v, depth + 1)]
    if dataclasses.is_dataclass(x):
        return [t for f in dataclasses.fields(x) for t in numbers(getattr(x, f.name), depth + 1)]
    return []


CASES = {
    "run_all_sites": (
        lambda m: m.run(m.to_tokens(CLEAN), [(s, layer) for s in m.sites for layer in range(m.n_layers)]),
        numbers,
    ),
    "token_activations_head_out": (
        lambda m: mw.token_activations(m, ["The cat sat", CLEAN], site="head_out", layer=1),
        numbers,
    ),
    "token_activations_sae": (
        lambda m: mw.token_activations(m, CLEAN, site="resid_pre", layer=1, dictionary=_sae(m)),
        numbers,
    ),
    "activation_patching_each": (
        lambda m: mw.activation_patching(m, CLEAN, CORRUPT, MD, positions="each", progress=False),
        numbers,
    ),
    "activation_patching_heads": (
        lambda m: mw.activation_patching(m, CLEAN, CORRUPT, MD, site="head_out", layers=[1, 3], progress=False),
        numbers,
    ),
    "ablate": (
        lambda m: mw.ablate(m, [CLEAN, CORRUPT], MD, ["1.0", "mlp.2"], kind="mean", progress=False),
        numbers,
    ),
    "ablate_separately": (
        lambda m: mw.ablate(m, CLEAN, MD, ["0.1", "1.0", "attn.2", "mlp.3"], separately=True, progress=False),
        numbers,
    ),
    "logit_lens": (lambda m: mw.logit_lens(m, CLEAN, target=" Paris"), numbers),
    "logit_lens_vocab": (lambda m: mw.logit_lens(m, CLEAN, target=" Paris", vocab=[" Paris", " Rome", " the", " is"]), numbers),
    "token_activations_window": (
        lambda m: mw.token_activations(m, " ".join(["The Eiffel Tower is in Paris."] * 30), site="mlp_post", layer=1,
                                       window=m.n_ctx, stride=m.n_ctx // 2),
        numbers,
    ),
    "attention": (lambda m: mw.attention(m, CLEAN), numbers),
    "head_scores": (lambda m: mw.head_scores(m, n=3, seq_len=8), numbers),
    "patchscope": (lambda m: mw.patchscope(m, CLEAN, source_layers=[1, 2], n_tokens=2), numbers),
    "steer": (
        lambda m: mw.steer(m, CLEAN, torch.ones(m.d_model), layer=1, coef=3.0, metric=MD),
        numbers,
    ),
    "steering_sweep": (
        lambda m: mw.steering_sweep(m, [CLEAN, CORRUPT], torch.ones(m.d_model), MD, coefs=(-2, 0, 2), layer=1, progress=False),
        numbers,
    ),
    "steer_generate": (
        lambda m: mw.steer_generate(m, CLEAN, torch.ones(m.d_model), layer=1, coef=8.0, max_new_tokens=4),
        numbers,
    ),
    "steering_vector": (lambda m: mw.steering_vector(m, ["good food"], ["bad food"], layer=1), numbers),
    "probe": (lambda m: mw.probe(m, SENT, layers=[1], seeds=(0,), progress=False), numbers),
    "interchange": (lambda m: mw.interchange(m, SENT, layers=[1], n_pairs=10, progress=False), numbers),
    "erase": (lambda m: mw.erase(m, SENT, 1, probe_layers=[1], progress=False), numbers),
    "ccs": (
        lambda m: mw.ccs(m, ContrastDataset.from_zoo("truth"), layers=[1], n_restarts=1, steps=20, progress=False),
        numbers,
    ),
    "feature_pass": (
        lambda m: mw.feature_pass(m, _sae(m), default_texts(8), k=3, batch_size=4, progress=False),
        lambda r: [r.stats.n_fire, r.stats.act_sum, r.stats.max_act, r.stats.hist],
    ),
    "steer_feature": (lambda m: mw.steer_feature(m, _sae(m), 0, CLEAN, coef=4.0), numbers),
    "steer_stream": (
        lambda m: [e["id"] for e in mw.steer_stream(m, CLEAN, torch.ones(m.d_model), layer=1, coef=8.0, max_new_tokens=3) if "id" in e],
        numbers,
    ),
    "interchange_full": (
        lambda m: mw.interchange(m, SENT, layers=[1], kind="full", n_pairs=10, progress=False), numbers,
    ),
    "tuned_lens": (lambda m: mw.tuned_lens(m, CLEAN, _lens(m)), numbers),
    "activation_store": (
        lambda m: next(iter(mw.ActivationStore(
            m, "resid_post", 1, texts=default_texts(16), batch_size=32, buffer_tokens=32 + m.n_ctx, progress=False,
        ))),
        numbers,
    ),
}

_LENS = {}


def _lens(m):
    """One tuned lens, trained on the local model (training reads residuals: remote-safe too)."""
    if "lens" not in _LENS:
        local = mw.load("zoo:tiny")
        _LENS["lens"] = mw.train_tuned_lens(local, default_texts(8), steps=5, progress=False)
    return _LENS["lens"]


@pytest.mark.parametrize("client", ["remote", "meta_client"])
@pytest.mark.parametrize("name", list(CASES))
def test_remote_local_equals_local(name, client, tiny, request):
    compute, extract = CASES[name]
    want = extract(compute(tiny))
    with record_jobs() as jobs:
        got = extract(compute(request.getfixturevalue(client)))
    assert jobs.count >= 1, "nothing went through the remote backend"
    assert len(got) == len(want) and sum(t.numel() for t in want) > 0
    for a, b in zip(got, want):
        close(a, b)


# -- a GQA family (llama: 4 query heads, 2 key/value heads) ----------------------------------


@pytest.fixture(scope="module")
def llama_pair(bpe_tokenizer):
    import transformers as tf

    def build():
        torch.manual_seed(0)
        cfg = tf.LlamaConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, vocab_size=len(bpe_tokenizer),
            bos_token_id=0, eos_token_id=0, pad_token_id=0,
        )
        return tf.LlamaForCausalLM(cfg).eval()

    return mw.wrap(build(), bpe_tokenizer, "llama"), mw.wrap(build(), bpe_tokenizer, "llama", remote="local")


def test_llama_remote_local_equals_local(llama_pair):
    local, remote = llama_pair
    text = "The Eiffel Tower is in Paris"
    ids = local.to_tokens(text)
    reads = [(s, layer) for s in local.sites for layer in range(local.n_layers)]
    a, b = local.run(ids, reads), remote.run(ids, reads)
    for k in a:
        close(b[k], a[k])
    metric = lambda logits: logits[:, 5] - logits[:, 7]  # noqa: E731
    clean, corrupt = "The Eiffel Tower is in Paris", "The Colosseum is in Rome."
    assert local.to_tokens(clean).shape == local.to_tokens(corrupt).shape
    for site in ("resid_pre", "head_out"):
        pa = mw.activation_patching(local, clean, corrupt, metric, site=site, positions="each", progress=False, normalize=False)
        pb = mw.activation_patching(remote, clean, corrupt, metric, site=site, positions="each", progress=False, normalize=False)
        close(pb.values, pa.values)
    la, lb = mw.logit_lens(local, text), mw.logit_lens(remote, text)
    close(lb.top_probs, la.top_probs)
    sa = mw.steer(local, text, torch.ones(local.d_model), layer=1, coef=2.0)
    sb = mw.steer(remote, text, torch.ones(local.d_model), layer=1, coef=2.0)
    close([x["prob"] for x in sb.steered_topk], [x["prob"] for x in sa.steered_topk])


# -- jobs per sweep ----------------------------------------------------------------------------


def test_a_patching_sweep_is_two_jobs_whatever_its_size(remote):
    """One session with the caching traces (clean, corrupt), one session with every batch."""
    counts = []
    for kw in ({"layers": [0]}, {"positions": "each"}, {"site": "head_out", "positions": "each"}):
        with record_jobs() as jobs:
            mw.activation_patching(remote, CLEAN, CORRUPT, MD, progress=False, **kw)
        counts.append(jobs.count)
    assert counts == [2, 2, 2]
    with record_jobs() as jobs:  # one caching trace, one session for the four ablations
        mw.ablate(remote, CLEAN, MD, ["0.1", "1.0", "attn.2", "mlp.3"], separately=True, progress=False)
    assert jobs.count == 2


# -- methods that cannot run remotely ----------------------------------------------------------

REFUSED = {
    "attribution_patching": lambda m: mw.attribution_patching(m, CLEAN, CORRUPT, MD),
    "causal_tracing": lambda m: mw.causal_tracing(m, CLEAN, " Eiffel Tower", MD, n_samples=2, progress=False),
    "path_patching": lambda m: mw.path_patching(m, CLEAN, CORRUPT, MD, sender=(0, 1), receivers=[(2, 0)], progress=False),
    "attribute": lambda m: mw.attribute(m, CLEAN, " Paris", method="occlusion"),
    "synthesize": lambda m: mw.synthesize(m, site="mlp_post", layer=1, unit=0),
    "interchange(kind='das')": lambda m: mw.interchange(m, SENT, layers=[1], kind="das", progress=False),
    "generate_trace": lambda m: mw.generate_trace(m, CLEAN),
    "logit_effects": lambda m: mw.logit_effects(m, mw.SAE(m.d_model, 8, site="resid_post", layer=1), 0),
    "train_tuned_lens": lambda m: mw.train_tuned_lens(m, steps=1, progress=False),
    "evaluate": lambda m: mw.evaluate(mw.SAE(m.d_model, 8, site="resid_post", layer=1), m, ["The Eiffel Tower is in Paris"]),
    "spliced_accuracy": lambda m: mw.spliced_accuracy(mw.SAE(m.d_model, 8, site="resid_post", layer=1), m, [CLEAN], [" Paris"]),
    "direct_effect": lambda m: mw.direct_effect(m, [CLEAN, CORRUPT], MD, "1.0", "zero", progress=False),
    "illusion_check": lambda m: mw.illusion_check(m, SENT, 1, torch.ones(m.d_model), answers=(" bad", " good")),
    "validate(attention)": lambda m: mw.validate(
        mw.Hypothesis("1.0", "attends to the previous token",
                      attention=mw.AttentionPrediction(lambda toks, i: i - 1 if i else None, [CLEAN])),
        m, progress=False,
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_methods_that_cannot_run_remotely_say_so_before_any_work(name, remote):
    with record_jobs() as jobs, pytest.raises(ValueError, match=r"runs on local models only.*use |load the model without remote"):
        REFUSED[name](remote)
    assert jobs.count == 0


# -- validation and automated interpretability through the remote path --------------------------


def _hypothesis():
    return mw.Hypothesis(
        "1.0", "a head that moves the answer",
        activation=mw.ActivationPrediction(lambda toks, i: None if i == 0 else True, [CLEAN, CORRUPT]),
        ablation=mw.AblationPrediction(mw.PromptTask([CLEAN, CORRUPT], MD), drop_at_least=0.0,
                                       reference=[CORRUPT, CLEAN]),
    )


def test_validate_activation_and_ablation_remote_local_equals_local(tiny, remote):
    """The activation and ablation parts of a hypothesis run through the remote path (reads and
    ablations are traces); the verdict's figures equal the local ones."""
    want = mw.validate(_hypothesis(), tiny, progress=False)
    with record_jobs() as jobs:
        got = mw.validate(_hypothesis(), remote, progress=False)
    assert jobs.count >= 1
    assert [t.name for t in got.tests] == [t.name for t in want.tests] and len(want.tests) >= 4
    for a, b in zip(got.tests, want.tests):
        close(torch.tensor([a.figure]), torch.tensor([b.figure]), tol=1e-4)
        assert a.passed == b.passed, a.name


def test_autointerp_intervention_score_remote_local_equals_local(tiny, remote):
    """The intervention score steers the feature through the model: under remote="local" it
    raises and lowers the same tokens and gives the same score as locally."""
    from mi_widgets.core.autointerp.scoring import intervention_pairs

    rule = "fires on tokens matching /^\\s*(?:the|is|in|a)$/"

    def run(m):
        data = mw.feature_pass(m, _sae(m), default_texts(8), k=3, batch_size=4, progress=False)
        pairs = intervention_pairs(data, 0, n_prompts=3)
        score = mw.score_explanation(rule, 0, data, scores=("intervention",), n_prompts=3)
        return pairs, score

    want_pairs, want = run(tiny)
    with record_jobs() as jobs:
        got_pairs, got = run(remote)
    assert jobs.count >= 1
    assert got_pairs == want_pairs and len(want_pairs) == 3
    assert got.values == pytest.approx(want.values, abs=1e-6)
