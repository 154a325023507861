"""A whole notebook as one offline page: ``mw.export_html(notebook, out)``.

Every cell (markdown, code and its outputs) in order; every mi-widgets view drawn read-only as
``to_html`` draws one (interactive without a kernel), with each view kind's bundle inlined once
and each view's own data beside it. A view's data comes from the notebook's saved widget state
(an executed notebook: nbclient, ``nbconvert --execute``, JupyterLab's "save widget state") plus
the precomputed lazy data of its saved-view output, or else from the static copy that every view
keeps as ``text/html`` in its output. No request leaves the page for our views.
"""

from __future__ import annotations

import copy
import html
import importlib
import json
import re
from pathlib import Path
from typing import Any

from ._base import SAVED_VIEW_KEY, MIWidget, bundle, script_text, static_view_html

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

_STEM = re.compile(r"^[a-z][a-z0-9_]*$")
_EXTRA = re.compile(r'<script type="application/json" id="mw-[0-9a-f]{12}-extra">(.*?)</script>', re.S)
_COPY_STATE = re.compile(r'<script type="application/json" id="mw-[0-9a-f]{12}-state">(.*?)</script>', re.S)
_COPY_STEM = re.compile(r"globalThis\.MIWidgets\['([a-z][a-z0-9_]*)'\]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}
.mw-nb-cell{margin:1em 0}
.mw-nb-code{background:rgba(127,127,127,.08);border-left:3px solid rgba(127,127,127,.4);padding:.5em .8em;overflow-x:auto;margin:0}
.mw-nb-out{margin:.4em 0 .4em 0;overflow-x:auto}
.mw-nb-out pre{margin:0;white-space:pre-wrap}
.mw-nb-error pre{color:#b2182b}
.mw-nb-out img{max-width:100%}
"""


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _stem_of(anywidget_id: str) -> str | None:
    """The stem of one of our views from its ``_anywidget_id`` (``mi_widgets.widgets.<mod>.<Class>``)."""
    module, _, name = anywidget_id.rpartition(".")
    if not module.startswith("mi_widgets.widgets."):
        return None
    try:
        klass = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    stem = getattr(klass, "_stem", "") if isinstance(klass, type) and issubclass(klass, MIWidget) else ""
    return stem if stem and _STEM.match(stem) else None


def _from_saved_state(saved: dict, extra: dict) -> dict:
    """A static state from a model's saved widget state: its traits (not the private ones, the
    ES module or the layout), its base64 buffers put back as wire ``b64``, the lazy data."""
    state = {
        k: copy.deepcopy(v) for k, v in saved.get("state", {}).items()
        if not k.startswith("_") and k not in MIWidget._not_state
    }
    for buf in saved.get("buffers", []) or []:
        path = list(buf.get("path") or [])
        if not path or buf.get("encoding", "base64") != "base64":
            continue
        parent: Any = state
        for key in path[:-1]:
            try:
                parent = parent[key]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict) and path[-1] == "buffer":
            parent.pop("buffer", None)
            parent["b64"] = buf.get("data", "")
        elif parent is not None:
            # not a wire array: put the bytes back as base64 text is all a page can hold
            parent[path[-1]] = buf.get("data", "")
    return {**state, **extra, "static": True}


def _generic_output(out: dict) -> str:
    """Any other output, as nbconvert would show it (richest format first), offline."""
    kind = out.get("output_type")
    if kind == "stream":
        cls = "mw-nb-error" if out.get("name") == "stderr" else ""
        return f"<div class=\"mw-nb-out {cls}\"><pre>{html.escape(_ANSI.sub('', _text(out.get('text'))))}</pre></div>"
    if kind == "error":
        tb = _ANSI.sub("", "\n".join(out.get("traceback") or [f"{out.get('ename')}: {out.get('evalue')}"]))
        return f"<div class=\"mw-nb-out mw-nb-error\"><pre>{html.escape(tb)}</pre></div>"
    data = out.get("data") or {}
    if "text/html" in data:
        return f"<div class=\"mw-nb-out\">{_text(data['text/html'])}</div>"
    if "image/svg+xml" in data:
        return f"<div class=\"mw-nb-out\">{_text(data['image/svg+xml'])}</div>"
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            b64 = _text(data[mime]).replace("\n", "")
            return f"<div class=\"mw-nb-out\"><img alt=\"output\" src=\"data:{mime};base64,{html.escape(b64)}\"></div>"
    if "text/markdown" in data:
        return f"<div class=\"mw-nb-out\">{_markdown(_text(data['text/markdown']))}</div>"
    if "text/plain" in data:
        return f"<div class=\"mw-nb-out\"><pre>{html.escape(_ANSI.sub('', _text(data['text/plain'])))}</pre></div>"
    return ""


def _markdown(source: str) -> str:
    """Markdown as HTML; raw HTML in it is shown as text (the page stays inert and offline)."""
    try:
        import mistune
    except ImportError:
        return f"<pre>{html.escape(source)}</pre>"
    try:
        return mistune.create_markdown(escape=True, plugins=["strikethrough", "table"])(source)
    except Exception:  # noqa: BLE001 - another mistune major version: plain text
        return f"<pre>{html.escape(source)}</pre>"


class _Page:
    """The page being written: which bundles it already holds."""

    def __init__(self, saved: dict) -> None:
        self.saved = saved
        self.extras: dict[str, dict] = {}
        self.bundles: set[str] = set()
        self.views: dict[str, int] = {}

    def view(self, stem: str, state: dict, fallback: str) -> str:
        js = ""
        if stem not in self.bundles:
            js = script_text(bundle(stem, "iife").read_text(encoding="utf-8"))
            self.bundles.add(stem)
        self.views[stem] = self.views.get(stem, 0) + 1
        return f"<div class=\"mw-nb-out mw-nb-view\">{static_view_html(stem, state, fallback, js)}</div>"

    def output(self, out: dict) -> str:
        meta = out.get("metadata") or {}
        data = out.get("data") or {}
        if SAVED_VIEW_KEY in meta:
            return ""  # drawn with its view
        view = data.get(WIDGET_VIEW)
        if isinstance(view, dict):
            mid = view.get("model_id")
            saved = self.saved.get(mid) if isinstance(mid, str) else None
            stem = _stem_of(str(saved.get("state", {}).get("_anywidget_id", ""))) if isinstance(saved, dict) else None
            if stem:
                name = saved["state"]["_anywidget_id"].rpartition(".")[2]
                return self.view(stem, _from_saved_state(saved, self.extras.get(mid, {})), name)
        text = _text(data.get("text/html", ""))
        if 'class="mw-static-root"' in text:
            state, stem = _COPY_STATE.search(text), _COPY_STEM.search(text)
            if state and stem:
                try:
                    parsed = json.loads(state.group(1))
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    return self.view(stem.group(1), parsed, _text(data.get("text/plain", stem.group(1))))
        return _generic_output(out)


def export_html(notebook: str | Path, out: str | Path | None = None, *, title: str | None = None) -> str | Path:
    """Write the notebook at ``notebook`` (an ``.ipynb``) as one self-contained HTML page.

    Cells in order: markdown rendered, code as text, outputs as nbconvert shows them, and every
    mi-widgets view drawn read-only and interactive without a kernel, as ``widget.to_html`` draws
    one (from the notebook's saved widget state when it has one, else from the static copy each
    view keeps in its output). Each view kind's bundle is inlined once; no request leaves the
    page for our views. With ``out``: written there, and the path is returned; without: the page.
    """
    if not isinstance(notebook, (str, Path)):
        raise TypeError(f"notebook must be the path of an .ipynb file (str or Path), got {type(notebook).__name__}")
    if out is not None and not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a path (str or Path) or None, got {type(out).__name__}")
    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {str(path)!r}; pass the path of an .ipynb file")
    if out is not None and not Path(out).parent.is_dir():
        raise FileNotFoundError(f"the folder of out={str(out)!r} does not exist; create it first")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a Jupyter notebook (.ipynb JSON): {str(exc)[:120]}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells", []), list):
        raise ValueError(f"{str(path)!r} is not a Jupyter notebook: no list of cells at the top level")
    saved = ((nb.get("metadata") or {}).get("widgets") or {}).get(WIDGET_STATE, {}).get("state", {}) or {}
    page = _Page(saved if isinstance(saved, dict) else {})
    cells = nb.get("cells") or []
    for cell in cells:  # the lazy data of every saved view first: its output precedes the view
        for o in cell.get("outputs") or []:
            meta = (o.get("metadata") or {}).get(SAVED_VIEW_KEY)
            found = _EXTRA.search(_text((o.get("data") or {}).get("text/html", "")))
            if isinstance(meta, dict) and isinstance(meta.get("model_id"), str) and found:
                try:
                    page.extras[meta["model_id"]] = json.loads(found.group(1))
                except ValueError:
                    pass
    parts = []
    for cell in cells:
        kind, source = cell.get("cell_type"), _text(cell.get("source"))
        if kind == "markdown":
            parts.append(f"<div class=\"mw-nb-cell mw-nb-markdown\">{_markdown(source)}</div>")
        elif kind == "code":
            outs = "".join(page.output(o) for o in cell.get("outputs") or [])
            parts.append(
                f"<div class=\"mw-nb-cell mw-nb-code-cell\"><pre class=\"mw-nb-code\"><code>{html.escape(source)}</code></pre>"
                f"{outs}</div>"
            )
        elif kind == "raw":
            parts.append(f"<div class=\"mw-nb-cell\"><pre>{html.escape(source)}</pre></div>")
    name = title or (nb.get("metadata") or {}).get("title") or path.stem
    text = (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        "<meta name=\"color-scheme\" content=\"light dark\">"
        f"<title>{html.escape(str(name))}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    if out is not None:
        out = Path(out)
        out.write_text(text, encoding="utf-8")
        return out
    return text

