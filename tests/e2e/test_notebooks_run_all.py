"""Every notebook in notebooks/ run with JupyterLab's "Run All Cells" in a real browser, and the
tour and the reading group in Notebook 7 (issue 16).

Each notebook is copied into the server (outputs cleared, the e2e kernelspec), run with the UI
command, then: every non-empty code cell has an execution count, no cell has an error or a
stderr output, and every widget output has rendered the root element of its view
(``.mw-<stem>``, the class the kernel's widget object names). The kernel is shut down after each
notebook. ``tests/package/test_notebooks.py`` runs the same notebooks headless (nbclient) and
checks the figures their prose states; this file checks what a reader sees.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _browser import report

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# In the browser: the tour, the validation notebook and the reading group (every notebook also
# runs headless in tests/package/test_notebooks.py). All eight here would add minutes to a suite
# that must stay near 15 idle; the closing note has the timings.
IN_JUPYTERLAB = [p for p in NOTEBOOKS if p.name in ("00_tour.ipynb", "06_validation.ipynb", "07_reading_group.ipynb")]
IN_NOTEBOOK7 = [p for p in NOTEBOOKS if p.name in ("00_tour.ipynb", "07_reading_group.ipynb")]
RUN_ALL_S = 600



def expected_roots(ids: list[str]) -> str:
    """Python for the kernel: {model id: "<root class> <widget class>"} of the live widgets
    ``ids`` (an mi-widgets view of stem ``x_y`` renders a root ``.mw-x-y``)."""
    return (
        "{i: 'mw-' + getattr(type(w), '_stem', '?').replace('_', '-') + ' ' + type(w).__name__"
        f" for i, w in __import__('ipywidgets').widgets.widget._instances.items() if i in {ids!r}}}"
    )


def _text(o: dict) -> str:
    t = o.get("text", "")
    return "".join(t) if isinstance(t, list) else t


def run_all_and_check(page, path: Path, capsys, where: str) -> None:
    t0 = time.perf_counter()
    book = page.copy_notebook(path)
    try:
        t1 = time.perf_counter()
        book.run_all(timeout_s=RUN_ALL_S)  # a cell's error fails here, with its traceback
        t2 = time.perf_counter()
        cells = book.cells()
        code = [(i, c) for i, c in enumerate(cells) if c["type"] == "code" and c["source"].strip()]
        assert code, f"{path.name} has no code"
        not_run = [i for i, c in code if not c["executionCount"]]
        assert not not_run, f"{path.name}: cells {not_run} have no execution count after Run All"
        stderr = [
            (i, _text(o)) for i, c in code for o in c["outputs"]
            if o.get("output_type") == "stream" and o.get("name") == "stderr"
        ]
        assert not stderr, f"{path.name}: stderr output in cells {stderr}"
        in_dom = book.page.locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
        ).all_text_contents()
        assert not in_dom, f"{path.name}: stderr shown: {in_dom}"

        views = book.widget_outputs()
        assert views, f"{path.name} shows no view"
        # a widget its cell closed (a tqdm bar, leave=False) leaves an empty output, and other
        # packages' widgets draw no .mw- root: the live mi-widgets views are checked
        expected = book.py_json(expected_roots([v["modelId"] for v in views]))
        ours = {i: e.split(" ") for i, e in expected.items() if not e.startswith("mw-? ")}
        assert ours, f"{path.name}: no mi-widgets view is live"
        views = [v for v in book.widget_outputs(rendered=list(ours)) if v["modelId"] in ours]
        for v in views:
            root, cls = ours[v["modelId"]]
            assert v["root"] is not None, f"{path.name} cell {v['cell']}: the {cls} view did not render"
            assert root in v["root"].split(), f"{path.name} cell {v['cell']}: {cls} rendered {v['root']!r}"
        book.assert_no_markup_ran()
        report(
            capsys,
            f"{where} Run All {path.name}: open {t1 - t0:.1f}s, run {t2 - t1:.1f}s, "
            f"checks {time.perf_counter() - t2:.1f}s; {len(code)} code cells, {len(views)} views",
        )
    finally:
        book.close()


@pytest.mark.parametrize("path", IN_JUPYTERLAB, ids=[p.stem for p in IN_JUPYTERLAB])
def test_run_all_in_jupyterlab(lab, path, capsys):
    run_all_and_check(lab, path, capsys, "JupyterLab")


@pytest.mark.parametrize("path", IN_NOTEBOOK7, ids=[p.stem for p in IN_NOTEBOOK7])
def test_run_all_in_notebook7(notebook7, path, capsys):
    run_all_and_check(notebook7, path, capsys, "Notebook 7")
