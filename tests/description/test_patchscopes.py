"""Patchscopes: exact against hand-hooked transformers generation, and the planted fact on
zoo:tiny."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.description.patchscopes import TINY_PROMPT, inspection_prompt, patchscope
from mi_widgets.core.model import _get


def _hand_generate(m, prompt: str, pos: int, layer: int, vec: torch.Tensor | None, n: int) -> list[int]:
    """Greedy ``hf.generate`` with ``vec`` written over resid_pre[layer] (or the last block's
    output) at ``pos`` in the prompt pass only, with plain torch hooks."""
    ids = m.to_tokens(prompt)
    t = ids.shape[1]
    blocks = _get(m.hf, m.arch.layers)
    handles = []

    def pre(_m, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        if h.shape[1] == t:
            h = h.clone()
            h[:, pos] = vec
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}
        return None

    def post(_m, _args, out):
        h = out[0] if isinstance(out, tuple) else out
        if h.shape[1] == t:
            h = h.clone()
            h[:, pos] = vec
            return (h, *out[1:]) if isinstance(out, tuple) else h
        return None

    if vec is not None:
        if layer < m.n_layers:
            handles.append(blocks[layer].register_forward_pre_hook(pre, with_kwargs=True))
        else:
            handles.append(blocks[m.n_layers - 1].register_forward_hook(post))
    try:
        with torch.no_grad():
            out = m.hf.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                pad_token_id=m.tokenizer.pad_token_id,
            )
    finally:
        for h in handles:
            h.remove()
    new = out[0, t:].tolist()
    eos = m.tokenizer.eos_token_id
    return new[: new.index(eos) + 1] if eos in new else new


def test_cells_match_hand_hooked_generation(family_model):
    family, m = family_model
    src, tgt = "The Eiffel Tower is in Paris.", "The food was wonderful and"
    if family == "bert":
        with pytest.raises(ValueError, match="not a causal language model"):
            patchscope(m, src, target_prompt=tgt)
        return
    r = patchscope(m, src, [0, 2, 3], source_position=3, target_prompt=tgt, target_position=2,
                   target_layers=[1, 3], n_tokens=3)
    ids = m.to_tokens(src)
    states = {
        0: m.run(ids, [("resid_pre", 0)])[("resid_pre", 0)][3],
        2: m.run(ids, [("resid_pre", 2)])[("resid_pre", 2)][3],
        3: m.run(ids, [("resid_post", 2)])[("resid_post", 2)][3],
    }
    for i, sl in enumerate([0, 2, 3]):
        for j, tl in enumerate([1, 3]):
            want = _hand_generate(m, tgt, 2, tl, states[sl], 3)
            got = [x for x in r.token_ids[i, j].tolist() if x >= 0]
            assert got == want, (family, sl, tl)
    assert r.baseline == m.tokenizer.decode(_hand_generate(m, tgt, 0, 0, None, 3), skip_special_tokens=True)


def test_same_layer_table_and_views(tiny):
    import matplotlib

    matplotlib.use("Agg")
    r = patchscope(tiny, "The Eiffel Tower is in", n_tokens=2)
    assert r.target_prompt == TINY_PROMPT and r.same_layer
    assert r.source_layers == list(range(tiny.n_layers + 1))
    df = r.to_pandas()
    assert list(df.source_layer) == r.source_layers and list(df.target_layer) == r.source_layers
    assert list(df.text) == [row[0] for row in r.texts]
    assert ((df.first_prob > 0) & (df.first_prob <= 1)).all()
    fig = r.plot()
    assert fig.axes
    assert "source layer 1" in repr(r)


def test_patchscope_reads_the_fact_from_the_final_position_after_block_0(tiny):
    """Planted mechanism (ground_truth.json, factual_recall): block 0 moves the subject into the
    final position and reads the city there; logit lens: city top-1 in 0% at the embedding and
    100% after block 0.

    Patchscope: the final position's state of a fact prompt, written over the final ' in' of
    "The Silver Mill is in" (a made-up place) at the same layer, makes the model say the fact's
    city from layer 1 on and not at layer 0 (there the state is only ' in' + position).
    Measured on 150 fact prompts (every 7th of the 700 training-template and 350 held-out
    prompts): layer 0 1.3% (the inspection prompt's own guess, ' Moscow', when the fact is
    Moscow), layers 1-4 100%. Here a spread of 15."""
    from mi_widgets.zoo import corpus

    facts = corpus.fact_prompts("train")[::70] + corpus.fact_prompts("heldout")[::70]
    hits = torch.zeros(tiny.n_layers + 1)
    for f in facts:
        r = patchscope(tiny, f["prompt"], n_tokens=1)
        for i, tok in enumerate(row[0] for row in r.first_tokens()):
            hits[i] += tok == f["answer"]
    rate = hits / len(facts)
    assert float(rate[0]) <= 0.2, rate
    assert bool((rate[1:] >= 0.95).all()), rate


def test_full_grid_on_the_eiffel_tower(tiny):
    """Source × target: every source layer >= 1 decodes ' Paris' wherever it is written; the
    layer-0 state (the ' in' embedding) never does."""
    r = patchscope(tiny, "The Eiffel Tower is in", target_layers="all", n_tokens=1)
    first = r.first_tokens()
    assert all(t == " Paris" for row in first[1:] for t in row), first
    assert all(t != " Paris" for t in first[0]), first[0]


def test_inspection_prompt_defaults(tiny, bpe_tokenizer):
    prompt, pos = inspection_prompt(tiny)
    assert prompt == TINY_PROMPT and pos == len(tiny.to_str_tokens(prompt)) - 1
    from _families import _family_model

    import mi_widgets as mw

    m = mw.wrap(_family_model("gpt2", len(bpe_tokenizer)), bpe_tokenizer, "gpt2")
    prompt, pos = inspection_prompt(m)
    assert "→" in prompt and m.to_str_tokens(prompt)[pos].strip() == "?"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source_layers": 9}, "source_layers entry 9 is out of range"),
        ({"target_layers": [0, -1]}, "target_layers entry -1 is out of range"),
        ({"source_position": 30}, "source_position must be an int"),
        ({"target_position": 99}, "target_position must be an int"),
        ({"n_tokens": 0}, "n_tokens must be an int"),
        ({"target_prompt": ""}, "text is empty"),
    ],
)
def test_bad_input_raises_before_any_forward(tiny, kwargs, match):
    calls = []
    h = tiny.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=match):
            patchscope(tiny, "The Eiffel Tower is in", **kwargs)
    finally:
        h.remove()
    assert calls == []


def test_progress_takes_a_callable_or_false(tiny):
    seen = []
    a = patchscope(tiny, "The Eiffel Tower is in", source_layers=[1, 2], progress=lambda d, t: seen.append((d, t)))
    b = patchscope(tiny, "The Eiffel Tower is in", source_layers=[1, 2], progress=False)
    assert seen and seen[-1][0] == seen[-1][1]
    assert a.to_pandas().equals(b.to_pandas())
