"""The layout carries the architecture: core imports no view (not even lazily), results find
their views through the one registry, and the public surface lists each name once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mi_widgets as mw

CORE = Path(mw.__file__).parent / "core"
ROOMS = ("model", "decomposition", "description", "interventions", "concepts", "circuits", "autointerp", "validation")


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (inside functions and TYPE_CHECKING too),
    resolved to an absolute dotted name."""
    pkg = ".".join(("mi_widgets", *path.relative_to(CORE.parent).with_suffix("").parts[:-1]))
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def test_core_is_grouped_by_the_field():
    for room in ROOMS:
        assert (CORE / room / "__init__.py").exists(), room
    flat = sorted(p.name for p in CORE.glob("*.py"))
    assert flat == ["__init__.py", "_checks.py", "_views.py", "metrics.py"], flat


def test_no_core_module_imports_a_widget_or_a_view_library_even_lazily():
    bad = {}
    for path in CORE.rglob("*.py"):
        hits = [m for m in _imports(path) if m.startswith(("mi_widgets.widgets", "anywidget", "ipywidgets"))]
        if hits:
            bad[str(path.relative_to(CORE))] = hits
    assert bad == {}


def test_importing_core_loads_no_view_and_no_plotting():
    mods = [".".join(("mi_widgets", *p.relative_to(CORE.parent).with_suffix("").parts)) for p in CORE.rglob("*.py")]
    code = (
        "import sys, importlib\n"
        f"for m in {sorted(m.removesuffix('.__init__') for m in mods)!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith('mi_widgets.widgets') or m.split('.')[0] in ('anywidget', 'ipywidgets', 'matplotlib', 'pandas')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_result_with_a_widget_method_has_a_registered_view():
    from mi_widgets.core._views import Viewable
    from mi_widgets.widgets import registry

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    import importlib

    for p in CORE.rglob("*.py"):
        importlib.import_module(".".join(("mi_widgets", *p.relative_to(CORE.parent).with_suffix("").parts)).removesuffix(".__init__"))
    missing = [c.__name__ for c in subclasses(Viewable) if c.__module__ != Viewable.__module__ and not any(k in registry._VIEWS for k in c.__mro__)]
    assert missing == []


def test_a_result_without_a_view_says_so():
    import pytest

    from mi_widgets.core._views import Viewable
    from mi_widgets.widgets.registry import view

    class Orphan(Viewable):
        pass

    with pytest.raises(TypeError, match="Orphan has no interactive view"):
        view(Orphan())


def test_public_names_are_listed_once_and_exist():
    assert len(mw.__all__) == len(set(mw.__all__))
    for name in mw.__all__:
        assert getattr(mw, name) is not None, name


def test_public_names_need_no_renaming_on_import():
    """`__init__` re-exports names as they are defined (no `import x as y`), so a name in a
    notebook is the name in the source."""
    tree = ast.parse((CORE.parent / "__init__.py").read_text())
    aliased = [a.name + " as " + a.asname for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.asname]
    assert aliased == []
