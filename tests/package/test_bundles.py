"""The browser bundles run in any anywidget host (JupyterLab, Notebook 7, VS Code, Colab, marimo):
plain ES modules / IIFEs that use no host-specific API, load nothing at run time and reach no
network. VS Code's and Colab's renderers have no RequireJS, no `@jupyter-widgets` globals and no
JupyterLab application object, so a bundle that used them would render only in JupyterLab."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mi_widgets

STATIC = Path(mi_widgets.__file__).parent / "static"
BUNDLES = sorted(STATIC.glob("*.js"))

#: what a bundle must not contain, and why
FORBIDDEN = {
    "require(": "RequireJS / CommonJS loading (absent in VS Code, Colab, marimo)",
    "define(": "AMD modules (JupyterLab 3-era widget loading)",
    "@jupyter-widgets": "ipywidgets' JupyterLab packages (not in VS Code's or marimo's renderer)",
    "jupyterapp": "the JupyterLab application object",
    "fetch(": "a run-time network fetch (offline, no CDN)",
    "XMLHttpRequest": "a run-time network request",
    "WebSocket": "a connection of our own (requests go through the widget's comm)",
    "import(": "a dynamic import (bundles are self-contained)",
    "eval(": "code from strings",
}


def test_every_view_has_both_bundles():
    stems = {p.name.split(".")[0] for p in BUNDLES}
    assert len(stems) >= 9, stems
    for stem in stems:
        assert (STATIC / f"{stem}.js").exists() and (STATIC / f"{stem}.iife.js").exists(), stem


@pytest.mark.parametrize("bundle", BUNDLES, ids=[p.name for p in BUNDLES])
def test_bundle_uses_no_host_specific_api_and_no_network(bundle):
    text = bundle.read_text(encoding="utf8")
    found = {k: why for k, why in FORBIDDEN.items() if k in text}
    assert found == {}
    # The only URL a bundle may name is the SVG namespace (a name, never fetched).
    urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls


@pytest.mark.parametrize("bundle", [p for p in BUNDLES if not p.name.endswith(".iife.js")], ids=lambda p: p.name)
def test_esm_bundle_exports_an_anywidget_render(bundle):
    text = bundle.read_text(encoding="utf8")
    assert re.search(r"export\s*\{[^}]*as default[^}]*\}|export default", text), "anywidget needs `export default {render}`"
    assert "render" in text
