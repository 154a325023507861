"""Scores of an explanation: does it predict the feature? Each score is reported next to the
same score of random explanations (the baseline).

Four scores, on windows the explainer never saw (:func:`~.records.feature_records`'s
``scored``: held-out top and quantile windows plus windows where the feature is zero):

- **simulation**: the simulator predicts each token's activation on 0–10 from the
  explanation; the score is the Pearson correlation with the real activations over all tokens.
  A language model answers with one number per token (parsed), or, where the endpoint returns
  ``top_logprobs`` (``logprobs=True``), each number is the expected value over the digit
  tokens ``0``–``10`` of its position.
- **detection** (as in EleutherAI's delphi): the scorer says whether a window activates the
  feature at all. Balanced accuracy, F1 and AUC against ``max act > 0``.
- **fuzzing** (delphi): each activating window is shown twice, with its truly activating
  tokens highlighted and with as many other tokens highlighted; each non-activating window with
  random tokens highlighted. The scorer says whether the highlighted tokens are the ones the
  explanation describes. Balanced accuracy, F1, AUC against "the highlight is the true one".
- **intervention**: the feature is steered (``coef * W_dec[f]`` added at its site,
  :func:`~mi_widgets.core.decomposition.features.steer_feature`) on prompts cut from the dataset;
  per prompt the ``k`` next tokens whose probability rises most and the ``k`` that fall most
  form a pair. The scorer sees both lists, in a seeded random order, and picks the one the
  explanation says the feature promotes. The score is the share picked correctly (ties 1/2; chance = 0.5).

**Rule scorer** (:class:`RuleSimulator`, for rule explanations, see
:func:`~.explain.parse_rule`): simulation predicts 10 on tokens matching the rule and 0
elsewhere; detection says "active" when any token of the window matches (AUC score: the
share of matching tokens); fuzzing says "correct" when at least half of the highlighted tokens
match (AUC score: the share that match); intervention picks the continuation that matches the
rule (the list with the larger share of matching tokens; 1/2 on a tie): a rule describes the tokens a feature reads,
so this asks whether pushing the feature up promotes those same tokens.

**Baseline**: the explanations of up to ``n_baseline`` other features (from
``data.explanations``), scored on this feature's windows; where there are none, rules over
``k`` tokens drawn at random from the scored windows (seeded): explanations that mention the
right vocabulary only by chance.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .explain import mark, parse_rule, rule_from_tokens
from .records import FeatureRecords, Record, check_data, feature_records

SCORES = ("simulation", "detection", "fuzzing", "intervention")

SIMULATION_SYSTEM = (
    "You predict how strongly a neural network feature activates on each token of a text, "
    "given an explanation of the feature."
)
SIMULATION_TEMPLATE = """Explanation of the feature: {explanation}

The text, one token per line as "index<TAB>token":
{tokens}

For each of the {n} tokens, in order, give the feature's activation as an integer from 0 (none) to 10 (strongest).
Reply with the {n} integers only, separated by commas."""

DETECTION_SYSTEM = (
    "You judge whether text excerpts activate a neural network feature, given an explanation of the feature."
)
DETECTION_TEMPLATE = """Explanation of the feature: {explanation}

Excerpts:
{examples}

For each of the {n} excerpts, in order, answer 1 if the feature activates anywhere in it and 0 if not.
Reply with the {n} digits only, separated by commas."""

FUZZING_TEMPLATE = """Explanation of the feature: {explanation}

In each excerpt some tokens are marked <<like this>>.
{examples}

For each of the {n} excerpts, in order, answer 1 if the marked tokens are exactly the kind of tokens the explanation describes and 0 if not.
Reply with the {n} digits only, separated by commas."""

INTERVENTION_SYSTEM = (
    "You judge how pushing up a neural network feature changes a language model's next token, given an explanation of the feature."
)
INTERVENTION_TEMPLATE = """Explanation of the feature: {explanation}

Prompt: {prompt}
Next tokens A: {a}
Next tokens B: {b}

When the feature is pushed up, the next tokens of one of the lists A and B become much more likely and those of the other much less likely.
Which list becomes more likely? Reply with A or B only."""

#: every template, by name (``templates=`` of :func:`score_explanation` replaces any of them)
TEMPLATES = {
    "simulation_system": SIMULATION_SYSTEM, "simulation": SIMULATION_TEMPLATE,
    "detection_system": DETECTION_SYSTEM, "detection": DETECTION_TEMPLATE, "fuzzing": FUZZING_TEMPLATE,
    "intervention_system": INTERVENTION_SYSTEM, "intervention": INTERVENTION_TEMPLATE,
}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation; 0 when either side is constant (no information)."""
    n = len(x)
    if n < 2 or n != len(y):
        return 0.0
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def auc(labels: list[bool], scores: list[float]) -> float:
    """Area under the ROC curve (Mann–Whitney, ties 1/2); 0.5 when one class is missing."""
    pos = [s for lab, s in zip(labels, scores) if lab]
    neg = [s for lab, s in zip(labels, scores) if not lab]
    if not pos or not neg:
        return 0.5
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def classification(labels: list[bool], preds: list[bool], scores: list[float]) -> dict[str, float]:
    """Balanced accuracy, F1 (of the positive class) and AUC."""
    tp = sum(lab and p for lab, p in zip(labels, preds))
    fn = sum(lab and not p for lab, p in zip(labels, preds))
    tn = sum((not lab) and (not p) for lab, p in zip(labels, preds))
    fp = sum((not lab) and p for lab, p in zip(labels, preds))
    tpr = tp / (tp + fn) if tp + fn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"balanced_accuracy": 0.5 * (tpr + tnr), "f1": f1, "auc": auc(labels, scores)}


# --------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------


class RuleSimulator:
    """Executes rule explanations (see the module docstring and :func:`~.explain.parse_rule`).
    ``lexicon`` maps phrases to word lists (``{"city names": CITIES}``) so that plain-words
    explanations can be rules too. An explanation that is no rule predicts 0 everywhere."""

    name = "rule"

    def __init__(self, lexicon: dict[str, list[str]] | None = None) -> None:
        if lexicon is not None and not isinstance(lexicon, dict):
            raise TypeError("lexicon must be a dict {phrase: [words]}")
        self.lexicon = dict(lexicon or {})

    def matcher(self, explanation: str) -> Any:
        pred = parse_rule(explanation, self.lexicon)
        return pred if pred is not None else (lambda tok: False)

    def simulate(self, explanation: str, rec: Record) -> list[float]:
        m = self.matcher(explanation)
        return [10.0 if m(t) else 0.0 for t in rec.tokens]

    def detect(self, explanation: str, recs: list[Record]) -> list[tuple[bool, float]]:
        m = self.matcher(explanation)
        out = []
        for r in recs:
            hits = [m(t) for t in r.tokens]
            out.append((any(hits), sum(hits) / max(len(hits), 1)))
        return out

    def fuzz(self, explanation: str, items: list[tuple[Record, list[bool]]]) -> list[tuple[bool, float]]:
        m = self.matcher(explanation)
        out = []
        for r, hl in items:
            marked = [t for t, h in zip(r.tokens, hl) if h]
            share = sum(m(t) for t in marked) / max(len(marked), 1)
            out.append((share >= 0.5, share))
        return out

    def pick(self, explanation: str, prompt: str, a: list[str], b: list[str]) -> float:
        """Probability that token set ``a`` (not ``b``) is the one steering raised: the set
        with the larger share of tokens matching the rule (1/2 on a tie)."""
        m = self.matcher(explanation)
        ma = sum(m(t) for t in a) / max(len(a), 1)
        mb = sum(m(t) for t in b) / max(len(b), 1)
        return 0.5 if ma == mb else (1.0 if ma > mb else 0.0)


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


def _expected_numbers(logprobs: list[tuple[str, list[tuple[str, float]]]], lo: int = 0, hi: int = 10) -> list[float]:
    """One expected value per number in a reply: at each token that starts a number, the
    probability-weighted mean of the alternatives that are integers in ``lo..hi`` (digit tokens
    that continue a number are skipped)."""
    out, prev_digit = [], False
    for tok, alts in logprobs:
        s = tok.strip()
        is_num = s.isdigit()
        if is_num and not (prev_digit and tok == s):
            ws, vs = [], []
            for alt, lp in alts:
                a = alt.strip()
                if a.isdigit() and lo <= int(a) <= hi:
                    ws.append(math.exp(lp))
                    vs.append(int(a))
            out.append(sum(w * v for w, v in zip(ws, vs)) / sum(ws) if ws else float(s) if s.isdigit() else 0.0)
        prev_digit = is_num
    return out


class LMScorer:
    """A language model as simulator and judge (see the module docstring). ``logprobs=True``
    asks the endpoint for ``top_logprobs`` and uses expected values over digit tokens; otherwise
    the reply's numbers are parsed. ``batch`` windows per detection / fuzzing call;
    ``workers`` simulation calls in flight at once (threads; the endpoint serves them in
    parallel, results keep their order)."""

    def __init__(self, lm: Any, *, logprobs: bool = False, top_logprobs: int = 12, batch: int = 8,
                 templates: dict[str, str] | None = None, workers: int = 1) -> None:
        if not hasattr(lm, "complete"):
            raise TypeError(f"lm must be a language model client (OpenAIClient, LocalLM), got {type(lm).__name__}")
        unknown = set(templates or {}) - set(TEMPLATES)
        if unknown:
            raise ValueError(f"unknown templates {sorted(unknown)}; names: {', '.join(TEMPLATES)}")
        if batch < 1 or workers < 1:
            raise ValueError("batch and workers must be >= 1")
        self.workers = int(workers)
        self.lm, self.logprobs, self.top_logprobs, self.batch = lm, bool(logprobs), int(top_logprobs), int(batch)
        self.templates = {**TEMPLATES, **(templates or {})}
        self.name = getattr(lm, "name", type(lm).__name__) + (":logprobs" if logprobs else "")

    def _ask(self, system: str, user: str, max_tokens: int) -> list[float]:
        c = self.lm.complete([{"role": "system", "content": system}, {"role": "user", "content": user}],
                             max_tokens=max_tokens, top_logprobs=self.top_logprobs if self.logprobs else 0)
        if self.logprobs and c.logprobs:
            return _expected_numbers(c.logprobs)
        return _numbers(c.text)

    @staticmethod
    def _fit(vals: list[float], n: int) -> list[float]:
        return (list(vals) + [0.0] * n)[:n]

    def simulate(self, explanation: str, rec: Record) -> list[float]:
        n = len(rec.tokens)
        toks = "\n".join(f"{i}\t{t!r}" for i, t in enumerate(rec.tokens))
        user = self.templates["simulation"].format(explanation=explanation, tokens=toks, n=n)
        vals = self._ask(self.templates["simulation_system"], user, max_tokens=4 * n + 8)
        return [max(0.0, min(10.0, v)) for v in self._fit(vals, n)]

    def simulate_many(self, explanation: str, recs: list[Record], tick: Any = None) -> list[list[float]]:
        """:meth:`simulate` over ``recs``, ``workers`` at a time, in order."""
        if self.workers == 1 or len(recs) < 2:
            out = []
            for r in recs:
                out.append(self.simulate(explanation, r))
                if tick:
                    tick()
            return out
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            futs = [pool.submit(self.simulate, explanation, r) for r in recs]
            out = []
            for f in futs:
                out.append(f.result())
                if tick:
                    tick()
            return out

    def _judge(self, template: str, explanation: str, texts: list[str]) -> list[tuple[bool, float]]:
        out = []
        for i in range(0, len(texts), self.batch):
            chunk = texts[i : i + self.batch]
            ex = "\n".join(f"{j + 1}. {t}" for j, t in enumerate(chunk))
            user = template.format(explanation=explanation, examples=ex, n=len(chunk))
            vals = self._fit(self._ask(self.templates["detection_system"], user, max_tokens=3 * len(chunk) + 8), len(chunk))
            out += [(v >= 0.5, v) for v in vals]
        return out

    def detect(self, explanation: str, recs: list[Record]) -> list[tuple[bool, float]]:
        return self._judge(self.templates["detection"], explanation, [mark(r, highlight=[False] * len(r.tokens)) for r in recs])

    def fuzz(self, explanation: str, items: list[tuple[Record, list[bool]]]) -> list[tuple[bool, float]]:
        return self._judge(self.templates["fuzzing"], explanation, [mark(r, highlight=hl) for r, hl in items])

    def pick(self, explanation: str, prompt: str, a: list[str], b: list[str]) -> float:
        user = self.templates["intervention"].format(explanation=explanation, prompt=prompt,
                                                     a=", ".join(map(repr, a)), b=", ".join(map(repr, b)))
        c = self.lm.complete([{"role": "system", "content": self.templates["intervention_system"]},
                              {"role": "user", "content": user}], max_tokens=3,
                             top_logprobs=self.top_logprobs if self.logprobs else 0)
        if self.logprobs and c.logprobs:
            pa = pb = 0.0
            for alt, lp in c.logprobs[0][1]:
                s = alt.strip().upper()
                pa += math.exp(lp) if s == "A" else 0.0
                pb += math.exp(lp) if s == "B" else 0.0
            if pa + pb > 0:
                return pa / (pa + pb)
        m = re.search(r"\b([AB])\b", c.text.upper())
        return 0.5 if m is None else (1.0 if m.group(1) == "A" else 0.0)


def as_scorer(scorer: Any) -> Any:
    if scorer is None:
        return RuleSimulator()
    if hasattr(scorer, "simulate") and hasattr(scorer, "detect"):
        return scorer
    if hasattr(scorer, "complete"):
        return LMScorer(scorer)
    raise TypeError(f"scorer must be a RuleSimulator, an LMScorer or a language model client, got {type(scorer).__name__}")


# --------------------------------------------------------------------------------------------
# The scores
# --------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Scores of one explanation of ``feature`` (``values``: name → number) and the same
    scores of random explanations (``baseline``: their mean; ``baselines``: which ones).
    Names: ``simulation`` (Pearson), ``detection_*`` and ``fuzzing_*`` (``balanced_accuracy``,
    ``f1``, ``auc``), ``intervention`` (share picked right); ``counts`` says on how many
    windows / pairs each was measured."""

    feature: int
    explanation: str
    scorer: str
    values: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list, repr=False)
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"feature": self.feature, "explanation": self.explanation, "scorer": self.scorer, "values": self.values,
                "baseline": self.baseline, "baselines": self.baselines, "counts": self.counts}

    @classmethod
    def from_dict(cls, d: dict) -> Scores:
        return cls(int(d["feature"]), d["explanation"], d["scorer"], dict(d["values"]), dict(d["baseline"]),
                   list(d.get("baselines", [])), dict(d.get("counts", {})))

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"score": k, "value": v, "baseline": self.baseline.get(k, float("nan"))}
                             for k, v in self.values.items()])

    def __str__(self) -> str:
        rows = [f"{k:28s} {v:6.3f}  (random {self.baseline.get(k, float('nan')):6.3f})" for k, v in self.values.items()]
        return f"feature {self.feature}: {self.explanation!r} · {self.scorer}\n" + "\n".join(rows)


def _fuzz_items(recs: list[Record], rng: random.Random) -> list[tuple[Record, list[bool], bool]]:
    items = []
    for r in recs:
        n = len(r.tokens)
        if r.active:
            true = [a > 0 for a in r.acts]
            k = sum(true)
            others = [i for i in range(n) if not true[i]]
            items.append((r, true, True))
            if others:
                pick = set(rng.sample(others, min(k, len(others))))
                items.append((r, [i in pick for i in range(n)], False))
        elif n:
            pick = set(rng.sample(range(n), min(max(1, n // 8), n)))
            items.append((r, [i in pick for i in range(n)], False))
    return items


def intervention_pairs(data: Any, feature: int, *, prompts: list[str] | None = None, n_prompts: int = 12,
                       coef: float | None = None, k: int = 5, seed: int = 0) -> list[dict]:
    """What steering ``feature`` does to the next token of ``prompts`` (default: ``n_prompts``
    texts of the dataset cut after a seeded number of tokens): per prompt, the ``k`` tokens
    whose probability rises most (``raised``) and the ``k`` that fall most (``lowered``) when
    ``coef * W_dec[feature]`` is added at the feature's site (every position). ``coef``
    defaults to 4x the feature's largest activation in the pass."""
    from ..decomposition.features import steer_feature

    model, sae = data.model, data.sae
    if not model.causal:
        return []
    if coef is None:
        m = float(data.stats.max_act[feature])
        coef = 4.0 * m if m > 0 else 4.0
    if prompts is None:
        rng = random.Random(f"mw-intervention-{seed}")
        order = list(range(len(data.texts)))
        rng.shuffle(order)
        special = set(getattr(model.tokenizer, "all_special_tokens", []))
        prompts = []
        for ti in order:
            if len(prompts) >= n_prompts:
                break
            toks = [t for t in model.to_str_tokens(data.texts[ti], prepend_bos=False) if t not in special]
            if len(toks) >= 3:
                prompts.append("".join(toks[: rng.randrange(2, len(toks))]))
    dec = model.tokenizer.decode
    pairs = []
    for p in prompts:
        r = steer_feature(model, sae, feature, p, mode="steer", coef=coef)
        d = r.probs_after - r.probs_before
        kk = min(k, d.shape[0] // 2)
        up, down = torch.topk(d, kk).indices, torch.topk(-d, kk).indices
        pairs.append({"prompt": p, "raised": [dec([int(i)]) for i in up], "lowered": [dec([int(i)]) for i in down]})
    return pairs


def random_explanations(recs: list[Record], n: int, k: int = 5, seed: int = 0) -> list[str]:
    """``n`` rules over ``k`` tokens drawn at random (seeded) from the windows' tokens."""
    rng = random.Random(f"mw-random-expl-{seed}")
    vocab = sorted({t.strip() for r in recs for t in r.tokens if t.strip()})
    if not vocab:
        return []
    return [rule_from_tokens(rng.sample(vocab, min(k, len(vocab)))) for _ in range(n)]


def _score_one(explanation: str, scorer: Any, recs: list[Record], max_act: float, which: tuple[str, ...],
               pairs: list[dict], seed: int, tick: Any) -> tuple[dict[str, float], dict[str, int]]:
    vals: dict[str, float] = {}
    counts: dict[str, int] = {}
    if "simulation" in which:
        pred, real = [], []
        if hasattr(scorer, "simulate_many"):
            sims = scorer.simulate_many(explanation, recs, tick)
        else:
            sims = []
            for r in recs:
                sims.append(scorer.simulate(explanation, r))
                tick()
        for r, p in zip(recs, sims):
            pred += p
            real += [float(a) for a in r.acts]
        vals["simulation"] = pearson(pred, real)
        counts["simulation"] = len(real)
    if "detection" in which:
        res = scorer.detect(explanation, recs)
        labels = [r.active for r in recs]
        for k, v in classification(labels, [p for p, _ in res], [s for _, s in res]).items():
            vals[f"detection_{k}"] = v
        counts["detection"] = len(recs)
        tick()
    if "fuzzing" in which:
        items = _fuzz_items(recs, random.Random(f"mw-fuzz-{seed}"))
        res = scorer.fuzz(explanation, [(r, hl) for r, hl, _ in items])
        for k, v in classification([lab for _, _, lab in items], [p for p, _ in res], [s for _, s in res]).items():
            vals[f"fuzzing_{k}"] = v
        counts["fuzzing"] = len(items)
        tick()
    if "intervention" in which:
        rng = random.Random(f"mw-pick-{seed}")
        credit = []
        for pr in pairs:
            if rng.random() < 0.5:
                credit.append(scorer.pick(explanation, pr["prompt"], pr["raised"], pr["lowered"]))
            else:
                credit.append(1.0 - scorer.pick(explanation, pr["prompt"], pr["lowered"], pr["raised"]))
        vals["intervention"] = sum(credit) / len(credit) if credit else 0.5
        counts["intervention"] = len(credit)
        tick()
    return vals, counts


def score_explanation(
    explanation: Any, feature: int, data: Any, *, scorer: Any = None, scores: tuple[str, ...] = SCORES,
    baseline: list[str] | None = None, n_baseline: int = 3, seed: int = 0, records: FeatureRecords | None = None,
    prompts: list[str] | None = None, n_prompts: int = 12, coef: float | None = None, progress: Any = None,
    **record_kwargs: Any,
) -> Scores:
    """Score ``explanation`` (a string or an :class:`~.explain.Explanation`) of ``feature`` on
    the held-out windows of ``data`` (a ``FeatureData``), with the scores named in ``scores``
    (see the module docstring), each next to a random-explanation baseline.

    ``scorer``: a :class:`RuleSimulator` (default), an :class:`LMScorer`, or a language model
    client (wrapped in an ``LMScorer``). ``baseline``: the random explanations (default: other
    features' explanations in ``data.explanations``, else random token rules). ``prompts``,
    ``n_prompts``, ``coef``: the intervention (see :func:`intervention_pairs`). ``progress``: a
    callable ``progress(done, total)``."""
    text = getattr(explanation, "text", explanation)
    if not isinstance(text, str):
        raise TypeError(f"explanation must be a string or an Explanation, got {type(explanation).__name__}")
    if isinstance(scores, str):
        scores = (scores,)
    bad = [s for s in scores if s not in SCORES]
    if bad or not scores:
        raise ValueError(f"scores must name some of {', '.join(SCORES)}, got {list(scores)}")
    check_data(data, feature)
    scorer = as_scorer(scorer)
    if baseline is not None and (not isinstance(baseline, list) or not all(isinstance(b, str) for b in baseline)):
        raise TypeError("baseline must be a list of explanation strings")
    if "intervention" in scores and (coef is not None and not isinstance(coef, (int, float))):
        raise TypeError(f"coef must be a number, got {coef!r}")
    recs = records if records is not None else feature_records(data, feature, seed=seed, **record_kwargs)
    scored = recs.scored
    if not any(r.active for r in scored):
        raise ValueError(f"feature {feature} has no held-out activating windows to score on (it fired on too few tokens)")
    if baseline is None:
        others = [v for k, v in sorted(data.explanations.items()) if k != feature and v and v != text]
        rng = random.Random(f"mw-baseline-{seed}-{feature}")
        baseline = rng.sample(others, min(n_baseline, len(others))) if others else random_explanations(scored, n_baseline, seed=seed)
    pairs = intervention_pairs(data, feature, prompts=prompts, n_prompts=n_prompts, coef=coef, seed=seed) if "intervention" in scores else []
    per = (len(scored) if "simulation" in scores else 0) + sum(s in scores for s in SCORES[1:])
    total, done = per * (1 + len(baseline)), [0]

    def tick() -> None:
        done[0] += 1
        if callable(progress):
            progress(done[0], total)

    vals, counts = _score_one(text, scorer, scored, recs.max_act, tuple(scores), pairs, seed, tick)
    base: dict[str, list[float]] = {}
    for b in baseline:
        bv, _ = _score_one(b, scorer, scored, recs.max_act, tuple(scores), pairs, seed, tick)
        for k, v in bv.items():
            base.setdefault(k, []).append(v)
    return Scores(feature, text, scorer.name, vals, {k: sum(v) / len(v) for k, v in base.items()}, list(baseline), counts)
