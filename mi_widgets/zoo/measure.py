"""Measure the ground truth of the ``tiny`` zoo model on its shipped weights.

    python -m mi_widgets.zoo.measure tiny [--out PATH]

Plain torch + transformers (forward hooks on the GPT-2 blocks); no other ``mi_widgets`` module.
Writes ``mi_widgets/zoo/models/tiny/ground_truth.json``. Everything is deterministic (fixed
seeds, CPU), so re-running on the same weights reproduces the figures; ``tests/test_zoo_tiny.py``
re-measures the cheap parts and compares.

Residual-stream naming: ``resid_pre[L]`` is the input of block ``L`` (``resid_pre[0]`` is the
embedding, token + position); ``resid_pre[n_layer]`` is the output of the last block (the input
of ``ln_f``). A probe "after block L" reads ``resid_pre[L + 1]``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from mi_widgets.zoo import corpus

MODELS_DIR = Path(__file__).parent / "models"
PROBE_PASS = 0.9  # "the sentiment/truth direction is readable" threshold
PATCH_CELL = 0.5  # a patching cell "carries the effect" when it restores >= half the logit diff
COMMAND = "python -m mi_widgets.zoo.measure tiny"


# --------------------------------------------------------------------------------------------
# Loading and running
# --------------------------------------------------------------------------------------------


def model_dir(name: str | Path = "tiny") -> Path:
    p = Path(name)
    if p.is_dir():
        return p
    return MODELS_DIR / str(name).removeprefix("zoo:")


def load(name: str | Path = "tiny"):
    """``(model, tokenizer)`` in eval mode, float32, CPU."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    d = model_dir(name)
    model = GPT2LMHeadModel.from_pretrained(str(d), attn_implementation="eager")
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    return model, tok


def encode(tok, prompts: list[str]) -> list[list[int]]:
    """Token ids with BOS (id 0) first, as the model was trained."""
    return [tok(p)["input_ids"] for p in prompts]


def _pad(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(x) for x in ids)
    x = torch.zeros(len(ids), L, dtype=torch.long)
    for i, row in enumerate(ids):
        x[i, : len(row)] = torch.tensor(row)
    last = torch.tensor([len(r) - 1 for r in ids])
    return x, last


@torch.no_grad()
def run(model, ids: list[list[int]], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and residual stream at each prompt's last token.

    Prompts are right-padded without an attention mask: with causal attention the padding comes
    after the read position and cannot affect it. Returns ``logits [N, vocab]`` and
    ``resid [n_layer + 1, N, d_model]`` (``resid[L]`` = ``resid_pre[L]``, see module docstring).
    """
    blocks = list(model.transformer.h)
    all_logits, all_resid = [], []
    for s in range(0, len(ids), batch_size):
        x, last = _pad(ids[s : s + batch_size])
        rows = torch.arange(len(x))
        grabbed: list[torch.Tensor] = []

        def grab(_mod, args, kwargs, grabbed=grabbed, rows=rows, last=last):
            h = args[0] if args else kwargs["hidden_states"]
            grabbed.append(h[rows, last].clone())

        hooks = [b.register_forward_pre_hook(grab, with_kwargs=True) for b in blocks]
        hooks.append(model.transformer.ln_f.register_forward_pre_hook(grab, with_kwargs=True))
        try:
            logits = model(input_ids=x).logits[rows, last]
        finally:
            for h in hooks:
                h.remove()
        all_logits.append(logits)
        all_resid.append(torch.stack(grabbed))
    return torch.cat(all_logits), torch.cat(all_resid, dim=1)


def token_id(tok, s: str) -> int:
    ids = tok(s, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{s!r} is not a single token: {ids}")
    return ids[0]


# --------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------


def fact_accuracy(model, tok, items: list[dict]) -> dict:
    """Top-1 accuracy (over the whole vocabulary) of the answer at the end of each prompt."""
    logits, resid = run(model, encode(tok, [it["prompt"] for it in items]))
    answers = torch.tensor([token_id(tok, it["answer"]) for it in items])
    hit = logits.argmax(-1) == answers
    with torch.no_grad():  # logit lens: ln_f + unembedding applied to resid_pre[L]
        lens = model.lm_head(model.transformer.ln_f(resid)).argmax(-1) == answers
    per_template: dict[str, list[int]] = {}
    for it, h in zip(items, hit.tolist()):
        per_template.setdefault(it["template"], []).append(int(h))
    return {
        "accuracy": round(hit.float().mean().item(), 4),
        "n": len(items),
        "per_template": {t: round(sum(v) / len(v), 4) for t, v in per_template.items()},
        "logit_lens_top1_by_layer": {
            name: round(lens[L].float().mean().item(), 4)
            for L, name in enumerate(layer_names(resid.shape[0] - 1))
        },
        "misses": [
            {"prompt": it["prompt"], "answer": it["answer"], "top1": tok.decode([int(p)])}
            for it, h, p in zip(items, hit.tolist(), logits.argmax(-1).tolist())
            if not h
        ],
    }


# --------------------------------------------------------------------------------------------
# Linear probes
# --------------------------------------------------------------------------------------------


def fit_logreg(X: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, iters: int = 100):
    """L2-regularised logistic regression (standardised features, LBFGS from zero, float64).

    Returns a predict function ``X -> {0,1}``. Deterministic: no random init.
    """
    X = X.double()
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    w = torch.zeros(Z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")
    yt = y.double()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, yt)
        loss = loss + l2 * (w @ w) / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda Xn: (((Xn.double() - mu) / sd) @ w + b > 0).long()


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return round((pred == y).float().mean().item(), 4)


def _split(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    k = int(round(frac * n))
    return sorted(idx[:k]), sorted(idx[k:])


def layer_names(n_layer: int) -> list[str]:
    return ["embed"] + [f"after block {i}" for i in range(n_layer)]


def sentiment_probe(model, tok, n_id: int = 600, n_ood: int = 200, seed: int = 0) -> dict:
    """Per-layer probe for review sentiment at the final (neutral) token ``" is"`` of
    ``"<review> Overall the review is"``; trained on 70% of in-distribution reviews, tested on
    the other 30% and on reviews built only from held-out (OOD) adjectives."""
    id_ex = corpus.sentiment_examples("id", n=n_id, seed=seed)
    ood_ex = corpus.sentiment_examples("ood", n=n_ood, seed=seed)
    logits, R = run(model, encode(tok, [e["text"] for e in id_ex + ood_ex]))
    y = torch.tensor([e["label"] for e in id_ex + ood_ex])
    tr, te = _split(len(id_ex), 0.7, seed)
    ood = list(range(len(id_ex), len(id_ex) + len(ood_ex)))
    names = layer_names(R.shape[0] - 1)
    test, test_ood = {}, {}
    for L, name in enumerate(names):
        predict = fit_logreg(R[L, tr], y[tr])
        test[name] = _acc(predict(R[L, te]), y[te])
        test_ood[name] = _acc(predict(R[L, ood]), y[ood])
    pos, neg = token_id(tok, corpus.VERDICT[1]), token_id(tok, corpus.VERDICT[0])
    said = (logits[:, pos] > logits[:, neg]).long()
    first = next((n for n in names if test[n] >= PROBE_PASS), None)
    return {
        "readout": "last token (' is') of '<review> Overall the review is'",
        "n_train": len(tr),
        "n_test": len(te),
        "n_ood": len(ood),
        "probe_test_accuracy": test,
        "probe_ood_accuracy": test_ood,
        "first_layer_probe_ge_0.9": first,
        "verdict_accuracy_id": _acc(said[: len(id_ex)], y[: len(id_ex)]),
        "verdict_accuracy_ood": _acc(said[len(id_ex) :], y[len(id_ex) :]),
    }


def _subject_split(ex: list[dict], seed: int) -> tuple[list[int], list[int]]:
    """Train / test example indices with 70% of the subjects in train: test subjects are unseen."""
    subjects = sorted({e["subject"] for e in ex})
    tr_s, _ = _split(len(subjects), 0.7, seed)
    tr_set = {subjects[i] for i in tr_s}
    tr = [i for i, e in enumerate(ex) if e["subject"] in tr_set]
    te = [i for i, e in enumerate(ex) if e["subject"] not in tr_set]
    return tr, te


def truth_probe(model, tok, seed: int = 0) -> dict:
    """Per-layer probe for "the claim is true" at the final token of
    ``"Claim: <statement> This is"``; split by subject (test subjects unseen by the probe)."""
    ex = corpus.contrast_pairs(seed)
    logits, R = run(model, encode(tok, [e["prompt"] for e in ex]))
    y = torch.tensor([e["label"] for e in ex])
    tr, te = _subject_split(ex, seed)
    names = layer_names(R.shape[0] - 1)
    test = {}
    for L, name in enumerate(names):
        test[name] = _acc(fit_logreg(R[L, tr], y[tr])(R[L, te]), y[te])
    t, f = token_id(tok, corpus.TRUTH[1]), token_id(tok, corpus.TRUTH[0])
    said = (logits[:, t] > logits[:, f]).long()
    return {
        "readout": "last token (' is') of 'Claim: <statement> This is'",
        "n_train": len(tr),
        "n_test": len(te),
        "probe_test_accuracy": test,
        "first_layer_probe_ge_0.9": next((n for n in names if test[n] >= PROBE_PASS), None),
        "says_true_false_accuracy": _acc(said, y),
    }


def ccs(model, tok, seed: int = 0, restarts: int = 10, epochs: int = 500) -> dict:
    """Contrast-consistent search (Burns et al. 2022) per layer, on the contrast pairs
    ``x_true``/``x_false`` read at their last token; accuracy up to sign, on held-out subjects."""
    ex = corpus.contrast_pairs(seed)
    _, Rp = run(model, encode(tok, [e["x_true"] for e in ex]))
    _, Rn = run(model, encode(tok, [e["x_false"] for e in ex]))
    y = torch.tensor([e["label"] for e in ex])
    tr, te = _subject_split(ex, seed)
    out = {}
    for L, name in enumerate(layer_names(Rp.shape[0] - 1)):
        P, N = Rp[L].double(), Rn[L].double()
        mp, mn = P[tr].mean(0), N[tr].mean(0)
        sp, sn = P[tr].std(0) + 1e-6, N[tr].std(0) + 1e-6
        P, N = (P - mp) / sp, (N - mn) / sn
        g = torch.Generator().manual_seed(seed)
        best, best_loss = None, float("inf")
        for _ in range(restarts):
            w = (torch.randn(P.shape[1], generator=g, dtype=torch.float64) * 0.1).requires_grad_()
            b = torch.zeros((), dtype=torch.float64, requires_grad=True)
            opt = torch.optim.Adam([w, b], lr=1e-2)
            with torch.enable_grad():
                for _ in range(epochs):
                    pp, pn = torch.sigmoid(P[tr] @ w + b), torch.sigmoid(N[tr] @ w + b)
                    loss = ((pp - (1 - pn)) ** 2).mean() + (torch.minimum(pp, pn) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            if loss.item() < best_loss:
                best_loss, best = loss.item(), (w.detach(), b.detach())
        w, b = best
        score = 0.5 * (torch.sigmoid(P[te] @ w + b) + 1 - torch.sigmoid(N[te] @ w + b))
        acc = ((score > 0.5).long() == y[te]).float().mean().item()
        out[name] = round(max(acc, 1 - acc), 4)
    return {"test_accuracy_up_to_sign": out, "n_train": len(tr), "n_test": len(te)}


# --------------------------------------------------------------------------------------------
# Activation patching
# --------------------------------------------------------------------------------------------

PATCH_TEMPLATE = corpus.TRAIN_TEMPLATES[0]  # "{s} is in {c}."
POSITION_GROUPS = [
    "BOS",
    "subject (not last)",
    "subject last",
    "subject (best token)",
    "' is'",
    "' in' (final)",
]


def patch_pairs(model, tok, n_pairs: int = 20, seed: int = 0) -> list[dict]:
    """Clean/corrupt fact prompts ``"<subject> is in"`` whose subjects have the same token
    length and different cities, both answered correctly by the model."""
    fs = corpus.facts()
    prompts = [corpus.render(PATCH_TEMPLATE, f["subject"]) for f in fs]
    ids = encode(tok, prompts)
    logits, _ = run(model, ids)
    ok = [logits[i].argmax().item() == token_id(tok, f["answer"]) for i, f in enumerate(fs)]
    order = list(range(1, len(fs)))
    random.Random(f"patch-{seed}").shuffle(order)
    order = [0] + order  # the first pair (the recorded example grid) is the Eiffel Tower's
    pairs, used = [], set()
    for i in order:
        if not ok[i] or i in used:
            continue
        for j in order:
            if (
                j != i
                and j not in used
                and ok[j]
                and len(ids[j]) == len(ids[i])
                and fs[j]["city"] != fs[i]["city"]
            ):
                used.update((i, j))
                pairs.append(
                    {
                        "clean": prompts[i],
                        "corrupt": prompts[j],
                        "clean_answer": fs[i]["answer"],
                        "corrupt_answer": fs[j]["answer"],
                        "clean_ids": ids[i],
                        "corrupt_ids": ids[j],
                        "subject_len": len(ids[i]) - 3,  # minus BOS, " is", " in"
                    }
                )
                break
        if len(pairs) == n_pairs:
            break
    return pairs


@torch.no_grad()
def patch_grid(model, tok, pair: dict) -> torch.Tensor:
    """``[n_layer + 1, T]`` normalised logit diff when ``resid_pre[L]`` at position ``t`` of the
    corrupt run is replaced by the clean one (0 = corrupt behaviour, 1 = clean behaviour)."""
    blocks = list(model.transformer.h)
    sites = blocks + [model.transformer.ln_f]
    clean = torch.tensor([pair["clean_ids"]])
    corrupt = torch.tensor([pair["corrupt_ids"]])
    a, b = token_id(tok, pair["clean_answer"]), token_id(tok, pair["corrupt_answer"])
    cache: list[torch.Tensor] = []

    def grab(_m, args, kwargs):
        cache.append((args[0] if args else kwargs["hidden_states"])[0].clone())

    hooks = [s.register_forward_pre_hook(grab, with_kwargs=True) for s in sites]
    try:
        lc = model(input_ids=clean).logits[0, -1]
    finally:
        for h in hooks:
            h.remove()
    lx = model(input_ids=corrupt).logits[0, -1]
    ld_clean, ld_corrupt = (lc[a] - lc[b]).item(), (lx[a] - lx[b]).item()
    T = corrupt.shape[1]
    grid = torch.zeros(len(sites), T)
    for L, site in enumerate(sites):

        def patch(_m, args, kwargs, L=L):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[torch.arange(T), torch.arange(T)] = cache[L][torch.arange(T)]
            if args:
                return (h,) + tuple(args[1:]), kwargs
            kwargs["hidden_states"] = h
            return args, kwargs

        hook = site.register_forward_pre_hook(patch, with_kwargs=True)
        try:
            lp = model(input_ids=corrupt.expand(T, T)).logits[:, -1]
        finally:
            hook.remove()
        grid[L] = (lp[:, a] - lp[:, b] - ld_corrupt) / (ld_clean - ld_corrupt)
    return grid


def _groups(T: int, subject_len: int) -> dict[str, list[int]]:
    subj = list(range(1, 1 + subject_len))
    return {
        "BOS": [0],
        "subject (not last)": subj[:-1],
        "subject last": [subj[-1]],
        "subject (best token)": subj,  # max over the subject's tokens, not the mean
        "' is'": [T - 2],
        "' in' (final)": [T - 1],
    }


def patching(model, tok, n_pairs: int = 20, seed: int = 0) -> dict:
    """Average patching effect per (layer, position group) over ``n_pairs`` fact pairs."""
    pairs = patch_pairs(model, tok, n_pairs, seed)
    n_sites = model.config.n_layer + 1
    sums = {g: [0.0] * n_sites for g in POSITION_GROUPS}
    counts = {g: 0 for g in POSITION_GROUPS}
    example = None
    for k, p in enumerate(pairs):
        grid = patch_grid(model, tok, p)
        if k == 0:
            example = {
                "clean": p["clean"],
                "corrupt": p["corrupt"],
                "tokens": [tok.decode([i]) for i in p["corrupt_ids"]],
                "grid": [[round(v, 3) for v in row] for row in grid.tolist()],
            }
        for g, pos in _groups(grid.shape[1], p["subject_len"]).items():
            if not pos:
                continue
            counts[g] += 1
            for L in range(n_sites):
                cells = grid[L, pos]
                sums[g][L] += (cells.max() if g == "subject (best token)" else cells.mean()).item()
    mean = {
        g: [round(s / counts[g], 3) for s in sums[g]] if counts[g] else None
        for g in POSITION_GROUPS
    }
    carried = {
        g: [L for L, v in enumerate(mean[g]) if v >= PATCH_CELL]
        for g in POSITION_GROUPS
        if mean[g] is not None
    }
    return {
        "template": PATCH_TEMPLATE.split(" {c}")[0],
        "site": "resid_pre[L] (input of block L; L = n_layer is the last block's output)",
        "metric": "(LD_patched - LD_corrupt) / (LD_clean - LD_corrupt), LD = logit(clean city) - logit(corrupt city)",
        "aggregation": "per pair, mean over the group's positions (max for 'subject (best token)'); then mean over pairs",
        "n_pairs": len(pairs),
        "pairs": [[p["clean"], p["corrupt"]] for p in pairs],
        "layers": list(range(n_sites)),
        "mean_effect": mean,
        "cells_ge_0.5": carried,
        "summary": _summarise(carried),
        "example": example,
    }


def _ranges(xs: list[int]) -> str:
    if not xs:
        return "none"
    out, start = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def _summarise(carried: dict[str, list[int]]) -> str:
    parts = [f"{g}: layers {_ranges(ls)}" for g, ls in carried.items() if ls]
    return (
        f"cells restoring >= {PATCH_CELL} of the clean logit diff (resid_pre layer index): "
        + "; ".join(parts)
    )


# --------------------------------------------------------------------------------------------
# Two-hop
# --------------------------------------------------------------------------------------------


def two_hop(model, tok, seed: int = 0) -> dict:
    out = {}
    for variant in ("step", "corrupt_step", "no_step"):
        ex = corpus.two_hop_examples(variant, seed)
        logits, _ = run(model, encode(tok, [e["prompt"] for e in ex]))
        top = logits.argmax(-1)
        ans = torch.tensor([token_id(tok, e["answer"]) for e in ex])
        rec = torch.tensor([token_id(tok, e["recall_answer"]) for e in ex])
        out[variant] = {
            "accuracy": _acc(top, ans),
            "answers_true_city": _acc(top, rec),
            "n": len(ex),
            "example": ex[0]["prompt"],
        }
    return out


# --------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------


def size(model, d: Path) -> dict:
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "safetensors_bytes": (d / "model.safetensors").stat().st_size,
        "n_layer": model.config.n_layer,
        "d_model": model.config.n_embd,
        "n_head": model.config.n_head,
        "vocab_size": model.config.vocab_size,
        "n_positions": model.config.n_positions,
    }


def measure(name: str | Path = "tiny") -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # robust on a shared CPU; figures do not depend on it
    d = model_dir(name)
    model, tok = load(d)
    train_facts = fact_accuracy(model, tok, corpus.fact_prompts("train"))
    held_facts = fact_accuracy(model, tok, corpus.fact_prompts("heldout"))
    sent = sentiment_probe(model, tok)
    truth = truth_probe(model, tok)
    truth_ccs = ccs(model, tok)
    patch = patching(model, tok)
    hop = two_hop(model, tok)
    training = {}
    if (d / "training.json").exists():
        t = json.loads((d / "training.json").read_text(encoding="utf-8"))
        training = {k: t[k] for k in ("steps_done", "train_seconds", "torch") if k in t}
        training["command"] = "python -m mi_widgets.zoo.train"
    return _record(model, d, train_facts, held_facts, sent, truth, truth_ccs, patch, hop, training)


def _record(model, d, train_facts, held_facts, sent, truth, truth_ccs, patch, hop, training):
    sub = patch["cells_ge_0.5"]
    lens_train = train_facts["logit_lens_top1_by_layer"]
    lens_held = held_facts["logit_lens_top1_by_layer"]
    ccs_best = max(truth_ccs["test_accuracy_up_to_sign"].values())
    return {
        "model": "tiny",
        "kind": "trained: python -m mi_widgets.zoo.train on the corpus of mi_widgets/zoo/corpus.py",
        "description": (
            "4-layer GPT-2 trained on the seeded synthetic corpus of mi_widgets/zoo/corpus.py "
            "(facts entity->city, sentiment reviews, true/false claims, two-hop lookups, filler). "
            "Every figure here is measured on the shipped weights by `" + COMMAND + "`."
        ),
        "size": size(model, d),
        "training": training,
        "commands": {
            "weights": "python -m mi_widgets.zoo.train",
            "ground_truth": COMMAND,
            "test": "pytest tests/test_zoo_tiny.py",
            "facts": COMMAND,
            "sentiment_probe": COMMAND,
            "truth_probe": COMMAND,
            "ccs": COMMAND,
            "patching": COMMAND,
            "two_hop": COMMAND,
        },
        "figures": {
            "facts": {
                "train_templates": train_facts,
                "heldout_templates": held_facts,
                "train_template_prompts": corpus.TRAIN_TEMPLATES,
                "heldout_template_prompts": corpus.HELDOUT_TEMPLATES,
                "prompts_train": [it["prompt"] for it in corpus.fact_prompts("train")],
                "prompts_heldout": [it["prompt"] for it in corpus.fact_prompts("heldout")],
            },
            "sentiment_probe": sent,
            "truth_probe": truth,
            "ccs": truth_ccs,
            "patching": patch,
            "two_hop": hop,
        },
        "mechanisms": [
            {
                "name": "factual_recall",
                "mechanism": (
                    "Subject -> city lookup. The city is recalled from the subject tokens, not "
                    "the template (every template is used with every fact; held-out templates "
                    "were never trained). Activation patching of resid_pre from a clean into a "
                    "same-length corrupt subject locates where the city information sits: "
                    + patch["summary"]
                    + ". Logit lens (ln_f + unembedding) at the final position: the city is "
                    f"top-1 for {lens_train['embed']:.0%} of training-template prompts at the "
                    f"embedding and {lens_train['after block 0']:.0%} after block 0 "
                    f"({lens_held['after block 0']:.0%} for held-out templates)."
                ),
                "probe_prompts": [
                    "The Eiffel Tower is in",
                    "The Colosseum is in",
                    "Tourists travel to see the Eiffel Tower in",
                ],
                "components": {g: [f"resid_pre[{L}]" for L in ls] for g, ls in sub.items()},
                "thresholds": {
                    "train_template_top1": train_facts["accuracy"],
                    "heldout_template_top1": held_facts["accuracy"],
                    "patch_cell": PATCH_CELL,
                },
            },
            {
                "name": "sentiment_direction",
                "mechanism": (
                    "Review sentiment is linearly readable at the neutral final token of "
                    "'<review> Overall the review is' from "
                    f"{sent['first_layer_probe_ge_0.9']} on (logistic probe, 30% held-out "
                    "reviews); at the embedding that position carries no sentiment, so the "
                    "model moves it there by attention."
                ),
                "probe_prompts": [
                    "The food was wonderful and the staff were friendly. Overall the review is",
                    "The food was awful and the staff were rude. Overall the review is",
                ],
                "components": [sent["first_layer_probe_ge_0.9"]],
                "thresholds": {
                    "probe": PROBE_PASS,
                    "probe_test_accuracy": sent["probe_test_accuracy"],
                    "probe_ood_accuracy": sent["probe_ood_accuracy"],
                },
            },
            {
                "name": "truth_direction",
                "mechanism": (
                    "Whether 'Claim: <subject> is in <city>.' is true is "
                    + (
                        f"linearly readable at the final token of '... This is' from "
                        f"{truth['first_layer_probe_ge_0.9']} on"
                        if truth["first_layer_probe_ge_0.9"]
                        else "NOT linearly readable (probe < 0.9 at every layer) at the final "
                        "token of '... This is'"
                    )
                    + " (probe trained and tested on disjoint subjects); the model says "
                    f"' true'/' false' correctly for {truth['says_true_false_accuracy']:.0%} of "
                    "claims. The contrast pairs (' This is true.' / ' This is false.') are the "
                    "CCS dataset; CCS read at their final token finds no truth direction (best "
                    f"layer {ccs_best:.2f}, chance 0.5). Nothing in the corpus follows a verdict "
                    "that depends on whether the verdict is right, so training never asks for "
                    "that representation; only the claim's truth (read before the verdict) is."
                ),
                "probe_prompts": [
                    "Claim: The Eiffel Tower is in Paris. This is",
                    "Claim: The Eiffel Tower is in Rome. This is",
                ],
                "components": [truth["first_layer_probe_ge_0.9"]],
                "thresholds": {
                    "probe": PROBE_PASS,
                    "probe_test_accuracy": truth["probe_test_accuracy"],
                    "ccs_test_accuracy_up_to_sign": truth_ccs["test_accuracy_up_to_sign"],
                },
            },
            {
                "name": "two_hop_step_reading",
                "mechanism": (
                    "In 'Q: Where is X's favourite place? X likes S. S is in C. A:' the answer "
                    "is read from the written step: with the step's city replaced, the model "
                    f"follows the step in {hop['corrupt_step']['accuracy']:.0%} of prompts "
                    f"(and gives the true city in {hop['corrupt_step']['answers_true_city']:.0%}); "
                    f"without the step it gives the true city in "
                    f"{hop['no_step']['accuracy']:.0%}."
                ),
                "probe_prompts": [
                    hop["step"]["example"],
                    hop["corrupt_step"]["example"],
                    hop["no_step"]["example"],
                ],
                "components": ["the step's city token (attended from ' A:')"],
                "thresholds": {
                    "step_accuracy": hop["step"]["accuracy"],
                    "corrupt_step_follows_step": hop["corrupt_step"]["accuracy"],
                },
            },
        ],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("name", nargs="?", default="tiny", help="zoo model name or a model directory")
    p.add_argument("--out", type=Path, default=None, help="default: <model dir>/ground_truth.json")
    a = p.parse_args(argv)
    record = measure(a.name)
    out = a.out or model_dir(a.name) / "ground_truth.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    f = record["figures"]
    print(f"wrote {out}")
    print(
        f"facts: train templates {f['facts']['train_templates']['accuracy']:.3f}, "
        f"held-out templates {f['facts']['heldout_templates']['accuracy']:.3f}"
    )
    print("sentiment probe:", f["sentiment_probe"]["probe_test_accuracy"])
    print("sentiment probe OOD:", f["sentiment_probe"]["probe_ood_accuracy"])
    print("truth probe:", f["truth_probe"]["probe_test_accuracy"])
    print("ccs:", f["ccs"]["test_accuracy_up_to_sign"])
    print("patching:", f["patching"]["summary"])
    print("two-hop:", {k: v["accuracy"] for k, v in f["two_hop"].items()})


if __name__ == "__main__":
    main()
