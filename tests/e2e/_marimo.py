"""Running a marimo app headless for the browser tests: `marimo run` on a free localhost port
(no token, its own HOME), a page on it, and the server's process group ended afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._server import _free_port, _pythonpath

START_TIMEOUT = 90  # s


@contextmanager
def marimo_app(base: Path, source: str, browser: Any) -> Iterator[Any]:
    """Write ``source`` (a marimo app) to ``base/app.py``, serve it with ``marimo run`` and yield
    a page (1400 × 1000) that has loaded it; the app's cells run as the page connects."""
    app = base / "app.py"
    app.write_text(source, encoding="utf-8")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=_pythonpath(), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               MARIMO_SKIP_UPDATE_CHECK="1", HOME=str(base))
    log_path = base / "marimo.log"
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "marimo", "run", str(app), "--headless", "--host", "127.0.0.1",
         "--port", str(port), "--no-token", "--no-check", "--no-sandbox"],
        cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(log_path.read_text())
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("marimo did not start:\n" + log_path.read_text()) from None
                time.sleep(0.3)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            yield page
        finally:
            context.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()
