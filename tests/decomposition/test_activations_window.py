"""token_activations(window=, stride=): texts longer than the model's context, run as
overlapping windows and stitched, each token from the window where it has the most left context.

The reference below runs every window by hand (``model.run`` on ``[BOS] + body[s:s + W - 1]``)
and picks, token by token, the earliest window that holds it.
"""

from __future__ import annotations

import pytest
import torch

import mi_widgets as mw
from mi_widgets.core.decomposition.activations import window_plan

WORDS = (
    "the Eiffel Tower is in Paris and the Colosseum is in Rome while Mary gave John a drink "
    "at the store because the food was wonderful and the staff were kind"
).split()


@pytest.fixture(scope="module")
def gpt2(bpe_tokenizer):
    """A random 3-layer GPT-2 with a 128-token context and a BOS-prepending tokenizer."""
    from _families import _family_model

    return mw.wrap(_family_model("gpt2", len(bpe_tokenizer)), bpe_tokenizer, "gpt2")


@pytest.fixture(scope="module")
def llama(bpe_tokenizer):
    """Rotary positions: each window starts again at position 0."""
    from _families import _family_model

    return mw.wrap(_family_model("llama", len(bpe_tokenizer)), bpe_tokenizer, "llama")


def long_text(model, n_tokens: int) -> str:
    words, i = [], 0
    while True:
        words.append(WORDS[i % len(WORDS)])
        i += 1
        if i % 8 == 0 and model.tokenizer(" ".join(words), return_tensors="pt")["input_ids"].shape[1] >= n_tokens:
            return " ".join(words)


def by_hand(model, text: str, site: str, layer: int, window: int, stride: int) -> torch.Tensor:
    """Per-window forwards by hand; token p takes its value from the earliest window holding it."""
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"][0]
    bos, body = ids[:1], ids[1:]
    width = window - 1  # body tokens per window, after the BOS
    starts = list(range(0, len(body) - width + 1, stride))
    if starts[-1] + width < len(body):
        starts.append(len(body) - width)
    outs = []
    for s in starts:
        win = torch.cat([bos, body[s : s + width]])[None]
        outs.append(model.run(win, [(site, layer)])[(site, layer)])
    rows = [outs[0][0]]  # the BOS, from the first window
    for p in range(len(body)):
        k = next(k for k, s in enumerate(starts) if s <= p < s + width)  # most left context
        rows.append(outs[k][1 + p - starts[k]])
    return torch.stack(rows)


@pytest.mark.parametrize(("window", "stride"), [(64, 32), (50, 17), (128, 100), (40, 39)])
def test_windows_match_a_hand_reference(gpt2, window, stride):
    text = long_text(gpt2, 300)
    r = mw.token_activations(gpt2, text, site="mlp_post", layer=1, window=window, stride=stride)
    ref = by_hand(gpt2, text, "mlp_post", 1, window, stride)
    assert r.acts.shape == ref.shape and r.acts.shape[0] > gpt2.n_ctx
    torch.testing.assert_close(r.acts, ref)
    assert r.str_tokens[0] == gpt2.to_str_tokens(gpt2.tokenizer(text, return_tensors="pt")["input_ids"])
    assert (r.window, r.stride) == (window, stride)


def test_windows_restart_rotary_positions(llama):
    text = long_text(llama, 200)
    r = mw.token_activations(llama, text, site="resid_post", layer=2, window=48, stride=20)
    torch.testing.assert_close(r.acts, by_hand(llama, text, "resid_post", 2, 48, 20))


def test_a_token_late_in_a_window_sees_its_context(gpt2):
    """Past the first window the stitched value differs from running the token with no left
    context (the BOS and the token alone): the window gave it context."""
    text = long_text(gpt2, 200)
    r = mw.token_activations(gpt2, text, site="resid_post", layer=2, window=64, stride=32)
    ids = gpt2.tokenizer(text, return_tensors="pt")["input_ids"]
    p = 150
    alone = gpt2.run(torch.stack([ids[0, 0], ids[0, p]])[None], [("resid_post", 2)])[("resid_post", 2)][1]
    assert not torch.allclose(r.acts[p], alone, atol=1e-4)


def test_a_text_within_context_is_the_same_with_or_without_window(gpt2):
    texts = [long_text(gpt2, 100), "The Eiffel Tower is in Paris."]
    plain = mw.token_activations(gpt2, texts, site="mlp_post", layer=0)
    windowed = mw.token_activations(gpt2, texts, site="mlp_post", layer=0, window=32, stride=8)
    assert plain.acts.shape[0] > 32  # longer than the window, but within the context: one pass
    assert torch.equal(plain.acts, windowed.acts)
    assert windowed.window is None and windowed.stride is None
    assert windowed.str_tokens == plain.str_tokens and windowed.token_ids == plain.token_ids


def test_mixed_texts_window_only_the_long_one(gpt2):
    short, long = "The food was wonderful.", long_text(gpt2, 260)
    r = mw.token_activations(gpt2, [short, long], site="mlp_post", layer=2, window=100, stride=50)
    n0 = r.offsets[1]
    torch.testing.assert_close(r.acts[:n0], mw.token_activations(gpt2, short, site="mlp_post", layer=2).acts)
    torch.testing.assert_close(r.acts[n0:], by_hand(gpt2, long, "mlp_post", 2, 100, 50))


def test_head_out_and_progress_count_every_window(gpt2):
    text = long_text(gpt2, 300)
    calls = []
    r = mw.token_activations(gpt2, text, site="head_out", layer=0, window=64, progress=lambda d, t: calls.append((d, t)))
    n_windows = len(window_plan(r.acts.shape[0], 64, 32, 1))
    assert calls == [(i + 1, n_windows) for i in range(n_windows)] and n_windows > 2
    heads = by_hand(gpt2, text, "head_out", 0, 64, 32).norm(dim=-1)
    torch.testing.assert_close(r.acts, heads)


def test_too_long_without_window_says_how(gpt2):
    calls = []
    handle = gpt2.hf.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"texts\[1\] is \d+ tokens long but .* at most 128; pass window=128"):
            mw.token_activations(gpt2, ["short", long_text(gpt2, 200)])
        for kw, err, match in [
            ({"window": 200}, ValueError, r"window must be in 2\.\.128"),
            ({"window": 1}, ValueError, r"window must be in 2\.\.128"),
            ({"window": 64.0}, TypeError, "window must be an int"),
            ({"window": 64, "stride": 64}, ValueError, r"stride must be in 1\.\.63"),
            ({"window": 64, "stride": 0}, ValueError, r"stride must be in 1\.\.63"),
            ({"window": 64, "stride": "8"}, TypeError, "stride must be an int"),
            ({"stride": 8}, ValueError, "stride= only applies with window="),
        ]:
            with pytest.raises(err, match=match):
                mw.token_activations(gpt2, long_text(gpt2, 200), **kw)
    finally:
        handle.remove()
    assert calls == []  # refused before any forward pass


@pytest.mark.parametrize("prefix", [0, 1])
def test_window_plan_covers_each_token_once_from_its_earliest_window(prefix):
    for n in range(prefix + 1, 60):
        for window in range(prefix + 1, 20):
            if window <= prefix:
                continue
            for stride in range(1, window):
                if stride > window - prefix:
                    continue
                plan = window_plan(n, window, stride, prefix)
                taken = []
                for k, (positions, keep) in enumerate(plan):
                    assert len(positions) <= window and positions[:prefix] == list(range(prefix))
                    assert positions == sorted(set(positions)) and positions[-1] < n
                    for pos in positions[keep]:
                        # no earlier window holds this token (for the BOS: it is the first window)
                        assert all(pos not in earlier for earlier, _ in plan[:k])
                        taken.append(pos)
                assert taken == list(range(n)), (n, window, stride, prefix)
                if n <= window:
                    assert len(plan) == 1
                else:
                    assert plan[-1][0][-1] == n - 1 and len(plan[-1][0]) == window
