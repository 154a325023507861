"""Predict, then reveal: a view that asks a question hides its result until a guess is recorded.

``w.predict = "Which layer carries the fact?"`` hides the numbers (the view shows the question
and the bare axes); the student's click on a cell / layer records a guess (the ``"guess"``
request, or ``w.guess(...)`` from Python), and the view then shows the result with the guess and
the answer side by side. ``w.guesses`` keeps every guess, one dict per guess: ``question``,
where (``layer``, ``position``/``head``/``site``), ``label``, ``value`` (the result there),
``answer`` / ``answer_label`` / ``answer_value`` (where the result is largest) and ``correct``.
A new question hides the result again until it has its own guess.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._base import Field, request_handler


class Predicts:
    """Mixin for a view with ``predict`` and ``guesses`` traits (declared by the view)."""

    predict: str
    guesses: list

    @property
    def revealed(self) -> bool:
        """Whether the view shows its result: no question, or the question has a guess."""
        return not self.predict or any(g.get("question") == self.predict for g in self.guesses)

    def _guess_record(self, where: dict) -> dict:  # pragma: no cover - each view defines it
        raise NotImplementedError

    def guess(self, **where: Any) -> dict:
        """Record a guess for the current question (as a click in the view does) and reveal."""
        if not self.predict:
            raise ValueError("there is no question to guess for; set w.predict = '...' first")
        record = {"question": self.predict, **self._guess_record(where)}
        self.guesses = [*self.guesses, record]
        return record

    @request_handler(
        "guess", layer=Field(object, required=True), position=Field(int, min=0), head=Field(int, min=0),
        site=Field(str),
    )
    def _guess_request(self, msg: dict, progress: Any) -> dict:
        return self.guess(**msg)


def patching_guess(view: Any, where: dict) -> dict:
    """A PatchingGrid guess: the cell, its value, and the cell of largest |value|."""
    layer, head, position, r, c = view._cell_index(where)
    grid = view._grid(view.result)
    flat = grid.reshape(-1).abs().nan_to_num(nan=-1.0)
    best = int(torch.argmax(flat))
    br, bc = divmod(best, grid.shape[1])
    a_layer, a_head, a_pos, _, _ = view._cell_index({"row": br, "col": bc})

    def label(layer: int, head: int | None, pos: int | None) -> str:
        s = f"layer {layer}"
        if head is not None:
            s += f", head {head}"
        if pos is not None:
            s += f", position {pos} {view.clean_tokens[pos]!r}"
        return s

    def cell(layer: int, head: int | None, pos: int | None) -> dict:
        out: dict = {"layer": layer}
        if head is not None:
            out["head"] = head
        if pos is not None:
            out["position"] = pos
        return out

    return {
        **cell(layer, head, position),
        "label": label(layer, head, position),
        "value": float(grid[r, c]),
        "answer": cell(a_layer, a_head, a_pos),
        "answer_label": label(a_layer, a_head, a_pos),
        "answer_value": float(grid[br, bc]),
        "correct": (r, c) == (br, bc),
        "same_layer": layer == a_layer,
    }


def probe_guess(view: Any, where: dict) -> dict:
    """A ProbeAccuracy guess: the layer, its mean test accuracy, and the best layer's."""
    site, layer = view._key(where["layer"], where.get("site") or view.site or None)

    def acc(key: tuple[str, int]) -> float:
        v = [r["accuracy"] for r in view.result.rows
             if (r["site"], r["layer"]) == key and r["split"] == "test" and not math.isnan(r["accuracy"])]
        return sum(v) / len(v) if v else math.nan

    best = view.best_layer("test")

    def label(key: tuple[str, int]) -> str:
        return "embed" if key[1] < 0 else f"{key[0]} {key[1]}"

    return {
        "layer": layer,
        "site": site,
        "label": label((site, layer)),
        "value": acc((site, layer)),
        "answer": {"layer": best[1], "site": best[0]},
        "answer_label": label(best),
        "answer_value": acc(best),
        "correct": (site, layer) == tuple(best),
        "same_layer": layer == best[1],
    }
