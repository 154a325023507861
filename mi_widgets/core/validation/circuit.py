"""Circuits as hypotheses: faithfulness, completeness under knockout, a random-circuit baseline,
and causal-scrubbing-lite.

A :class:`~mi_widgets.core.circuits.circuit.Circuit` (from EAP, EAP-IG, edge patching or ACDC)
claims that its edges carry the behaviour. :class:`CircuitPrediction` turns the claim into tests
run by :func:`~.hypothesis.validate` on ``Hypothesis(circuit, ...)``:

- **faithfulness**: the circuit's edges clean, every other edge corrupt, the normalised metric
  ``(m - m_corrupt) / (m_clean - m_corrupt)`` at least ``min_faithfulness``;
- **completeness**: the circuit's edges corrupt and the rest clean (knockout), the normalised metric
  at most ``max_knockout``;
- **beats random circuits**: faithfulness at least ``margin`` above the mean of ``n_random``
  random circuits of the same size;
- **causal scrubbing (lite)** (Chan et al. 2022, simplified to one resampling per edge class):
  given the variable the circuit is said to compute (``variable``: one hashable value per prompt,
  or a function of the prompt text), every circuit edge hears its sender run on *another* prompt
  that agrees on the variable, and every other edge hears a prompt drawn at random; the fraction
  of the metric kept, ``(m_scrubbed - m_random) / (m_clean - m_random)``, must be at least
  ``min_scrubbed``. A right variable keeps the behaviour; a wrong one (or a circuit that misses
  part of the mechanism) loses it.

:func:`causal_scrub` runs the last test on its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ScrubResult:
    """What :func:`causal_scrub` measured (metric means over the prompts)."""

    fraction_kept: float
    clean_metric: float
    random_metric: float
    scrubbed_metric: float
    n_prompts: int
    n_edges: int

    def __repr__(self) -> str:
        return (
            f"ScrubResult({self.fraction_kept:.2f} of the metric kept: clean {self.clean_metric:.3f}, "
            f"scrubbed {self.scrubbed_metric:.3f}, random {self.random_metric:.3f}; {self.n_edges} edges, "
            f"{self.n_prompts} prompts)"
        )


def _is_circuit(x: Any) -> bool:
    from ..circuits.circuit import Circuit

    return isinstance(x, Circuit)


def _values(prompts: list[str], variable: Any) -> list[Hashable]:
    if callable(variable):
        vals = [variable(p) for p in prompts]
    elif isinstance(variable, (list, tuple)):
        if len(variable) != len(prompts):
            raise ValueError(f"variable has {len(variable)} values for {len(prompts)} prompts; give one per prompt")
        vals = list(variable)
    else:
        raise TypeError("variable must be a list with one hashable value per prompt, or a function of the prompt text")
    for v in vals:
        try:
            hash(v)
        except TypeError:
            raise TypeError(f"variable values must be hashable (str, int, tuple), got {type(v).__name__}") from None
    return vals


def _partners(lengths: list[int], vals: list[Hashable], seed: int) -> tuple[list[int], list[int]]:
    """For each prompt: another one of the same token length that agrees on the variable, and a
    random one of the same length (any value)."""
    rng = random.Random(f"mw-scrub-{seed}")
    agree, rand = [], []
    for i, (t, v) in enumerate(zip(lengths, vals)):
        same = [j for j in range(len(vals)) if j != i and lengths[j] == t and vals[j] == v]
        if not same:
            raise ValueError(
                f"prompt {i} has no other prompt of the same token length ({t}) with the same variable value "
                f"{v!r}; give more prompts per value (causal scrubbing resamples from prompts that agree)"
            )
        anyone = [j for j in range(len(vals)) if j != i and lengths[j] == t]
        agree.append(rng.choice(same))
        rand.append(rng.choice(anyone))
    return agree, rand


def causal_scrub(
    circuit: Any,
    prompts: Sequence[str],
    metric: Any,
    variable: Sequence[Hashable] | Callable[[str], Hashable],
    *,
    seed: int = 0,
    progress: bool = False,
) -> ScrubResult:
    """Causal scrubbing (lite) of ``circuit`` on ``prompts`` (see the module docstring).

    ``metric``: the behaviour on each prompt (e.g. ``mw.logit_diff(ios, ss)`` with one answer pair
    per prompt); it is read on each prompt's own answers whatever run its edges heard.
    ``variable``: what the circuit is said to compute, one value per prompt (or a function of the
    text). Each prompt needs another prompt of the same token length with the same value."""
    from ..circuits._task import Task

    if not _is_circuit(circuit):
        raise TypeError(f"circuit must be a Circuit (from edge_attribution_patching, edge_patching or acdc), got {type(circuit).__name__}")
    model = circuit.model if circuit.model is not None else getattr(circuit.task, "model", None)
    if model is None:
        raise ValueError("this Circuit has no model attached (loaded from JSON?); causal scrubbing runs the model")
    from ..model.remote import require_local

    require_local(model, "causal_scrub", "circuits run on local models; load the model without remote=")
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings")
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError("causal scrubbing needs at least two prompts")
    vals = _values(prompts, variable)
    lengths = [int(model.to_tokens(p).shape[1]) for p in prompts]
    agree, rand = _partners(lengths, vals, seed)
    own = Task(model, prompts, [prompts[j] for j in rand], metric, "causal_scrub")
    scrub = Task(model, [prompts[j] for j in agree], [prompts[j] for j in rand], metric, "causal_scrub")
    if scrub.graph.n_edges != circuit.n_edges:
        raise ValueError(f"the circuit has {circuit.n_edges} edges but {model.name}'s graph has {scrub.graph.n_edges}; "
                         "was it found on another model?")  # fmt: skip
    m_clean, m_random = own.clean_metric, scrub.corrupt_metric
    m_scrub = float(scrub.evaluate(scrub.keep_masks(circuit.in_circuit[None].clone()), progress=progress)[0])
    gap = m_clean - m_random
    if abs(gap) < 1e-9:
        raise ValueError(f"the metric is the same on the prompts and on random ones ({m_clean:.6g}); nothing to keep")
    return ScrubResult((m_scrub - m_random) / gap, m_clean, m_random, m_scrub, len(prompts), int(circuit.in_circuit.sum()))


@dataclass
class CircuitPrediction:
    """The tests of a circuit hypothesis (see the module docstring). ``prompts``, ``metric`` and
    ``variable`` are needed only for causal scrubbing."""

    min_faithfulness: float = 0.8
    max_knockout: float = 0.2
    margin: float = 0.3
    n_random: int = 5
    prompts: Sequence[str] | None = None
    metric: Any = None
    variable: Sequence[Hashable] | Callable[[str], Hashable] | None = None
    min_scrubbed: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_faithfulness", "max_knockout", "margin", "min_scrubbed"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
                raise TypeError(f"{name} must be a number, got {x!r}")
        if isinstance(self.n_random, bool) or not isinstance(self.n_random, int) or self.n_random < 1:
            raise ValueError(f"n_random must be a positive int, got {self.n_random!r}")
        if self.variable is not None and (self.prompts is None or self.metric is None):
            raise ValueError("causal scrubbing needs prompts= and metric= with variable=")


def circuit_tests(circuit: Any, p: CircuitPrediction) -> list:
    """The :class:`~.verdict.TestResult` rows of ``p`` on ``circuit``."""
    from .verdict import TestResult

    if circuit.task is None:
        raise ValueError("this Circuit has no task attached (loaded from JSON?); its tests need the model and prompts")
    task = circuit.task
    n = int(circuit.in_circuit.sum())
    gen = torch.Generator().manual_seed(p.seed)
    rnd = torch.zeros(p.n_random, circuit.n_edges, dtype=torch.bool)
    for k in range(p.n_random):
        rnd[k, torch.randperm(circuit.n_edges, generator=gen)[:n]] = True
    keeps = torch.cat([circuit.in_circuit[None], ~circuit.in_circuit[None], rnd])
    v = task.normalise(task.evaluate(task.keep_masks(keeps))).tolist()
    faith, knock, rand = v[0], v[1], sum(v[2:]) / p.n_random
    detail = {"edges": n, "random_faithfulness": v[2:]}
    rows = [
        TestResult("circuit faithfulness", faith, p.min_faithfulness, ">=", faith >= p.min_faithfulness, "", detail),
        TestResult("circuit completeness (knockout)", knock, p.max_knockout, "<=", knock <= p.max_knockout, "", detail),
        TestResult("circuit beats random circuits", faith - rand, p.margin, ">=", faith - rand >= p.margin, "", detail),
    ]
    if p.variable is not None:
        s = causal_scrub(circuit, list(p.prompts or []), p.metric, p.variable, seed=p.seed)
        rows.append(TestResult("causal scrubbing (fraction kept)", s.fraction_kept, p.min_scrubbed, ">=",
                               s.fraction_kept >= p.min_scrubbed, "",
                               {"clean": s.clean_metric, "scrubbed": s.scrubbed_metric, "random": s.random_metric}))  # fmt: skip
    return rows




__all__ = ["CircuitPrediction", "ScrubResult", "causal_scrub", "circuit_tests"]
