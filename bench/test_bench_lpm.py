"""Benchmarks: emu's LpmTable against pytricia on the same seeded random tables, in one run.

Sizes 10k and 500k prefixes; half of the lookup keys fall inside table prefixes.  Compares a
scalar lookup loop, batches of 256 and 65536 (ours: lookup_batch; pytricia: a get() loop),
build time, and memory (ours: memory_bytes(); both: RSS delta measured in a fresh subprocess,
reported in benchmark.extra_info).  Group names pair the two libraries side by side.
There are no timed assertions; the only size assertion is the 3-route table's footprint.

"ours" is the compiled emu._fastpath; with EMU_NO_EXTENSIONS=1 it is the pure-Python twin
(a missing extension otherwise fails the run).  Run as a script, with emu importable, to print
the memory figures:  PYTHONPATH=. python bench/test_bench_lpm.py 500000
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys

import pytest
from benchutil import ours_module, run

from emu.bench.tables import build_lpm, build_pytricia, lpm_keys, lpm_memory, lpm_memory_report, lpm_prefixes

SIZES = [pytest.param(10_000, id="10k"), pytest.param(500_000, id="500k")]
LIBS = ["emu", "pytricia"]
SCALAR_KEYS = 10_000
LARGE = 100_000  # from this size on, benchmarks run pedantic with few rounds


class Dataset:
    """Prefixes, keys and both tables for one size, built once per module."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mod = ours_module()
        self.prefixes = lpm_prefixes(size)
        self.keys = lpm_keys(self.prefixes, 65536)
        self.ours = build_lpm(self.mod, self.prefixes)
        self.pyt = build_pytricia(self.prefixes)


@pytest.fixture(scope="module", params=SIZES)
def data(request: pytest.FixtureRequest) -> Dataset:
    return Dataset(request.param)


def test_results_agree_with_pytricia(data: Dataset) -> None:
    """Not a timing: both structures answer the same on every key."""
    ours = list(data.ours.lookup_batch(data.keys))
    theirs = [data.pyt.get(k) for k in data.keys]
    assert ours == [-1 if v is None else v for v in theirs]
    assert len(data.ours) == len(data.pyt) == data.size
    assert sum(v >= 0 for v in ours) >= len(ours) // 2


@pytest.mark.parametrize("lib", LIBS)
def test_scalar_lookup(benchmark, data: Dataset, lib: str) -> None:  # noqa: ANN001
    keys = data.keys[:SCALAR_KEYS].tolist()
    get = data.ours.lookup if lib == "emu" else data.pyt.get

    def loop() -> None:
        for k in keys:
            get(k)

    benchmark.group = f"lpm-{data.size}-scalar-x{SCALAR_KEYS}"
    benchmark.extra_info.update(lib=lib, keys=SCALAR_KEYS, impl=data.mod.__name__)
    run(benchmark, loop, data.size, LARGE)


@pytest.mark.parametrize("batch", [256, 65536])
@pytest.mark.parametrize("lib", LIBS)
def test_batch_lookup(benchmark, data: Dataset, lib: str, batch: int) -> None:  # noqa: ANN001
    keys = data.keys[:batch]
    if lib == "emu":
        fn = functools.partial(data.ours.lookup_batch, keys)
    else:
        get = data.pyt.get
        klist = keys.tolist()

        def fn() -> list:
            return [get(k) for k in klist]

    benchmark.group = f"lpm-{data.size}-batch-{batch}"
    benchmark.extra_info.update(lib=lib, batch=batch, impl=data.mod.__name__)
    if batch > 256:
        run(benchmark, fn, data.size, LARGE, rounds=5)
    else:
        run(benchmark, fn, data.size, LARGE, rounds=20, iterations=20)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("size", SIZES)
def test_build(benchmark, size: int, lib: str) -> None:  # noqa: ANN001
    """Build time from a prefix list; memory of the built table in extra_info."""
    mod = ours_module()
    prefixes = lpm_prefixes(size)
    if lib == "emu":
        def fn() -> object:
            return build_lpm(mod, prefixes)
    else:
        def fn() -> object:
            return build_pytricia(prefixes)
    benchmark.group = f"lpm-{size}-build"
    benchmark.extra_info.update(lib=lib, prefixes=size, impl=mod.__name__)
    table = run(benchmark, fn, size, LARGE, rounds=2 if size >= LARGE else 5)
    assert len(table) == size
    if lib == "emu":
        benchmark.extra_info["memory_bytes"] = table.memory_bytes()
    mem = lpm_memory_report(size)
    if mem is not None:
        benchmark.extra_info["rss_delta"] = mem[lib]["rss_delta"]
        if lib == "emu":
            benchmark.extra_info["rss_ratio_vs_pytricia"] = round(
                mem["emu"]["rss_delta"] / max(1, mem["pytricia"]["rss_delta"]), 3)
            benchmark.extra_info["memory_bytes_ratio_vs_pytricia_rss"] = round(
                mem["emu"]["memory_bytes"] / max(1, mem["pytricia"]["rss_delta"]), 3)


@pytest.mark.parametrize("impl", ["c", "py"])
def test_three_route_table_is_small(impl: str) -> None:
    """A pod's table (~3 routes) must stay a few KiB: hundreds of namespaces share a lab."""
    if impl == "c":
        try:
            mod = importlib.import_module("emu._fastpath")
        except ImportError as exc:
            if os.environ.get("EMU_NO_EXTENSIONS") == "1":
                pytest.skip(f"emu._fastpath not built and EMU_NO_EXTENSIONS=1 ({exc})")
            raise
    else:
        mod = importlib.import_module("emu._fastpath_py")
    t = mod.LpmTable()
    t.insert(0, 0, 0)
    t.insert(0x0AF40100, 24, 1)
    t.insert(0xA9FE0101, 32, 2)
    assert len(t) == 3
    assert t.memory_bytes() < 8192


if __name__ == "__main__":
    print(json.dumps(lpm_memory(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000)))
