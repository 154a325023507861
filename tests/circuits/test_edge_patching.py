# ruff: noqa: F811  (fixtures imported from _circuit_tasks are redefined as arguments)
"""Exact edge patching against a hand-written hook reference, and on the planted IOI circuit."""

from __future__ import annotations

import pytest
import torch
from _circuit_reference import patched_logits
from _circuit_tasks import IOI_PLANTED, ioi_model, ioi_task, roc_auc, small_gpt2  # noqa: F401 (fixtures)

from mi_widgets.core.circuits import edge_patching


def test_edge_patching_matches_hook_reference_on_every_edge(small_gpt2):
    model, clean, corrupt, metric = small_gpt2
    c = edge_patching(model, clean, corrupt, metric, progress=False, curve=False)
    m = metric.bind(model)
    assert c.n_edges == 110 and not torch.isnan(c.scores).any()
    for i, (s, r, k) in enumerate(zip(c.senders, c.receivers, c.kinds)):
        ref = []
        for a, b in zip(clean, corrupt):
            ca, cb = model.to_tokens(a), model.to_tokens(b)
            with torch.no_grad():
                base = m(model.hf(ca).logits[:, -1].float())
            ref.append(float(m(patched_logits(model.hf, ca, cb, s, r, k)) - base))
        assert abs(sum(ref) / len(ref) - float(c.scores[i])) <= 1e-4, c.edge_ids[i]
    assert float(c.scores.abs().max()) > 0.1  # the check is not vacuous


def test_no_edge_corrupted_is_clean_and_every_edge_is_corrupt(small_gpt2):
    model, clean, corrupt, metric = small_gpt2
    c = edge_patching(model, clean, corrupt, metric, edges=[0], progress=False, curve=False)
    assert c.faithfulness(c.n_edges) == pytest.approx(1.0, abs=1e-5)  # all edges clean
    assert c.faithfulness(0) == pytest.approx(0.0, abs=1e-5)  # all edges corrupt = corrupt run
    assert c.faithfulness(0, knockout=True) == pytest.approx(1.0, abs=1e-5)


def test_edges_by_id_and_index_leave_the_rest_nan(small_gpt2):
    model, clean, corrupt, metric = small_gpt2
    c = edge_patching(model, clean, corrupt, metric, edges=["a0.h1->a1.h2<k>", 3], progress=False, curve=False)
    done = ~torch.isnan(c.scores)
    assert int(done.sum()) == 2 and bool(done[3]) and bool(done[c.index("a0.h1->a1.h2<k>")])


def test_bad_edges_raise_before_any_forward(small_gpt2):
    model, clean, corrupt, metric = small_gpt2
    with pytest.raises(ValueError, match="not an edge"):
        edge_patching(model, clean, corrupt, metric, edges=["a1.h0->a0.h1<q>"], progress=False)
    with pytest.raises(ValueError, match="out of range"):
        edge_patching(model, clean, corrupt, metric, edges=[10_000], progress=False)
    with pytest.raises(TypeError):
        edge_patching(model, clean, corrupt, metric, edges=[True], progress=False)
    with pytest.raises(ValueError, match="empty"):
        edge_patching(model, clean, corrupt, metric, edges=[], progress=False)
    with pytest.raises(ValueError, match="different lengths"):
        edge_patching(model, clean[0], "The", metric, progress=False)


def test_a_sandwich_norm_family_is_refused_by_name(bpe_tokenizer):
    # other families run (tests/circuits/test_circuit_families.py); Gemma 2's post-attention norm makes a
    # head's write to the stream non-additive, so its edges are undefined
    from _families import _family_model

    import mi_widgets as mw

    model = mw.wrap(_family_model("gemma2", len(bpe_tokenizer)), bpe_tokenizer, "gemma2")
    with pytest.raises(ValueError, match="gemma2.*not additive"):
        edge_patching(model, "a b", "a c", mw.logit_diff(" b", " c"), progress=False)


def test_zoo_ioi_exact_effects_single_out_the_planted_edges(ioi_model, ioi_task):
    # planted by construction: each of the 8 edges alone breaks the circuit (logit diff 10 ->
    # about -3.3 or 0); nothing else reads what the corruption changes
    clean, corrupt, metric = ioi_task
    c = edge_patching(ioi_model, clean, corrupt, metric, progress=False, curve=False)
    planted = torch.tensor([e in IOI_PLANTED for e in c.edge_ids])
    assert bool((c.scores[planted] < -9).all())
    assert float(c.scores[~planted].abs().max()) < 0.1
    assert roc_auc(c.scores, planted) == 1.0
