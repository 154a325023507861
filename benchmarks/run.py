"""Run every benchmark script in this folder; each rewrites its section of RESULTS.md."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

for script in sorted(HERE.glob("*.py")):
    if script.name.startswith("_") or script.name == "run.py":
        continue
    print(f"== {script.name}", flush=True)
    runpy.run_path(str(script), run_name="__main__")
