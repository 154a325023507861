"""Saved notebooks: a notebook executed with its widget state saved (nbclient's
``store_widget_state=True``, as ``jupyter nbconvert --execute`` does) and converted with plain
``jupyter nbconvert --to html`` shows every view offline, in headless chromium with every
non-file request blocked; the notebook grows by a bounded amount per view.

Needs Debian's /usr/bin/chromium and a ``python3`` kernel (the venv's); zoo:tiny (``mw.load()``).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from _browser import report
from _notebooks import TEXTS, chromium_page, execute, open_offline, view_cells

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SAVED_VIEW = "mi_widgets/saved_view"
# what nbconvert's own template asks the network for (not our views): require.js, MathJax, the
# widget manager; blocked here, as offline
TEMPLATE_URLS = ("https://cdnjs.cloudflare.com/", "https://unpkg.com/@jupyter-widgets/html-manager")


def notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Saved views"),
        nbformat.v4.new_code_cell("import mi_widgets as mw\nmodel = mw.load()"),
        *view_cells(last="display(w)"),
    ]
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook, executed as nbclient saves it (widget state in the metadata)."""
    d = tmp_path_factory.mktemp("saved")
    nb = notebook()
    nbformat.write(nb, d / "plain.ipynb")
    return execute(nb, d)


@pytest.fixture(scope="module")
def page(pytestconfig):
    with chromium_page(pytestconfig) as pg:
        yield pg


def nbconvert_cli(path: Path) -> Path:
    out = path.with_suffix(".html")
    subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", str(path), "--output", out.name],
        check=True, capture_output=True, timeout=120,
    )
    return out


def n_tokens(nb, text: str) -> int:
    """Tokens of the TokenActivations view of ``text`` (from its saved state)."""
    state = nb.metadata.widgets[WIDGET_STATE]["state"]
    for s in state.values():
        toks = s["state"].get("texts")
        if s["state"].get("_anywidget_id", "").endswith("TokenActivations") and "".join(toks[0]).endswith(text[-10:]):
            return len(toks[0])
    raise AssertionError(text)


# --------------------------------------------------------------------------------------------


def test_executed_notebook_shows_every_view_offline(executed, page, capsys):
    nb = nbformat.read(executed, as_version=4)
    out = nbconvert_cli(executed)
    requests, errors = open_offline(page, out)
    # every view's static copy, drawn where its (empty, CDN-waiting) widget output is
    views = page.locator(".mw-saved-view[data-mw-rendered]")
    views.nth(2).wait_for(state="visible")
    assert views.count() == 3
    ta = page.locator(".mw-saved-view .mw-token-activations")
    assert ta.count() == 2
    for i, text in enumerate(TEXTS):
        assert ta.nth(i).locator(".mw-token").count() == n_tokens(nb, text)
    grid = page.locator(".mw-saved-view .mw-patching-grid")
    assert grid.count() == 1
    assert grid.locator(".mw-cell").count() == 4 * 6  # layers x positions of zoo:tiny
    assert grid.locator(".mw-cell.mw-empty").count() == 0
    # interactive without a kernel: a token's top-k, a cell's panel
    ta.nth(1).locator(".mw-token").nth(3).click()
    assert ta.nth(1).locator(".mw-topk .mw-topk-row").count() > 0
    grid.locator(".mw-cell").first.click()
    assert grid.locator(".mw-cell-panel .mw-cell-title").text_content()
    # nothing from our views asked the network; only nbconvert's template did (and was refused)
    own = out.resolve().as_uri()
    ours = [u for u in requests if u != own and not u.startswith(("blob:", "data:")) and not u.startswith(TEMPLATE_URLS)]
    assert ours == [], ours
    assert errors == [], errors
    report(capsys, f"nbconvert --to html of an executed notebook: {views.count()} views drawn offline, "
                   f"{out.stat().st_size / 1024:.0f} KiB page")


def test_without_saved_state_each_view_shows_once(executed, page):
    """A notebook saved without widget state (JupyterLab's default): nbconvert takes each view's
    text/html copy; the saved-view outputs stay hidden (no view is drawn twice)."""
    nb = nbformat.read(executed, as_version=4)
    del nb.metadata["widgets"]
    path = executed.with_name("no_state.ipynb")
    nbformat.write(nb, path)
    out = nbconvert_cli(path)
    _, errors = open_offline(page, out)
    page.locator(".mw-patching-grid .mw-cell").first.wait_for(state="attached")
    page.locator(".mw-token-activations").nth(1).locator(".mw-token").first.wait_for(state="attached")
    page.wait_for_timeout(300)
    # each copy carries its bundle gzipped; the page unpacks it once per view kind
    assert page.evaluate("() => Object.keys(globalThis.MIWidgets).sort()") == ["patching_grid", "token_activations"]
    assert page.locator("script:not([type])").evaluate_all(
        "ss => ss.filter(s => s.textContent.includes('MIWidgets.token_activations=')).length") == 1
    assert page.locator(".mw-token-activations").count() == 2
    assert page.locator(".mw-patching-grid").count() == 1
    assert page.locator(".mw-saved-view").count() == 3
    assert page.locator(".mw-saved-view:visible").count() == 0
    assert page.locator(".mw-saved-view *").count() == 0
    assert errors == [], errors


def test_saved_view_outputs(executed):
    """Each view's output is preceded by its saved-view output (hidden div, script, lazy data),
    keyed by the view's model id; the view's own output keeps widget-view and text/html."""
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells[2:]:
        saved, view = cell.outputs[-2], cell.outputs[-1]
        key = saved.metadata[SAVED_VIEW]
        assert key["model_id"] == view.data[WIDGET_VIEW]["model_id"]
        assert key["stem"] in ("token_activations", "patching_grid")
        assert list(saved.data) == ["text/html"]
        assert f'data-mw-model="{key["model_id"]}"' in saved.data["text/html"] and " hidden>" in saved.data["text/html"]
        assert "text/html" in view.data and "mw-static-root" in view.data["text/html"]
        # no bundle in the saved-view output: it uses the ES module of the saved state
        assert "MIWidgets" not in saved.data["text/html"]


def test_growth_per_view_is_bounded(executed, capsys):
    nb = nbformat.read(executed, as_version=4)
    plain = notebook()
    state = nb.metadata.widgets[WIDGET_STATE]["state"]
    size = {}
    for cell, kind in zip(nb.cells[2:4], ("TokenActivations", "PatchingGrid"), strict=True):
        mid = cell.outputs[-1].data[WIDGET_VIEW]["model_id"]
        layout = state[mid]["state"]["layout"].removeprefix("IPY_MODEL_")
        outputs = len(json.dumps(cell.outputs))
        saved = len(json.dumps(state[mid])) + len(json.dumps(state[layout]))
        esm = len(json.dumps(state[mid]["state"]["_esm"]))
        size[kind] = outputs + saved
        report(capsys, f"saved notebook, per {kind}: {size[kind] / 1024:.1f} KiB = outputs "
                       f"{outputs / 1024:.1f} KiB (saved-view {len(json.dumps(cell.outputs[-2])) / 1024:.1f}, "
                       f"view {len(json.dumps(cell.outputs[-1])) / 1024:.1f}) + nbclient's widget state "
                       f"{saved / 1024:.1f} KiB (of which the ES module {esm / 1024:.1f})")
        assert size[kind] < 96 * 1024
    a = len(nbformat.writes(copy.deepcopy(plain)))
    b = executed.stat().st_size
    report(capsys, f"saved notebook: {a / 1024:.1f} KiB -> {b / 1024:.1f} KiB with 3 views")
    assert b - a < 3 * 96 * 1024
