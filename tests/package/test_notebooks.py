"""Every notebook in notebooks/ runs offline, top to bottom, in a fresh kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert any(p.name == "00_tour.ipynb" for p in NOTEBOOKS)


# Figures each notebook's prose states, read back from the executed notebook: (claim, the code
# cell it is about (a substring of its source), Python run in the same kernel after the notebook
# that prints a JSON value (``OUT`` is that cell's output object), predicate on the value).
CLAIMS: dict[str, list[tuple[str, str, str, object]]] = {
    "01_decomposition.ipynb": [
        (
            "splicing the SAE keeps nearly all 700 facts; zero-ablating the site loses them all",
            "S.spliced_accuracy(sae, model, p, a, mode=mode)",
            "print(json.dumps(OUT))",
            lambda v: v["clean"] >= 0.95 and v["splice"] >= 0.9 and v["zero"] <= 0.05,
        ),
    ],
    "06_validation.ipynb": [
        (
            "the illusion check flags zoo:illusion's u and not the true direction",
            'checks = {name: mw.illusion_check(illusion, classes, 0, directions[name]',
            "print(json.dumps(OUT))",
            lambda v: v == {"u": True, "true": False},
        ),
        (
            "scrubbing with the names keeps the IOI behaviour; with the template it is lost",
            'scrub = {"names": mw.causal_scrub(circuit, prompts, metric, names)',
            "print(json.dumps(OUT))",
            lambda v: v["names"] >= 0.9 and v["template"] <= 0.3,
        ),
    ],
    "02_description.ipynb": [
        (
            "the final position decodes to ' Paris' from source layer 1 on (same-layer patchscope)",
            'ps = mw.patchscope(model, "The Eiffel Tower is in", target_layers="all")',
            "_d = ps.to_pandas(); print(json.dumps({int(r.source_layer): r.text for r in _d[_d.source_layer == _d.target_layer].itertuples()}))",
            lambda v: all(t.strip().startswith("Paris") for layer, t in v.items() if int(layer) >= 1),
        ),
    ],
}


def _append_checks(nb, name: str) -> list[tuple[str, object]]:
    """Add one cell per claim at the end of ``nb``; return (claim, predicate) in that order."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    out = []
    for claim, cell_src, probe, pred in CLAIMS.get(name, []):
        hits = [i for i, c in enumerate(code) if cell_src in c.source]
        assert len(hits) == 1, f"{name}: the cell for '{claim}' ({cell_src!r}) is not found once"
        n = hits[0] + 1  # execution count of that cell in a fresh top-to-bottom run
        src = f"import json\nOUT = Out.get({n})\n{probe}"
        nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"mw_check": claim}))
        out.append((claim, pred))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_offline(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(path.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    checks = _append_checks(nb, path.name)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []) if out.output_type == "error"
    ]
    assert not errors
    # the figures the prose states
    check_cells = [c for c in nb.cells if "mw_check" in c.get("metadata", {})]
    for (claim, pred), cell in zip(checks, check_cells):
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        value = json.loads(text.strip().splitlines()[-1])
        assert pred(value), f"{path.name}: {claim}: got {value}"
    # the tour shows live widgets: their views are in the outputs
    if path.name == "00_tour.ipynb":
        views = [
            out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
        ]
        assert len(views) >= 2
