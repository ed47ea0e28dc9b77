"""Runs the registered workloads, prints their rows as a table and writes them as JSON.

A workload that raises does not stop the run: it becomes an error row (and the command's exit
code 1).  Workload modules are imported by name; one that does not exist (yet) is skipped, one
that exists but fails to import raises as usual.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from emu import __version__, fastpath
from emu.bench.registry import WORKLOADS, Row, WorkloadFn

MODULES = ("emu.bench.tables", "emu.bench.topo", "emu.bench.kernel")


class UnknownWorkload(ValueError):
    """An --only pattern that matches no workload."""


@dataclass
class Outcome:
    """What one workload produced: its rows, how long it took, and its error if it raised."""

    name: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    traceback: str = ""


def load_workloads() -> dict[str, WorkloadFn]:
    """Imports the workload modules that exist and returns the registry."""
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue  # not written yet
        importlib.import_module(name)
    return WORKLOADS


def describe(name: str) -> str:
    """First line of a workload's docstring."""
    doc = (WORKLOADS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def select(patterns: Sequence[str] = ()) -> list[str]:
    """Workload names matching any of the glob patterns (all when none), in registration order."""
    names = list(load_workloads())
    if not patterns:
        return names
    unknown = [p for p in patterns if not fnmatch.filter(names, p)]
    if unknown:
        raise UnknownWorkload(f"--only {', '.join(repr(p) for p in unknown)} matches no workload "
                              f"(known: {', '.join(names)})")
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def run(names: Sequence[str], quick: bool, progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Runs each workload in turn; an exception becomes the outcome's error after the rows it yielded."""
    outcomes = []
    for name in names:
        out = Outcome(name)
        t0 = time.perf_counter()
        try:
            for row in WORKLOADS[name](quick):
                out.rows.append(row)
        except Exception as exc:  # one broken workload must not end the run
            out.error = f"{type(exc).__name__}: {exc}"
            out.traceback = traceback.format_exc()
            out.rows.append(Row(name, 0.0, "", None, note=out.error, error=out.error))
        out.seconds = time.perf_counter() - t0
        outcomes.append(out)
        if progress is not None:
            progress(out)
    return outcomes


def _si(v: float) -> str:
    suffix = ""
    for scale, name in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            v, suffix = v / scale, name
            break
    digits = 2 if abs(v) < 10 else 1 if abs(v) < 100 else 0
    return f"{v:.{digits}f}{suffix}"


def format_value(v: float | None, unit: str) -> str:
    """A value for people: 1.23M/s, 456k/s, 15.1 MiB, 296 ms."""
    if v is None:
        return "—"
    if unit == "bytes":
        for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if v >= scale:
                return f"{v / scale:.1f} {suffix}"
        return f"{v:.0f} B"
    if unit == "s":
        if v < 1e-3:
            return f"{v * 1e6:.0f} µs"
        return f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit.endswith("/s"):
        return f"{_si(v)}/s"
    return f"{_si(v)} {unit}"


def format_ratio(r: float | None) -> str:
    """How many times better ours is: 14.2x (below 1: worse)."""
    if r is None:
        return "—"
    return f"{r:.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def table(outcomes: Sequence[Outcome], quick: bool) -> Table:
    """The rows as a rich table: workload, ours, vs (the baseline's name), baseline, ratio, note."""
    mode = "quick" if quick else "full"
    impl = "compiled tables" if fastpath.EXTENSION_LOADED else "pure-Python tables"
    t = Table(title=f"emu bench ({mode}, {impl})", title_justify="left",
              caption="ratio = how many times better ours is (rate ours/baseline, time or bytes baseline/ours)",
              caption_justify="left")
    t.add_column("workload", no_wrap=True)
    t.add_column("ours", justify="right", no_wrap=True)
    t.add_column("vs", no_wrap=True)
    t.add_column("baseline", justify="right", no_wrap=True)
    t.add_column("ratio", justify="right", no_wrap=True)
    t.add_column("note", overflow="fold")
    for out in outcomes:
        for row in out.rows:
            if row.error:
                t.add_row(Text(row.workload, style="bold red"), Text("error", style="bold red"), "", "", "",
                          Text(row.error, style="red"))
                continue
            ratio = row.ratio
            style = "" if ratio is None else "green" if ratio >= 1 else "red"
            t.add_row(row.workload, format_value(row.ours, row.unit), row.baseline,
                      format_value(row.base, row.unit), Text(format_ratio(ratio), style=style), row.note)
    return t


def print_table(console: Console, outcomes: Sequence[Outcome], quick: bool) -> None:
    """Prints the table; to a file or a pipe at its natural width rather than the 80 columns rich assumes."""
    t = table(outcomes, quick)
    if not console.is_terminal:
        wide = Console(file=console.file, width=1000, highlight=False)
        width = Measurement.get(wide, wide.options, t).maximum
        console = Console(file=console.file, width=width, highlight=False)
    console.print(t)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "extension_loaded": fastpath.EXTENSION_LOADED,
        "emu": __version__,
    }


def report(outcomes: Sequence[Outcome], quick: bool) -> dict[str, Any]:
    """The JSON document: machine info, every row with its ratio, and each workload's time and error."""
    return {
        "machine": machine(),
        "quick": quick,
        "rows": [dict(asdict(row), ratio=row.ratio) for out in outcomes for row in out.rows],
        "workloads": [{"name": o.name, "seconds": round(o.seconds, 3), "rows": len(o.rows), "error": o.error,
                       "traceback": o.traceback} for o in outcomes],
        "errors": sum(1 for o in outcomes if o.error),
    }
