"""Benchmark: a full logit lens (every layer, every position) versus one plain forward.

Model: ``GPT2LMHeadModel(GPT2Config())`` (gpt2-small shape: 12 layers, d_model 768, vocab 50257),
random init with seed 0, eager attention, float32, CPU, one torch thread. Prompt: P random tokens
(a word-level tokenizer maps "t<id>" to id, so P words are exactly P tokens).

Timed, best of 3 each:

- ``forward``: one plain ``hf(ids)`` forward with full logits (the reference, 1.0x);
- ``mw.logit_lens``: ``logit_lens(model, text, k=5, target=...)``: embedding + 12 rows, top-k,
  target probability/rank and KL to the final row, all inside one nnsight trace;
- ``by hand``: what one writes in torch: ``hf(ids, output_hidden_states=True)``, then final norm +
  unembedding + softmax + top-k + KL for each of the 12 intermediate rows.

Floor: the lens must unembed 12 extra rows (the last row is the model's own logits), so even
with free softmax/top-k it costs ``1 + 12 * t_unembed / t_forward`` forwards, where
``t_unembed`` is one measured final norm + unembedding of P vectors; the table gives that bound
next to the measured ratio.

Run: ``python benchmarks/views.py`` (writes the ``## views: logit lens`` section of
benchmarks/RESULTS.md; ``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from _models import build_model  # noqa: E402
from _results import write_section  # noqa: E402


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def forward(hf, ids: torch.Tensor) -> None:
    with torch.no_grad():
        hf(ids)


def by_hand(hf, ids: torch.Tensor, k: int = 5) -> None:
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        final = torch.log_softmax(out.logits[0], -1)
        for h in out.hidden_states[:-1]:
            logp = torch.log_softmax(hf.lm_head(hf.transformer.ln_f(h))[0], -1)
            torch.topk(logp, k, -1)
            (final.exp() * (final - logp)).sum(-1)


def unembed_once(hf, ids: torch.Tensor) -> float:
    """Seconds for one final norm + unembedding of P residual vectors (best of 3)."""
    h = torch.randn(1, ids.shape[1], hf.config.n_embd)
    with torch.no_grad():
        return best_of(lambda: hf.lm_head(hf.transformer.ln_f(h)), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    import mi_widgets as mw
    from mi_widgets.core.lens import logit_lens

    hf, tok = build_model()
    model = mw.wrap(hf, tok, "gpt2-small-shape (random)")
    rows = []
    for p in args.sizes:
        g = torch.Generator().manual_seed(p)
        ids = torch.randint(1, hf.config.vocab_size, (1, p), generator=g)
        text = " ".join(f"t{i}" for i in ids[0].tolist())
        assert torch.equal(model.to_tokens(text), ids)
        target = int(ids[0, -1])

        fwd = partial(forward, hf, ids)
        fwd()  # warm-up
        t_fwd = best_of(fwd, args.repeats)
        t_lens = best_of(partial(logit_lens, model, text, k=5, target=target), args.repeats)
        t_hand = best_of(partial(by_hand, hf, ids), args.repeats)
        floor = 1 + hf.config.n_layer * unembed_once(hf, ids) / t_fwd
        rows.append((p, t_fwd, t_lens, t_hand, floor))
        print(
            f"P={p}: forward {t_fwd:.3f}s, logit_lens {t_lens:.3f}s ({t_lens / t_fwd:.2f}x), "
            f"by hand {t_hand:.3f}s ({t_hand / t_fwd:.2f}x), floor {rows[-1][4]:.2f}x",
            flush=True,
        )

    lines = [
        "Full logit lens (embedding + 12 layers × every position; top-5, target prob/rank, KL to "
        "the final layer, computed inside one nnsight trace) vs one plain forward with full logits, "
        "on `GPT2LMHeadModel(GPT2Config())` (random, float32, CPU, 1 thread), best of "
        f"{args.repeats}. `python benchmarks/views.py`.",
        "",
        "| P | forward | mw.logit_lens | ratio | by hand (torch) | ratio | unembedding floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, f, lens, hand, floor in rows:
        lines.append(
            f"| {p} | {f * 1e3:.0f} ms | {lens * 1e3:.0f} ms | {lens / f:.2f}x | "
            f"{hand * 1e3:.0f} ms | {hand / f:.2f}x | {floor:.2f}x |"
        )
    lines += [
        "",
        "Target was <= 1.5x one forward. It cannot be met by an exact lens on this shape: one "
        "final norm + unembedding (768 × 50257) costs "
        + " / ".join(f"{(floor - 1) / hf.config.n_layer:.2f}" for *_, floor in rows)
        + f" of a forward here (P = {' / '.join(str(r[0]) for r in rows)}), and the lens must "
        "apply it to 12 more rows than the forward does (the last row reuses the model's own "
        "logits), so those matmuls alone cost the 'unembedding floor' above (12 measured "
        "unembeddings plus the forward). The measured ratio is that "
        "floor plus log-softmax/top-k/KL/rank over the vocabulary for each row (the KL uses the "
        "final distribution computed once); compare the hand-written torch version.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("views: logit lens", body)


if __name__ == "__main__":
    main()
