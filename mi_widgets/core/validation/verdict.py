"""The result of :func:`~mi_widgets.core.validation.hypothesis.validate`: one row per test (its
figure, the threshold it had to meet, pass or fail) and the counterexamples that explain a fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._views import DisplaysAsView


@dataclass
class Counterexample:
    """A token where the description and the unit disagree.

    ``kind``: ``"predicted, silent"`` (the description says the unit fires, it does not),
    ``"silent prediction, fires"`` (the reverse) or ``"attends elsewhere"`` (the predicted keys
    got little attention); ``"... (edited)"`` when a gradient-guided token edit of a corpus text
    produced it (``edit`` says which). ``context`` marks the token as ``[[token]]``."""

    kind: str
    text_index: int
    position: int
    token: str
    context: str
    activation: float
    predicted: float
    #: for a counterexample found by a token edit: which token was replaced ("" for a corpus one)
    edit: str = ""


@dataclass
class TestResult:
    """One test of a hypothesis: ``figure`` compared with ``threshold`` (``figure >= threshold``
    when ``direction == ">="``, ``<=`` otherwise)."""

    __test__ = False  # not a pytest class

    name: str
    figure: float
    threshold: float
    direction: str
    passed: bool
    unit: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    counterexamples: list[Counterexample] = field(default_factory=list)

    def __repr__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"{mark} {self.name}: {self.figure:.3f} {self.unit} (needs {self.direction} {self.threshold:g})"


@dataclass(repr=False)
class Verdict(DisplaysAsView):
    """Every test of one :class:`~mi_widgets.core.validation.hypothesis.Hypothesis`.

    ``passed``: every test passed. ``disagreements``: notes where ablation kinds (zero, mean,
    resample) disagree about the same prediction; a disagreement is a finding in itself (self-repair,
    an off-distribution zero), so the verdict names it rather than averaging it away.

    In a notebook a verdict shows as its HypothesisCard (``.widget()``); ``repr`` is the text form."""

    unit: str
    description: str
    model_name: str
    tests: list[TestResult]
    disagreements: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.tests) and all(t.passed for t in self.tests)

    def test(self, name: str) -> TestResult:
        """The test called ``name`` (e.g. ``"ablation (resample)"``)."""
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(f"no test {name!r}; this verdict has {[t.name for t in self.tests]}")

    @property
    def counterexamples(self) -> list[Counterexample]:
        return [c for t in self.tests for c in t.counterexamples]

    def __repr__(self) -> str:
        head = "PASSES" if self.passed else "FAILS"
        lines = [f"Verdict({self.model_name} {self.unit}: {self.description!r} {head})"]
        lines += [f"  {t!r}" for t in self.tests]
        lines += [f"  ! {d}" for d in self.disagreements]
        ce = self.counterexamples
        if ce:
            lines.append(f"  {len(ce)} counterexample{'s' if len(ce) != 1 else ''}, e.g.:")
            lines += [f"    {c.kind}: {c.context} (activation {c.activation:.3g})" for c in ce[:3]]
        return "\n".join(lines)

    def to_pandas(self) -> Any:
        """One row per test: ``test``, ``figure``, ``threshold``, ``direction``, ``passed``,
        ``unit``, ``n_counterexamples``."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "test": t.name,
                    "figure": t.figure,
                    "threshold": t.threshold,
                    "direction": t.direction,
                    "passed": t.passed,
                    "unit": t.unit,
                    "n_counterexamples": len(t.counterexamples),
                }
                for t in self.tests
            ]
        )

    def counterexamples_table(self) -> Any:
        """The counterexamples as a table (ranked within each test, worst first)."""
        import pandas as pd

        rows = []
        for t in self.tests:
            for rank, c in enumerate(t.counterexamples):
                rows.append({"test": t.name, "rank": rank, **c.__dict__})
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """Matplotlib figure: each test's figure as a bar (green pass, red fail) with its threshold
        as a tick; figures in different units share the axis, so read the labels."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(self.tests) + 1.2))
        else:
            fig = ax.figure
        ys = list(range(len(self.tests)))[::-1]
        for y, t in zip(ys, self.tests):
            ax.barh(y, t.figure, color="#3a9a5b" if t.passed else "#c8453c", height=0.6)
            ax.plot([t.threshold, t.threshold], [y - 0.4, y + 0.4], color="0.15", lw=2)
        ax.set_yticks(ys, [f"{t.name} ({t.direction} {t.threshold:g})" for t in self.tests])
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_title(
            f"{self.model_name} {self.unit}: {'passes' if self.passed else 'fails'}", fontsize=10
        )
        fig.tight_layout()
        return fig


__all__ = ["Counterexample", "TestResult", "Verdict"]
