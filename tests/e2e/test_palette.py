"""A view's ``palette`` set from Python repaints that view in a real JupyterLab (headless
chromium), and only that view.

One notebook (one kernel): cell 0 patches "The Eiffel Tower is in" / "The Senso Temple is in" on
zoo:tiny per position and shows two PatchingGrids of the same result. ``w.palette =
"greyscale"`` must turn every painted cell of the first grid grey (r == g == b, sign still
readable as lightness) while the second keeps its colours; setting it back restores the first
grid's colours exactly. DOM hooks: docs/widget_protocol.md ("PatchingGrid", "Palettes").
"""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.e2e

CELL_S = 120


@pytest.fixture(scope="module")
def nb(lab, model_expr):
    cell0 = (
        "import mi_widgets as mw\n"
        "from IPython.display import display\n"
        f"m = {model_expr}\n"
        'r = mw.activation_patching(m, "The Eiffel Tower is in", "The Senso Temple is in",\n'
        '                           mw.logit_diff(" Paris", " Tokyo"), positions="each", progress=False)\n'
        "w, w2 = r.widget(), r.widget()\n"
        "display(w)\n"
        "display(w2)"
    )
    return lab.run_notebook("palette.ipynb", [cell0])


def _rgb(css: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, [\d.]+)?\)", css)
    assert m, css
    return int(m[1]), int(m[2]), int(m[3])


def _backgrounds(root) -> list[tuple[int, int, int]]:
    css = root.locator(".mw-cell").evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    return [_rgb(c) for c in css]


def _wait_for(root, check, timeout_s: float = 15.0) -> list[tuple[int, int, int]]:
    """The cells' backgrounds once ``check(backgrounds)`` holds (comm messages are asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = _backgrounds(root)
        if check(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _grey(c: tuple[int, int, int]) -> bool:
    return c[0] == c[1] == c[2]


def test_palette_from_python_repaints_only_its_view(nb):
    grids = nb.cell(0).locator(".jp-OutputArea .mw-patching-grid")
    grids.nth(1).locator(".mw-cell").first.wait_for(state="attached", timeout=CELL_S * 1000)
    first, second = grids.nth(0), grids.nth(1)
    n = nb.py_json("int(w.n_cells)")
    before = _backgrounds(first)
    assert len(before) == n
    assert any(not _grey(c) for c in before), before  # the default palette: blue and orange cells
    assert _backgrounds(second) == before
    assert first.locator(".mw-legend").get_attribute("data-palette") == "blue_orange"

    nb.py('w.palette = "greyscale"')
    grey = _wait_for(first, lambda cs: all(_grey(c) for c in cs))
    assert all(_grey(c) for c in grey), grey
    assert len(set(grey)) > 2  # values still differ, as lightness
    # the largest |value| cells: the greyscale ends, the sign as light (negative) or dark
    labels = first.locator(".mw-cell").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    values = [float(lab.rsplit(": ", 1)[1]) for lab in labels]
    top = max(range(n), key=lambda i: abs(values[i]))
    assert grey[top] in {(240, 240, 240), (16, 16, 16)}, (top, values[top], grey[top])
    assert first.locator(".mw-legend").get_attribute("data-palette") == "greyscale"
    # the other view on the page keeps its own palette
    assert _backgrounds(second) == before
    assert second.locator(".mw-legend").get_attribute("data-palette") == "blue_orange"

    # a bad name is refused in Python and changes nothing in the browser
    out = nb.py('try:\n    w.palette = "jet"\nexcept Exception as e:\n    print(type(e).__name__, e)')
    assert "TraitError" in out and "'greyscale'" in out, out
    assert nb.py_json("w.palette") == "greyscale"
    assert _backgrounds(first) == grey

    nb.py('w.palette = "blue_orange"')
    back = _wait_for(first, lambda cs: cs == before)
    assert back == before
