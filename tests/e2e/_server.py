"""The JupyterLab server the browser tests run against: a free localhost port, a random token,
its own kernelspec, settings and config/runtime dirs; torn down through the REST API and then by
process group."""

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

REPO = Path(__file__).resolve().parents[2]
KERNEL_NAME = "mw-e2e"

SERVER_START_TIMEOUT = 90  # s



def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


class JupyterServer:
    """JupyterLab 4 (``app="lab"``) or Notebook 7 (``app="notebook"``): the same server, settings
    and kernelspec; the page and the app object (``window.jupyterapp``) differ only in URL."""

    def __init__(self, base: Path, app: str = "lab"):
        if app not in ("lab", "notebook"):
            raise ValueError(app)
        self.app = app
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

    def page_url(self, name: str) -> str:
        """The URL that opens notebook ``name`` in this server's app."""
        route = "lab/tree" if self.app == "lab" else "notebooks"
        return f"{self.url}/{route}/{name}?token={self.token}"

    def start(self) -> None:
        app_cls = "LabApp" if self.app == "lab" else "JupyterNotebookApp"
        cmd = [
            sys.executable, "-m", "jupyterlab" if self.app == "lab" else "notebook",
            "--no-browser",
            "--allow-root",
            f"--port={self.port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.disable_check_xsrf=True",
            "--ServerApp.port_retries=0",
            f"--{app_cls}.expose_app_in_browser=True",  # window.jupyterapp, to drive commands
            *(["--LabApp.news_url=None"] if self.app == "lab" else []),
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
