"""What the pytest-benchmark files share: the table module under test, plain or pedantic runs, ratios."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

import pytest

from emu.bench.tables import per_call


def ours_module() -> ModuleType:
    """The compiled emu._fastpath; the pure-Python twin with EMU_NO_EXTENSIONS=1 (else a missing build fails)."""
    try:
        return importlib.import_module("emu._fastpath")
    except ImportError as exc:
        if os.environ.get("EMU_NO_EXTENSIONS") == "1":
            return importlib.import_module("emu._fastpath_py")
        pytest.fail(f"compiled emu._fastpath failed to import ({exc}); build it or set EMU_NO_EXTENSIONS=1")


def run(benchmark, fn: Callable[[], object], size: int, large: int, rounds: int = 5,  # noqa: ANN001, ANN201
        iterations: int = 1):
    """Plain benchmark below `large`; pedantic with few rounds from there on."""
    if size >= large:
        return benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
    return benchmark(fn)


def record_ratio(benchmark, baseline: Callable[[], object], against: str,  # noqa: ANN001
                 timer: Callable[[Callable[[], object]], float] = lambda fn: per_call(fn, 1.0)) -> None:
    """Time the baseline now and store speedup_vs_<against> = baseline / ours (enabled runs only)."""
    if benchmark.disabled or benchmark.stats is None:
        return
    ours = benchmark.stats.stats.min
    base = timer(baseline)
    benchmark.extra_info.update({"ours_min_s": ours, f"{against}_min_s": base,
                                 f"speedup_vs_{against}": round(base / ours, 2)})
