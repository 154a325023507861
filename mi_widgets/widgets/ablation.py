"""Ablation: the effect of ablating components (heads as a layers × heads heatmap, anything
else as sorted bars with per-prompt dots); click one for the next-token top-k with and without it.

See docs/widget_protocol.md ("Ablation") for the traits, requests and DOM hooks.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import traitlets

from .. import wire
from ..core.interventions.ablation import AblationResult, ablate
from ._base import Field, MIWidget, bundle, check_traits, request_handler
from .code import ShowsCode, ablation_code

_HEAD = re.compile(r"^(\d+)\.(\d+)$")
_UNITS = re.compile(r"^([A-Za-z_]+)\.(\d+)\[(\d+(?:,\d+)*)\]$")


class UnsupportedResult(ImportError, TypeError):
    """Raised for results this widget cannot show (an ImportError, so that a result's
    ``_repr_mimebundle_`` falls back to text)."""


def component_spec(label: str) -> Any:
    """What :func:`~mi_widgets.core.interventions.patching.ablate` accepts for a component label of an
    :class:`AblationResult`: ``"L.H"``, ``"mlp.L"``, ``"<site>.L"`` as they are, and
    ``"<site>.L[u,v]"`` (units) as ``(site, L, [u, v])``."""
    m = _UNITS.match(label)
    if m:
        return (m.group(1), int(m.group(2)), [int(u) for u in m.group(3).split(",")])
    return label


def _parse_head(label: str) -> tuple[int, int] | None:
    m = _HEAD.match(label)
    return (int(m.group(1)), int(m.group(2))) if m else None


class Ablation(ShowsCode, MIWidget):
    """Interactive view of an :class:`~mi_widgets.core.interventions.patching.AblationResult`.

    Heads ablated separately: a layers × heads heatmap of the mean effect (ablated − clean),
    diverging colours centred at 0. Anything else: horizontal bars sorted by |mean effect| with
    a dot per prompt. Hover for clean / ablated / effect and their spread over prompts; click a
    component (or set ``selected_component``) for a prompt's top-k next tokens with and without
    that ablation, computed in Python by re-running :func:`ablate` on that prompt alone with the
    same kind and reference (the logits are captured by the metric it is handed).

    ``reference``: the reference prompts the result was made with (needed to re-run ``"resample"``
    ablations; ``"mean"`` ablations default to the result's prompts, as ``ablate`` does).
    """

    _stem = "ablation"

    model_name = traitlets.Unicode("").tag(sync=True)
    kind = traitlets.Unicode("zero").tag(sync=True)
    metric_name = traitlets.Unicode("").tag(sync=True)
    separately = traitlets.Bool(True).tag(sync=True)
    #: row labels: the result's components, or one "a+b+c" row when ablated together
    components = traitlets.List(traitlets.Unicode()).tag(sync=True)
    prompts = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: "heads" (layers × heads heatmap) or "bars"
    view = traitlets.Unicode("bars").tag(sync=True)
    grid_layers = traitlets.List(traitlets.Int()).tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    #: wire int32 [len(grid_layers), n_heads]: row index into `components`, -1 where not ablated
    grid_index = traitlets.Dict().tag(sync=True)
    #: wire float32 [n_prompts]
    clean = traitlets.Dict().tag(sync=True)
    #: wire float32 [n_rows, n_prompts]
    ablated = traitlets.Dict().tag(sync=True)
    selected_component = traitlets.Unicode("").tag(sync=True)
    selected_prompt = traitlets.Int(0).tag(sync=True)
    #: {component, prompt, clean_metric, ablated_metric, effect, clean_topk, ablated_topk}, {} when none
    panel = traitlets.Dict().tag(sync=True)
    can_run = traitlets.Bool(False).tag(sync=True)
    status = traitlets.Unicode("ready").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    k = traitlets.Int(10).tag(sync=True)

    def __init__(
        self,
        result: AblationResult,
        *,
        reference: Any = None,
        k: int = 10,
        component: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(result, AblationResult):
            raise UnsupportedResult(f"Ablation shows an AblationResult, got {type(result).__name__}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int (top-k tokens to list), got {k!r}")
        if reference is None:
            reference = getattr(result, "reference", None)
        if isinstance(reference, str):
            reference = [reference]
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._result = result
        self._model = result.model
        self._reference = list(reference) if reference is not None else None
        self._memo: dict[tuple, dict] = {}
        self._busy = False
        super().__init__(k=k, **kwargs)
        rows = list(result.components) if result.separately else ["+".join(result.components)]
        abl = result.ablated if result.separately else result.ablated[None]
        heads = [_parse_head(c) for c in rows]
        with self.hold_trait_notifications():
            self.model_name = result.model_name
            self.kind = result.kind
            self.metric_name = result.metric_name
            self.separately = bool(result.separately)
            self.components = rows
            self.prompts = list(result.prompts)
            self.clean = wire.encode(result.clean.detach().float().cpu(), "float32")
            self.ablated = wire.encode(abl.detach().float().cpu().reshape(len(rows), -1), "float32")
            if result.separately and all(h is not None for h in heads):
                layers = sorted({h[0] for h in heads if h})
                nh = (
                    self._model.n_heads
                    if self._model is not None
                    else max(h[1] for h in heads if h) + 1
                )
                index = torch.full((len(layers), nh), -1, dtype=torch.int32)
                for i, h in enumerate(heads):
                    assert h is not None
                    index[layers.index(h[0]), h[1]] = i
                self.view = "heads"
                self.grid_layers = layers
                self.n_heads = nh
                self.grid_index = wire.encode(index, "int32")
            else:
                self.view = "bars"
            self.can_run = self._model is not None and not (
                result.kind == "resample" and self._reference is None
            )
        if component is not None:
            self.selected_component = component

    _check = check_traits(
        selected_component=Field(str, max=10_000, choices=lambda w: ["", *w.components]),
        selected_prompt=Field(int, min=0, max=lambda w: max(len(w.prompts) - 1, 0)),
        k=Field(int, min=1),
    )

    _write_code = staticmethod(ablation_code)  # code(): see ShowsCode

    def effects(self) -> torch.Tensor:
        """Mean effect (ablated − clean, mean over prompts) per row, as the view colours it."""
        abl = wire.decode(self.ablated)
        return torch.from_numpy(abl - wire.decode(self.clean)[None]).mean(-1)

    # -- the panel --------------------------------------------------------------------------

    def _row(self, component: Any) -> int:
        if not isinstance(component, str):
            raise ValueError(f"component must be a label string such as {self.components[0]!r}, got {component!r}")
        if component not in self.components:
            shown = ", ".join(self.components[:12]) + (", ..." if len(self.components) > 12 else "")
            raise ValueError(f"component {component!r} is not in this ablation; choose one of: {shown}")
        return self.components.index(component)

    def _prompt(self, prompt: Any) -> int:
        if isinstance(prompt, bool) or not isinstance(prompt, int):
            raise ValueError(f"prompt must be an int index into the {len(self.prompts)} prompts, got {prompt!r}")
        if not 0 <= prompt < len(self.prompts):
            raise ValueError(f"prompt {prompt} is out of range: this ablation has {len(self.prompts)} prompts (0..{len(self.prompts) - 1})")
        return prompt

    def _check_runnable(self) -> None:
        if self._model is None:
            raise ValueError("this ablation has no model attached, so its runs cannot be re-run")
        if self._result.kind == "resample" and self._reference is None:
            raise ValueError(
                "a resample ablation needs its reference prompts to be re-run: "
                "pass Ablation.from_result(result, reference=[...]) (the same reference given to ablate)"
            )

    def component_logits(self, component: str, prompt: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-position logits ``[vocab]`` of ``prompts[prompt]`` without and with the
        ablation of row ``component`` (the result's kind; its reference, or for ``"mean"`` the
        result's prompts): one :func:`ablate` call on that prompt whose metric records the logits
        it is handed (first the clean run's, then the ablated run's)."""
        self._row(component)
        p = self._prompt(prompt)
        self._check_runnable()
        res = self._result
        comps = [component_spec(component)] if res.separately else [component_spec(c) for c in res.components]
        ref: list[str] | None = None
        if res.kind == "mean":
            ref = self._reference if self._reference is not None else list(res.prompts)
        elif res.kind == "resample":
            assert self._reference is not None
            ref = [self._reference[p % len(self._reference)]]
        seen: list[torch.Tensor] = []

        def capture(logits: torch.Tensor) -> torch.Tensor:
            seen.append(logits.detach().float().cpu().clone())
            return torch.zeros(logits.shape[0])

        ablate(self._model, [res.prompts[p]], capture, comps, kind=res.kind, reference=ref, progress=False)  # type: ignore[arg-type]
        return seen[0][0], seen[-1][0]

    def _topk(self, logits: torch.Tensor) -> list[dict]:
        probs = torch.softmax(logits.float(), -1)
        k = max(1, min(int(self.k), probs.shape[0]))
        p, ids = probs.topk(k)
        tok = self._model.tokenizer  # type: ignore[union-attr]
        return [
            {"token": tok.decode([int(i)]), "id": int(i), "prob": float(q), "logit": float(logits[int(i)])}
            for q, i in zip(p.tolist(), ids.tolist())
        ]

    def component_panel(self, component: str, prompt: int = 0) -> dict:
        """The side panel of one component on one prompt: the result's metric values and the
        top-k next tokens without (``clean_topk``) and with (``ablated_topk``) the ablation."""
        row, p = self._row(component), self._prompt(prompt)
        key = (row, p, int(self.k))
        if key not in self._memo:
            clean_l, abl_l = self.component_logits(component, p)
            c = float(wire.decode(self.clean)[p])
            a = float(wire.decode(self.ablated)[row, p])
            self._memo[key] = {
                "component": component,
                "prompt": p,
                "clean_metric": c,
                "ablated_metric": a,
                "effect": a - c,
                "clean_topk": self._topk(clean_l),
                "ablated_topk": self._topk(abl_l),
            }
        return self._memo[key]

    def select(self, component: str | None, prompt: int | None = None) -> dict:
        """Select a component (``None`` clears) and optionally a prompt; returns the panel.
        Raises ``ValueError`` (selection unchanged) for an unknown component or prompt."""
        if component is None or component == "":
            self.selected_component = ""
            return {}
        self._row(component)
        p = self.selected_prompt if prompt is None else self._prompt(prompt)
        self._check_runnable()
        self._busy = True
        try:
            self.status = "running"
            try:
                panel = self.component_panel(component, p)
            except Exception as exc:
                self.status = "error"
                self.error = str(exc)
                raise
            with self.hold_trait_notifications():
                self.selected_component = component
                self.selected_prompt = p
                self.panel = panel
                self.error = ""
                self.status = "ready"
        finally:
            self._busy = False
        return panel

    @traitlets.observe("selected_component", "selected_prompt", "k")
    def _on_selection(self, change: dict) -> None:
        if self._busy:
            return
        comp, p = self.selected_component, self.selected_prompt
        if comp == "":
            self.panel = {}
            return
        try:
            self.select(comp, p)
        except ValueError as exc:
            self.error = str(exc)
            self.status = "error"
            if change["name"] in ("selected_component", "selected_prompt"):
                self._busy = True
                try:
                    setattr(self, change["name"], change["old"])
                finally:
                    self._busy = False

    @request_handler("select")
    def _select_request(self, msg: dict, progress: Any) -> dict:
        comp = msg.get("component")
        prompt = msg.get("prompt", self.selected_prompt)
        if comp is not None and not isinstance(comp, str):
            raise ValueError(f"component must be a label string, got {comp!r}")
        return self.select(comp, prompt)

    # -- static export ----------------------------------------------------------------------

    def _static_extra(self, budget: int) -> dict:
        """Panels of the selected component and of the rows with the largest |mean effect|
        (first prompt; a handful in the copy kept in a notebook's outputs)."""
        if self._model is None or not self.can_run:
            return {"panel_cache": {}}
        n = 12 if budget >= 512 else 3
        order = self.effects().abs().argsort(descending=True).tolist()
        want = [(self.components[i], 0) for i in order[:n]]
        if self.selected_component:
            want.insert(0, (self.selected_component, self.selected_prompt))
        cache: dict[str, dict] = {}
        for comp, p in want:
            cache[f"{comp}|{p}"] = self.component_panel(comp, p)
        return {"panel_cache": cache}

    def _fallback_text(self) -> str:
        return repr(self._result)


__all__ = ["Ablation", "component_spec"]
