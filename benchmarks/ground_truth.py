"""Ground-truth scoreboard: our methods against answers planted in the zoo.

Each row asks one method a question whose answer is known (by construction in the compiled
models, by measurement recorded in ``ground_truth.json`` for ``zoo:tiny``, by the generator for
toy superposition) and says whether the method got it right. Some methods are *expected* to be
fooled (zero-ablation by a backup head, attention-pattern heuristics by look-alike decoys): the
table shows that they are, next to the methods that are not.

    PYTHONPATH=. python benchmarks/ground_truth.py          # all rows, writes RESULTS.md
    PYTHONPATH=. python benchmarks/ground_truth.py --fast   # the subset the tests run, no write

``EXPECTED`` holds each row's outcome; ``tests/validation/test_ground_truth_scoreboard.py`` fails
when a row's outcome changes (a method that passed stops passing, or a trap stops trapping).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mi_widgets as mw  # noqa: E402
from mi_widgets import zoo  # noqa: E402
from mi_widgets.core.validation import direct_effect  # noqa: E402
from mi_widgets.zoo import compiled as C  # noqa: E402


@dataclass
class Row:
    id: str
    model: str
    question: str
    planted: str
    method: str
    found: str
    passed: bool
    seconds: float = 0.0


# The outcome each row should have. False = the method is fooled, by design of the zoo model.
EXPECTED = {
    "patching_fact_locus": True,
    "ablation_zero_vs_backup": False,
    "ablation_mean_vs_backup": True,
    "ablation_resample_vs_backup": True,
    "direct_effect_vs_backup": True,
    "per_head_resample_ablation_finds_circuit": True,
    "head_scores_prev_token_induction": True,
    "head_scores_induction_induction": True,
    "head_scores_prev_token_vs_decoy": False,
    "attention_duplicate_token_vs_decoy": False,
    "attention_name_mover_vs_decoys": False,
    "hypothesis_correct_induction_passes": True,
    "hypothesis_wrong_induction_fails": True,
    "interchange_illusory_direction": False,
    "interchange_parts_expose_illusion": True,
    "illusion_check_flags_u": True,
    "das_aligns_with_mechanism": False,
    "probe_sentiment_layer": True,
    "sae_toy_features": True,
}
FAST = (
    "ablation_zero_vs_backup",
    "ablation_resample_vs_backup",
    "direct_effect_vs_backup",
    "per_head_resample_ablation_finds_circuit",
    "head_scores_prev_token_induction",
    "head_scores_prev_token_vs_decoy",
    "attention_duplicate_token_vs_decoy",
    "attention_name_mover_vs_decoys",
    "hypothesis_wrong_induction_fails",
    "interchange_illusory_direction",
    "interchange_parts_expose_illusion",
    "illusion_check_flags_u",
)

_cache: dict[str, object] = {}


def _model(name: str):
    if name not in _cache:
        _cache[name] = mw.load(name)
    return _cache[name]


def _ioi(n: int = 20, seed: int = 71):
    prompts = C.ioi_prompts(n=n, seed=seed)
    ref = [p["text"] for p in C.ioi_reference(prompts, seed=seed + 1)]
    texts = [p["text"] for p in prompts]
    metric = mw.logit_diff([p["io"] for p in prompts], [p["s"] for p in prompts])
    return texts, ref, metric


# ----------------------------------------------------------------------------------------------
# rows
# ----------------------------------------------------------------------------------------------


def patching_fact_locus() -> Row:
    from mi_widgets.zoo import corpus

    model = _model("zoo:tiny")
    gt = zoo.ground_truth("tiny")
    planted = next(m for m in gt["mechanisms"] if m["name"] == "factual_recall")["components"]
    city = {f["subject"].lower(): f["answer"] for f in corpus.facts()}
    pairs = [
        (c, x)
        for c, x in gt["figures"]["patching"]["pairs"]
        if len(model.to_str_tokens(c)) == 6 and len(model.to_str_tokens(x)) == 6
    ]

    def answer(prompt: str) -> str:
        return city[prompt.removesuffix(" is in").lower()]

    clean, corrupt = [c for c, _ in pairs], [x for _, x in pairs]
    r = mw.activation_patching(model, clean, corrupt,
                               mw.logit_diff([answer(c) for c in clean], [answer(x) for x in corrupt]),
                               site="resid_pre", positions="each", progress=False)  # fmt: skip
    # per pair, the best subject token (positions 1-3: the subject has three tokens here), as
    # ground_truth.json's "subject (best token)" group; the final token is position 5
    subj = r.per_pair[:, :, 1:4].max(-1).values.mean(0)
    final = r.values[:, 5]
    found = {
        "subject (best token)": [
            f"resid_pre[{la}]" for i, la in enumerate(r.layers) if subj[i] >= 0.5
        ],
        "' in' (final)": [f"resid_pre[{la}]" for i, la in enumerate(r.layers) if final[i] >= 0.5],
    }
    want = {k: [c for c in planted[k] if int(c[10:-1]) in r.layers] for k in found}
    return Row("patching_fact_locus", "zoo:tiny", "where does the city sit (resid_pre cells ≥ 0.5)?",
               json.dumps(want), "activation_patching (resid_pre, each position)",
               json.dumps(found), found == want)  # fmt: skip


def _ablation_row(kind: str) -> Row:
    model = _model("zoo:ioi_backup")
    texts, ref, metric = _ioi()
    r = mw.ablate(model, texts, metric, "2.3", kind, ref if kind == "resample" else None,
                  progress=False)  # fmt: skip
    drop = r.clean_mean - float(r.ablated_mean)
    return Row(f"ablation_{kind}_vs_backup", "zoo:ioi_backup", "does name mover 2.3 matter (drop ≥ 8)?",
               "yes: its direct effect is ≈ 10 (3.0 repairs it only under zero-ablation)",
               f"{kind} ablation of 2.3", f"drop {drop:.2f}", drop >= 8)  # fmt: skip


def direct_effect_vs_backup() -> Row:
    model = _model("zoo:ioi_backup")
    texts, _, metric = _ioi()
    r = direct_effect(model, texts, metric, "2.3", "zero", progress=False)
    drop = r.clean_mean - float(r.ablated_mean)
    return Row("direct_effect_vs_backup", "zoo:ioi_backup", "does name mover 2.3 matter (drop ≥ 8)?",
               "yes (≈ 10)", "direct_effect (path patching to logits, zero, later heads frozen)",
               f"drop {drop:.2f}", drop >= 8)  # fmt: skip


def per_head_resample_ablation_finds_circuit() -> Row:
    model = _model("zoo:ioi_backup")
    texts, ref, metric = _ioi()
    heads = [f"{la}.{h}" for la in range(model.n_layers) for h in range(model.n_heads)]
    r = mw.ablate(model, texts, metric, heads, "resample", ref, separately=True, progress=False)
    eff = {h: float(e) for h, e in zip(r.components, r.effect_mean)}
    gt = zoo.ground_truth("ioi_backup")["components"]
    decoys = gt["decoys"] + gt["attention_decoys"]
    top = max(eff, key=lambda h: abs(eff[h]))
    ok = (top == "2.3" and eff["2.1"] > 2 and eff["1.2"] < -5
          and all(abs(eff[h]) < 0.2 for h in decoys))  # fmt: skip
    found = f"top {top} ({eff[top]:+.2f}); 2.1 {eff['2.1']:+.2f}; 1.2 {eff['1.2']:+.2f}; largest decoy effect {max(abs(eff[h]) for h in decoys):.3f}"
    return Row("per_head_resample_ablation_finds_circuit", "zoo:ioi_backup",
               "which heads matter, with which sign?",
               "2.3 (−), 1.2 (−), 2.1 suppression (+), decoys 0", "resample ablation, each head",
               found, ok)  # fmt: skip


def _head_scores_row(rid: str, model_name: str, kind: str, planted: str) -> Row:
    """Passes when the top head by ``kind`` score is the planted head by a margin of 0.1; on
    ``zoo:ioi_backup`` (no planted previous-token head) when the top head is not a look-alike."""
    model = _model(model_name)
    s = mw.head_scores(model, kind, n=10, seq_len=12)
    top = s.top_heads(kind, k=2)
    if model_name == "zoo:ioi_backup":
        ok = top[0][0] not in zoo.ground_truth("ioi_backup")["components"]["attention_decoys"]
    else:
        ok = top[0][0] == planted and top[0][1] - top[1][1] >= 0.1
    return Row(rid, model_name, f"which head is the {kind.replace('_', '-')} head that matters?",
               planted, f"head_scores(kind='{kind}') top-1",
               f"{top[0][0]} ({top[0][1]:.3f}), next {top[1][0]} ({top[1][1]:.3f})", ok)  # fmt: skip


def _ioi_attention_row(rid: str, what: str, planted: str) -> Row:
    """Attention-pattern score per head on IOI prompts (plain torch): ``dup`` S2 -> S1, ``nm``
    END -> IO. Passes when the planted head is top-1 by a margin of 0.05."""
    hf, tok = C.load("ioi_backup")
    prompts = C.ioi_prompts(n=20, seed=71)
    ids, _, _, pos = C.ioi_batch(tok, prompts)
    with torch.no_grad():
        att = hf(ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
    b = torch.arange(len(ids))
    q, k = (pos[:, 2], pos[:, 1]) if what == "dup" else (pos[:, 3], pos[:, 0])
    sc = {f"{la}.{h}": float(a[b, h, q, k].mean()) for la, a in enumerate(att) for h in range(4)}
    order = sorted(sc, key=lambda h: -sc[h])
    ok = order[0] == planted and sc[order[0]] - sc[order[1]] >= 0.05
    close = [h for h in order if sc[h] > sc[planted] - 0.05]
    label = "duplicate-token (S2 → S1)" if what == "dup" else "name-mover (END → IO)"
    return Row(rid, "zoo:ioi_backup", f"which head is the {label} head?", planted,
               f"attention score {label}, top-1 with margin 0.05",
               f"{len(close)} heads within 0.05 of {planted}: {', '.join(close)}", ok)  # fmt: skip


def _hypothesis_rows() -> dict[str, Row]:
    from mi_widgets.core.validation import (
        ActivationPrediction,
        AttentionPrediction,
        Hypothesis,
        PromptTask,
        ReplacementPrediction,
        validate,
    )  # fmt: skip

    model = _model("zoo:induction")
    corpus, _ = C.induction_texts(n=6, seq_len=10, seed=11)
    prompts, answers = C.induction_texts(n=12, seq_len=8, seed=12, cut=12)
    task = PromptTask(prompts, mw.prob(answers), "induction")

    def seen(t, i):
        return None if i == 0 else t[i] in t[1:i]

    def after_copy(t, i):
        return [j + 1 for j in range(1, i) if t[j] == t[i]]

    right = validate(Hypothesis("1.2", "induction head",
                                activation=ActivationPrediction(seen, corpus),
                                attention=AttentionPrediction(after_copy, corpus),
                                replacement=ReplacementPrediction(task, "pattern")),
                     model, progress=False)  # fmt: skip
    wrong = validate(Hypothesis("1.2", "previous-token head",
                                attention=AttentionPrediction(lambda t, i: [i - 1] if i else [], corpus),
                                replacement=ReplacementPrediction(task, "pattern")),
                     model, progress=False)  # fmt: skip
    kept = right.test("replacement: metric kept").figure
    return {
        "hypothesis_correct_induction_passes": Row(
            "hypothesis_correct_induction_passes", "zoo:induction", "is 1.2 an induction head?",
            "yes", "validate(Hypothesis): activation, attention, hand-set pattern",
            f"{'passes' if right.passed else 'fails'}; pattern keeps {kept:.2f} of the metric",
            right.passed and kept >= 0.9),
        "hypothesis_wrong_induction_fails": Row(
            "hypothesis_wrong_induction_fails", "zoo:induction", "is 1.2 a previous-token head?",
            "no (0.1 is)", "validate(Hypothesis): attention, hand-set pattern",
            f"{'passes' if wrong.passed else 'fails'}, {len(wrong.counterexamples)} counterexamples",
            not wrong.passed and len(wrong.counterexamples) > 0),
    }  # fmt: skip


def _illusion_iia() -> dict[str, float]:
    if "illusion_iia" not in _cache:
        from mi_widgets.core.concepts.interchange import interchange

        model = _model("zoo:illusion")
        iia = {}
        for name, d in C.illusion_directions().items():
            r = interchange(model, _illusion_dataset(), layers=[0], site="resid_post", n_pairs=60,
                            directions=torch.tensor(d, dtype=torch.float32),
                            answers=(" river", " apple"), progress=False)  # fmt: skip
            iia[name] = r.iia(0)
        _cache["illusion_iia"] = iia
    return _cache["illusion_iia"]  # type: ignore[return-value]


def _illusion_dataset():
    from mi_widgets.core.concepts.probes import ProbeDataset

    p = C.illusion_prompts(120, seed=5)
    return ProbeDataset.from_lists([x["text"] for x in p], [x["label"] for x in p], "last")


def interchange_illusory_direction() -> Row:
    iia = _illusion_iia()
    return Row("interchange_illusory_direction", "zoo:illusion",
               "is u = (shadow + dormant)/√2 the first-word-class mechanism?",
               "no: it acts only through a dormant pathway (1.0); the mechanism is cls_first (0.1)",
               "interchange along u (resid_post 0, last token)",
               f"IIA {iia['u']:.2f}: looks causal", iia["u"] < 0.5)  # fmt: skip


def illusion_check_flags_u() -> Row:
    from mi_widgets.core.validation.illusion import illusion_check

    d = {k: torch.tensor(v, dtype=torch.float32) for k, v in C.illusion_directions().items()}
    model, ds = _model("zoo:illusion"), _illusion_dataset()
    u = illusion_check(model, ds, 0, d["u"], answers=(" river", " apple"), n_pairs=60)
    true = illusion_check(model, ds, 0, d["true"], answers=(" river", " apple"), n_pairs=60)
    return Row("illusion_check_flags_u", "zoo:illusion",
               "without knowing the parts, does the illusion check call u illusory and cls_first not?",
               "yes: u's unread half (shadow) and read half (dormant) each do nothing alone",
               "mw.illusion_check (split by what later layers read; IIA of v, each part, the whole)",
               f"u: IIA {u.iia_direction:.2f}, parts {u.iia_read:.2f}/{u.iia_unread:.2f} → "
               f"{'illusory' if u.illusory else 'not flagged'}; cls_first → {'illusory' if true.illusory else 'not flagged'}",
               u.illusory and not true.illusory)  # fmt: skip


def interchange_parts_expose_illusion() -> Row:
    iia = _illusion_iia()
    ok = iia["u"] > 0.9 and iia["shadow"] < 0.1 and iia["dormant"] < 0.1 and iia["true"] > 0.9
    return Row("interchange_parts_expose_illusion", "zoo:illusion",
               "does u survive being split into its parts?",
               "no: shadow (class, unread) and dormant (read, never written) each do nothing",
               "interchange along each part and along cls_first",
               f"shadow {iia['shadow']:.2f}, dormant {iia['dormant']:.2f}, cls_first {iia['true']:.2f}",
               ok)  # fmt: skip


def das_aligns_with_mechanism() -> Row:
    from mi_widgets.core.concepts.interchange import interchange

    r = interchange(_model("zoo:illusion"), _illusion_dataset(), layers=[0], site="resid_post",
                    kind="das", answers=(" river", " apple"), n_pairs=60, steps=100,
                    progress=False)  # fmt: skip
    v = r.rotations[0].reshape(-1)
    v = v / v.norm()
    cos = {k: abs(float(v @ torch.tensor(d, dtype=torch.float32)))
           for k, d in C.illusion_directions().items()}  # fmt: skip
    return Row("das_aligns_with_mechanism", "zoo:illusion",
               "does a 1-d DAS subspace align with the mechanism (absolute cosine ≥ 0.9 with cls_first)?",
               "cls_first", "interchange(kind='das', das_dim=1), seed 0",
               f"IIA {r.iia(0):.2f}; abs cosine: cls_first {cos['true']:.2f}, shadow {cos['shadow']:.2f}, "
               f"dormant {cos['dormant']:.2f}", cos["true"] >= 0.9)  # fmt: skip


def probe_sentiment_layer() -> Row:
    from mi_widgets.core.concepts.probes import ProbeDataset

    model = _model("zoo:tiny")
    ds = ProbeDataset.from_zoo("sentiment", n=200, n_ood=0)
    r = mw.probe(model, ds, seeds=(0,), progress=False)
    acc = {"embed": r.accuracy(-1)}
    for layer in range(model.n_layers):
        acc[f"after block {layer}"] = r.accuracy(layer)
    first = next((k for k, a in acc.items() if a >= 0.9), None)
    return Row("probe_sentiment_layer", "zoo:tiny", "from which layer is sentiment readable (≥ 0.9)?",
               "after block 0 (embedding: chance)", "probe (logistic, resid_post, all layers)",
               f"{first}; embed {acc['embed']:.2f}", first == "after block 0" and acc["embed"] < 0.7)  # fmt: skip


def sae_toy_features() -> Row:
    from mi_widgets.core.decomposition.superposition import toy_recovery

    r = toy_recovery(0.95, n_features=20, d_hidden=5, seed=0)
    return Row("sae_toy_features", "toy superposition (20 features in 5 dims, S = 0.95)",
               "does the SAE recover the planted features (cosine ≥ 0.9)?", "20 of 20",
               "TopK SAE on the toy's hidden layer", f"{round(r.recovered * 20)} of 20 ({r.recovered:.0%})",
               r.recovered >= 0.9)  # fmt: skip


ROWS: dict[str, Callable[[], Row]] = {
    "patching_fact_locus": patching_fact_locus,
    "ablation_zero_vs_backup": lambda: _ablation_row("zero"),
    "ablation_mean_vs_backup": lambda: _ablation_row("mean"),
    "ablation_resample_vs_backup": lambda: _ablation_row("resample"),
    "direct_effect_vs_backup": direct_effect_vs_backup,
    "per_head_resample_ablation_finds_circuit": per_head_resample_ablation_finds_circuit,
    "head_scores_prev_token_induction": lambda: _head_scores_row(
        "head_scores_prev_token_induction", "zoo:induction", "previous_token", "0.1"),
    "head_scores_induction_induction": lambda: _head_scores_row(
        "head_scores_induction_induction", "zoo:induction", "induction", "1.2"),
    "head_scores_prev_token_vs_decoy": lambda: _head_scores_row(
        "head_scores_prev_token_vs_decoy", "zoo:ioi_backup", "previous_token",
        "none (0.3 looks like one and writes nowhere)"),
    "attention_duplicate_token_vs_decoy": lambda: _ioi_attention_row(
        "attention_duplicate_token_vs_decoy", "dup", "0.1"),
    "attention_name_mover_vs_decoys": lambda: _ioi_attention_row(
        "attention_name_mover_vs_decoys", "nm", "2.3"),
    "interchange_illusory_direction": interchange_illusory_direction,
    "interchange_parts_expose_illusion": interchange_parts_expose_illusion,
    "illusion_check_flags_u": illusion_check_flags_u,
    "das_aligns_with_mechanism": das_aligns_with_mechanism,
    "probe_sentiment_layer": probe_sentiment_layer,
    "sae_toy_features": sae_toy_features,
}  # fmt: skip


def run(ids: list[str] | tuple[str, ...] | None = None) -> list[Row]:
    """The rows ``ids`` (default: all), in table order."""
    ids = list(EXPECTED) if ids is None else list(ids)
    out: dict[str, Row] = {}
    hyp_ids = [i for i in ids if i.startswith("hypothesis_")]
    if hyp_ids:
        t = time.perf_counter()
        rows = _hypothesis_rows()
        for i in hyp_ids:
            out[i] = rows[i]
            out[i].seconds = (time.perf_counter() - t) / len(hyp_ids)
    for i in ids:
        if i in out:
            continue
        t = time.perf_counter()
        out[i] = ROWS[i]()
        out[i].seconds = time.perf_counter() - t
    return [out[i] for i in ids]


def table(rows: list[Row]) -> str:
    lines = [
        "| model | question | planted answer | method | found | right? | expected |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        exp = EXPECTED[r.id]
        mark = "yes" if r.passed else "**no**"
        lines.append(
            f"| {r.model} | {r.question} | {r.planted} | {r.method} | {r.found} | {mark} | "
            f"{'right' if exp else 'fooled (by design)'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="only the rows the tests run; no write")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = run(FAST if args.fast else None)
    body = table(rows)
    print(body)
    bad = [r.id for r in rows if r.passed != EXPECTED[r.id]]
    if bad:
        print(f"\nUNEXPECTED outcomes: {bad}", file=sys.stderr)
    if not args.fast:
        from benchmarks._results import write_section

        total = time.perf_counter() - t0
        write_section(
            "ground truth scoreboard",
            "Our methods against answers planted in the zoo (compiled models: by construction; "
            "zoo:tiny: measured, `ground_truth.json`; toy superposition: by the generator). "
            "*right?* = the method found the planted answer; *expected* = whether it should: "
            "zero-ablation is fooled by the backup name mover, and attention-pattern scores by the "
            "look-alike decoys, by design of `zoo:ioi_backup`; interchange along a direction by the dormant pathway of `zoo:illusion`.\n\n"
            + body
            + f"\n\nOne CPU thread; total {total:.0f} s. Run: `PYTHONPATH=. python benchmarks/ground_truth.py`; "
            "`tests/validation/test_ground_truth_scoreboard.py` re-runs the fast rows and fails "
            "when an outcome changes.",
        )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
