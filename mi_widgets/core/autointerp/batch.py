"""Explain and score every feature of a dictionary, with a progress bar and an on-disk cache.

:func:`autointerp` runs :func:`~.explain.explain` then :func:`~.scoring.score_explanation`
per feature. With ``cache=path`` each finished feature is committed to an SQLite file (stdlib
``sqlite3``) under a key made of (feature, the dictionary's model/site/layer and a hash of its
weights and of the texts, the prompt templates' hash, the explainer's and scorer's model names,
the scores asked for, seed): a second run with the same
key makes no language-model call for that feature, and a run stopped by Ctrl-C or by an error
keeps every feature that finished.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .explain import (
    EXPLAIN_SYSTEM,
    EXPLAIN_TEMPLATE,
    Explanation,
    RuleExplainer,
    explain,
    template_hash,
)
from .records import check_data, feature_records
from .scoring import SCORES, TEMPLATES, Scores, as_scorer, score_explanation


class Cache:
    """Finished items on disk: ``get(key)`` / ``put(key, value)`` of JSON values, one row per
    key, committed at once (safe to interrupt; one process at a time)."""

    def __init__(self, path: str | Path) -> None:
        if not isinstance(path, (str, Path)):
            raise TypeError(f"cache must be a file path, got {type(path).__name__}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, feature INTEGER, value TEXT)")
        self._db.commit()

    @staticmethod
    def key(**parts: Any) -> str:
        return json.dumps(parts, sort_keys=True)

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM items WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, feature: int, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?)", (key, int(feature), json.dumps(value)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def close(self) -> None:
        self._db.close()


@dataclass
class AutointerpResult:
    """Explanations and scores per feature; ``errors`` (feature → short reason) for features
    that failed; ``complete`` when every requested feature finished; ``cached``: how many came
    from the cache."""

    explanations: dict[int, Explanation] = field(default_factory=dict)
    scores: dict[int, Scores] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    complete: bool = False
    cached: int = 0

    def to_pandas(self) -> Any:
        import pandas as pd

        rows = []
        for f, e in sorted(self.explanations.items()):
            row = {"feature": f, "explanation": e.text}
            s = self.scores.get(f)
            if s is not None:
                row.update(s.values)
                row.update({f"{k}_baseline": v for k, v in s.baseline.items()})
            rows.append(row)
        return pd.DataFrame(rows)


def _name(x: Any) -> str:
    return str(getattr(x, "name", type(x).__name__))


def fingerprint(data: Any) -> str:
    """A short hash of what a feature's examples depend on: the dictionary's decoder and
    encoder (where readable) and the texts of the pass (computed once per ``FeatureData``)."""
    fp = data.__dict__.get("_mw_fingerprint")
    if fp is None:
        h = hashlib.sha256()
        for name in ("W_dec", "W_enc", "b_enc"):
            t = getattr(data.sae, name, None)
            if t is not None and hasattr(t, "detach"):
                h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        for t in data.texts:
            h.update(t.encode("utf-8", "replace") + b"\x1e")
        fp = data.__dict__["_mw_fingerprint"] = h.hexdigest()[:16]
    return fp


def autointerp_feature(
    data: Any, feature: int, *, explainer: Any = None, scorer: Any = None, scores: tuple[str, ...] = SCORES,
    template: str = EXPLAIN_TEMPLATE, system: str = EXPLAIN_SYSTEM, seed: int = 0, cache: Cache | None = None,
    progress: Any = None, **kwargs: Any,
) -> tuple[Explanation, Scores | None, bool]:
    """Explain and score one feature (``scores=()`` to only explain), through ``cache`` when
    given. Returns (explanation, scores, whether it came from the cache)."""
    explainer = RuleExplainer() if explainer is None else explainer
    scorer_obj = as_scorer(scorer) if scores else None
    key = Cache.key(
        feature=int(feature), model=data.model_name, site=data.site, layer=int(data.layer), data=fingerprint(data),
        template=template_hash(template, system, *(getattr(scorer_obj, "templates", TEMPLATES).values())),
        explainer=_name(explainer), scorer=_name(scorer_obj) if scorer_obj else "", scores=list(scores), seed=int(seed),
    )
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            e = Explanation(int(feature), hit["explanation"], hit["explainer"])
            return e, (Scores.from_dict(hit["scores"]) if hit.get("scores") else None), True
    rec_kw = {k: kwargs.pop(k) for k in ("n_top", "n_quantile", "n_contrast", "n_negative") if k in kwargs}
    recs = feature_records(data, feature, seed=seed, **rec_kw)
    e = explain(feature, data, explainer, template=template, system=system, seed=seed, records=recs)
    s = None
    if scores:
        s = score_explanation(e, feature, data, scorer=scorer_obj, scores=scores, seed=seed, records=recs,
                              progress=progress, **kwargs)
    if cache is not None:
        cache.put(key, feature, {"explanation": e.text, "explainer": e.explainer, "scores": s.to_dict() if s else None})
    return e, s, False


def autointerp(
    data: Any, features: list[int] | None = None, *, explainer: Any = None, scorer: Any = None,
    scores: tuple[str, ...] = SCORES, cache: str | Path | Cache | None = None, seed: int = 0,
    template: str = EXPLAIN_TEMPLATE, system: str = EXPLAIN_SYSTEM, on_error: str = "skip",
    progress: Any = None, **kwargs: Any,
) -> AutointerpResult:
    """Explain and score ``features`` (default: every feature that fired in the pass) of a
    ``FeatureData``; the explanations are written into ``data.explanations`` (the dashboard's
    list shows them). ``cache``: a file path (or :class:`Cache`), see the module docstring.
    ``on_error``: ``"skip"`` records the failure in ``result.errors`` and goes on, ``"raise"``
    stops (finished features stay cached). ``progress``: ``None``/``True`` for a tqdm bar,
    ``False`` for none, or ``progress(done, total)``. Ctrl-C returns what finished, with
    ``complete=False``. Other ``kwargs`` go to :func:`~.scoring.score_explanation`."""
    check_data(data, 0, needs_model=bool(scores))
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if features is None:
        n_fire = data.summary()["n_fire"]
        features = [i for i in range(int(data.d_sae)) if int(n_fire[i]) > 0]
    features = list(features)
    for f in features:
        check_data(data, f, needs_model=False)
    as_scorer(scorer) if scores else None  # type errors before any work
    if explainer is not None and not (hasattr(explainer, "explain_records") or hasattr(explainer, "complete")):
        raise TypeError(f"explainer must be a RuleExplainer or a language model client, got {type(explainer).__name__}")
    own = cache is not None and not isinstance(cache, Cache)
    store = Cache(cache) if own else cache
    out = AutointerpResult()
    bar = None
    if progress is None or progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(features), desc="autointerp", unit="feature", leave=False)
    try:
        for i, f in enumerate(features):
            try:
                e, s, hit = autointerp_feature(data, f, explainer=explainer, scorer=scorer, scores=scores, template=template,
                                               system=system, seed=seed, cache=store, **kwargs)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                if on_error == "raise":
                    raise
                out.errors[f] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"autointerp: feature {f} failed ({out.errors[f][:200]})", stacklevel=2)
            else:
                out.explanations[f] = e
                data.explanations[f] = e.text
                if s is not None:
                    out.scores[f] = s
                out.cached += hit
            if bar is not None:
                bar.update(1)
            if callable(progress):
                progress(i + 1, len(features))
        out.complete = not out.errors
    except KeyboardInterrupt:
        warnings.warn(f"autointerp interrupted after {len(out.explanations)}/{len(features)} features; "
                      "returning what finished (it is in the cache)", stacklevel=2)
    finally:
        if bar is not None:
            bar.close()
        if own and store is not None:
            store.close()
    return out
