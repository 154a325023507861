"""The wheel carries the built JS and the zoo, installs into a fresh venv, and its widgets load
their bundles there with no node on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True, cwd=ROOT,
    )
    (whl,) = out.glob("mi_widgets-*.whl")
    return whl


def test_wheel_ships_bundles_and_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mi_widgets/static/token_activations.js" in names
    assert "mi_widgets/static/token_activations.iife.js" in names
    for model in ("tiny", "induction", "ioi"):
        for f in ("config.json", "model.safetensors", "tokenizer.json", "ground_truth.json"):
            assert f"mi_widgets/zoo/models/{model}/{f}" in names, f"{model}/{f} missing from the wheel"
    assert not any(n.startswith(("js/", "tests/")) for n in names)


def test_wheel_installs_and_renders_without_node(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # Dependencies come from this environment (torch etc. are large); the package itself
    # comes only from the wheel.
    site = sysconfig.get_paths()["purelib"]
    (next((venv / "lib").glob("python*/site-packages")) / "deps.pth").write_text(site + "\n")
    script = textwrap.dedent(
        """
        import shutil, mi_widgets as mw
        assert shutil.which("node") is None and shutil.which("npm") is None
        assert "/venv/" in mw.__file__, mw.__file__
        w = mw.TokenActivations(mw.load(), "The Eiffel Tower is in Paris", site="mlp_post", layer=0)
        assert "render" in w._esm
        page = w.to_html()
        assert "MIWidgets" in page and len(page) > 5000
        print("ok", len(page))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin/no-node-here"
    env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run([str(py), "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")
