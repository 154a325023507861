"""ProbeAccuracy: probe accuracy per layer (train / test / OOD / control / baseline, error bands
over seeds, overlay curves); click a layer for its confusion matrix and the test examples ranked
by probe score, coloured token by token by the probe direction.

See docs/widget_protocol.md ("ProbeAccuracy") for the traits, requests and DOM hooks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import traitlets

from .. import wire
from ..core.concepts.probes import ProbeResult
from ..core.decomposition.activations import token_activations
from ..core.model import Model
from ._base import Field, Items, MIWidget, ReportsWork, bundle, check_traits, request_handler
from .code import ShowsCode, probe_accuracy_code
from .predict import Predicts, probe_guess

#: the probe's own curves, in legend order; ``validation`` starts hidden
SPLIT_CURVES = ("train", "validation", "test", "ood", "control", "baseline")


def _quiet(done: int, total: int) -> None:
    """A progress callback that shows nothing (static export: no bar in the notebook)."""


def _name(site: str, layer: int) -> str:
    return "embed" if layer < 0 else f"{site} {layer}"


class ProbeAccuracy(Predicts, ShowsCode, ReportsWork, MIWidget):
    """Accuracy per layer of a :class:`~mi_widgets.core.concepts.probes.ProbeResult`.

    Lines for train / validation / test / OOD / control / baseline (mean over seeds, with a
    min–max or ±sd band) and the result's overlay curves (``result.add_overlay``: accuracy after
    erasure, CCS, ...), each toggled from the legend (``hidden_curves``). Hover a point for its
    exact value; click a layer (or set ``selected_layer`` / call :meth:`select`) for that layer's
    confusion matrix on the first seed's test split and its test examples ranked by probe score.
    With ``model=`` the examples are coloured token by token by the projection of each token's
    activation onto the probe direction (one nnsight trace per shown example); without it they
    are plain text.

    ``ProbeAccuracy.from_result(result, model=None, max_examples=40)``; ``result.widget(model=m)``
    does the same.
    """

    _stem = "probe_accuracy"

    title = traitlets.Unicode("").tag(sync=True)
    layers = traitlets.List(traitlets.Dict()).tag(sync=True)
    sites = traitlets.List(traitlets.Unicode()).tag(sync=True)
    site = traitlets.Unicode("").tag(sync=True)
    curve_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    curve_kinds = traitlets.List(traitlets.Unicode()).tag(sync=True)
    stats = traitlets.Dict().tag(sync=True)
    n_seeds = traitlets.Int(1).tag(sync=True)
    band = traitlets.Unicode("minmax").tag(sync=True)
    hidden_curves = Items(traitlets.Unicode()).tag(sync=True)
    classes = traitlets.List(traitlets.Int()).tag(sync=True)
    rank_class = traitlets.Int(1).tag(sync=True)
    selected_layer = traitlets.Int(None, allow_none=True).tag(sync=True)
    selected_site = traitlets.Unicode("").tag(sync=True)
    panel = traitlets.Dict().tag(sync=True)
    has_model = traitlets.Bool(False).tag(sync=True)
    control_kind = traitlets.Unicode("").tag(sync=True)
    max_examples = traitlets.Int(40).tag(sync=True)
    #: predict-then-reveal: a question; the view hides its result until a layer is clicked as a guess
    predict = traitlets.Unicode("").tag(sync=True)
    #: every guess recorded (see mi_widgets/widgets/predict.py): where, its value, the answer
    guesses = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(
        self,
        result: ProbeResult,
        *,
        model: Model | None = None,
        max_examples: int = 40,
        band: str = "minmax",
        **kwargs: Any,
    ) -> None:
        if not isinstance(result, ProbeResult):
            raise ValueError(f"ProbeAccuracy shows a ProbeResult, got {type(result).__name__}")
        if band not in ("minmax", "sd"):
            raise ValueError(f"band must be 'minmax' or 'sd', got {band!r}")
        if not isinstance(max_examples, int) or max_examples < 2:
            raise ValueError(f"max_examples must be an int >= 2, got {max_examples!r}")
        if model is not None and not isinstance(model, Model):
            raise ValueError(f"model must be a mi_widgets Model (mw.load(...)), got {type(model).__name__}")
        if model is not None and result.model_name and model.name != result.model_name:
            raise ValueError(
                f"the probe was fitted on {result.model_name!r} but model is {model.name!r}; pass the same model"
            )
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._result = result
        self._model = model
        self._panels: dict[tuple[str, int, int], dict] = {}
        self._updating = False
        super().__init__(max_examples=max_examples, band=band, **kwargs)
        sites = list(dict.fromkeys(s for s, layer in result.layers if layer >= 0)) or ["resid_pre"]
        names, kinds, stats = self._curves(result)
        with self.hold_trait_notifications():
            self._updating = True
            self.title = f"{result.model_name} · probe: {result.dataset}"
            self.layers = [{"site": s, "layer": int(layer), "name": _name(s, layer)} for s, layer in result.layers]
            self.sites = sites
            self.site = sites[0]
            self.curve_names, self.curve_kinds = names, kinds
            self.stats = wire.encode(stats, "float32")
            self.n_seeds = len(result.seeds)
            self.hidden_curves = ["validation"] if "validation" in names else []
            self.classes = [int(c) for c in result.classes]
            self.rank_class = self.classes[-1] if self.classes else 1
            self.has_model = model is not None
            self.control_kind = result.control_kind
            self._updating = False

    _check = check_traits(
        selected_layer=Field(int, nullable=True, choices=lambda w: sorted({lay for _, lay in w._result.layers})),
        selected_site=Field(str, choices=lambda w: ["", *dict.fromkeys(s for s, _ in w._result.layers)]),
        site=Field(str, choices=lambda w: w.sites or ["resid_pre"]),
        rank_class=Field(int, choices=lambda w: w.classes or [w.rank_class]),
        max_examples=Field(int, min=2),
        band=Field(str, choices=("minmax", "sd")),
        hidden_curves=Field(list, max=10_000, items=Field(str, choices=lambda w: w.curve_names)),
    )

    def _guess_record(self, where: dict) -> dict:
        return probe_guess(self, where)

    _write_code = staticmethod(probe_accuracy_code)  # code(): see ShowsCode

    # -- curves ---------------------------------------------------------------------------

    @staticmethod
    def _curves(result: ProbeResult) -> tuple[list[str], list[str], torch.Tensor]:
        """Curve names, kinds (``"split"`` / ``"overlay"``) and ``[curves, layers, 4]`` stats:
        mean over seeds, min, max, standard deviation (population); NaN where a curve has no
        value at a layer."""
        names, kinds, rows = [], [], []
        for split in SPLIT_CURVES:
            per = []
            for key in result.layers:
                v = [r["accuracy"] for r in result.rows if (r["site"], r["layer"]) == key and r["split"] == split]
                v = [float(x) for x in v if not math.isnan(x)]
                if v:
                    m = sum(v) / len(v)
                    sd = math.sqrt(sum((x - m) ** 2 for x in v) / len(v))
                    per.append([m, min(v), max(v), sd])
                else:
                    per.append([math.nan] * 4)
            if all(math.isnan(p[0]) for p in per):
                continue
            names.append(split)
            kinds.append("split")
            rows.append(per)
        for name, values in result.overlays.items():
            per = [[values[k], values[k], values[k], 0.0] if k in values else [math.nan] * 4 for k in result.layers]
            names.append(str(name))
            kinds.append("overlay")
            rows.append(per)
        stats = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(result.layers), 4)
        return names, kinds, stats

    def best_layer(self, split: str = "test") -> tuple[str, int]:
        """``(site, layer)`` with the highest mean ``split`` accuracy over seeds (first on ties)."""
        best, best_v = self._result.layers[0], -math.inf
        for key in self._result.layers:
            v = [r["accuracy"] for r in self._result.rows if (r["site"], r["layer"]) == key and r["split"] == split]
            v = [x for x in v if not math.isnan(x)]
            if v and sum(v) / len(v) > best_v:
                best, best_v = key, sum(v) / len(v)
        return best

    # -- one layer --------------------------------------------------------------------------

    def _key(self, layer: int | str, site: str | None = None) -> tuple[str, int]:
        if isinstance(layer, str) and layer != "embed":
            try:
                layer = int(layer)
            except ValueError:
                raise ValueError(f"layer must be an int or 'embed', got {layer!r}") from None
        if isinstance(layer, bool) or not isinstance(layer, (int, str)):
            raise ValueError(f"layer must be an int or 'embed', got {layer!r}")
        return self._result._key(layer, site or None)

    def _scores(self, key: tuple[str, int]) -> torch.Tensor:
        """The first seed's test scores at ``key`` for ``rank_class``: ``[n_test]``, larger =
        more that class (binary: the decision value, negated for the lower class)."""
        s = self._result.test_scores[key].detach().float().cpu()
        classes = self.classes
        ci = classes.index(self.rank_class) if self.rank_class in classes else len(classes) - 1
        if s.dim() == 1:
            return s if ci == len(classes) - 1 else -s
        return s[:, ci]

    def predictions(self, layer: int | str, site: str | None = None) -> torch.Tensor:
        """Predicted class labels on the first seed's test split at ``layer``."""
        key = self._key(layer, site)
        s = self._result.test_scores[key].detach().float().cpu()
        classes = torch.tensor(self.classes)
        if s.dim() == 1:
            return classes[(s > 0).long()]
        return classes[s.argmax(1)]

    def confusion(self, layer: int | str, site: str | None = None) -> torch.Tensor:
        """``[K, K]`` counts on the first seed's test split: row = true class, column = predicted
        (classes in ``self.classes`` order)."""
        pred = self.predictions(layer, site)
        index = {c: i for i, c in enumerate(self.classes)}
        true = [self._result.labels[i] for i in self._result.test_index]
        out = torch.zeros(len(self.classes), len(self.classes), dtype=torch.long)
        for t, p in zip(true, pred.tolist()):
            out[index[t], index[p]] += 1
        return out

    def ranking(self, layer: int | str, site: str | None = None) -> list[int]:
        """Positions in the test split (indices into ``result.test_index``) sorted by the probe's
        score for ``rank_class``, highest first (stable on ties)."""
        s = self._scores(self._key(layer, site))
        return torch.sort(s, descending=True, stable=True).indices.tolist()

    def _shown(self, order: list[int]) -> list[int]:
        """The examples the panel lists: all, or the highest and lowest ``max_examples / 2``."""
        m = self.max_examples
        if len(order) <= m:
            return order
        return order[: m - m // 2] + order[len(order) - m // 2 :]

    def _direction(self, key: tuple[str, int]) -> tuple[torch.Tensor, float | None]:
        """The direction that colours tokens for ``rank_class`` and the projection value that
        sits on a binary probe's decision boundary (``None`` for multiclass probes, whose
        boundaries are between pairs of classes)."""
        d = self._result.directions[key].detach().float().cpu()
        classes = self.classes
        ci = classes.index(self.rank_class) if self.rank_class in classes else len(classes) - 1
        sign = 1.0
        if d.dim() == 2:
            d = d[ci]
        elif ci != len(classes) - 1:
            sign = -1.0
        d = sign * d
        fit = self._result.fits.get(key)
        offset = None
        if fit is not None and self._result.directions[key].dim() == 1 and all(hasattr(fit, a) for a in ("mean", "intercept", "direction")):
            fd = fit.direction.detach().float().cpu()
            if fd.shape == d.shape:
                # x @ direction = decision - intercept + mean @ direction: the boundary's projection
                offset = sign * float(fit.mean.double() @ fit.direction.double() - fit.intercept)
        return d, offset

    def layer_panel(self, layer: int | str, site: str | None = None, *, tokens: bool = True, progress: Any = None) -> dict:
        """The side panel's data for one layer (the ``panel`` trait's value): confusion matrix,
        ranked examples and, when a model is attached and ``tokens``, per-token projections onto
        the probe direction."""
        key = self._key(layer, site)
        memo = (key[0], key[1], self.rank_class)
        cached = self._panels.get(memo)
        if cached is not None and (cached["tokens"] or not tokens or self._model is None):
            return cached
        r = self._result
        if key not in r.test_scores:
            raise ValueError(f"the result has no test scores at {_name(*key)}; re-run probe()")
        conf = self.confusion(key[1], key[0])
        order = self.ranking(key[1], key[0])
        shown = self._shown(order)
        pred = self.predictions(key[1], key[0]).tolist()
        scores = self._scores(key).tolist()
        idx = [r.test_index[j] for j in shown]
        examples = [
            {"index": int(i), "rank": int(order.index(j)), "label": int(r.labels[i]), "pred": int(pred[j]), "score": float(scores[j])}
            for i, j in zip(idx, shown)
        ]
        correct = int(conf.diag().sum())
        panel: dict[str, Any] = {
            "site": key[0], "layer": int(key[1]), "name": _name(*key), "rank_class": int(self.rank_class),
            "classes": list(self.classes), "confusion": wire.encode(conf, "int32"),
            "n_test": len(r.test_index), "accuracy": correct / max(1, len(r.test_index)),
            "examples": examples, "texts": [r.texts[i] for i in idx], "tokens": False,
        }
        if tokens and self._model is not None:
            d, offset = self._direction(key)
            site_, layer_ = ("resid_pre", 0) if key[1] < 0 else key
            ta = token_activations(self._model, [r.texts[i] for i in idx], site_, layer_, direction=d, progress=progress)
            values = ta.unit_values(d)
            panel.update(
                tokens=True, str_tokens=ta.str_tokens, offset=0.0 if offset is None else offset,
                centre="boundary" if offset is not None else "zero",
                values=wire.encode(values, "float32"),
            )
        self._panels[memo] = panel
        return panel

    def select(self, layer: int | str | None, site: str | None = None, progress: Any = None) -> None:
        """Show ``layer``'s panel (``None`` clears it); ``"embed"`` or ``-1`` is the embedding."""
        if layer is None:
            with self.hold_trait_notifications():
                self._updating = True
                self.selected_layer, self.selected_site, self.panel = None, "", {}
                self._updating = False
            return
        key = self._key(layer, site)  # validates before any forward
        self._updating = True
        try:
            self.status, self.progress, self.error = "loading", 0.0, ""

            def report(done: int, total: int) -> None:
                self.progress = done / max(total, 1)
                if progress is not None:
                    progress(done, total)

            panel = self.layer_panel(key[1], key[0], progress=report)
            with self.hold_trait_notifications():
                self.selected_layer, self.selected_site = key[1], key[0]
                self.panel = panel
                self.status, self.progress = "ready", 1.0
        except Exception as exc:
            self.status, self.error, self.progress = "error", str(exc), 1.0
            raise
        finally:
            self._updating = False

    @traitlets.observe("selected_layer", "selected_site", "rank_class")
    def _on_select(self, change: dict) -> None:
        if self._updating:
            return
        layer = self.selected_layer
        if layer is None:
            self.select(None)
            return
        site = self.selected_site or None
        if change["name"] == "selected_layer":
            have = set(self._result.layers)
            site = next((s for s in (self.selected_site, self.site) if (s, layer) in have), None)
        try:
            self.select(layer, site)
        except ValueError as exc:
            self.status, self.error = "error", str(exc)
            if change["name"] in ("selected_layer", "selected_site"):
                self._updating = True
                setattr(self, change["name"], change["old"])
                self._updating = False

    @traitlets.observe("max_examples")
    def _on_max_examples(self, change: dict) -> None:
        self._panels.clear()
        if not self._updating and self.selected_layer is not None:
            self.select(self.selected_layer, self.selected_site or None)

    @request_handler("layer")
    def _layer(self, msg: dict, progress: Any) -> dict:
        layer = msg.get("layer")
        if layer is None:
            self.select(None)
            return {"layer": None}
        if "rank_class" in msg:
            rc = msg["rank_class"]
            if rc not in self.classes:
                raise ValueError(f"rank_class must be one of {self.classes}, got {rc!r}")
            self._updating = True
            self.rank_class = int(rc)
            self._updating = False
        self.select(layer, msg.get("site") or None, progress=progress)
        return {"site": self.selected_site, "layer": self.selected_layer}

    # -- static export ----------------------------------------------------------------------

    def _static_extra(self, budget: int) -> dict:
        """Panels a static copy can show without a kernel: every layer's confusion matrix and
        ranking (no forward needed), and token colouring for the selected layer and the best test
        layer (a full export computes them; the copy kept in a notebook's outputs keeps only
        what was already computed)."""
        cache: dict[str, dict] = {}
        full = budget >= self._static_budget["export"]
        want = [self.best_layer()]
        if self.selected_layer is not None:
            want.insert(0, (self.selected_site, self.selected_layer))
        for site, layer in self._result.layers:
            if (site, layer) not in self._result.test_scores:
                continue
            colour = full and (site, layer) in want
            cache[f"{site}|{layer}"] = self.layer_panel(layer, site, tokens=colour, progress=_quiet)
        best = self.best_layer()
        return {"panel_cache": cache, "static_layer": {"site": best[0], "layer": int(best[1])}}

    def _fallback_text(self) -> str:
        lines = [f"ProbeAccuracy · {self.title}"]
        for name, (m, sd) in self._result.summary("test").items():
            lines.append(f"{name}: test accuracy {m:.3f} ± {sd:.3f}")
        return "\n".join(lines)
