"""Driving JupyterLab from Playwright: page helpers, a :class:`Notebook` (run all cells, run a snippet
in a new cell and read its output, locate a cell's DOM) and :class:`Lab` (open notebooks)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from _browser import report_from_fixture

from ._server import KERNEL_NAME, JupyterServer

KERNEL_READY_TIMEOUT = 120  # s: kernel start (torch/nnsight import) on 2 busy cores
CELL_TIMEOUT = 240  # s: a cell that loads a model and runs traces



# Helpers installed in every page (before JupyterLab's own scripts).
_PAGE_HELPERS = r"""
window.__mw = {
  app() {
    const app = window.jupyterapp;
    if (!app) throw new Error("window.jupyterapp is missing (expose_app_in_browser)");
    return app;
  },
  panel(path) {
    const app = window.jupyterapp;
    if (!app) return null;
    for (const w of app.shell.widgets("main")) {
      if (w && w.context && w.context.path === path && w.content && w.sessionContext) return w;
    }
    return null;
  },
  kernelIdle(path) {
    const p = this.panel(path);
    if (!p || !p.context.isReady || !p.sessionContext.isReady) return false;
    const k = p.sessionContext.session && p.sessionContext.session.kernel;
    return !!k && k.status === "idle" && k.connectionStatus === "connected";
  },
  tagCells(path) {
    const nb = this.panel(path).content;
    nb.widgets.forEach((c, i) => c.node.setAttribute("data-mw-cell", String(i)));
    return nb.widgets.length;
  },
  focus(path) {
    const app = this.app();
    const p = this.panel(path);
    app.shell.activateById(p.id);
    return p;
  },
  outputs(path, i) {
    const cell = this.panel(path).content.widgets[i];
    return {
      type: cell.model.type,
      source: cell.model.sharedModel.getSource(),
      executionCount: cell.model.type === "code" ? cell.model.executionCount : null,
      outputs: cell.model.type === "code" ? cell.model.outputs.toJSON() : [],
    };
  },
  async runAll(path) {
    const p = this.focus(path);
    await p.context.ready;
    await p.sessionContext.ready;
    const ok = await this.app().commands.execute("notebook:run-all-cells");
    this.tagCells(path);
    return ok;
  },
  // Append a code cell with `code` (not run); returns its index.
  addCell(path, code) {
    const p = this.focus(path);
    const nb = p.content;
    const index = nb.widgets.length;
    nb.model.sharedModel.insertCell(index, { cell_type: "code", source: code });
    this.tagCells(path);
    return index;
  },
  // Shut the notebook's kernel down and close its panel (frees the kernel's memory).
  async close(path) {
    const p = this.panel(path);
    if (!p) return false;
    await p.sessionContext.shutdown();
    p.dispose();
    return true;
  },
  // One entry per widget output of a code cell: its cell, its output index, its model id and
  // the class list of the first element inside it whose class starts with "mw-" (the view's
  // root), or null while nothing is rendered yet.
  widgetOutputs(path) {
    const nb = this.panel(path).content;
    const found = [];
    nb.widgets.forEach((cell, i) => {
      if (cell.model.type !== "code") return;
      cell.model.outputs.toJSON().forEach((o, j) => {
        const data = o.data || {};
        const view = data["application/vnd.jupyter.widget-view+json"];
        if (!view) return;
        const child = cell.outputArea.widgets[j];
        const root = child && child.node.querySelector('[class^="mw-"], [class*=" mw-"]');
        found.push({ cell: i, output: j, modelId: view.model_id, root: root ? root.className : null });
      });
    });
    return found;
  },
  pending: {},
  // Run cell `index` (the "Run Selected Cell" command); `window.__mw.pending[index]` settles
  // when its execution is done.
  startCell(path, index) {
    const p = this.focus(path);
    const nb = p.content;
    nb.deselectAll();
    nb.activeCellIndex = index;
    nb.mode = "command";
    const run = this.app().commands.execute("notebook:run-cell");
    this.pending[index] = Promise.resolve(run).then((ok) => { this.tagCells(path); return ok; });
    return index;
  },
};
"""


def _outputs_text(outputs: list[dict]) -> tuple[str, list[str]]:
    """(stdout + text/plain results, error tracebacks) of a cell's nbformat outputs."""
    text, errors = [], []
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream":
            t = o.get("text", "")
            text.append("".join(t) if isinstance(t, list) else t)
        elif kind in ("execute_result", "display_data"):
            t = (o.get("data") or {}).get("text/plain")
            if t is not None and kind == "execute_result":
                text.append(("".join(t) if isinstance(t, list) else t) + "\n")
        elif kind == "error":
            tb = o.get("traceback") or [f"{o.get('ename')}: {o.get('evalue')}"]
            errors.append(_strip_ansi("\n".join(tb)))
    return "".join(text), errors


def _strip_ansi(s: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s)


class CellError(AssertionError):
    pass


class Notebook:
    """A notebook open in JupyterLab (one page, one kernel)."""

    def __init__(self, lab: Lab, path: str):
        self.lab = lab
        self.page = lab.page
        self.path = path

    # -- DOM ----------------------------------------------------------------------------

    def cell(self, index: int):
        """Locator of cell ``index`` (cells are tagged ``data-mw-cell`` after each run)."""
        return self.page.locator(f'.jp-NotebookPanel [data-mw-cell="{index}"]')

    def view(self, selector: str, ready: str | None = None, cell: int = 0, timeout_s: float = CELL_TIMEOUT):
        """Locator of the first view ``selector`` (its root, e.g. ``".mw-ablation"``) in cell
        ``cell``'s output, once it holds an element ``ready`` (e.g. ``".mw-cell"``; the root
        itself when None): the view has rendered its data."""
        root = self.cell(cell).locator(f".jp-OutputArea {selector}").first
        (root.locator(ready).first if ready else root).wait_for(state="attached", timeout=timeout_s * 1000)
        return root

    def widget(self, index: int, selector: str = ".mw-token-activations"):
        """Locator of the TokenActivations view in cell ``index``'s output (waits until it has tokens)."""
        return self.view(selector, ready=".mw-token", cell=index)

    def assert_no_markup_ran(self) -> None:
        """No hostile string's script or ``onerror`` ran in the notebook page."""
        assert self.page.evaluate("() => typeof window.__pwned") == "undefined", "markup from the data ran"

    # -- running ------------------------------------------------------------------------

    def wait_kernel_idle(self, timeout_s: float = KERNEL_READY_TIMEOUT) -> None:
        self.page.wait_for_function(
            "path => window.__mw.kernelIdle(path)", arg=self.path, timeout=timeout_s * 1000, polling=250
        )

    def run_all(self, timeout_s: float = CELL_TIMEOUT) -> None:
        """Run every cell (the "Run All Cells" command); raise with the traceback of a failing cell."""
        self.wait_kernel_idle()
        ok = self._await(f"window.__mw.runAll({json.dumps(self.path)})", timeout_s)
        n = self.page.evaluate("path => window.__mw.tagCells(path)", self.path)
        for i in range(n):
            self.check_cell(i)
        if ok is False:
            raise CellError(f"Run All Cells reported a failure in {self.path}")

    def _await(self, js_promise: str, timeout_s: float) -> Any:
        """Wait for a page-side promise (by expression): polled, so a hang fails at ``timeout_s``."""
        self.page.evaluate(
            f"() => {{ const p = {js_promise}; const box = window.__mw.box = {{done: false}};"
            " Promise.resolve(p).then(v => { box.value = v; box.done = true; },"
            " e => { box.error = String(e && e.stack || e); box.done = true; }); }"
        )
        self.page.wait_for_function("() => window.__mw.box.done === true", timeout=timeout_s * 1000, polling=200)
        box = self.page.evaluate("() => window.__mw.box")
        if "error" in box:
            raise RuntimeError(f"{js_promise} failed in the page: {box['error']}")
        return box.get("value")

    def check_cell(self, index: int) -> str:
        """The text output of cell ``index``; raises :class:`CellError` with its traceback if it failed."""
        info = self.page.evaluate("([path, i]) => window.__mw.outputs(path, i)", [self.path, index])
        text, errors = _outputs_text(info["outputs"])
        if errors:
            raise CellError(f"cell {index} of {self.path} raised:\n" + "\n".join(errors))
        return text

    def cells(self) -> list[dict]:
        """Every cell's ``{type, source, executionCount, outputs}`` (nbformat outputs), in order."""
        n = self.page.evaluate("path => window.__mw.tagCells(path)", self.path)
        return [self.page.evaluate("([path, i]) => window.__mw.outputs(path, i)", [self.path, i]) for i in range(n)]

    def widget_outputs(self, rendered: list[str] | None = None, timeout_s: float = 60) -> list[dict]:
        """The widget outputs (``{cell, output, modelId, root}``); with ``rendered`` (model ids),
        once each of those has rendered an ``mw-`` root element, or as they are after ``timeout_s``."""
        if rendered:
            fn = (
                "([path, ids]) => window.__mw.widgetOutputs(path)"
                ".every(w => !ids.includes(w.modelId) || w.root !== null)"
            )
            try:
                self.page.wait_for_function(fn, arg=[self.path, rendered], timeout=timeout_s * 1000, polling=250)
            except Exception:  # noqa: BLE001 - the caller asserts on what is there
                pass
        return self.page.evaluate("path => window.__mw.widgetOutputs(path)", self.path)

    def close(self, timeout_s: float = 60) -> None:
        """Shut the kernel down and close the notebook's panel."""
        self._await(f"window.__mw.close({json.dumps(self.path)})", timeout_s)

    def add_cell(self, code: str) -> int:
        return self.page.evaluate("([path, code]) => window.__mw.addCell(path, code)", [self.path, code])

    def start_cell(self, index: int) -> None:
        """Start running cell ``index`` and return at once (see :meth:`finish_cell`)."""
        self.page.evaluate("([path, i]) => window.__mw.startCell(path, i)", [self.path, index])

    def finish_cell(self, index: int, timeout_s: float = CELL_TIMEOUT) -> str:
        self._await(f"window.__mw.pending[{int(index)}]", timeout_s)
        return self.check_cell(index)

    def run(self, code: str, timeout_s: float = CELL_TIMEOUT) -> tuple[int, str]:
        """Append a cell with ``code``, run it, return ``(index, text output)``."""
        index = self.add_cell(code)
        self.start_cell(index)
        return index, self.finish_cell(index, timeout_s)

    def py(self, code: str, timeout_s: float = CELL_TIMEOUT) -> str:
        """Run a Python snippet in a new cell; its printed text (stdout + the repr of a final expression)."""
        return self.run(code, timeout_s)[1]

    def py_json(self, expr: str, timeout_s: float = CELL_TIMEOUT) -> Any:
        """Evaluate ``expr`` in the kernel and return it, through JSON."""
        out = self.py(f"import json as _json\nprint('@@' + _json.dumps({expr}))", timeout_s)
        lines = [ln for ln in out.splitlines() if ln.startswith("@@")]
        assert lines, f"no JSON from {expr!r}: {out!r}"
        return json.loads(lines[-1][2:])

    def wait_py(self, expr: str, expected: Any, timeout_s: float = 15.0) -> Any:
        """Poll ``expr`` in the kernel until it equals ``expected`` (comm messages are asynchronous)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.py_json(expr)
            if got == expected or time.monotonic() > deadline:
                return got
            time.sleep(0.3)


class Lab:
    def __init__(self, server: JupyterServer, page: Any):
        self.server = server
        self.page = page
        self.console: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def open_notebook(self, name: str, cells: list[str]) -> Notebook:
        """Write ``name`` (nbformat, our kernelspec) into the server's root and open it."""
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        self._write(name, nb)
        return self.open(name)

    def copy_notebook(self, path: Path) -> Notebook:
        """Copy the notebook file ``path`` (outputs cleared, our kernelspec) into the server's
        root and open it."""
        import nbformat

        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        self._write(path.name, nb)
        return self.open(path.name)

    def _write(self, name: str, nb: Any) -> None:
        import nbformat

        nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (mi-widgets e2e)", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, str(self.server.root / name))

    def open(self, name: str) -> Notebook:
        """Open the notebook ``name`` of the server's root; wait until its kernel is idle."""
        self.page.goto(
            self.server.page_url(name),
            wait_until="domcontentloaded",
            timeout=120_000,
        )
        self.page.wait_for_function("() => !!window.jupyterapp", timeout=120_000)
        self.page.wait_for_function(
            "path => { const p = window.__mw.panel(path); return !!p && p.context.isReady; }",
            arg=name, timeout=120_000, polling=250,
        )
        book = Notebook(self, name)
        book.wait_kernel_idle()
        self.page.evaluate("path => window.__mw.tagCells(path)", name)
        return book

    def run_notebook(self, name: str, cells: list[str]) -> Notebook:
        """Open ``name`` with ``cells`` and run them all; ``book.timings["open_and_run_s"]``
        says how long that took (each test file reports it)."""
        t0 = time.perf_counter()
        book = self.open_notebook(name, cells)
        book.run_all()
        book.timings = {"open_and_run_s": time.perf_counter() - t0}
        return book

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)


def view_notebook(name: str, *cells: str, app: str = "lab") -> Any:
    """A module-scoped ``nb`` fixture: the notebook ``name`` with ``cells`` opened in the page
    fixture ``app`` (``"lab"`` or ``"notebook7"``) and run, its time reported (``[e2e]`` line).
    ``{model}`` in a cell stands for the ``model_expr`` fixture (the embedded model)."""
    sources = [c.strip("\n") for c in cells]

    def run(request: Any, page: Lab, model: str) -> Notebook:
        book = page.run_notebook(name, [c.replace("{model}", model) for c in sources])
        report_from_fixture(request.config, f"{name}: notebook open + run {book.timings['open_and_run_s']:.1f}s")
        return book

    # the page fixture is named in the signature (not looked up), so tests list it in
    # request.fixturenames (the failure screenshot hook reads it)
    if app == "lab":
        def nb(request: Any, lab: Lab, model_expr: str) -> Notebook:
            return run(request, lab, model_expr)
    elif app == "notebook7":
        def nb(request: Any, notebook7: Lab, model_expr: str) -> Notebook:
            return run(request, notebook7, model_expr)
    else:
        raise ValueError(f"app must be 'lab' or 'notebook7', got {app!r}")
    return pytest.fixture(scope="module", name="nb")(nb)
