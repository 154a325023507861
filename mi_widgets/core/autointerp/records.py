"""Activation records: short token windows with one feature's activation on each token, drawn
from a dashboard pass (:class:`~mi_widgets.core.decomposition.features.FeatureData`).

:func:`feature_records` splits them, seeded, into what the explainer sees and what the scorers
see, so that no scored window was shown to the explainer:

- ``top``: max-activating windows (every other one of the pass's top-k: even ranks explain,
  odd ranks are scored);
- ``quantile``: windows sampled per activation band (the dashboard's bands; alternately to the
  explainer and the scorer);
- ``contrast`` / ``negative``: windows of texts sampled from the dataset (seeded) where the
  feature does not fire at all (one forward per sampled text), disjoint between the two.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Record:
    """A token window: ``tokens`` (strings), ``acts`` (the feature's activation per token),
    ``kind`` (``top``, ``quantile``, ``contrast`` or ``negative``) and where it came from."""

    tokens: list[str]
    acts: list[float]
    kind: str = ""
    text: int = -1
    position: int = -1

    @property
    def max_act(self) -> float:
        return max(self.acts, default=0.0)

    @property
    def active(self) -> bool:
        return self.max_act > 0


@dataclass
class FeatureRecords:
    """What the explainer sees (``top``, ``quantile``, ``contrast``) and what the scorers see
    (``scored``: held-out activating windows then non-activating ones), with the feature's
    largest activation in the pass (``max_act``) to scale activations to 0–10."""

    feature: int
    max_act: float
    top: list[Record] = field(default_factory=list)
    quantile: list[Record] = field(default_factory=list)
    contrast: list[Record] = field(default_factory=list)
    scored: list[Record] = field(default_factory=list)


def _from_example(ex: Any, kind: str) -> Record:
    return Record(list(ex.tokens), [float(a) for a in ex.acts], kind, int(ex.text), int(ex.position))


def text_activations(data: Any, feature: int, text: str) -> tuple[list[str], list[float]]:
    """Tokens of ``text`` (BOS dropped) and ``feature``'s activation on each, by one forward of
    the pass's model through its dictionary."""
    from ..decomposition.features import _read_site, model_lock

    model, sae = data.model, data.sae
    ids = model.to_tokens(text)
    with model_lock(model):
        acts = _read_site(model, sae.site, int(sae.layer), ids, torch.ones_like(ids), sae)
    a = acts[0, :, feature].float().cpu()
    start = 1 if model.tokenizer.bos_token_id is not None and int(ids[0, 0]) == model.tokenizer.bos_token_id else 0
    toks = [model.tokenizer.decode([int(i)]) for i in ids[0, start:]]
    return toks, a[start:].tolist()


def check_data(data: Any, feature: Any, *, needs_model: bool = True) -> int:
    """Raise before any work when ``data`` is not a feature pass or ``feature`` is out of range."""
    if not all(hasattr(data, a) for a in ("top_examples", "band_examples", "stats", "texts", "d_sae")):
        raise TypeError(f"examples must be a FeatureData from feature_pass (or FeatureDashboard.data), got {type(data).__name__}")
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < int(data.d_sae):
        raise ValueError(f"feature must be an int in 0..{int(data.d_sae) - 1}, got {feature!r}")
    if needs_model and (getattr(data, "model", None) is None or getattr(data, "sae", None) is None):
        raise ValueError("this needs the pass's model and dictionary (FeatureData.model / .sae); run feature_pass with them")
    return feature


def feature_records(
    data: Any, feature: int, *, n_top: int = 10, n_quantile: int = 8, n_contrast: int = 4, n_negative: int = 12,
    window: int | None = None, seed: int = 0,
) -> FeatureRecords:
    """The explainer's and the scorers' windows of ``feature`` (see the module docstring).
    ``window``: tokens per non-activating window (default: the pass's context width)."""
    check_data(data, feature, needs_model=(n_contrast + n_negative) > 0)
    for name, v in (("n_top", n_top), ("n_quantile", n_quantile), ("n_contrast", n_contrast), ("n_negative", n_negative)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    st = data.stats
    W = int(window or (st.before + 1 + st.after))
    max_act = float(st.max_act[feature])
    top = [_from_example(e, "top") for e in data.top_examples(feature)]
    bands = [_from_example(e, "quantile") for b in data.band_examples(feature) for e in b["examples"]]
    out = FeatureRecords(feature, max_act)
    out.top = top[0::2][:n_top]
    out.quantile = bands[0::2][:n_quantile]
    # the sample of firings can hold a top token too: a window shown to the explainer is never
    # scored, and none is scored twice
    seen = {(r.text, r.position) for r in out.top + out.quantile}
    scored = []
    for r in top[1::2][:n_top] + bands[1::2][:n_quantile]:
        if (r.text, r.position) not in seen:
            seen.add((r.text, r.position))
            scored.append(r)
    # non-activating windows: texts sampled with a seeded generator, one forward each, until
    # enough windows are found (at most 8x the windows needed); one window per text
    rng = random.Random(f"mw-autointerp-{seed}-{feature}")
    order = list(range(len(data.texts)))
    rng.shuffle(order)
    need = n_contrast + n_negative
    negs: list[Record] = []
    for ti in order[: need * 8]:
        if len(negs) >= need:
            break
        toks, acts = text_activations(data, feature, data.texts[ti])
        if len(toks) < 2:
            continue
        w = min(W, len(toks))
        quiet = [s for s in range(len(toks) - w + 1) if max(acts[s : s + w]) <= 0]  # windows where it never fires
        if quiet:
            s = rng.choice(quiet)
            negs.append(Record(toks[s : s + w], acts[s : s + w], "", ti, s))
    for r in negs[:n_contrast]:
        r.kind = "contrast"
    for r in negs[n_contrast:]:
        r.kind = "negative"
    out.contrast = negs[:n_contrast]
    out.scored = scored + negs[n_contrast:]
    return out
