"""What the notebook and static-page tests of tests/package share: the notebook's texts and
cells, executing a notebook as nbclient saves it (widget state in the metadata), and a headless
chromium page that opens a file with every other request blocked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
from _browser import launch
from nbclient import NotebookClient

TEXTS = ["The Eiffel Tower is in Paris", "When Mary and John went to the store, John gave a drink to Mary"]


def view_cells(last: str = "") -> list[nbformat.NotebookNode]:
    """Two TokenActivations views (mlp_post of layer 0 and 1, of ``TEXTS``) and a patching grid,
    after a cell that loads the embedded model; ``last`` is code that shows the second view."""
    second = f"mw.TokenActivations(model, {TEXTS[1]!r}, site='mlp_post', layer=1)"
    return [
        nbformat.v4.new_code_cell(f"mw.TokenActivations(model, {TEXTS[0]!r}, site='mlp_post', layer=0)"),
        nbformat.v4.new_code_cell(
            "mw.activation_patching(model, 'The Eiffel Tower is in', 'The Senso Temple is in', "
            "mw.logit_diff(' Paris', ' Tokyo'), positions='each', progress=False).widget()"
        ),
        nbformat.v4.new_code_cell(f"w = {second}\n{last}" if last else second),
    ]


def execute(nb: nbformat.NotebookNode, d: Path) -> Path:
    """Run ``nb`` in a ``python3`` kernel with its widget state saved (as ``jupyter nbconvert
    --execute`` does), require no error output, and write it to ``d/executed.ipynb``."""
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(d)}}).execute()
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    nbformat.write(nb, d / "executed.ipynb")
    return d / "executed.ipynb"


@contextmanager
def chromium_page(pytestconfig: Any) -> Iterator[Any]:
    """A 1200 x 900 page of a fresh headless chromium, 15 s default timeout; closed after."""
    browser = launch(pytestconfig)
    try:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(15_000)
        yield context.new_page()
    finally:
        browser.close()


def open_offline(page, path: Path) -> tuple[list[str], list[str]]:
    """Open ``path`` with every request but the file itself aborted; (requests, page errors)."""
    own = path.resolve().as_uri()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.unroute("**/*")
    page.route("**/*", lambda route: route.continue_() if route.request.url == own else route.abort())
    page.goto(own)
    return requests, errors
