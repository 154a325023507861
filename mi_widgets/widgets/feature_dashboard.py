"""FeatureDashboard: browse a dictionary's features over a dataset, then steer or ablate one."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
import traitlets

from .. import wire
from ..core.autointerp.batch import Cache, autointerp_feature
from ..core.autointerp.scoring import SCORES, Scores
from ..core.decomposition.features import (
    FeatureData,
    FeatureExample,
    FeatureInfo,
    check_dictionary,
    feature_pass,
    steer_feature,
)
from ..core.decomposition.features import model_lock as pass_lock
from ..core.model import Model
from ..core.model.lock import model_lock
from ._base import Field, MIWidget, Number, ReportsWork, bundle, check_traits, request_handler
from .code import ShowsCode, feature_dashboard_code


def example_payload(examples: list[FeatureExample]) -> tuple[list[dict], list[float]]:
    """Examples as JSON rows (tokens literal) plus their per-token activations, concatenated
    (row ``start``/``len`` index into them)."""
    rows, acts = [], []
    for ex in examples:
        rows.append({"text": ex.text, "position": ex.position, "activation": ex.activation,
                     "tokens": ex.tokens, "center": ex.center, "start": len(acts), "len": len(ex.acts)})
        acts += ex.acts
    return rows, acts


def feature_payload(info: FeatureInfo) -> dict:
    """The view's data for one feature: JSON for labels and tokens, wire arrays for numbers."""
    all_examples = list(info.top) + [ex for b in info.bands for ex in b["examples"]]
    rows, acts = example_payload(all_examples)
    n_top = len(info.top)
    bands, i = [], n_top
    for b in info.bands:
        n = len(b["examples"])
        bands.append({"lo": b["lo"], "hi": b["hi"], "fraction": b["fraction"], "examples": rows[i : i + n]})
        i += n
    return {
        "index": info.index, "frequency": info.frequency, "n_fire": info.n_fire, "max_act": info.max_act,
        "mean_act": info.mean_act, "explanation": info.explanation,
        "hist": wire.encode(torch.tensor(info.hist_counts, dtype=torch.int32), "int32"),
        "hist_range": [info.hist_edges[0], info.hist_edges[-1]] if info.hist_edges else [0.0, 0.0],
        "top": rows[:n_top], "bands": bands,
        "acts": wire.encode(torch.tensor(acts, dtype=torch.float32), "float32"),
        "logits_pos": info.logits_pos, "logits_neg": info.logits_neg,
    }


class FeatureDashboard(ShowsCode, ReportsWork, MIWidget):
    """A dictionary's features over a dataset: a searchable, sortable list (frequency, max
    activation, explanation text); for the selected feature its activation histogram, top and
    band-sampled max-activating examples (tokens coloured by the feature), top positive and
    negative logit effects, and steer / ablate buttons showing the next-token distribution of a
    prompt before and after.

    Automated interpretability: the list searches explanation text and shows score badges
    (``scores``); the Explain button runs :func:`~mi_widgets.core.autointerp.batch.autointerp_feature`
    on the selected feature (request ``"explain"``, with progress) with ``explainer`` (default a
    :class:`~mi_widgets.core.autointerp.explain.RuleExplainer`; or an ``OpenAIClient`` /
    ``LocalLM``) and ``scorer`` (default a ``RuleSimulator``), through ``autointerp_cache`` (a
    file path) when given; ``autointerp_kwargs`` go to it (``scores=``, ``n_prompts=`` ...).
    ``set_scores(result)`` shows the scores of a batch run (``autointerp(...)``).

    ``FeatureDashboard(model, sae, texts=None, explanations=None, prompt=..., **pass_kwargs)``
    starts :func:`~mi_widgets.core.decomposition.features.feature_pass` in a background thread; the list fills
    as batches finish (``status="running"``, ``progress``), and ``stop()`` ends it early. While
    another job holds the model (a sweep, a trace in the notebook) the pass and the steer / explain
    requests wait for it, and ``status`` says ``"waiting"``.
    ``FeatureDashboard.from_result(data)`` shows a finished pass.
    """

    _stem = "feature_dashboard"

    model_name = traitlets.Unicode("").tag(sync=True)
    site = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    d_sae = traitlets.Int(0).tag(sync=True)
    n_texts = traitlets.Int(0).tag(sync=True)
    n_texts_done = traitlets.Int(0).tag(sync=True)
    n_tokens = traitlets.Int(0).tag(sync=True)
    frequency = traitlets.Dict().tag(sync=True)
    max_act = traitlets.Dict().tag(sync=True)
    explanations = traitlets.Dict().tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    feature = traitlets.Dict().tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    coef = Number(0.0).tag(sync=True)
    steer_result = traitlets.Dict().tag(sync=True)
    can_steer = traitlets.Bool(True).tag(sync=True)
    k = traitlets.Int(10).tag(sync=True)
    scores = traitlets.Dict().tag(sync=True)
    can_explain = traitlets.Bool(False).tag(sync=True)

    #: seconds between list refreshes while the pass runs
    refresh_s = 0.5
    #: seconds between looks at who holds the model while the pass runs
    watch_s = 0.05

    def __init__(
        self,
        model: Model | None = None,
        sae: Any = None,
        texts: list[str] | None = None,
        *,
        explanations: dict[int, str] | None = None,
        prompt: str = "The Eiffel Tower is in",
        data: FeatureData | None = None,
        background: bool = True,
        k: int = 10,
        explainer: Any = None,
        scorer: Any = None,
        autointerp_cache: Any = None,
        autointerp_kwargs: dict | None = None,
        **pass_kwargs: Any,
    ) -> None:
        if explainer is not None and not (hasattr(explainer, "explain_records") or hasattr(explainer, "complete")):
            raise TypeError(f"explainer must be a RuleExplainer or a language model client, got {type(explainer).__name__}")
        if scorer is not None and not (hasattr(scorer, "simulate") or hasattr(scorer, "complete")):
            raise TypeError(f"scorer must be a RuleSimulator, an LMScorer or a language model client, got {type(scorer).__name__}")
        if autointerp_kwargs is not None and not isinstance(autointerp_kwargs, dict):
            raise TypeError("autointerp_kwargs must be a dict")
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        if data is None:
            if model is None or sae is None:
                raise ValueError("FeatureDashboard needs a model and a dictionary (or data= from feature_pass)")
            check_dictionary(model, sae)
            data = feature_pass(model, sae, texts, explanations=explanations, background=background, **pass_kwargs)
        elif explanations:
            data.explanations.update({int(a): str(b) for a, b in explanations.items()})
        self._data = data
        self._model = data.model
        self._sae = data.sae
        self._last_push = 0.0
        self._push_lock = threading.Lock()
        self._waiting = False
        self._explainer, self._scorer = explainer, scorer
        self._ai_cache = Cache(autointerp_cache) if autointerp_cache is not None and not isinstance(autointerp_cache, Cache) else autointerp_cache
        self._ai_kwargs = dict(autointerp_kwargs or {})
        super().__init__(k=k)
        with self.hold_trait_notifications():
            self.model_name, self.site, self.layer = data.model_name, data.site, data.layer
            self.d_sae, self.n_texts = data.d_sae, len(data.texts)
            self.explanations = {str(a): b for a, b in data.explanations.items()}
            self.prompt = prompt
            self.can_steer = self._model is not None and self._sae is not None and self._model.causal
            self.can_explain = self._model is not None and self._sae is not None
            self._push(force=True)
        if data.running:
            data._listeners.append(lambda d: self._push())
            if not data.running:  # ended between the check and the listener
                self._push(force=True)
            elif self._model is not None:
                threading.Thread(target=self._watch, daemon=True, name="mw-feature-pass-watch").start()

    @classmethod
    def from_result(cls, data: FeatureData, **kwargs: Any) -> FeatureDashboard:
        return cls(data=data, **kwargs)

    _write_code = staticmethod(feature_dashboard_code)  # code(): see ShowsCode

    @property
    def data(self) -> FeatureData:
        """The feature data behind the view (filled while the pass runs)."""
        return self._data

    # -- state --------------------------------------------------------------------------

    def _push(self, force: bool = False) -> None:
        """Copy the pass's progress and per-feature summary into the traits (throttled)."""
        d = self._data
        now = time.monotonic()
        ended = not d.running
        if not force and not ended and now - self._last_push < self.refresh_s:
            return
        with self._push_lock:
            self._last_push = now
            s = d.summary()
            with self.hold_trait_notifications():
                self.n_texts_done = d.n_texts_done
                self.n_tokens = d.stats.n_tokens
                self.progress = d.progress
                self.frequency = wire.encode(s["frequency"].float(), "float32")
                self.max_act = wire.encode(s["max_act"], "float32")
                if d.error:
                    self.status, self.error = "error", d.error
                elif d.running:
                    self.status = "waiting" if self._waiting else "running"
                else:
                    self.status = "ready" if d.complete else "stopped"
                if self.selected < 0 and d.stats.n_tokens > 0:
                    self.selected = int(s["max_act"].argmax())
                elif self.selected >= 0:
                    self.feature = feature_payload(d.feature(self.selected))
                if self.selected >= 0 and self.coef == 0.0:
                    self.coef = _default_coef(float(s["max_act"][self.selected]))

    _check = check_traits(
        selected=Field(int, min=-1, max=lambda w: w.d_sae - 1),  # -1: none
        k=Field(int, min=1),
        prompt=Field(str, min=1, max=100_000),
    )

    def _watch(self) -> None:
        """While the pass runs in its thread: ``status`` is ``"waiting"`` whenever another thread
        holds the model's lock (the pass needs it for its next batch), ``"running"`` otherwise.
        The pass's thread is core's, so the view cannot hand it an ``on_wait`` callback (what a
        request gets from ``MIWidget._run_handler``); it looks at the lock's owner instead."""
        lock, d = model_lock(self._model), self._data
        runner = d._thread.ident if d._thread is not None else None
        while d.running:
            owner = lock._owner
            waiting = owner is not None and owner != runner
            if waiting != self._waiting:
                with self._push_lock:
                    self._waiting = waiting
                    if d.running and self.status in ("running", "waiting"):
                        self.status = "waiting" if waiting else "running"
            time.sleep(self.watch_s)
        self._waiting = False

    @contextlib.contextmanager
    def _model_turn(self) -> Iterator[None]:
        """Wait for the pass's lock of the model (held by the dataset pass between its batches;
        a plain lock, which says nothing while it waits), showing ``"waiting"`` meanwhile; the
        wait for the model's own lock that follows says so through ``on_wait``."""
        lock = pass_lock(self._model)
        if not lock.acquire(blocking=False):
            before = self.status
            self.status = "waiting"
            try:
                lock.acquire()
            finally:
                if self.status == "waiting":
                    self.status = before
        try:
            yield
        finally:
            lock.release()

    @traitlets.observe("selected")
    def _on_selected(self, change: dict) -> None:
        f = change["new"]
        self.feature = feature_payload(self._data.feature(f)) if f >= 0 else {}
        if f >= 0:
            self.coef = _default_coef(float(self._data.stats.max_act[f]))

    def select(self, feature: int) -> dict:
        """Select ``feature`` (as a click in the list does); returns its payload."""
        self.selected = int(feature)
        return self.feature

    def stop(self) -> None:
        """Stop the dataset pass before its next batch (results so far stay)."""
        self._data.stop()

    def wait(self, timeout: float | None = None) -> FeatureDashboard:
        self._data.wait(timeout)
        self._push(force=True)
        return self

    # -- requests -----------------------------------------------------------------------

    @request_handler("select")
    def _select(self, msg: dict, progress: Any) -> dict:
        f = msg.get("feature")
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.d_sae:
            raise ValueError(f"feature must be an int in 0..{self.d_sae - 1}, got {f!r}")
        self.select(f)
        return {"feature": f}

    @request_handler("steer")
    def _steer(self, msg: dict, progress: Any) -> dict:
        if not self.can_steer:
            raise ValueError("steering needs the model and the dictionary (and a causal language model)")
        f = msg.get("feature", self.selected)
        mode = msg.get("mode", "steer")
        prompt = msg.get("prompt", self.prompt)
        coef = msg.get("coef", self.coef)
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.d_sae:
            raise ValueError(f"feature must be an int in 0..{self.d_sae - 1}, got {f!r}")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("prompt must be a non-empty string")
        try:
            coef = float(coef)
        except (TypeError, ValueError):
            raise ValueError(f"coef must be a number, got {coef!r}") from None
        with self._model_turn():
            r = steer_feature(self._model, self._sae, f, prompt, mode=mode, coef=coef)
        out = {"feature": f, "mode": mode, "coef": coef, "prompt": prompt, "kl": r.kl,
               "before": r.topk("before", self.k), "after": r.topk("after", self.k)}
        with self.hold_trait_notifications():
            self.prompt = prompt
            self.steer_result = out
        return out

    def set_scores(self, scores: Any) -> None:
        """Show scores: a ``Scores``, a list of them, a dict ``{feature: Scores}`` or an
        ``AutointerpResult`` (its explanations are shown too)."""
        if hasattr(scores, "scores") and hasattr(scores, "explanations"):
            self.explanations = {**self.explanations, **{str(f): e.text for f, e in scores.explanations.items()}}
            for f, e in scores.explanations.items():
                self._data.explanations[int(f)] = e.text
            scores = scores.scores
        items = list(scores.values()) if isinstance(scores, dict) else [scores] if isinstance(scores, Scores) else list(scores)
        if not all(isinstance(s, Scores) for s in items):
            raise TypeError("scores must be Scores (from score_explanation or autointerp)")
        self.scores = {**self.scores, **{str(s.feature): scores_payload(s) for s in items}}

    @request_handler("explain")
    def _explain(self, msg: dict, progress: Any) -> dict:
        if not self.can_explain:
            raise ValueError("explaining needs the model and the dictionary of the pass")
        f = msg.get("feature", self.selected)
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.d_sae:
            raise ValueError(f"feature must be an int in 0..{self.d_sae - 1}, got {f!r}")
        if int(self._data.stats.n_fire[f]) == 0:
            raise ValueError(f"feature {f} never fired in the pass: nothing to explain")
        kw = {"scores": SCORES, **self._ai_kwargs}
        e, s, _ = autointerp_feature(self._data, f, explainer=self._explainer, scorer=self._scorer,
                                     cache=self._ai_cache, progress=progress, **kw)
        self._data.explanations[f] = e.text
        with self.hold_trait_notifications():
            self.explanations = {**self.explanations, str(f): e.text}
            if s is not None:
                self.scores = {**self.scores, str(f): scores_payload(s)}
            if self.selected == f:
                self.feature = feature_payload(self._data.feature(f))
        return {"feature": f, "explanation": e.text, "scores": scores_payload(s) if s is not None else {}}

    @request_handler("stop")
    def _stop(self, msg: dict, progress: Any) -> dict:
        running = self._data.running
        self.stop()
        return {"stopped": running}

    # -- static export ------------------------------------------------------------------

    def _static_extra(self, budget: int) -> dict:
        return {"can_steer": False, "can_explain": False}

    def _fallback_text(self) -> str:
        return (
            f"FeatureDashboard · {self.model_name} · {self.site} layer {self.layer} · {self.d_sae} features · "
            f"{self.n_texts_done}/{self.n_texts} texts"
        )


#: the scores shown as badges (name in Scores.values, short label)
BADGES = (("simulation", "sim"), ("detection_balanced_accuracy", "det"), ("fuzzing_balanced_accuracy", "fuzz"),
          ("intervention", "int"))


def scores_payload(s: Scores) -> dict:
    """A feature's badges for the view: ``{explanation, scorer, badges: [{name, label, value,
    baseline}]}`` (the scores measured, in BADGES order, each with its random baseline)."""
    return {"explanation": s.explanation, "scorer": s.scorer, "badges": [
        {"name": n, "label": lab, "value": float(s.values[n]), "baseline": float(s.baseline[n]) if n in s.baseline else None}
        for n, lab in BADGES if n in s.values]}


def _default_coef(max_act: float) -> float:
    """Steering strength offered by the view: twice the feature's largest activation seen (a
    push beyond its natural range), or 1 when it never fired."""
    return round(2.0 * max_act, 3) if max_act > 0 else 1.0
