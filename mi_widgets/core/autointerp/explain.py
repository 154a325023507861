"""Explanations of dictionary features, written by a language model or by a rule.

:func:`explain` shows the explainer a feature's max-activating windows, windows sampled per
activation band (quantiles) and contrasting windows where it never fires (see
:mod:`.records`), and returns an :class:`Explanation`.

The explainer is either

- a language model (:class:`~.client.OpenAIClient` for any OpenAI-compatible endpoint, or
  :class:`~.client.LocalLM` for a model from ``mw.load``): the prompt is
  :data:`EXPLAIN_SYSTEM` plus :data:`EXPLAIN_TEMPLATE`, plain text you can replace (pass
  ``template=`` / ``system=``). Format fields:

  ``{top_examples}``       max-activating windows, one per line, activating tokens as ``<<tok>>``
  ``{top_activations}``    per window, its activating tokens with their activation on 0–10
  ``{quantile_examples}``  windows sampled across activation bands (weaker firings included)
  ``{contrast_examples}``  windows where the feature is zero on every token
  ``{max_act}``            the feature's largest activation in the pass (raw units)
  ``{feature}``            the feature's index

  The reply's first non-empty line (a leading ``Explanation:`` removed) is the explanation.

- a :class:`RuleExplainer`: no language model. It writes a *rule*: ``fires on tokens matching
  /^\\s*(?:tokA|tokB)$/`` over the tokens on which the top windows peak, minus tokens that occur
  in the contrast windows. Rules are explanations that :class:`~.scoring.RuleSimulator` can
  execute, so the whole pipeline has a known answer offline.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .records import FeatureRecords, Record, check_data, feature_records

EXPLAIN_SYSTEM = (
    "You are a meticulous interpretability researcher. You look at text excerpts where one feature "
    "of a neural network activates and write a short explanation of what the feature detects."
)

EXPLAIN_TEMPLATE = """Feature {feature}. In each excerpt the tokens where the feature activates are marked <<like this>>.

Excerpts with the strongest activations:
{top_examples}

Activating tokens of those excerpts, with activations on a 0-10 scale:
{top_activations}

Excerpts sampled across weaker activation levels:
{quantile_examples}

Excerpts where the feature does NOT activate at all:
{contrast_examples}

In one short phrase, what does the feature detect? Reply with the explanation only, e.g.
Explanation: names of cities"""


def template_hash(*parts: str) -> str:
    """A short stable hash of prompt templates (part of a cache key)."""
    return hashlib.sha256("\x1e".join(parts).encode()).hexdigest()[:12]


def mark(rec: Record, threshold: float = 0.0, highlight: list[bool] | None = None) -> str:
    """The window as text, tokens above ``threshold`` (or where ``highlight`` is true) as ``<<tok>>``."""
    out = []
    for i, (t, a) in enumerate(zip(rec.tokens, rec.acts)):
        on = highlight[i] if highlight is not None else a > threshold
        out.append(f"<<{t}>>" if on else t)
    return "".join(out).replace("\n", "\\n")


def scale10(a: float, max_act: float) -> int:
    """Activation in raw units to the 0–10 scale (10 = the feature's largest activation)."""
    if max_act <= 0 or a <= 0:
        return 0
    return int(max(0, min(10, round(10 * a / max_act))))


def format_prompt(recs: FeatureRecords, template: str = EXPLAIN_TEMPLATE) -> str:
    """Fill the explanation template (see the module docstring for its fields)."""
    def lines(rs: list[Record]) -> str:
        return "\n".join(f"{i + 1}. {mark(r)}" for i, r in enumerate(rs)) or "(none)"

    acts = []
    for i, r in enumerate(recs.top):
        pairs = [f"{t!r} {scale10(a, recs.max_act)}" for t, a in zip(r.tokens, r.acts) if a > 0]
        acts.append(f"{i + 1}. " + ", ".join(pairs))
    fields = {"top_examples": lines(recs.top), "top_activations": "\n".join(acts) or "(none)",
              "quantile_examples": lines(recs.quantile), "contrast_examples": lines(recs.contrast),
              "max_act": f"{recs.max_act:.4g}", "feature": recs.feature}
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as e:
        raise ValueError(f"the template uses an unknown field {e}; fields: {', '.join(fields)}") from None


@dataclass
class Explanation:
    """An explanation of ``feature``: ``text``, who wrote it (``explainer``) and the prompt it
    was written from (empty for rules)."""

    feature: int
    text: str
    explainer: str
    prompt: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------

_REGEX = re.compile(r"/((?:\\.|[^/\\])+)/([ims]*)")
_KEYWORDS = re.compile(r"(?:tokens?|words?)\s*(?:in|:)\s*[\[{(]?([^\]})]+)[\]})]?", re.I)


def parse_rule(text: str, lexicon: dict[str, list[str]] | None = None) -> Any:
    """A token predicate from a rule: ``/regex/flags`` anywhere in the text (searched in each
    token, leading space included), else a keyword list (``tokens in {Paris, Rome}``,
    ``words: cat, dog``; a token matches when its stripped text equals one, case-insensitive),
    else a ``lexicon`` phrase contained in the text (``{"city names": ["Paris", ...]}``).
    Returns ``predicate(token) -> bool``, or ``None`` when the text is no rule."""
    m = _REGEX.search(text)
    if m:
        flags = 0
        for c in m.group(2):
            flags |= {"i": re.I, "m": re.M, "s": re.S}[c]
        try:
            rx = re.compile(m.group(1), flags)
        except re.error as e:
            raise ValueError(f"the rule's regex /{m.group(1)}/ does not compile: {e}") from None
        return lambda tok: rx.search(tok) is not None
    m = _KEYWORDS.search(text)
    if m:
        words = {w.strip().strip("'\"").lower() for w in m.group(1).split(",") if w.strip()}
        if words:
            return lambda tok: tok.strip().lower() in words
    low = text.lower()
    for phrase, words in sorted((lexicon or {}).items(), key=lambda kv: -len(kv[0])):
        if phrase.lower() in low:
            ws = {w.strip().lower() for w in words}
            return lambda tok: tok.strip().lower() in ws
    return None


def rule_from_tokens(tokens: list[str]) -> str:
    """``fires on tokens matching /^\\s*(?:a|b)$/`` for the stripped ``tokens``."""
    alts = sorted({t.strip() for t in tokens if t.strip()})
    if not alts:
        return "fires on no token (tokens matching /(?!)/)"
    return "fires on tokens matching /^\\s*(?:" + "|".join(re.escape(a) for a in alts) + ")$/"


class RuleExplainer:
    """Writes a rule from the examples (no language model): the tokens on which the top and
    quantile windows peak (at least ``min_share`` of those windows' peaks, at most ``max_terms``
    of them, most frequent first), minus any token that also occurs in a contrast window (where
    the feature is zero)."""

    name = "rule"

    def __init__(self, max_terms: int = 40, min_share: float = 0.0) -> None:
        if max_terms < 1 or not 0 <= min_share < 1:
            raise ValueError("max_terms must be >= 1 and min_share in [0, 1)")
        self.max_terms, self.min_share = int(max_terms), float(min_share)

    def explain_records(self, recs: FeatureRecords) -> str:
        peaks = Counter()
        windows = [r for r in recs.top + recs.quantile if r.active]
        for r in windows:
            i = max(range(len(r.acts)), key=lambda j: r.acts[j])
            peaks[r.tokens[i].strip()] += 1
        banned = {t.strip() for r in recs.contrast for t in r.tokens}
        keep = [t for t, c in peaks.most_common() if t and t not in banned and c >= self.min_share * len(windows)]
        return rule_from_tokens(keep[: self.max_terms])


def explain(
    feature: int, examples: Any, explainer: Any = None, *, template: str = EXPLAIN_TEMPLATE,
    system: str = EXPLAIN_SYSTEM, seed: int = 0, max_tokens: int = 60, records: FeatureRecords | None = None,
    **record_kwargs: Any,
) -> Explanation:
    """An explanation of ``feature`` from ``examples`` (a ``FeatureData`` from ``feature_pass``
    or ``FeatureDashboard.data``) by ``explainer`` (a language model client or a
    :class:`RuleExplainer`, the default). ``record_kwargs`` (``n_top``, ``n_quantile``,
    ``n_contrast``) go to :func:`~.records.feature_records`."""
    explainer = RuleExplainer() if explainer is None else explainer
    if not (hasattr(explainer, "explain_records") or hasattr(explainer, "complete")):
        raise TypeError(f"explainer must be a RuleExplainer or a language model (OpenAIClient, LocalLM), got {type(explainer).__name__}")
    if not isinstance(template, str) or not isinstance(system, str):
        raise TypeError("template and system must be strings")
    check_data(examples, feature, needs_model=False)
    if records is None:
        record_kwargs.setdefault("n_negative", 0)
        records = feature_records(examples, feature, seed=seed, **record_kwargs)
    if hasattr(explainer, "explain_records"):
        return Explanation(feature, explainer.explain_records(records), explainer.name)
    prompt = format_prompt(records, template)
    reply = explainer.complete([{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                               max_tokens=max_tokens)
    return Explanation(feature, parse_explanation(reply.text), explainer.name, prompt)


def parse_explanation(text: str) -> str:
    """The first non-empty line of a reply, without a leading ``Explanation:`` and quotes."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(?:explanation\s*:)\s*", "", line.strip(), flags=re.I).strip().strip("\"'").strip()
        if line:
            return line
    return ""
