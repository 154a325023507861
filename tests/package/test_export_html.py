"""``export_html(notebook, out)`` (mi_widgets/widgets/export.py, ``mw.export_html``): one
offline page of a notebook's cells with every view drawn read-only and interactive, each view
kind's bundle inlined once. Opened in headless chromium with the network blocked: every view
renders and no request leaves the page.

Needs Debian's /usr/bin/chromium and a ``python3`` kernel (the venv's); zoo:tiny (``mw.load()``).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from _browser import report
from _notebooks import chromium_page, execute, open_offline, view_cells

from mi_widgets.widgets.export import export_html


def notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Export <test>\n\nSome *markdown*."),
        nbformat.v4.new_code_cell("import mi_widgets as mw\nmodel = mw.load()\nprint('loaded <ok>')"),
        *view_cells(),
        nbformat.v4.new_code_cell("1 + 1"),
    ]
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    return execute(notebook(), tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def page(pytestconfig):
    with chromium_page(pytestconfig) as pg:
        yield pg


def check_page(page, out: Path, capsys, label: str) -> None:
    text = out.read_text(encoding="utf-8")
    # each view kind's bundle once, whatever the number of views of that kind
    assert len(re.findall(r"MIWidgets\.token_activations=", text)) == 1
    assert len(re.findall(r"MIWidgets\.patching_grid=", text)) == 1
    assert not re.search(r"""<script[^>]*\bsrc\s*=""", text.lower())
    requests, errors = open_offline(page, out)
    ta = page.locator(".mw-token-activations")
    grid = page.locator(".mw-patching-grid")
    grid.locator(".mw-cell").first.wait_for(state="attached")
    assert ta.count() == 2 and grid.count() == 1
    assert page.locator(".mw-fallback").count() == 0  # every view replaced its fallback text
    for i in range(2):
        assert ta.nth(i).locator(".mw-token").count() > 5
        assert ta.nth(i).locator(".mw-status").text_content() == "static"
    assert grid.locator(".mw-cell").count() == 4 * 6
    # interactive without a kernel
    ta.nth(1).locator(".mw-token").nth(4).click()
    assert ta.nth(1).locator(".mw-topk .mw-topk-row").count() > 0
    grid.locator(".mw-cell").nth(5).click()
    assert grid.locator(".mw-cell-panel .mw-cell-title").text_content()
    # the cells: markdown rendered, code and text outputs escaped
    assert page.locator("h1").text_content() == "Export <test>"
    assert page.locator("em").text_content() == "markdown"
    assert "loaded <ok>" in page.locator(".mw-nb-out pre").all_text_contents()[0]
    assert page.locator(".mw-nb-code").count() == 5
    assert [u for u in requests if u != out.resolve().as_uri()] == []
    assert errors == [], errors
    report(capsys, f"export_html ({label}): 3 views, {out.stat().st_size / 1024:.0f} KiB page")


def test_export_from_saved_widget_state(executed, page, tmp_path, capsys):
    out = export_html(executed, tmp_path / "page.html")
    assert out == tmp_path / "page.html"
    check_page(page, out, capsys, "from the saved widget state")


def test_export_without_saved_state(executed, page, tmp_path, capsys):
    """A notebook saved without widget state: the views come from their text/html copies."""
    nb = nbformat.read(executed, as_version=4)
    del nb.metadata["widgets"]
    path = tmp_path / "no_state.ipynb"
    nbformat.write(nb, path)
    out = export_html(path, tmp_path / "page.html")
    check_page(page, out, capsys, "from the outputs' static copies")


def test_export_returns_the_page(executed):
    text = export_html(executed)
    assert text.startswith("<!doctype html>") and "mw-static-root" in text
