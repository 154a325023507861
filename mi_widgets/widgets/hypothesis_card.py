"""HypothesisCard: a validated hypothesis at a glance (``Verdict.widget()``, or a Verdict shown in
a notebook): the unit and description with PASS/FAIL, the ablation-kind disagreements, one row per
test (figure, threshold, pass/fail), and the counterexamples of the selected test.

Display only: the verdict is computed by ``mi_widgets.core.validation.validate``; the view sends
no requests. Traits: ``model_name``, ``unit``, ``description``, ``passed``, ``tests`` (one dict per
test: name, figure, threshold, direction, passed, unit), ``counterexamples`` (test, kind, context,
activation, edit (the token edit of a gradient-guided one, else ""); worst first, at most ``max_counterexamples``), ``disagreements``, ``selected_test``
(row index, -1 = none; synced back from the browser).
"""

from __future__ import annotations

import math
from typing import Any

import traitlets

from ..core.validation.verdict import Verdict
from ._base import Field, MIWidget, bundle, check_traits


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


class HypothesisCard(MIWidget):
    """The card of one :class:`~mi_widgets.core.validation.verdict.Verdict`.

    ``HypothesisCard.from_result(verdict, max_counterexamples=50)``; ``verdict.widget()`` does
    the same. Click a test row (or set ``selected_test``) to list that test's counterexamples.
    """

    _stem = "hypothesis_card"

    model_name = traitlets.Unicode("").tag(sync=True)
    unit = traitlets.Unicode("").tag(sync=True)
    description = traitlets.Unicode("").tag(sync=True)
    passed = traitlets.Bool(False).tag(sync=True)
    tests = traitlets.List(traitlets.Dict()).tag(sync=True)
    counterexamples = traitlets.List(traitlets.Dict()).tag(sync=True)
    disagreements = traitlets.List(traitlets.Unicode()).tag(sync=True)
    selected_test = traitlets.Int(-1).tag(sync=True)

    def __init__(self, verdict: Verdict, *, max_counterexamples: int = 50, **kwargs: Any) -> None:
        if not isinstance(verdict, Verdict):
            raise ValueError(f"HypothesisCard shows a Verdict, got {type(verdict).__name__}")
        if (
            isinstance(max_counterexamples, bool)
            or not isinstance(max_counterexamples, int)
            or max_counterexamples < 0
        ):
            raise ValueError(
                f"max_counterexamples must be an int >= 0, got {max_counterexamples!r}"
            )
        self._esm = bundle(self._stem).read_text(encoding="utf-8")
        self._result = verdict
        super().__init__(**kwargs)
        ces = [
            {"test": t.name, "kind": c.kind, "context": c.context, "activation": _num(c.activation), "edit": c.edit}
            for t in verdict.tests
            for c in t.counterexamples
        ][:max_counterexamples]
        with self.hold_trait_notifications():
            self.model_name = verdict.model_name
            self.unit = verdict.unit
            self.description = verdict.description
            self.passed = verdict.passed
            self.tests = [
                {"name": t.name, "figure": _num(t.figure), "threshold": _num(t.threshold),
                 "direction": t.direction, "passed": bool(t.passed), "unit": t.unit}
                for t in verdict.tests
            ]  # fmt: skip
            self.counterexamples = ces
            self.disagreements = list(verdict.disagreements)

    _check = check_traits(selected_test=Field(int, min=-1, max=lambda w: len(w.tests) - 1))  # -1: none
