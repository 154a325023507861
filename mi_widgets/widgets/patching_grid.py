"""PatchingGrid: an activation-patching heatmap; click a cell for that patched run's top-k tokens.

See docs/widget_protocol.md ("PatchingGrid") for the traits, requests and DOM hooks.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

import torch
import traitlets

from .. import wire
from ..core import metrics as _metrics
from ..core.interventions.attribution_patching import attribution_patching
from ..core.interventions.checks import PATCH_SITES
from ..core.interventions.patching import PatchingResult, activation_patching
from ..core.metrics import Metric, as_metric
from ..core.model.lock import on_wait
from ._base import Field, MIWidget, ReportsWork, _short, bundle, check_traits, request_handler
from .code import ShowsCode, patching_grid_code
from .predict import Predicts, patching_guess

MODES = ("exact", "attribution")


class _Cancelled(Exception):
    pass


class UnsupportedResult(ImportError, TypeError):
    """Raised for results this widget cannot show (an ImportError, so that a result's
    ``_repr_mimebundle_`` falls back to text)."""


def _metric_from_name(name: str) -> Metric | None:
    """Rebuild ``logit_diff(' a', ' b')`` / ``prob(' a')`` / ``kl_to_clean`` from a metric name
    (a PatchingResult keeps only the name). ``None`` when the name is not one of those."""
    if name == "kl_to_clean":
        return _metrics.kl_to_clean()
    try:
        node = ast.parse(name, mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords):
        return None
    fn = {"logit_diff": _metrics.logit_diff, "prob": _metrics.prob}.get(node.func.id)
    if fn is None:
        return None
    try:
        args = [ast.literal_eval(a) for a in node.args]
        return fn(*args)
    except (ValueError, TypeError, SyntaxError):
        return None


class PatchingGrid(Predicts, ShowsCode, ReportsWork, MIWidget):
    """Heatmap of a :class:`~mi_widgets.core.interventions.patching.PatchingResult` (layers × positions or
    heads), diverging colours centred at 0. Hover a cell for its value; click it for the patched
    run's top-k next tokens next to the clean and corrupt runs' (one patched forward, run in
    Python on request). The site selector and the exact/attribution toggle re-run the sweep in a
    background thread, filling cells as batches complete (cancellable).

    ``PatchingGrid.from_result(result, metric=...)``; ``result.widget()`` does the same. The
    metric is needed only for sweeps from the view; metrics made by ``logit_diff``, ``prob`` and
    ``kl_to_clean`` are rebuilt from ``result.metric_name`` when not given.
    """

    _stem = "patching_grid"

    dims = traitlets.List(traitlets.Unicode()).tag(sync=True)
    layers = traitlets.List(traitlets.Int()).tag(sync=True)
    positions = traitlets.List(traitlets.Int()).tag(sync=True)
    heads = traitlets.List(traitlets.Int()).tag(sync=True)
    clean_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    corrupt_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    clean_prompt = traitlets.Unicode("").tag(sync=True)
    corrupt_prompt = traitlets.Unicode("").tag(sync=True)
    values = traitlets.Dict().tag(sync=True)
    filled = traitlets.Dict().tag(sync=True)
    n_filled = traitlets.Int(0).tag(sync=True)
    n_cells = traitlets.Int(0).tag(sync=True)
    site = traitlets.Unicode("resid_pre").tag(sync=True)
    sites = traitlets.List(traitlets.Unicode()).tag(sync=True)
    mode = traitlets.Unicode("exact").tag(sync=True)
    direction = traitlets.Unicode("denoise").tag(sync=True)
    metric_name = traitlets.Unicode("").tag(sync=True)
    normalized = traitlets.Bool(True).tag(sync=True)
    n_pairs = traitlets.Int(1).tag(sync=True)
    clean_topk = traitlets.List().tag(sync=True)
    corrupt_topk = traitlets.List().tag(sync=True)
    can_sweep = traitlets.Bool(False).tag(sync=True)
    k = traitlets.Int(10).tag(sync=True)
    #: the clicked cell as model indices: ``{"layer", "position"}``, ``{"layer", "head"}``, both,
    #: or ``{"layer"}``; ``{}`` for none. Set it from Python to select a cell in the view.
    selected_cell = traitlets.Dict().tag(sync=True)
    #: predict-then-reveal: a question; the view hides its result until a cell is clicked as a guess
    predict = traitlets.Unicode("").tag(sync=True)
    #: every guess recorded (see mi_widgets/widgets/predict.py): where, its value, the answer
    guesses = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(
        self,
        result: PatchingResult,
        *,
        metric: Any = None,
        mode: str = "exact",
        k: int = 10,
        **kwargs: Any,
    ) -> None:
        if not isinstance(result, PatchingResult):
            raise UnsupportedResult(f"PatchingGrid shows a PatchingResult, got {type(result).__name__}")
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._model = result.model
        if metric is None:
            metric = result.metric
        self._metric = as_metric(metric) if metric is not None else _metric_from_name(result.metric_name)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._cell_memo: dict[tuple, list] = {}
        super().__init__(k=k, **kwargs)
        with self.hold_trait_notifications():
            self.sites = list(PATCH_SITES)
            self.mode = "attribution" if "attribution" in result.direction else mode
            self.can_sweep = self._model is not None and self._metric is not None
            self._show(result)
            self.clean_prompt = result.clean[0]
            self.corrupt_prompt = result.corrupt[0]
            self.n_pairs = result.n_pairs
        if self._model is not None:
            self.clean_topk, self.corrupt_topk = self._baseline_topk(result)

    @traitlets.validate("selected_cell")
    def _valid_selection(self, proposal: Any) -> dict:
        value = proposal["value"]
        if not value:
            return {}
        try:
            layer, head, position, _, _ = self._cell_index(dict(value))
        except (ValueError, TypeError) as exc:
            raise traitlets.TraitError(f"selected_cell {_short(value)} is not a cell of this grid: {exc}") from None
        return _cell_dict(layer, head, position)

    _check = check_traits(
        k=Field(int, min=1),
        mode=Field(str, choices=MODES),
        # the sites a sweep can run, or the one of the result shown (causal tracing's own)
        site=Field(str, choices=lambda w: [*PATCH_SITES, *([w._result.site] if hasattr(w, "_result") else [])]),
    )

    def select(self, layer: int | None, position: int | None = None, head: int | None = None) -> None:
        """Select a cell (model indices), as a click in the view does; ``layer=None`` clears."""
        if layer is None:
            self.selected_cell = {}
            return
        msg: dict[str, Any] = {"layer": layer}
        if position is not None:
            msg["position"] = position
        if head is not None:
            msg["head"] = head
        self.selected_cell = msg

    @property
    def result(self) -> PatchingResult:
        """The result behind the current grid (unchanged by a sweep in progress or cancelled)."""
        return self._result

    def _guess_record(self, where: dict) -> dict:
        return patching_guess(self, where)

    _write_code = staticmethod(patching_grid_code)  # code(): see ShowsCode

    # -- layout ---------------------------------------------------------------------------

    @staticmethod
    def _shape(result: PatchingResult) -> tuple[int, int]:
        v = result.values
        if v.dim() == 1:
            return v.shape[0], 1
        if v.dim() == 2:
            return v.shape[0], v.shape[1]
        return v.shape[0] * v.shape[1], v.shape[2]  # (layer, head, position): rows = layer.head

    @staticmethod
    def _grid(result: PatchingResult) -> torch.Tensor:
        rows, cols = PatchingGrid._shape(result)
        return result.values.detach().float().cpu().reshape(rows, cols)

    def _show(self, result: PatchingResult, mode: str | None = None) -> None:
        self._result = result
        grid = self._grid(result)
        self.dims = list(result.dims)
        self.layers = list(result.layers)
        self.positions = list(result.positions or [])
        self.heads = list(result.heads or [])
        self.clean_tokens = list(result.clean_tokens[0])
        self.corrupt_tokens = list(result.corrupt_tokens[0])
        self.site = result.site
        self.direction = result.direction
        self.metric_name = result.metric_name
        self.normalized = result.normalized
        if mode is not None:
            self.mode = mode
        self.values = wire.encode(grid, "float32")
        self.filled = wire.encode(torch.ones_like(grid, dtype=torch.uint8), "uint8")
        self.n_cells = self.n_filled = grid.numel()
        self._keep_selection()

    def _keep_selection(self) -> None:
        """Drop the selection if the current grid has no such cell (e.g. after a sweep of
        another site changed the dims)."""
        sel = self.selected_cell
        if sel:
            try:
                layer, head, position, _, _ = self._cell_index(dict(sel))
            except (ValueError, TypeError):
                self.selected_cell = {}
            else:
                if _cell_dict(layer, head, position) != sel:
                    self.selected_cell = {}

    def _cell_index(self, msg: dict) -> tuple[int, int | None, int | None, int, int]:
        """``(layer, head, position, row, col)`` of a request's cell (``{layer, position|head}``
        as model indices, or ``{row, col}`` as grid indices)."""
        res = self._result
        layers, heads, positions = res.layers, res.heads, res.positions
        nh = len(heads) if heads is not None else 1
        if "row" in msg or "col" in msg:
            try:
                r, c = int(msg.get("row", 0)), int(msg.get("col", 0))
            except (TypeError, ValueError):
                raise ValueError(f"row and col must be ints, got {msg!r}") from None
            rows, cols = self._shape(res)
            if not (0 <= r < rows and 0 <= c < cols):
                raise ValueError(f"cell ({r}, {c}) is outside the {rows} × {cols} grid")
            if len(res.dims) == 3:
                li, hi, pi = r // nh, r % nh, c
            elif len(res.dims) == 2 and res.dims[1] == "head":
                li, hi, pi = r, c, None
            elif len(res.dims) == 2:
                li, hi, pi = r, None, c
            else:
                li, hi, pi = r, None, None
            return (
                layers[li],
                heads[hi] if hi is not None and heads is not None else None,
                positions[pi] if pi is not None and positions is not None else None,
                r,
                c,
            )

        def find(name: str, options: list[int] | None) -> int | None:
            if options is None:
                return None
            if name not in msg:
                raise ValueError(f"the cell needs {name!r} (one of {options})")
            try:
                v = int(msg[name])
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be an int, got {msg[name]!r}") from None
            if v not in options:
                raise ValueError(f"{name} {v} is not in this grid (one of {options})")
            return options.index(v)

        li = find("layer", layers)
        hi = find("head", heads)
        pi = find("position", positions)
        assert li is not None
        r = li * nh + (hi or 0) if len(res.dims) == 3 else li
        c = pi if pi is not None else (hi if hi is not None else 0)
        return layers[li], (heads[hi] if hi is not None else None), (positions[pi] if pi is not None else None), r, c

    # -- top-k ----------------------------------------------------------------------------

    def _topk(self, logits: torch.Tensor) -> list[dict]:
        """Top-k next tokens of one final-position logits row, as ``[{token, id, prob, logit}]``."""
        logits = logits.detach().float().reshape(-1)
        probs = torch.softmax(logits, -1)
        k = max(1, min(int(self.k), probs.shape[0]))
        p, ids = probs.topk(k)
        tok = self._model.tokenizer
        return [
            {"token": tok.decode([int(i)]), "id": int(i), "prob": float(q), "logit": float(logits[int(i)])}
            for q, i in zip(p.tolist(), ids.tolist())
        ]

    def _patched_logits(
        self, result: PatchingResult, layer: int, head: int | None, position: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final-position logits of the clean, corrupt and patched runs of the first prompt
        pair, for one cell: one activation_patching call on a single cell, whose metric records
        the (final-position only) logits it is handed."""
        seen: list[torch.Tensor] = []

        def capture(logits: torch.Tensor) -> torch.Tensor:
            seen.append(logits.detach().float().cpu().clone())
            return torch.zeros(logits.shape[0])

        kw: dict[str, Any] = {"heads": [head]} if head is not None else {}
        activation_patching(
            self._model,
            result.clean[0],
            result.corrupt[0],
            capture,
            site=result.site,
            positions=[position] if position is not None else "all",
            layers=[layer],
            direction=_base_direction(result),
            normalize=False,
            progress=False,
            **kw,
        )
        # calls: clean baseline, corrupt baseline, then the patched row
        return seen[0][0], seen[1][0], seen[-1][-1]

    def _baseline_topk(self, result: PatchingResult) -> tuple[list, list]:
        pos = result.positions[0] if result.positions else None
        head = result.heads[0] if result.heads else None
        with self._lock:
            clean, corrupt, _ = self._patched_logits(result, result.layers[0], head, pos)
        return self._topk(clean), self._topk(corrupt)

    def cell_topk(self, layer: int, position: int | None = None, head: int | None = None) -> list[dict]:
        """Top-k next tokens of the first pair's run patched at one cell of the current grid."""
        msg: dict[str, Any] = {"layer": layer}
        if position is not None:
            msg["position"] = position
        if head is not None:
            msg["head"] = head
        return self.request("cell", msg)["topk"]

    def _cell_topk(self, layer: int, head: int | None, position: int | None) -> list:
        res = self._result
        key = (res.site, _base_direction(res), layer, head, position, int(self.k))
        if key not in self._cell_memo:
            _, _, patched = self._patched_logits(res, layer, head, position)
            self._cell_memo[key] = self._topk(patched)
        return self._cell_memo[key]

    @request_handler(
        "cell", layer=Field(int, min=0), position=Field(int, min=0), head=Field(int, min=0),
        row=Field(int, min=0), col=Field(int, min=0),
    )
    def _cell(self, msg: dict, progress: Any) -> dict:
        if self._model is None:
            raise ValueError("this grid has no model attached, so cells cannot be re-run")
        layer, head, position, r, c = self._cell_index(msg)
        if not self._lock.acquire(blocking=False):
            raise ValueError("a sweep is running; cancel it or wait for it to finish")
        try:
            topk = self._cell_topk(layer, head, position)
        finally:
            self._lock.release()
        value = float(self._grid(self._result)[r, c])
        return {"row": r, "col": c, "layer": layer, "head": head, "position": position, "value": value, "topk": topk}

    # -- sweeps ---------------------------------------------------------------------------

    @request_handler("sweep", site=Field(str, choices=PATCH_SITES), mode=Field(str, choices=MODES))
    def _sweep_request(self, msg: dict, progress: Any) -> dict:
        self.sweep(msg.get("site", self.site), msg.get("mode", self.mode), background=True)
        return {"started": True, "site": self.site, "mode": self.mode}

    @request_handler("cancel", strict=True)  # takes no fields
    def _cancel_request(self, msg: dict, progress: Any) -> dict:
        running = self._thread is not None and self._thread.is_alive()
        self._cancel.set()
        return {"cancelled": running or self.status == "running"}

    def cancel(self) -> None:
        """Stop a running sweep after its current batch; the previous grid stays."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background sweep has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def sweep(self, site: str | None = None, mode: str | None = None, *, background: bool = False) -> None:
        """Re-run the grid for ``site`` with ``mode`` (``"exact"``: one activation-patching call whose
        cells fill the view as its batches complete; ``"attribution"``: one attribution-patching pass), same prompts,
        positions, heads, direction and metric. Invalid arguments raise before anything runs."""
        site = self.site if site is None else site
        mode = self.mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if site not in PATCH_SITES:
            raise ValueError(f"site must be one of {list(PATCH_SITES)}, got {site!r}")
        if self._model is None:
            raise ValueError("this grid has no model attached (it was built from a bare result)")
        if self._metric is None:
            raise ValueError(
                f"the metric {self._result.metric_name!r} cannot be rebuilt from its name; "
                "pass metric= to PatchingGrid.from_result / result.widget() to sweep from the view"
            )
        if not self._lock.acquire(blocking=False):
            raise ValueError("a sweep is already running")
        self._cancel.clear()
        if background:
            self._thread = threading.Thread(target=self._run_sweep, args=(site, mode), daemon=True)
            self._thread.start()
        else:
            self._run_sweep(site, mode)

    def _run_sweep(self, site: str, mode: str) -> None:
        """Runs with ``self._lock`` held; releases it."""
        old = self._result
        old_state = {n: getattr(self, n) for n in ("mode", "site", "values", "filled", "n_filled", "n_cells",
                                                     "dims", "layers", "positions", "heads", "selected_cell")}

        def restore() -> None:
            self._result = old
            for name, v in old_state.items():
                setattr(self, name, v)

        def waiting(on: bool) -> None:  # another job holds the model: say so, then go on
            if on and self.status == "running":
                self.status = "waiting"
            elif not on and self.status == "waiting":
                self.status = "running"

        wait_hook = on_wait(waiting)
        wait_hook.__enter__()
        try:
            kw: dict[str, Any] = dict(
                site=site,
                positions=old.positions if old.positions is not None else "all",
                direction=_base_direction(old),
                normalize=old.normalized,
            )
            if site == "head_out" and old.heads is not None:
                kw["heads"] = old.heads
            with self.hold_trait_notifications():
                self.status, self.progress, self.error = "running", 0.0, ""
            if mode == "attribution":
                res = attribution_patching(self._model, old.clean, old.corrupt, self._metric, layers=old.layers, **kw)
                if self._cancel.is_set():
                    raise _Cancelled
            else:
                started = False

                def update(part: PatchingResult, done: int, total: int) -> None:
                    # called by activation_patching after every batch, in this thread
                    nonlocal started
                    if self._cancel.is_set():
                        raise _Cancelled
                    grid = self._grid(part)
                    mask = (~torch.isnan(grid)).to(torch.uint8)
                    with self.hold_trait_notifications():
                        if not started:
                            started = True
                            self.site, self.mode = site, mode
                            self.dims = list(part.dims)
                            self.heads = list(part.heads or [])
                            self.n_cells = grid.numel()
                        self.values = wire.encode(grid, "float32")
                        self.filled = wire.encode(mask, "uint8")
                        self.n_filled = int(mask.sum())
                        self.progress = done / total

                res = activation_patching(
                    self._model, old.clean, old.corrupt, self._metric, layers=old.layers,
                    progress=False, on_update=update, **kw,
                )
                if self._cancel.is_set():
                    raise _Cancelled
            with self.hold_trait_notifications():
                self._show(res, mode)
                self.status, self.progress = "ready", 1.0
        except _Cancelled:
            with self.hold_trait_notifications():
                restore()
                self.status, self.progress = "cancelled", 1.0
        except Exception as exc:  # shown in the view; the previous grid stays
            with self.hold_trait_notifications():
                restore()
                self.status, self.error, self.progress = "error", f"{type(exc).__name__}: {exc}"[:300], 1.0
        except BaseException:  # Ctrl-C in a foreground sweep: the previous grid, then re-raise
            with self.hold_trait_notifications():
                restore()
                self.status, self.progress = "cancelled", 1.0
            raise
        finally:
            wait_hook.__exit__(None, None, None)
            self._cancel.clear()
            self._lock.release()

    # -- static export --------------------------------------------------------------------

    def _static_extra(self, budget: int) -> dict:
        """Top-k of the patched runs of the cells with the largest |value| (20 in an export, 4
        in a notebook's saved copy), keyed ``"row,col"``."""
        if self._model is None or not self._lock.acquire(blocking=False):
            return {"cell_cache": {}}
        try:
            n = 20 if budget >= 64 else 4
            grid = self._grid(self._result)
            flat = grid.reshape(-1).abs().nan_to_num(nan=-1.0)
            order = torch.argsort(flat, descending=True, stable=True)[: min(n, flat.numel())]
            cols = grid.shape[1]
            cache = {}
            for idx in order.tolist():
                r, c = divmod(int(idx), cols)
                layer, head, position, _, _ = self._cell_index({"row": r, "col": c})
                cache[f"{r},{c}"] = self._cell_topk(layer, head, position)
            return {"cell_cache": cache}
        finally:
            self._lock.release()

    def _fallback_text(self) -> str:
        r = self._result
        return f"PatchingGrid · {r.model_name} · {r.site} · {r.direction} · {r.metric_name}\n{r.clean[0]!r} / {r.corrupt[0]!r}"


def _base_direction(result: PatchingResult) -> str:
    """``"denoise"`` or ``"noise"`` (attribution results say e.g. ``"denoise (attribution)"``)."""
    return result.direction.split(" ")[0]


def _cell_dict(layer: int, head: int | None, position: int | None) -> dict:
    """A cell as the ``selected_cell`` trait holds it."""
    out: dict[str, int] = {"layer": int(layer)}
    if head is not None:
        out["head"] = int(head)
    if position is not None:
        out["position"] = int(position)
    return out
