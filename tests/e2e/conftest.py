"""End-to-end fixtures: one JupyterLab server and one headless chromium for the whole session.

- ``jupyter_server``: JupyterLab on a free localhost port with a random token, root dir a temp
  folder, its own kernelspec (this interpreter, ``PYTHONPATH`` = the repo), its own settings
  (no news/update checks, no notebook windowing) and config/runtime dirs; torn down at the end
  (kernels shut down through the REST API, then the server's process group is terminated).
- ``browser``: Debian's ``/usr/bin/chromium`` driven by Playwright (never a downloaded browser).
- ``lab``: a page on that server with ``open_notebook(name, cells)`` returning a
  :class:`Notebook` whose methods run all cells, run a snippet in a new cell and read its
  output, and locate a cell's DOM.

Screenshots (and the tail of the server log) of failing tests go to ``$MW_E2E_ARTIFACTS`` or a
pytest temp dir (path printed on failure). ``MW_TEST_MODEL=<dir>`` makes the notebooks load that model
instead of the embedded default (a development aid; the suite is meant to run on ``mw.load()``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _browser import launch

from ._notebook import _PAGE_HELPERS, CellError, Lab, Notebook  # noqa: F401  (re-exported for the tests)
from ._server import JupyterServer

UI_TIMEOUT = 30_000  # ms: a DOM state after an interaction


@pytest.fixture(scope="session")
def model_expr() -> str:
    """The Python expression the notebooks load their model with (``mw.load()``)."""
    override = os.environ.get("MW_TEST_MODEL")
    return f"mw.load({override!r})" if override else "mw.load()"


# --------------------------------------------------------------------------------------------
# pytest plumbing: remember each phase's report (for screenshots)
# --------------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: Any, call: Any):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: Any) -> Path:
    """Where screenshots, logs and timings go: ``$MW_E2E_ARTIFACTS`` or a pytest temp dir."""
    path = os.environ.get("MW_E2E_ARTIFACTS")
    d = Path(path) if path else tmp_path_factory.mktemp("e2e-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


# JupyterLab server: see _server.py

@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: Any):
    server = JupyterServer(tmp_path_factory.mktemp("jupyterlab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(pytestconfig: Any):
    b = launch(pytestconfig)
    try:
        yield b
    finally:
        b.close()


def _page(server: JupyterServer, browser: Any):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT)
    context.add_init_script(_PAGE_HELPERS)
    try:
        yield Lab(server, context.new_page())
    finally:
        context.close()


@pytest.fixture(scope="session")
def lab(jupyter_server: JupyterServer, browser: Any):
    """A page of JupyterLab 4."""
    yield from _page(jupyter_server, browser)


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory: Any, browser: Any):
    """A page of Notebook 7 (its own server; same kernelspec and settings as ``lab``)."""
    server = JupyterServer(tmp_path_factory.mktemp("notebook7"), app="notebook")
    try:
        server.start()
        yield from _page(server, browser)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _e2e_failure_artifacts(request: Any, artifacts_dir: Path):
    """On failure: screenshot of the lab page and the server log tail, into ``artifacts_dir``."""
    yield
    rep = getattr(request.node, "rep_call", None) or getattr(request.node, "rep_setup", None)
    if rep is None or not rep.failed or "lab" not in request.fixturenames:
        return
    lab_ = request.getfixturevalue("lab")
    stem = request.node.name.replace("/", "_")
    try:
        lab_.screenshot(artifacts_dir / f"{stem}.png")
    except Exception as exc:  # a crashed page cannot be captured
        print(f"screenshot failed: {exc}")
    (artifacts_dir / f"{stem}.jupyter.log").write_text(lab_.server.log_tail(400), encoding="utf-8")
    (artifacts_dir / f"{stem}.console.log").write_text(
        "\n".join(lab_.console + ["--- page errors ---"] + lab_.page_errors), encoding="utf-8"
    )
    print(f"\ne2e artifacts of {request.node.name}: {artifacts_dir}")

