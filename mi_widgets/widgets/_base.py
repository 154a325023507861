"""Shared machinery of every mi-widgets view: the request protocol and static HTML export.

See docs/widget_protocol.md for the contract with the browser.
"""

from __future__ import annotations

import html
import json
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .. import wire

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

_HANDLER = "_mw_request_name"


def request_handler(name: str) -> Callable:
    """Mark a method as the handler of browser request ``name``.

    The method receives ``(msg: dict, progress: Callable[[int, int], None])`` and returns a
    JSON-able dict, optionally with a list of binary buffers as ``(dict, buffers)``.
    """

    def mark(fn: Callable) -> Callable:
        setattr(fn, _HANDLER, name)
        return fn

    return mark


def bundle(stem: str, kind: str = "esm") -> Path:
    """Path of a built JS bundle; a clear error if the JS was never built."""
    path = STATIC_DIR / (f"{stem}.js" if kind == "esm" else f"{stem}.iife.js")
    if not path.exists():
        raise FileNotFoundError(
            f"the browser bundle {path.name} is missing from {STATIC_DIR}: this checkout's JavaScript "
            "was never built. Run `make build` (or `npm --prefix js install && npm --prefix js run build`), "
            "or install mi-widgets from a wheel, which ships the bundles."
        )
    return path


class MIWidget(anywidget.AnyWidget):
    """Base class: dispatches ``mw-request`` messages to ``@request_handler`` methods."""

    _stem: str = ""
    #: traits that are not part of the view's state (never exported to static HTML)
    _not_state = {"layout", "tabbable", "tooltip", "comm", "keys", "log"}

    static = traitlets.Bool(False).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handlers: dict[str, Callable] = {}
        for klass in type(self).__mro__:
            for attr in vars(klass).values():
                name = getattr(attr, _HANDLER, None)
                if name is not None and name not in self._handlers:
                    self._handlers[name] = attr
        self.on_msg(self._on_custom_msg)

    # -- requests ----------------------------------------------------------------------

    def _on_custom_msg(self, _widget: Any, content: Any, buffers: list) -> None:
        if not isinstance(content, dict) or content.get("kind") != "mw-request":
            return
        rid = content.get("id")
        name = content.get("name")
        handler = self._handlers.get(name)
        if handler is None:
            self.send({"kind": "mw-response", "id": rid, "ok": False, "error": f"unknown request {name!r}"})
            return

        def progress(done: int, total: int) -> None:
            self.send({"kind": "mw-progress", "id": rid, "done": int(done), "total": int(total)})

        try:
            result = handler(self, content.get("msg") or {}, progress)
        except Exception as exc:  # the view shows the message; the kernel keeps going
            self.send({"kind": "mw-response", "id": rid, "ok": False, "error": _message(exc)})
            return
        out_buffers: list = []
        if isinstance(result, tuple):
            result, out_buffers = result
        self.send({"kind": "mw-response", "id": rid, "ok": True, "response": result or {}}, out_buffers)

    def request(self, name: str, msg: dict | None = None) -> dict:
        """Run a request handler from Python, as the browser would (useful in tests)."""
        handler = self._handlers[name]
        result = handler(self, msg or {}, lambda done, total: None)
        return result[0] if isinstance(result, tuple) else result

    # -- static export -----------------------------------------------------------------

    #: how much lazily fetched data a static copy carries: a full export, or the copy kept in a
    #: notebook's outputs next to the live view (which should stay small)
    _static_budget = {"export": 512, "repr": 32}

    def _static_extra(self, budget: int) -> dict:
        """Extra state that only a static copy needs (e.g. precomputed lazy data), at most
        ``budget`` items of it."""
        return {}

    def state(self) -> dict:
        """The synced view state (binary buffers inline), as the browser receives it."""
        names = [
            n for n in self.trait_names(sync=True)
            if not n.startswith("_") and n not in self._not_state
        ]
        return {n: getattr(self, n) for n in names}

    def html_fragment(self, budget: int | None = None) -> str:
        """The static view as an HTML fragment (a div, the state as JSON, the bundle inline)."""
        budget = self._static_budget["export"] if budget is None else budget
        state = {**self.state(), **self._static_extra(budget), "static": True}
        data = json.dumps(wire.to_static(state), separators=(",", ":"), ensure_ascii=False)
        # JSON inside <script> must not be able to close the tag or open a comment.
        data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        data = data.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        js = bundle(self._stem, "iife").read_text(encoding="utf-8").replace("</script", "<\\/script")
        uid = f"mw-{uuid.uuid4().hex[:12]}"
        fallback = html.escape(self._fallback_text())
        return (
            f"<div id=\"{uid}\" class=\"mw-static-root\"><pre class=\"mw-fallback\">{fallback}</pre></div>\n"
            f"<script type=\"application/json\" id=\"{uid}-state\">{data}</script>\n"
            f"<script>{js}</script>\n"
            "<script>(function(){"
            f"var el=document.getElementById('{uid}');"
            f"var st=JSON.parse(document.getElementById('{uid}-state').textContent);"
            f"var w=globalThis.MIWidgets&&globalThis.MIWidgets['{self._stem}'];"
            "if(!w)return;el.textContent='';"
            "w.render({model:w.staticModel(st),el:el});"
            "})();</script>\n"
        )

    def to_html(self, path: str | Path | None = None, *, title: str | None = None) -> str:
        """One self-contained HTML page (script and data inline, no network) that renders this
        view read-only. Written to ``path`` if given; the HTML is returned either way."""
        page = (
            "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title or type(self).__name__)}</title></head><body>\n"
            f"{self.html_fragment()}</body></html>\n"
        )
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def _fallback_text(self) -> str:
        return type(self).__name__

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle_ = super()._repr_mimebundle_(**kwargs)
        try:
            html_page = self.html_fragment(self._static_budget["repr"])
        except FileNotFoundError:
            return bundle_
        if isinstance(bundle_, tuple):
            data, meta = bundle_
            return {**data, "text/html": html_page}, meta
        if isinstance(bundle_, dict):
            return {**bundle_, "text/html": html_page}
        return bundle_


def _message(exc: BaseException) -> str:
    if isinstance(exc, (ValueError, FileNotFoundError, KeyError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
