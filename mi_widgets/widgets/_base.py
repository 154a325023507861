"""Shared machinery of every mi-widgets view: the request protocol and static HTML export.

See docs/widget_protocol.md for the contract with the browser.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
import numbers
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets
import traitlets

from .. import wire
from ..core.model.lock import on_wait

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

_HANDLER = "_mw_request_name"


_FIELDS = "_mw_request_fields"

#: the envelope's bounds: a request id, a request name, a request's JSON size and nesting
MAX_ID = 100
MAX_NAME = 100
MAX_REQUEST_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_BUFFER_BYTES = 16 * 1024 * 1024
#: an error reply's message is cut to this many characters (no traceback, no echo of big inputs)
MAX_ERROR = 300


class Field:
    """The type and range of one field of a request's ``msg`` (see :func:`request_handler`).

    ``kind``: ``int`` (not bool), ``float`` (int or float, finite), ``str``, ``bool``, ``list``,
    ``dict`` or ``object`` (anything). ``required``: the field must be present. ``nullable``:
    ``None`` is allowed. ``min``/``max``: bounds of a number, the length of a str or list (or a
    callable ``(widget) -> bound``, for a range that depends on the view's data).
    ``choices``: the allowed values, or a callable ``(widget) -> values``. ``items``: a Field
    every list item must satisfy.
    """

    __slots__ = ("kind", "required", "nullable", "min", "max", "choices", "items")

    def __init__(
        self,
        kind: type,
        *,
        required: bool = False,
        nullable: bool = False,
        min: float | None = None,  # noqa: A002 - the natural names for a range
        max: float | None = None,  # noqa: A002
        choices: Any = None,
        items: Field | None = None,
    ) -> None:
        if kind not in (int, float, str, bool, list, dict, object):
            raise TypeError(f"Field kind must be int, float, str, bool, list, dict or object, got {kind!r}")
        self.kind, self.required, self.nullable = kind, required, nullable
        self.min, self.max = min, (200 if kind is str and max is None else max)
        self.choices, self.items = choices, items

    def check(self, widget: Any, name: str, value: Any) -> Any:
        """``value`` if it fits, else ``ValueError`` with a short message (no echo of big values)."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{name} must not be null")
        kind = self.kind
        ok = {  # numpy scalars from Python callers are Integral / Real too
            int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
            float: isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value),
            str: isinstance(value, str),
            bool: isinstance(value, bool),
            list: isinstance(value, list),
            dict: isinstance(value, dict),
            object: True,
        }[kind]
        if not ok:
            want = "a finite number" if kind is float else f"{'an' if kind is int else 'a'} {kind.__name__}"
            raise ValueError(f"{name} must be {want}, got {_short(value)}")
        if kind is int:
            value = int(value)
        elif kind is float:
            value = float(value)
        lo = self.min(widget) if callable(self.min) else self.min
        hi = self.max(widget) if callable(self.max) else self.max
        if kind in (str, list):
            if lo is not None and len(value) < lo:
                raise ValueError(f"{name} must have at least {lo:g} items/characters, got {len(value)}: {_short(value)}")
            if hi is not None and len(value) > hi:
                raise ValueError(f"{name} must have at most {hi:g} items/characters, got {len(value)}: {_short(value)}")
        elif kind in (int, float):
            if lo is not None and hi is not None and not lo <= value <= hi:
                what = f"an int in {lo:g}..{hi:g}" if kind is int else f"a number in [{lo:g}, {hi:g}]"
                if kind is int and lo == -1 and hi >= 0:  # the views' "-1: none selected"
                    what = f"-1 (none) or an int in 0..{hi:g}"
                raise ValueError(f"{name} must be {what}, got {_short(value)}")
            if lo is not None and value < lo:
                raise ValueError(f"{name} must be >= {lo:g}, got {_short(value)}")
            if hi is not None and value > hi:
                raise ValueError(f"{name} must be <= {hi:g}, got {_short(value)}")
        if self.choices is not None:
            choices = self.choices(widget) if callable(self.choices) else self.choices
            if value not in list(choices):
                raise ValueError(f"{name} must be one of {_short(list(choices))}, got {_short(value)}")
        if self.items is not None:
            value = [self.items.check(widget, f"{name}[{i}]", v) for i, v in enumerate(value)]
        return value


def request_handler(name: str, *, strict: bool = False, **fields: Field | type) -> Callable:
    """Mark a method as the handler of browser request ``name``.

    The method receives ``(msg: dict, progress: Callable[[int, int], None])`` and returns a
    JSON-able dict, optionally with a list of binary buffers as ``(dict, buffers)``.

    ``fields`` declare the request's ``msg``: ``name=Field(int, min=0)`` (or just a type). When
    given, a message with another field or a value of the wrong type or range is refused with a
    short error before the method runs, and the method sees only the declared fields.
    ``strict=True`` with no fields: the request takes none.
    """
    spec = {k: (v if isinstance(v, Field) else Field(v)) for k, v in fields.items()}

    def mark(fn: Callable) -> Callable:
        setattr(fn, _HANDLER, name)
        setattr(fn, _FIELDS, spec if (fields or strict) else None)
        return fn

    return mark


def check_traits(**fields: Field) -> Any:
    """A traitlets validator for the named traits, each checked against its :class:`Field` (the
    same rules as a request's fields), in a view's class body::

        _check = check_traits(k=Field(int, min=1), sort_by=Field(str, choices=SORT_KEYS))

    An assignment that does not fit (from Python or the browser) raises ``traitlets.TraitError``
    naming the trait, the value and what is allowed; the trait keeps its value. A trait has one
    validator: a view validates each trait either here or in its own ``@traitlets.validate``."""

    @traitlets.validate(*fields)
    def _validate(self: Any, proposal: Any) -> Any:
        name = proposal["trait"].name
        try:
            return fields[name].check(self, name, proposal["value"])
        except ValueError as exc:
            raise traitlets.TraitError(str(exc)) from None

    return _validate


def trait_error(name: str, allowed: str, value: Any) -> traitlets.TraitError:
    """The error of a view's own trait validator: ``"<name> must be <allowed>, got <value>"``."""
    return traitlets.TraitError(f"{name} must be {allowed}, got {_short(value)}")


class Number(traitlets.Float):
    """A float trait that refuses what ``traitlets.Float`` lets through: a bool (taken as 0.0 or
    1.0) and NaN or an infinity."""

    def validate(self, obj: Any, value: Any) -> float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not ok or not math.isfinite(value):
            raise trait_error(self.name, "a finite number", value)
        return super().validate(obj, float(value))


class Items(traitlets.List):
    """A list trait that refuses a string (``traitlets.List`` takes ``"a"`` as ``["a"]``)."""

    def set(self, obj: Any, value: Any) -> None:
        if isinstance(value, (str, bytes)):
            raise trait_error(self.name, "a list", value)
        super().set(obj, value)


def _short(value: Any, n: int = 60) -> str:
    """A repr of ``value`` cut to about ``n`` characters (big inputs are never echoed)."""
    if isinstance(value, (dict, list, tuple, set)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not break the reply
        text = f"<{type(value).__name__}>"
    return text if len(text) <= n else text[: n - 1] + "…"


def _size(value: Any, budget: int, depth: int = 0) -> int:
    """An upper bound on ``value``'s JSON size, stopping early once it exceeds ``budget``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the request is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        # a str's UTF-8 is at least one byte per character: measure it only when it may fit
        return 2 + len(value) if len(value) > budget else 2 + len(value.encode("utf-8", "replace"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, dict):
        total = 2
        for k, v in value.items():
            total += _size(k, budget - total, depth + 1) + _size(v, budget - total, depth + 1) + 2
            if total > budget:
                return total
        return total
    if isinstance(value, (list, tuple)):
        total = 2
        for v in value:
            total += _size(v, budget - total, depth + 1) + 1
            if total > budget:
                return total
        return total
    return 24


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


class ReportsWork(traitlets.HasTraits):
    """Mixin for a view that runs work in Python: ``status`` (``"ready"``, ``"running"`` or
    ``"loading"``, ``"waiting"`` while another job holds the model, ``"error"`` ...), ``progress``
    (0..1) and ``error`` (the last error's message)."""

    status = traitlets.Unicode("ready").tag(sync=True)
    progress = traitlets.Float(1.0).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)


from .palette import HasPalette  # noqa: E402 - beside its one use: every view's `palette` trait


class MIWidget(HasPalette, anywidget.AnyWidget):
    """Base class: dispatches ``mw-request`` messages to ``@request_handler`` methods; every view
    has a ``palette`` trait (widgets/palette.py)."""

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

    @classmethod
    def from_result(cls, result: Any, **kwargs: Any) -> Any:
        """The view of ``result`` (how ``result.widget(**kwargs)`` and a result shown in a
        notebook build it)."""
        return cls(result, **kwargs)

    @property
    def result(self) -> Any:
        """The result this view shows."""
        return self._result

    # -- requests ----------------------------------------------------------------------

    #: traits that report on work rather than hold the view's state: a failed request may set them
    _report_traits = frozenset({"status", "progress", "error"})

    def _on_custom_msg(self, _widget: Any, content: Any, buffers: list | None = None) -> None:
        """Answer one browser message with exactly one ``mw-response`` (after any ``mw-progress``);
        never raises (a KeyboardInterrupt is answered, then re-raised)."""
        rid = content.get("id") if isinstance(content, dict) else None
        if not (isinstance(rid, str) and 0 < len(rid) <= MAX_ID):
            rid = None  # never echo an id we refuse
        try:
            name, handler, msg = self._validate_envelope(content, buffers)
        except ValueError as exc:
            self._reply_error(rid, exc)
            return
        if rid is None:
            self._reply_error(rid, ValueError(f"a request needs an id: a string of 1..{MAX_ID} characters"))
            return

        def progress(done: int, total: int) -> None:
            self.send({"kind": "mw-progress", "id": rid, "done": int(done), "total": int(total)})

        try:
            result = self._run_handler(name, handler, msg, progress)
            out_buffers: list = []
            if isinstance(result, tuple):
                result, out_buffers = result
            self.send({"kind": "mw-response", "id": rid, "ok": True, "response": result or {}}, out_buffers)
        except KeyboardInterrupt as exc:
            self._reply_error(rid, exc)
            raise
        except Exception as exc:  # the view shows the message; the kernel keeps going
            self._reply_error(rid, exc)

    def _reply_error(self, rid: str | None, exc: BaseException) -> None:
        try:
            self.send({"kind": "mw-response", "id": rid, "ok": False, "error": _message(exc)})
        except Exception:  # noqa: BLE001 - e.g. the comm is closed; nothing left to tell
            pass

    def _validate_envelope(self, content: Any, buffers: Any) -> tuple[str, Callable, dict]:
        """``(name, handler, msg)`` of a well-formed request, else ``ValueError``."""
        if not isinstance(content, dict):
            raise ValueError(f"a request must be a JSON object, got {type(content).__name__}")
        if content.get("kind") != "mw-request":
            raise ValueError(f"unknown message kind {_short(content.get('kind'), 40)}; expected 'mw-request'")
        name = content.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise ValueError(f"a request name must be a string of 1..{MAX_NAME} characters, got {_short(name, 40)}")
        handler = self._handlers.get(name)
        if handler is None:
            raise ValueError(f"unknown request {_short(name, 40)}; this view answers {sorted(self._handlers)}")
        msg = content.get("msg")
        msg = {} if msg is None else msg
        if not isinstance(msg, dict):
            raise ValueError(f"a request's msg must be a JSON object, got {type(msg).__name__}")
        if any(not isinstance(k, str) for k in msg):
            raise ValueError("a request's msg must have string keys")
        size = _size(msg, MAX_REQUEST_BYTES)
        if size > MAX_REQUEST_BYTES:
            raise ValueError(f"the request is too large (over {MAX_REQUEST_BYTES // 1024} KiB)")
        if buffers:
            if not isinstance(buffers, (list, tuple)) or len(buffers) > 16:
                raise ValueError("a request carries at most 16 binary buffers")
            if sum(memoryview(b).nbytes for b in buffers) > MAX_BUFFER_BYTES:
                raise ValueError(f"a request's buffers are over {MAX_BUFFER_BYTES // 2**20} MiB")
        return name, handler, msg

    def _checked(self, name: str, handler: Callable, msg: dict) -> dict:
        """``msg`` checked against the handler's declared fields (only those kept)."""
        spec = getattr(handler, _FIELDS, None)
        if spec is None:
            return msg
        unknown = [k for k in msg if k not in spec]
        if unknown:
            raise ValueError(
                f"request {name!r} takes {sorted(spec) or 'no fields'}; unknown field {_short(unknown[0], 40)}"
            )
        out = {}
        for key, field in spec.items():
            if key in msg:
                out[key] = field.check(self, key, msg[key])
            elif field.required:
                raise ValueError(f"request {name!r} needs the field {key!r}")
        return out

    def _run_handler(self, name: str, handler: Callable, msg: dict, progress: Callable) -> Any:
        """Check ``msg``, run the handler; if it raises, put back every state trait it changed
        (a failed request never leaves invalid state) and re-raise."""
        msg = self._checked(name, handler, msg)
        names = [n for n in self.trait_names(sync=True) if not n.startswith("_") and n not in self._not_state]
        before = {n: getattr(self, n) for n in names}

        def waiting(on: bool) -> None:
            if "status" in names:
                if on and self.status != "waiting":
                    self._status_before_wait = self.status
                    self.status = "waiting"
                elif not on and self.status == "waiting":
                    self.status = getattr(self, "_status_before_wait", before["status"])

        try:
            with on_wait(waiting):
                return handler(self, msg, progress)
        except BaseException:
            with self.hold_trait_notifications():
                for n, v in before.items():
                    if n in self._report_traits and not (
                        n == "status" and getattr(self, n) in ("loading", "running", "waiting")
                    ):
                        continue
                    if getattr(self, n) is not v:
                        try:
                            setattr(self, n, v)
                        except Exception:  # noqa: BLE001 - keep restoring the others
                            pass
            raise

    def request(self, name: str, msg: dict | None = None) -> dict:
        """Run a request handler from Python, as the browser would (same checks; useful in
        tests). Raises the handler's error instead of replying."""
        handler = self._handlers.get(name)
        if handler is None:
            raise ValueError(f"unknown request {_short(name, 40)}; this view answers {sorted(self._handlers)}")
        result = self._run_handler(name, handler, msg or {}, lambda done, total: None)
        return result[0] if isinstance(result, tuple) else result

    def close(self) -> None:
        """Close the view and the widgets it owns (its ``Layout``), which ipywidgets would
        otherwise keep registered (one comm each) for the rest of the kernel."""
        children = [
            v for v in self._trait_values.values()
            if isinstance(v, ipywidgets.Widget) and v is not self
        ]
        super().close()
        for child in children:
            child.close()

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

    def static_state(self, budget: int | None = None) -> dict:
        """The state a static copy renders from: the view state, the precomputed lazy data
        (at most ``budget`` items), ``static: True``; buffers as base64 (``wire.to_static``)."""
        budget = self._static_budget["export"] if budget is None else budget
        return wire.to_static({**self.state(), **self._static_extra(budget), "static": True})

    def html_fragment(self, budget: int | None = None, *, compressed: bool = False) -> str:
        """The static view as an HTML fragment (a div, the state as JSON, the bundle inline).
        ``compressed``: the bundle gzipped (base64), unpacked by the browser, and not at all
        when the page already has it (the copy kept in a notebook's outputs)."""
        state = self.static_state(budget)
        if compressed:
            return static_view_html(self._stem, state, self._fallback_text(), gz_b64=_gzipped_bundle(self._stem))
        js = script_text(bundle(self._stem, "iife").read_text(encoding="utf-8"))
        return static_view_html(self._stem, state, self._fallback_text(), js)

    def to_html(self, path: str | Path | None = None, *, title: str | None = None) -> str | Path:
        """One self-contained HTML page (script and data inline, no network) that renders this
        view read-only. With ``path``: written there, and the path is returned (so a notebook
        cell ending with it does not print the page); without: the page is returned."""
        page = (
            "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            # the page follows the OS's light/dark preference, and the view with it
            "<meta name=\"color-scheme\" content=\"light dark\">"
            f"<title>{html.escape(title or type(self).__name__)}</title></head><body>\n"
            f"{self.html_fragment()}</body></html>\n"
        )
        if path is not None:
            path = Path(path)
            path.write_text(page, encoding="utf-8")
            return path
        return page

    def _fallback_text(self) -> str:
        return type(self).__name__

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle_ = super()._repr_mimebundle_(**kwargs)
        try:
            html_page = self.html_fragment(self._static_budget["repr"], compressed=True)
        except FileNotFoundError:
            return bundle_
        self._publish_saved_view()
        if isinstance(bundle_, tuple):
            data, meta = bundle_
            return {**data, "text/html": html_page}, meta
        if isinstance(bundle_, dict):
            return {**bundle_, "text/html": html_page}
        return bundle_

    def _publish_saved_view(self) -> None:
        """In a kernel, put a small output before the view's own: the view's saved copy.

        A notebook executed with its widget state saved (nbclient, ``nbconvert --execute``)
        and converted to HTML shows a widget output as an empty div that waits for the widget
        manager from a CDN; the view's ``text/html`` copy is dropped. This output draws the view
        there, read-only, from the widget state that the page already carries (the ES module
        and the data), plus the precomputed lazy data. Anywhere else (a live frontend, a page
        without that state) it stays an empty hidden div."""
        try:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is None or getattr(shell, "kernel", None) is None:
                return
            from IPython.display import publish_display_data

            extra = wire.to_static(self._static_extra(self._static_budget["repr"]))
            publish_display_data(
                {"text/html": saved_view_html(self.model_id, self._stem, extra)},
                metadata={SAVED_VIEW_KEY: {"model_id": self.model_id, "stem": self._stem}},
            )
        except Exception:  # noqa: BLE001 - the live view must show even if this fails
            pass


#: metadata key of the saved-view output that ``_publish_saved_view`` puts before a view
SAVED_VIEW_KEY = "mi_widgets/saved_view"


def script_json(obj: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (cannot close it or open a comment)."""
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return data.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def script_text(js: str) -> str:
    """JavaScript source that is safe inline in a ``<script>`` element."""
    return js.replace("</script", "<\\/script")


def _gzipped_bundle(stem: str) -> str:
    """The IIFE bundle of ``stem``, gzipped and base64-encoded (cached per file version)."""
    path = bundle(stem, "iife")
    return _gzip_b64(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _gzip_b64(path: str, _mtime: int) -> str:
    return base64.b64encode(gzip.compress(Path(path).read_bytes(), 9, mtime=0)).decode("ascii")


def static_view_html(stem: str, state: dict, fallback: str, js: str = "", *, gz_b64: str = "") -> str:
    """A static view: a div, its state as JSON, the bundle (``js`` inline, or ``gz_b64``: gzipped
    and base64-encoded, unpacked with the browser's DecompressionStream unless the page already
    defines ``MIWidgets.<stem>``; neither when the page already holds it) and the call that
    renders it."""
    uid = f"mw-{uuid.uuid4().hex[:12]}"
    bundle_tag = f"<script>{js}</script>\n" if js else ""
    if gz_b64:
        bundle_tag = f"<script type=\"application/gzip;base64\" id=\"{uid}-js\">{gz_b64}</script>\n"
    return (
        f"<div id=\"{uid}\" class=\"mw-static-root\"><pre class=\"mw-fallback\">{html.escape(fallback)}</pre></div>\n"
        f"<script type=\"application/json\" id=\"{uid}-state\">{script_json(state)}</script>\n"
        f"{bundle_tag}"
        "<script>(function(){"
        f"var el=document.getElementById('{uid}');"
        f"var st=JSON.parse(document.getElementById('{uid}-state').textContent);"
        "function run(w){el.textContent='';w.render({model:w.staticModel(st),el:el});}"
        f"function get(){{return globalThis.MIWidgets&&globalThis.MIWidgets['{stem}'];}}"
        "var w=get();if(w)return run(w);"
        f"var z=document.getElementById('{uid}-js');"
        "if(!z||typeof DecompressionStream==='undefined')return;"
        "var s=atob(z.textContent),b=new Uint8Array(s.length);for(var i=0;i<s.length;i++)b[i]=s.charCodeAt(i);"
        "new Response(new Blob([b]).stream().pipeThrough(new DecompressionStream('gzip'))).text().then(function(src){"
        "if(!get()){var t=document.createElement('script');t.textContent=src;document.head.appendChild(t);}"
        "var w=get();if(w)run(w);"
        "}).catch(function(e){console.error('mi_widgets: static view',e)});"
        "})();</script>\n"
    )


# The saved-view output's script (see MIWidget._publish_saved_view). It finds the page's saved
# widget state (nbconvert puts it in a <script type="application/vnd.jupyter.widget-state+json">),
# takes its model's state, puts the base64 buffers back in place, adds the precomputed lazy
# data, imports the model's ES module (``_esm``) from a blob: URL (no network) and renders it
# over a plain-object model. It hides itself again if a widget manager renders the live view.
_SAVED_VIEW_JS = r"""(function(){
var el=document.getElementById(UID),mid=MID,ex=document.getElementById(UID+'-extra');
if(!el||!ex)return;var extra=JSON.parse(ex.textContent);
function mdl(st){var ls={};function emit(e,a,b){(ls[e]||[]).slice().forEach(function(f){try{f(a,b)}catch(x){console.error(x)}})}
var m={get:function(k){return st[k]},set:function(k,v){var o=st[k];st[k]=v;if(o!==v){emit('change:'+k,m,v);emit('change',m)}},
on:function(e,f){e.split(/\s+/).forEach(function(n){if(n)(ls[n]=ls[n]||[]).push(f)})},
off:function(e,f){(e?e.split(/\s+/):Object.keys(ls)).forEach(function(n){ls[n]=f?(ls[n]||[]).filter(function(g){return g!==f}):[]})},
save_changes:function(){},send:function(){}};return m}
function bytes(b){var s=atob(b),u=new Uint8Array(s.length);for(var i=0;i<s.length;i++)u[i]=s.charCodeAt(i);return u}
function live(){var ss=document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
for(var i=0;i<ss.length;i++){try{if(JSON.parse(ss[i].textContent).model_id===mid)return ss[i].parentNode}catch(e){}}return null}
function go(){var saved=null,ts=document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]');
for(var i=0;i<ts.length&&!saved;i++){try{var s=JSON.parse(ts[i].textContent);saved=s&&s.state&&s.state[mid]}catch(e){}}
if(!saved||!saved.state||typeof saved.state._esm!=='string')return;
var st={},k;for(k in saved.state)if(k.charAt(0)!=='_'&&k!=='layout')st[k]=saved.state[k];
st=JSON.parse(JSON.stringify(st));
(saved.buffers||[]).forEach(function(b){var o=st,p=b.path||[];for(var j=0;o&&j<p.length-1;j++)o=o[p[j]];if(o&&p.length)o[p[p.length-1]]=bytes(b.data)});
for(k in extra)st[k]=extra[k];st['static']=true;
var url=URL.createObjectURL(new Blob([saved.state._esm],{type:'text/javascript'}));
import(url).then(function(mod){var v=mod.default;if(typeof v==='function')v=v();
if(v&&v.initialize)v.initialize({model:mdl({})});el.textContent='';el.hidden=false;
var m=mdl(st);v.render({model:m,el:el});el.setAttribute('data-mw-rendered','');
var host=live();if(host&&window.MutationObserver){var ob=new MutationObserver(function(){
for(var c=host.firstElementChild;c;c=c.nextElementSibling)if(c.tagName!=='SCRIPT'){el.hidden=true;ob.disconnect();return}});
ob.observe(host,{childList:true})}}).catch(function(e){console.error('mi_widgets: saved view',e)});}
if(document.readyState==='loading')document.addEventListener('DOMContentLoaded',go);else go();
})();"""


def saved_view_html(model_id: str, stem: str, extra: dict) -> str:
    """The saved-view output (see ``MIWidget._publish_saved_view``): a hidden div, the
    precomputed lazy data as JSON, and the script that renders the view from the page's saved
    widget state when there is one."""
    uid = f"mw-{uuid.uuid4().hex[:12]}"
    js = _SAVED_VIEW_JS.replace("UID", json.dumps(uid)).replace("MID", json.dumps(model_id))
    return (
        f"<div id=\"{uid}\" class=\"mw-saved-view mw-static-root\" data-mw-model=\"{html.escape(model_id)}\" "
        f"data-mw-stem=\"{html.escape(stem)}\" hidden></div>\n"
        f"<script type=\"application/json\" id=\"{uid}-extra\">{script_json(extra)}</script>\n"
        f"<script>{script_text(js)}</script>\n"
    )


def _message(exc: BaseException) -> str:
    """A short message for an error reply: at most MAX_ERROR characters, no traceback."""
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    elif isinstance(exc, (ValueError, FileNotFoundError)):
        text = str(exc)
    elif isinstance(exc, KeyError):
        text = f"unknown key {_short(exc.args[0] if exc.args else None, 60)}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = text.strip() or type(exc).__name__
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"
