"""What the browser tests share: the Debian chromium, one Playwright driver per process, the
hostile-token corpus and how the views display a token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]

# Whole hostile strings as single tokens (a tokenizer splits them; a custom result need not),
# including attempts to break out of the JSON <script> tag of a static export.
HOSTILE_TOKENS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    "</script><script>window.__pwned=3</script>",
    "<!--<script>",
    "]]>",
    "&amp;",
    "\u202eevil",
    "\x00",
    "\U0001f980",
    "a\nb",
    "\u2028",
    "",
    "<b>bold</b>",
]


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is absent: the browser tests use Debian's chromium "
            "(`make test` installs it: apt-get install chromium)"
        )


def shared_playwright(config: Any) -> Any:
    """One Playwright driver per pytest process: the sync API refuses a second one while the
    first runs."""
    pw = getattr(config, "_mw_playwright", None)
    if pw is None:
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        config._mw_playwright = pw
        config.add_cleanup(pw.stop)
    return pw


def launch(config: Any) -> Any:
    require_chromium()
    return shared_playwright(config).chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def display_token(tok: str) -> str:
    """What a token span shows (js/src/lib/dom.ts ``displayToken`` + the view's newline "↵"):
    the token literally, except C0/C1 controls and U+2028/9 as visible escapes, tab as "⇥"."""
    out = []
    for ch in tok:
        c = ord(ch)
        if ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif c < 0x20 or 0x7F <= c <= 0x9F:
            out.append(f"\\x{c:02x}")
        elif ch in "\u2028\u2029":
            out.append(f"\\u{c:04x}")
        else:
            out.append(ch)
    return "".join(out)


def report(capsys: Any, line: str) -> None:
    """Print a measurement from a test, past pytest's capture (`[e2e] ...` lines in the log)."""
    with capsys.disabled():
        print(f"\n[e2e] {line}", flush=True)
