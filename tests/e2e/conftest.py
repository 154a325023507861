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

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _browser import launch

REPO = Path(__file__).resolve().parents[2]
KERNEL_NAME = "mw-e2e"

SERVER_START_TIMEOUT = 90  # s
KERNEL_READY_TIMEOUT = 120  # s: kernel start (torch/nnsight import) on 2 busy cores
CELL_TIMEOUT = 240  # s: a cell that loads a model and runs traces
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


# --------------------------------------------------------------------------------------------
# JupyterLab server
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


class JupyterServer:
    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.root.mkdir()
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "jupyter.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- environment --------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        data = self.base / "data"
        # Our own kernelspec: this very interpreter, so the kernel has the same packages.
        _write_json(
            data / "kernels" / KERNEL_NAME / "kernel.json",
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (mi-widgets e2e)",
                "language": "python",
                "env": {"PYTHONPATH": _pythonpath()},
            },
        )
        settings = self.base / "lab-settings"
        # No network lookups from the frontend, no toasts asking about news.
        _write_json(
            settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
            {"fetchNews": "false", "checkForUpdates": False},
        )
        # Every cell in the DOM (no virtualisation), so cells can be located by index.
        _write_json(
            settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
            {"windowingMode": "none"},
        )
        _write_json(
            settings / "@jupyterlab" / "extensionmanager-extension" / "plugin.jupyterlab-settings",
            {"enabled": False},
        )
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": _pythonpath(),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "JUPYTER_PATH": str(data),
                "JUPYTER_CONFIG_DIR": str(self.base / "config"),
                "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
                "JUPYTERLAB_SETTINGS_DIR": str(settings),
                "JUPYTERLAB_WORKSPACES_DIR": str(self.base / "workspaces"),
                "IPYTHONDIR": str(self.base / "ipython"),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_VERBOSITY": "error",
                "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "2"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("JUPYTER_DATA_DIR", None)
        return env

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--port={self.port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.disable_check_xsrf=True",
            "--ServerApp.port_retries=0",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to drive commands
            "--LabApp.news_url=None",
            "--ServerApp.terminals_enabled=False",
            "--MappingKernelManager.default_kernel_name=" + KERNEL_NAME,
        ]
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, env=self._env(), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer /api/status in {SERVER_START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.3)

    def api(self, method: str, path: str, timeout: float = 10) -> Any:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:  # kernels live in their own sessions: ask the server to shut them down first
            if self.proc.poll() is None:
                for k in self.api("GET", "/api/kernels") or []:
                    try:
                        self.api("DELETE", f"/api/kernels/{k['id']}", timeout=20)
                    except Exception:
                        pass
        except Exception:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])


def _pythonpath() -> str:
    parts = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(parts))


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

    def widget(self, index: int, selector: str = ".mw-token-activations"):
        """Locator of the TokenActivations view in cell ``index``'s output (waits until it has tokens)."""
        root = self.cell(index).locator(f".jp-OutputArea {selector}").first
        root.locator(".mw-token").first.wait_for(state="attached", timeout=CELL_TIMEOUT * 1000)
        return root

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
        nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (mi-widgets e2e)", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        nbformat.write(nb, str(self.server.root / name))
        self.page.goto(
            f"{self.server.url}/lab/tree/{name}?token={self.server.token}",
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


@pytest.fixture(scope="session")
def lab(jupyter_server: JupyterServer, browser: Any):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT)
    context.add_init_script(_PAGE_HELPERS)
    page = context.new_page()
    try:
        yield Lab(jupyter_server, page)
    finally:
        context.close()


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

