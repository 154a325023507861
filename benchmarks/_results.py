"""Write one benchmark's section of benchmarks/RESULTS.md, leaving the others alone."""

from __future__ import annotations

import platform
import re
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(name: str, body: str) -> None:
    header = "# Benchmark results\n\nEach section is rewritten by its script; ratios are measured in the same run.\n"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else header
    stamp = f"_{date.today().isoformat()}, {platform.machine()}, python {platform.python_version()}_\n\n"
    section = f"## {name}\n\n{stamp}{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")
