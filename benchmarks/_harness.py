"""One timing harness for every benchmark in this folder.

Every contender gets the same treatment: the same torch thread count (set once, by ``setup``),
the same untimed warm-up calls, and interleaved repeats (round r runs every contender once, in an
order rotated by r, so that load from other processes on a shared machine hits them alike).
Tables report the median and the min–max of each contender and ratios of medians. A ``Run``
records the machine, the library versions and the load average before and after, so that a
number measured on a loaded machine says so next to it.

Usage::

    from _harness import Run, compare, ratio, setup

    setup(threads=1)
    with Run("patching") as run:
        t = compare({"ours": f, "baseline": g}, repeats=5, warmup=1)
    print(t["ours"].cell(), ratio(t["ours"], t["baseline"]))
    body = run.header() + table

A contender that must time itself (a subprocess in another venv, where process start-up is not
what is compared) returns ``Measured(seconds, output)``; its ``seconds`` count instead of the
wall time of the call.

The API (``setup``, ``compare``, ``ratio``, ``Timing``, ``Measured``, ``Run``, ``machine``,
``loadavg``, ``md_table``, ``fmt_s``, ``peak_rss``, ``publish``) is stable: other benchmark
scripts import it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

THREADS = 1


def setup(threads: int = 1) -> None:
    """Fix the thread count every contender in this process runs with (torch intra-op and the
    OpenMP/MKL pools of child processes) and keep Hugging Face offline and quiet."""
    global THREADS
    THREADS = threads
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    torch.set_num_threads(threads)


@dataclass
class Measured:
    """What a self-timed contender returns: its own measured seconds and its output."""

    seconds: float
    output: Any = None


@dataclass
class Timing:
    """The repeats of one contender: ``seconds`` in run order, and its last output."""

    name: str
    seconds: list[float] = field(default_factory=list)
    output: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    def cell(self, unit: str = "s") -> str:
        """``"1.23 (1.10–1.40)"``: median (min–max), in seconds or milliseconds."""
        return f"{fmt_s(self.median, unit)} ({fmt_s(self.min, unit)}–{fmt_s(self.max, unit)})"


def fmt_s(seconds: float, unit: str = "s") -> str:
    if unit == "ms":
        return f"{seconds * 1e3:.0f}"
    return f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}"


def ratio(a: Timing, b: Timing) -> float:
    """Ratio of medians ``a / b``."""
    return a.median / b.median


def compare(contenders: dict[str, Callable[[], Any]], *, repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Time each contender ``repeats`` times, interleaved and rotated, after ``warmup`` untimed
    calls of each (in the same rotated order)."""
    names = list(contenders)
    for w in range(warmup):
        for name in names[w % len(names) :] + names[: w % len(names)]:
            contenders[name]()
    out = {name: Timing(name) for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            res = contenders[name]()
            dt = time.perf_counter() - t0
            if isinstance(res, Measured):
                dt, res = res.seconds, res.output
            out[name].seconds.append(dt)
            out[name].output = res
    return out


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # not on every platform
        return (float("nan"),) * 3


def machine() -> dict[str, Any]:
    """The machine and the versions a number was measured with."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "threads": THREADS,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        info["cpu"] = platform.processor() or "?"
    for mod in ("torch", "transformers", "nnsight"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing library is reported, not fatal
            info[mod] = "—"
    return info


class Run:
    """A benchmark run: wall time, machine, versions, load average before and after."""

    def __init__(self, name: str):
        self.name = name
        self.load_before = self.load_after = (float("nan"),) * 3

    def __enter__(self) -> Run:
        self.load_before = loadavg()
        self.t0 = time.perf_counter()
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.load_after = loadavg()

    @property
    def loaded(self) -> bool:
        """More runnable processes than cores at either end: the numbers are load-bound."""
        cpus = os.cpu_count() or 1
        return max(self.load_before[0], self.load_after[0]) > cpus

    def header(self) -> str:
        """The provenance line every section starts with."""
        m = machine()
        lb = ", ".join(f"{x:.2f}" for x in self.load_before)
        la = ", ".join(f"{x:.2f}" for x in self.load_after)
        line = (
            f"Run {self.started}: {m['machine']} ({m['cpu']}), {m['cpus']} cores, python {m['python']}, "
            f"torch {m['torch']} with {m['threads']} thread(s), transformers {m['transformers']}, "
            f"nnsight {m['nnsight']}. Load average (1, 5, 15 min) before: {lb}; after: {la}. "
            f"Wall time {getattr(self, 'seconds', float('nan')):.0f} s."
        )
        if self.loaded:
            line += (
                " **The machine was loaded (load average above its core count): these timings "
                "are load-bound and must be re-run on an idle machine before they are quoted.**"
            )
        return line


def md_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one char per column (``l`` or ``r``), default right."""
    align = align or "r" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_PEAK_CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[3])
from _models import build_model
import mi_widgets as mw
@IMPORTS@
mode, P, args = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[4])
torch.set_num_threads(2)
hf, tokenizer = build_model()
model = mw.wrap(hf, tokenizer, "gpt2-small-shape")
g = torch.Generator().manual_seed(1)
clean = " ".join(f"t{i}" for i in torch.randint(1, 50000, (P,), generator=g).tolist())
corrupt = " ".join(f"t{i}" for i in torch.randint(1, 50000, (P,), generator=g).tolist())
t0 = time.perf_counter()
if mode == "forward":
    with torch.no_grad():
        hf(model.to_tokens(clean))
else:
@BODY@
seconds = time.perf_counter() - t0
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))
"""


def peak_rss(mode: str, p: int, body: str, *, imports: str = "", args: Any = None) -> dict[str, float]:
    """``{"peak_mb", "seconds"}``: the peak RSS (``ru_maxrss``) of one fresh process (2 torch
    threads) that builds the gpt2-small-shaped model of ``_models.py`` (``model``; ``hf`` is its
    transformers model) and a random ``P``-token ``clean`` / ``corrupt`` pair, and the seconds of
    what it then runs: one plain forward for ``mode="forward"``, else ``body`` (statements that
    may use ``mode``, ``P``, ``args`` (``args`` through JSON), ``mw`` and what ``imports`` imports)."""
    import json
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    child = _PEAK_CHILD.replace("@IMPORTS@", imports).replace(
        "@BODY@", textwrap.indent(textwrap.dedent(body).strip(), "    ")
    )
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", child, mode, str(p), here, json.dumps(args)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def publish(section: str, body: str, write: bool = True) -> None:
    """Print ``body`` and, with ``write``, make it the section ``section`` of RESULTS.md."""
    print(body)
    if write:
        from _results import write_section

        write_section(section, body)
