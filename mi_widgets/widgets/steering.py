"""Steering: baseline and steered continuations side by side, streamed as they are generated,
and a coefficient sweep of a behaviour metric.

Traits, requests and DOM hooks: see the class docstring (and docs/widget_protocol.md style).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import traitlets

from .. import wire
from ..core.description.steering import (
    STEER_SITES,
    SteeredGeneration,
    SteeringSweepResult,
    SteeringVector,
    _gen_args,
    _stream,
    as_steering_vector,
    steering_sweep,
)
from ..core.metrics import logit_diff, prob
from ..core.model import Model
from ._base import Field, MIWidget, Number, ReportsWork, bundle, check_traits, request_handler
from .code import ShowsCode, steering_code


class Steering(ShowsCode, ReportsWork, MIWidget):
    """A steering panel over ``model``: pick a prompt, a named vector, a layer (and site) and a
    coefficient; **generate** runs baseline and steered continuations as one batch in a
    background thread, pushing each decoded token into ``baseline_tokens`` /
    ``steered_tokens`` as it comes (**cancel** stops after the current step; the model is left
    unsteered). **sweep** plots a metric (``logit_diff(metric_a, metric_b)``, or ``prob(metric_a)``
    when ``metric_b`` is empty) of the prompt's next-token logits against the coefficient.

    ``Steering(model, prompt, {"sentiment": vec, ...}, layer=0, coef=4.0)``; vectors are
    :class:`~mi_widgets.core.description.steering.SteeringVector` objects or any 1-D ``d_model`` tensors.

    Traits: ``prompt``, ``vector``, ``vector_names``, ``site``, ``sites``, ``layer``,
    ``n_layers``, ``coef``, ``coef_min``/``coef_max`` (slider range), ``max_new_tokens``,
    ``do_sample``, ``seed``; output ``gen_prompt``, ``gen_coef``, ``baseline_tokens``,
    ``steered_tokens``, ``baseline_done``/``steered_done``; sweep ``metric_a``, ``metric_b``,
    ``metric_name``, ``sweep_coefs``/``sweep_values`` (wire float32 ``[n]``, mean over prompts);
    ``status`` (``ready``/``running``/``cancelled``/``error``), ``progress``, ``error``.

    Requests: ``"generate"`` ``{prompt?, vector?, layer?, site?, coef?, max_new_tokens?}`` →
    ``{started}`` at once (validation errors reply ``ok: false`` before anything runs);
    ``"cancel"`` → ``{cancelled}``; ``"sweep"`` ``{prompt?, vector?, layer?, site?, metric_a?,
    metric_b?, coefs?}`` → ``{n}`` (one batched trace, synchronous).

    DOM hooks: ``.mw-steering``; ``textarea.mw-prompt``, ``select.mw-vector``,
    ``select.mw-layer``, ``select.mw-site``, ``input.mw-coef`` (range) and ``.mw-coef-value``,
    ``input.mw-max-tokens``, ``button.mw-generate``, ``button.mw-cancel``, ``button.mw-sweep``,
    ``input.mw-metric-a``/``input.mw-metric-b``; columns ``.mw-column[data-run=baseline|steered]``
    with ``.mw-token`` spans (``.mw-done`` on the column when its row has ended); the sweep
    plot ``svg.mw-sweep-plot`` with ``circle.mw-point[data-index]``; ``.mw-status[data-status]``,
    ``.mw-error``.
    """

    _stem = "steering"

    prompt = traitlets.Unicode("").tag(sync=True)
    vector = traitlets.Unicode("").tag(sync=True)
    vector_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    site = traitlets.Unicode("resid_post").tag(sync=True)
    sites = traitlets.List(traitlets.Unicode()).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    coef = Number(1.0).tag(sync=True)
    coef_min = Number(-10.0).tag(sync=True)
    coef_max = Number(10.0).tag(sync=True)
    max_new_tokens = traitlets.Int(20).tag(sync=True)
    do_sample = traitlets.Bool(False).tag(sync=True)
    seed = traitlets.Int(0).tag(sync=True)
    gen_prompt = traitlets.Unicode("").tag(sync=True)
    gen_coef = traitlets.Float(0.0).tag(sync=True)
    baseline_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    steered_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    baseline_done = traitlets.Bool(False).tag(sync=True)
    steered_done = traitlets.Bool(False).tag(sync=True)
    metric_a = traitlets.Unicode("").tag(sync=True)
    metric_b = traitlets.Unicode("").tag(sync=True)
    metric_name = traitlets.Unicode("").tag(sync=True)
    sweep_coefs = traitlets.Dict().tag(sync=True)
    sweep_values = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        model: Model,
        prompt: str,
        vectors: Mapping[str, Any] | SteeringVector | torch.Tensor,
        *,
        layer: int | None = None,
        site: str | None = None,
        coef: float = 1.0,
        coef_range: tuple[float, float] | None = None,
        max_new_tokens: int = 20,
        metric: tuple[str, str] | tuple[str] | None = None,
        do_sample: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, Model):
            raise ValueError(f"Steering needs a mi_widgets Model, got {type(model).__name__}")
        if not isinstance(vectors, Mapping):
            sv = as_steering_vector(vectors, model)
            vectors = {sv.name: sv}
        if not vectors:
            raise ValueError("vectors is empty; give a dict of named steering vectors")
        self._vectors = {str(k): as_steering_vector(v, model, name=str(k)) for k, v in vectors.items()}
        first = next(iter(self._vectors.values()))
        layer = layer if layer is not None else (first.layer if first.layer is not None else 0)
        site = site or first.site or "resid_post"
        model.check_layer(layer)
        if site not in STEER_SITES:
            raise ValueError(f"site {site!r} cannot be steered; choose one of {', '.join(STEER_SITES)}")
        if coef_range is None:
            span = max(10.0, abs(float(coef)) * 2)
            coef_range = (-span, span)
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._model = model
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: SteeredGeneration | None = None
        self._sweep: SteeringSweepResult | None = None
        super().__init__(**kwargs)
        with self.hold_trait_notifications():
            self.vector_names = list(self._vectors)
            self.vector = next(iter(self._vectors))
            self.sites = [s for s in STEER_SITES if s in model.sites]
            self.site = site
            self.n_layers = model.n_layers
            self.layer = layer
            self.coef_min, self.coef_max = float(coef_range[0]), float(coef_range[1])
            self.coef = float(coef)
            self.prompt = prompt
            self.max_new_tokens = max_new_tokens
            self.do_sample, self.seed = bool(do_sample), int(seed)
            if metric is not None:
                self.metric_a = metric[0]
                self.metric_b = metric[1] if len(metric) > 1 else ""
            else:
                self.metric_a, self.metric_b = self._default_metric()

    _check = check_traits(
        prompt=Field(str, max=100_000),
        vector=Field(str, max=10_000, choices=lambda w: w.vector_names),
        site=Field(str, choices=lambda w: w.sites),
        layer=Field(int, min=0, max=lambda w: w.n_layers - 1),
        max_new_tokens=Field(int, min=1, max=lambda w: w._model.n_ctx),
        seed=Field(int, min=0),
    )

    def _default_metric(self) -> tuple[str, str]:
        """``(" positive", " negative")`` where both are single tokens (the zoo's verdicts),
        else the baseline's top next token alone (a probability metric)."""
        tok = self._model.tokenizer
        if all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in (" positive", " negative")):
            return " positive", " negative"
        try:
            top = self._model.next_tokens(self.prompt, k=1)[0][0]
        except ValueError:
            return "", ""
        return top, ""

    # -- python API ---------------------------------------------------------------------

    _write_code = staticmethod(steering_code)  # code(): see ShowsCode

    @property
    def vectors(self) -> dict[str, SteeringVector]:
        return dict(self._vectors)

    @property
    def result(self) -> SteeredGeneration | None:
        """The last finished (or cancelled) generation."""
        return self._result

    @property
    def sweep_result(self) -> SteeringSweepResult | None:
        return self._sweep

    def _merged(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        """The current settings overridden by a request's (names and types checked; the
        caller validates the whole set before :meth:`_set` applies it)."""
        upd: dict[str, Any] = {k: getattr(self, k) for k in _SETTINGS}
        if "prompt" in msg:
            upd["prompt"] = str(msg["prompt"])
        if "vector" in msg:
            name = str(msg["vector"])
            if name not in self._vectors:
                raise ValueError(f"unknown vector {name!r}; choose one of {list(self._vectors)}")
            upd["vector"] = name
        if "layer" in msg:
            upd["layer"] = self._model.check_layer(int(msg["layer"]))
        if "site" in msg:
            s = str(msg["site"])
            if s not in self.sites:
                raise ValueError(f"site {s!r} cannot be steered; choose one of {self.sites}")
            upd["site"] = s
        for key, typ in (("coef", float), ("max_new_tokens", int), ("seed", int)):
            if key in msg:
                upd[key] = typ(msg[key])
        if "do_sample" in msg:
            upd["do_sample"] = bool(msg["do_sample"])
        for key in ("metric_a", "metric_b"):
            if key in msg:
                upd[key] = str(msg[key])
        return upd

    def _set(self, upd: Mapping[str, Any]) -> None:
        with self.hold_trait_notifications():
            for k, v in upd.items():
                setattr(self, k, v)

    def generate(self, *, background: bool = False, **settings: Any) -> SteeredGeneration | None:
        """Generate baseline and steered continuations with the current settings (overridden by
        ``settings``: prompt, vector, layer, site, coef, max_new_tokens, do_sample, seed). With
        ``background=True`` it returns at once and tokens stream into the traits."""
        if not self._lock.acquire(blocking=False):
            raise ValueError("a generation is already running; cancel it or wait for it")
        try:
            st = self._merged(settings)
            args = _gen_args(
                self._model, st["prompt"], self._vectors[st["vector"]], st["site"], st["layer"], st["coef"],
                "all", st["max_new_tokens"], st["do_sample"], 1.0, None, st["seed"],
            )
            self._set(st)
        except BaseException:
            self._lock.release()
            raise
        self._cancel.clear()
        with self.hold_trait_notifications():
            self.gen_prompt, self.gen_coef = self.prompt, self.coef
            self.baseline_tokens, self.steered_tokens = [], []
            self.baseline_done = self.steered_done = False
            self.status, self.progress, self.error = "running", 0.0, ""
        if background:
            self._thread = threading.Thread(target=self._run, args=(args,), daemon=True, name="mi-widgets-steering-view")
            self._thread.start()
            return None
        self._run(args)
        return self._result

    def _run(self, args: tuple) -> None:
        """Runs with ``self._lock`` held; releases it."""
        vec, site, layer, coef, ids, pos = args
        n = self.max_new_tokens
        base: list[str] = []
        steered: list[str] = []
        try:
            for ev in _stream(self._model, self.prompt, vec, site, layer, coef, pos, ids, n, self.do_sample, 1.0, None, self.seed, self._cancel):
                run = ev["run"]
                if run == "done":
                    self._result = ev["result"]
                    break
                (base if run == "baseline" else steered).append(ev["token"])
                eos = ev["id"] == self._model.tokenizer.eos_token_id
                with self.hold_trait_notifications():
                    if run == "baseline":
                        self.baseline_tokens = list(base)
                        self.baseline_done = self.baseline_done or eos
                    else:
                        self.steered_tokens = list(steered)
                        self.steered_done = self.steered_done or eos
                    self.progress = (ev["step"] + 1) / n
            cancelled = self._result is not None and self._result.cancelled
            with self.hold_trait_notifications():
                self.baseline_done = self.steered_done = True
                self.status, self.progress = ("cancelled" if cancelled else "ready"), 1.0
        except BaseException as exc:  # noqa: BLE001 - shown in the view; the kernel keeps going
            with self.hold_trait_notifications():
                self.status, self.error, self.progress = "error", f"{type(exc).__name__}: {exc}", 1.0
        finally:
            self._cancel.clear()
            self._lock.release()

    def cancel(self) -> None:
        """Stop a running generation after its current step (the model is left unsteered)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background generation has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def sweep(self, coefs: Sequence[float] | None = None, **settings: Any) -> SteeringSweepResult:
        """The metric against the coefficient on the current prompt (``coefs``: 21 evenly spaced
        values over the slider's range by default); shown in the view's plot."""
        if self._lock.locked():
            raise ValueError("a generation is running; cancel it or wait for it")
        st = self._merged(settings)
        if not st["metric_a"]:
            raise ValueError("set metric_a (and metric_b for a logit difference) to sweep")
        metric = logit_diff(st["metric_a"], st["metric_b"]) if st["metric_b"] else prob(st["metric_a"])
        if coefs is None:
            coefs = torch.linspace(self.coef_min, self.coef_max, 21).tolist()
        res = steering_sweep(
            self._model, st["prompt"], self._vectors[st["vector"]], metric, coefs=list(coefs),
            site=st["site"], layer=st["layer"], progress=False,
        )
        self._set(st)
        self.show_sweep(res)
        return res

    def show_sweep(self, res: SteeringSweepResult) -> None:
        self._sweep = res
        with self.hold_trait_notifications():
            self.metric_name = res.metric_name
            self.sweep_coefs = wire.encode(torch.tensor(res.coefs), "float32")
            self.sweep_values = wire.encode(res.mean, "float32")

    def show_generation(self, res: SteeredGeneration) -> None:
        self._result = res
        with self.hold_trait_notifications():
            self.gen_prompt, self.gen_coef = res.prompt, res.coef
            self.baseline_tokens, self.steered_tokens = list(res.baseline_tokens), list(res.steered_tokens)
            self.baseline_done = self.steered_done = True

    # -- requests -----------------------------------------------------------------------

    @request_handler("generate")
    def _generate_request(self, msg: dict, progress: Any) -> dict:
        self.generate(background=True, **{k: v for k, v in msg.items() if k in _SETTINGS})
        return {"started": True}

    @request_handler("cancel", strict=True)
    def _cancel_request(self, msg: dict, progress: Any) -> dict:
        running = self._thread is not None and self._thread.is_alive()
        self._cancel.set()
        return {"cancelled": running}

    @request_handler("sweep")
    def _sweep_request(self, msg: dict, progress: Any) -> dict:
        coefs = msg.get("coefs")
        res = self.sweep(coefs=[float(c) for c in coefs] if coefs else None, **{k: v for k, v in msg.items() if k in _SETTINGS})
        return {"n": len(res.coefs), "metric_name": res.metric_name}

    def _fallback_text(self) -> str:
        return (
            f"Steering · {self._model.name} · {self.vector} × {self.gen_coef:g} at {self.site} {self.layer}\n"
            f"{self.gen_prompt!r}\nbaseline: {''.join(self.baseline_tokens)!r}\nsteered: {''.join(self.steered_tokens)!r}"
        )


_SETTINGS = ("prompt", "vector", "layer", "site", "coef", "max_new_tokens", "do_sample", "seed", "metric_a", "metric_b")
