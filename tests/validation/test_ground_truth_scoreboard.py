"""The ground-truth scoreboard (``benchmarks/ground_truth.py``) on its fast rows: every row must
have the outcome recorded in ``EXPECTED``. A method that found the planted answer and stops
finding it fails here; so does a trap (zero-ablation vs the backup head, attention patterns vs
the look-alike decoys, interchange vs the dormant pathway) that stops trapping, which would mean the zoo model changed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "ground_truth.py"


def _load():
    spec = importlib.util.spec_from_file_location("benchmarks_ground_truth", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


_GT = _load()  # at collection: its FAST rows are the parameters below


@pytest.fixture(scope="module")
def gt():
    return _GT


@pytest.fixture(scope="module")
def rows(gt):
    return {r.id: r for r in gt.run(gt.FAST)}


def test_fast_rows_cover_both_outcomes(gt):
    assert set(gt.FAST) <= set(gt.EXPECTED)
    outcomes = {gt.EXPECTED[i] for i in gt.FAST}
    assert outcomes == {True, False}


@pytest.mark.parametrize("rid", _GT.FAST)
def test_row_has_its_recorded_outcome(gt, rows, rid):
    r = rows[rid]
    assert r.passed == gt.EXPECTED[rid], f"{rid}: {r.method} found {r.found}"


def test_table_marks_the_traps(gt, rows):
    md = gt.table(list(rows.values()))
    assert md.count("fooled (by design)") == sum(not gt.EXPECTED[i] for i in rows)
    assert all(line.count("|") == 8 for line in md.splitlines())
