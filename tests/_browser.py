"""What the browser tests share: the Debian chromium, one Playwright driver per process, the
hostile-token corpus and how the views display a token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
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


def has_class(name: str) -> re.Pattern:
    """A ``to_have_class`` pattern: the element's class list contains ``name``."""
    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")


def assert_no_markup_ran(page: Any) -> None:
    """None of the hostile strings' scripts or ``onerror`` handlers ran (they set ``__pwned``)."""
    assert page.evaluate("() => typeof window.__pwned") == "undefined", "markup from the data ran"


def hover_tooltip(root: Any, target: Any, label: str | None = None) -> Any:
    """Hover ``target`` in the view ``root``; return the view's tooltip once it is visible (and
    its ``.mw-tt-label`` reads ``label``, when given)."""
    from playwright.sync_api import expect

    target.hover()
    tip = root.locator(".mw-tooltip")
    expect(tip).to_be_visible()
    if label is not None:
        expect(tip.locator(".mw-tt-label")).to_have_text(label)
    return tip


@contextmanager
def static_view(opener: Any, path: Path | str, selector: str) -> Iterator[Any]:
    """Open a ``to_html()`` export from file:// (no kernel) in a new page of ``opener`` (a
    browser or a browser context) and yield the locator of the view's root ``selector``.
    When the block ends without an error, asserts that no markup from the data ran."""
    page = opener.new_page()
    try:
        page.goto(Path(path).resolve().as_uri())
        yield page.locator(selector)
        assert_no_markup_ran(page)
    finally:
        page.close()


def report(capsys: Any, line: str) -> None:
    """Print a measurement from a test, past pytest's capture (`[e2e] ...` lines in the log)."""
    with capsys.disabled():
        print(f"\n[e2e] {line}", flush=True)


def report_from_fixture(config: Any, line: str) -> None:
    """:func:`report` for a fixture (which has no ``capsys``): through pytest's capture manager."""
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else nullcontext():
        print(f"\n[e2e] {line}", flush=True)
