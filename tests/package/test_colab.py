"""Colab: every notebook opens there from its badge and installs mi-widgets in its first code
cell; what that install does to Colab's stock runtime is pip's own resolver outcome.

The resolver tests run ``pip install --dry-run --report`` for Python 3.12 on manylinux x86_64
(Colab's runtime) with our declared dependencies (pyproject.toml) against
``colab_constraints.txt`` (Colab's stock versions), and assert what docs/platforms.md promises:
which preinstalled packages our install replaces, that torch (Colab's CUDA build) and the
kernel side stay, and which preinstalled packages are left with a requirement that no longer
holds. They need the network to PyPI (pip fetches indexes and wheels; about a minute, most of
it downloads). Colab's torch is stood in for by an empty wheel of the same version, so pip never
fetches torch's CUDA wheels: what is checked of torch is its version, which is all the other
packages' requirements see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONSTRAINTS = Path(__file__).with_name("colab_constraints.txt")

# The GitHub repository the badges and the install cell point at. The owner is a placeholder
# until the repository is published (docs/platforms.md says how to set it).
REPO = "OWNER/mi-widgets"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

# What docs/platforms.md promises of `%pip install mi-widgets` on Colab's stock runtime, each
# with why (checked below against the requirements pip resolved):
REPLACED = {
    "transformers",  # we need >=5; Colab has 4.x
    "ipywidgets",  # we need >=8; Colab has 7.7.1
    "widgetsnbextension",  # ipywidgets 8 needs 4.x
    "huggingface-hub",  # transformers 5 needs 1.x or later
    "tokenizers",  # transformers 5
    "safetensors",  # transformers 5
    "hf-xet",  # huggingface-hub 2
    "regex",  # transformers 5
    "click",  # huggingface-hub 2
}
# Preinstalled packages whose declared requirements no longer hold after our install (pip
# warns about each; they break only if imported): name -> the requirement that fails.
BROKEN = {
    "sentence-transformers": "transformers",
}
# Kept at Colab's version: its CUDA torch (replacing it would pull GBs and break torchvision /
# torchaudio) and the kernel side (a new ipykernel/ipython would need a restart).
KEPT = {"torch", "numpy", "pandas", "ipykernel", "ipython", "jupyter-client", "tornado", "notebook"}

PY = "3.12"
PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "linux_x86_64"]
MARKER_ENV = {
    "python_version": PY, "python_full_version": PY + ".12", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": "",
}


def colab_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"colab_constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def our_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]


# --------------------------------------------------------------------------------------------
# the notebooks' first cells
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_in_colab_from_its_own_path(path):
    nb = nbformat.read(path, as_version=4)
    badge, install = nb.cells[0], nb.cells[1]
    url = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{path.name}"
    assert badge.cell_type == "markdown"
    assert badge.source == f"[![Open In Colab]({BADGE})]({url})"
    assert install.cell_type == "code"
    assert f'%pip install --quiet "mi-widgets @ git+https://github.com/{REPO}"' in install.source
    # the same cell everywhere: one place to change
    first = nbformat.read(NOTEBOOKS[0], as_version=4).cells[1].source
    assert install.source == first


def _install_cell() -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    src = nbformat.read(NOTEBOOKS[0], as_version=4).cells[1].source
    return TransformerManager().transform_cell(src)


class _Shell:
    def __init__(self):
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name, line):
        self.magics.append((name, line))


def _run_install_cell(monkeypatch, *, installed: bool, loaded: dict[str, str], after: dict[str, str]):
    """Run the install cell with a recording shell; ``loaded``: modules already imported at
    these versions; ``after``: what importlib.metadata reports once pip has run."""
    import importlib.metadata
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real(name, *a) if installed else None) if name == "mi_widgets" else real(name, *a))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: after[name])
    for name, version in loaded.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(__version__=version))
    for name in ("ipywidgets", "transformers", "tokenizers", "huggingface_hub"):
        if name not in loaded:
            monkeypatch.delitem(sys.modules, name, raising=False)
    shell = _Shell()
    exec(_install_cell(), {"get_ipython": lambda: shell})
    return shell


def test_install_cell_does_nothing_where_mi_widgets_is_installed(monkeypatch, capsys):
    shell = _run_install_cell(monkeypatch, installed=True, loaded={}, after={})
    assert shell.magics == []
    assert capsys.readouterr().out == ""


def test_install_cell_installs_and_asks_for_a_restart_only_when_a_loaded_module_moved(monkeypatch, capsys):
    versions = {"ipywidgets": "8.1.9", "transformers": "5.25.0", "tokenizers": "0.23.3",
                "huggingface_hub": "2.5.0"}
    # Colab imports ipywidgets while the kernel starts; transformers is not imported yet
    shell = _run_install_cell(monkeypatch, installed=False, loaded={"ipywidgets": "7.7.1"}, after=versions)
    assert shell.magics == [("pip", f'install --quiet "mi-widgets @ git+https://github.com/{REPO}"')]
    out = capsys.readouterr().out
    assert "Upgraded while loaded: ipywidgets." in out and "Restart the session" in out
    # nothing loaded at an old version: no restart
    shell = _run_install_cell(monkeypatch, installed=False, loaded={"ipywidgets": "8.1.9"}, after=versions)
    assert len(shell.magics) == 1
    assert capsys.readouterr().out == ""


def test_install_cell_turns_on_colabs_widget_manager_only_on_colab(monkeypatch):
    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    _run_install_cell(monkeypatch, installed=True, loaded={}, after={})
    assert calls == [1]
    monkeypatch.delitem(sys.modules, "google.colab")
    _run_install_cell(monkeypatch, installed=True, loaded={}, after={})
    assert calls == [1]


# --------------------------------------------------------------------------------------------
# pip's resolver on Colab's versions
# --------------------------------------------------------------------------------------------


def _fake_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel of ``name==version`` with no requirements (Colab's torch as pip sees it:
    a version; its CUDA wheels stay unfetched)."""
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test_colab\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")


def _pip_dry_run(tmp: Path, pins: dict[str, str], requirements: list[str], *, no_deps: bool = False):
    """``pip install --dry-run --report`` for Colab's Python on Linux; returns (rc, report, log)."""
    constraints = tmp / f"constraints-{len(list(tmp.iterdir()))}.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()), encoding="utf-8")
    report = constraints.with_suffix(".json")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           "--python-version", PY, "--implementation", "cp", "--abi", "cp312",
           *[a for p in PLATFORMS for a in ("--platform", p)],
           "--find-links", str(tmp / "wheels"), "--report", str(report), "--constraint", str(constraints),
           "--disable-pip-version-check", "--progress-bar", "off", "--retries", "10"]
    if no_deps:
        cmd.append("--no-deps")
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PIP_NO_INPUT="1"))
    log = proc.stdout + proc.stderr
    data = json.loads(report.read_text(encoding="utf-8")) if proc.returncode == 0 else None
    return proc.returncode, data, log


def _versions(report) -> dict[str, str]:
    return {canonicalize_name(it["metadata"]["name"]): it["metadata"]["version"] for it in report["install"]}


def _requires(report) -> dict[str, list[Requirement]]:
    out = {}
    for it in report["install"]:
        reqs = [Requirement(r) for r in it["metadata"].get("requires_dist", [])]
        out[canonicalize_name(it["metadata"]["name"])] = [
            r for r in reqs if r.marker is None or r.marker.evaluate(MARKER_ENV)
        ]
    return out


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """Our install resolved on Colab: every Colab pin held except the documented replacements;
    plus each preinstalled package's own requirements (a --no-deps report of the pins)."""
    tmp = tmp_path_factory.mktemp("colab-pip")
    (tmp / "wheels").mkdir()
    pins = colab_pins()
    _fake_wheel(tmp / "wheels", "torch", pins["torch"])
    held = {n: v for n, v in pins.items() if n not in REPLACED}
    rc, ours, log = _pip_dry_run(tmp, held, our_requirements())
    assert rc == 0, f"our install does not resolve on Colab with only {sorted(REPLACED)} replaced:\n{log[-4000:]}"
    rc, stock, log = _pip_dry_run(tmp, {}, [f"{n}=={v}" for n, v in pins.items()], no_deps=True)
    assert rc == 0, log[-4000:]
    return types.SimpleNamespace(pins=pins, ours=ours, stock=stock, tmp=tmp)


@pytest.mark.slow  # pip downloads the wheels it resolves: 1-3 minutes for the module
def test_torch_and_the_kernel_side_stay_at_colabs_versions(colab):
    got = _versions(colab.ours)
    for name in KEPT:
        assert got.get(name, colab.pins[name]) == colab.pins[name], name
    assert got["torch"] == colab.pins["torch"]  # torch is ours to need; Colab's own build serves it


@pytest.mark.slow  # pip downloads the wheels it resolves: 1-3 minutes for the module
def test_our_install_moves_transformers_to_5_and_ipywidgets_to_8(colab):
    got = _versions(colab.ours)
    assert Version(got["transformers"]).major == 5
    assert Version(got["ipywidgets"]).major == 8
    for name in REPLACED:
        assert name in got and got[name] != colab.pins[name], name


@pytest.mark.slow  # pip downloads the wheels it resolves: 1-3 minutes for the module
def test_each_replacement_is_forced_by_a_resolved_requirement(colab):
    """No package is on the documented list without cause: Colab's version of each is refused
    by our requirements or by a requirement of a package pip resolved."""
    reqs = _requires(colab.ours)
    reqs["mi-widgets"] = [Requirement(r) for r in our_requirements()]
    why = {}
    for name in REPLACED:
        colab_version = Version(colab.pins[name])
        refusing = [f"{pkg}: {r}" for pkg, rs in reqs.items() for r in rs
                    if canonicalize_name(r.name) == name and not r.specifier.contains(colab_version, prereleases=True)]
        why[name] = refusing
    assert all(why.values()), {n: w for n, w in why.items() if not w}
    print("\n".join(f"{n} {colab.pins[n]}: refused by {w[0]}" for n, w in sorted(why.items())))


@pytest.mark.slow  # pip downloads the wheels it resolves: 1-3 minutes for the module
def test_preinstalled_packages_left_with_a_failing_requirement_are_the_documented_ones(colab):
    after = {**colab.pins, **_versions(colab.ours)}
    broken: dict[str, set[str]] = {}
    for pkg, reqs in _requires(colab.stock).items():
        if pkg in REPLACED or pkg in _versions(colab.ours):
            continue  # reinstalled by our install: its requirements were resolved
        for r in reqs:
            have = after.get(canonicalize_name(r.name))
            if have is not None and not r.specifier.contains(Version(have), prereleases=True):
                broken.setdefault(pkg, set()).add(canonicalize_name(r.name))
    assert broken == {k: {v} for k, v in BROKEN.items()}, broken


@pytest.mark.slow  # pip downloads the wheels it resolves: 1-3 minutes for the module
def test_colab_pins_alone_cannot_take_our_install(colab):
    """The promise is not vacuous: with every Colab version held, pip finds no solution."""
    rc, _, log = _pip_dry_run(colab.tmp, colab.pins, our_requirements())
    assert rc != 0 and "ResolutionImpossible" in log, log[-2000:]


def test_the_constraints_name_each_package_once_and_hold_what_the_docs_name():
    pins = colab_pins()
    names = [canonicalize_name(line.split("==")[0]) for line in CONSTRAINTS.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(names) == len(set(names))
    assert REPLACED | set(BROKEN) | KEPT <= set(pins)
    assert Version(pins["transformers"]).major == 4 and Version(pins["ipywidgets"]).major == 7
    assert Marker('python_version >= "3.12"').evaluate(MARKER_ENV)
