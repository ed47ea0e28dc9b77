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
import gc
import importlib
import json
import os
import random
import subprocess
import sys
from array import array
from pathlib import Path
from types import ModuleType

import pytest
import pytricia

SEED = 20240611
SIZES = [pytest.param(10_000, id="10k"), pytest.param(500_000, id="500k")]
LIBS = ["emu", "pytricia"]
SCALAR_KEYS = 10_000
LARGE = 100_000  # from this size on, benchmarks run pedantic with few rounds

# prefix-length mix loosely modelled on an Internet table: mostly /24, some host routes
_PLEN_WEIGHTS = {8: 1, 12: 1, 14: 1, 16: 6, 18: 3, 19: 4, 20: 6, 21: 6, 22: 12, 23: 9, 24: 40,
                 25: 1, 26: 1, 27: 1, 28: 1, 29: 2, 30: 2, 32: 3}


def _ours_module() -> ModuleType:
    try:
        return importlib.import_module("emu._fastpath")
    except ImportError as exc:
        if os.environ.get("EMU_NO_EXTENSIONS") == "1":
            return importlib.import_module("emu._fastpath_py")
        pytest.fail(f"compiled emu._fastpath failed to import ({exc}); build it or set EMU_NO_EXTENSIONS=1")


def make_prefixes(n: int, seed: int = SEED) -> list[tuple[int, int]]:
    """n distinct random (prefix, plen) pairs, deterministic for a seed."""
    rng = random.Random(seed)
    plens = list(_PLEN_WEIGHTS)
    weights = list(_PLEN_WEIGHTS.values())
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < n:
        for plen in rng.choices(plens, weights, k=n - len(seen)):
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            seen[(rng.getrandbits(32) & mask, plen)] = None
    return list(seen)


def make_keys(prefixes: list[tuple[int, int]], count: int, seed: int = SEED + 1) -> array:
    """count uint32 keys: even positions inside a random table prefix, odd ones uniform."""
    rng = random.Random(seed)
    keys = array("I")
    for i in range(count):
        if i % 2 == 0:
            p, n = prefixes[rng.randrange(len(prefixes))]
            keys.append(p | (rng.getrandbits(32 - n) if n < 32 else 0))
        else:
            keys.append(rng.getrandbits(32))
    return keys


def build_ours(mod: ModuleType, prefixes: list[tuple[int, int]]) -> object:
    t = mod.LpmTable()
    ins = t.insert
    for i, (p, n) in enumerate(prefixes):
        ins(p, n, i)
    return t


def build_pytricia(prefixes: list[tuple[int, int]]) -> pytricia.PyTricia:
    t = pytricia.PyTricia(32)
    ins = t.insert
    for i, (p, n) in enumerate(prefixes):
        ins(p, n, i)
    return t


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(size: int) -> dict[str, dict[str, int]]:
    """Build each structure in this process and report RSS deltas (run in a fresh process)."""
    prefixes = make_prefixes(size)
    out: dict[str, dict[str, int]] = {}
    gc.collect()
    before = _rss()
    ours = build_ours(_ours_module(), prefixes)
    gc.collect()
    out["emu"] = {"memory_bytes": ours.memory_bytes(), "rss_delta": _rss() - before}
    gc.collect()
    before = _rss()
    pyt = build_pytricia(prefixes)
    gc.collect()
    out["pytricia"] = {"rss_delta": _rss() - before}
    del ours, pyt
    return out


@functools.cache
def memory_report(size: int) -> dict[str, dict[str, int]] | None:
    """measure_memory(size) in a subprocess, so earlier allocations cannot hide growth."""
    if not os.path.exists("/proc/self/statm"):
        return None
    import emu  # the child must import the same package as this process

    root = Path(emu.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(size)], capture_output=True,
                         text=True, env=env, timeout=600, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(benchmark, fn, size: int, rounds: int = 5, iterations: int = 1):  # noqa: ANN001, ANN201
    """Plain benchmark for small sizes; pedantic with few rounds for large ones."""
    if size >= LARGE:
        return benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
    return benchmark(fn)


class Dataset:
    """Prefixes, keys and both tables for one size, built once per module."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mod = _ours_module()
        self.prefixes = make_prefixes(size)
        self.keys = make_keys(self.prefixes, 65536)
        self.ours = build_ours(self.mod, self.prefixes)
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
    run(benchmark, loop, data.size)


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
        run(benchmark, fn, data.size, rounds=5)
    else:
        run(benchmark, fn, data.size, rounds=20, iterations=20)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("size", SIZES)
def test_build(benchmark, size: int, lib: str) -> None:  # noqa: ANN001
    """Build time from a prefix list; memory of the built table in extra_info."""
    mod = _ours_module()
    prefixes = make_prefixes(size)
    if lib == "emu":
        def fn() -> object:
            return build_ours(mod, prefixes)
    else:
        def fn() -> object:
            return build_pytricia(prefixes)
    benchmark.group = f"lpm-{size}-build"
    benchmark.extra_info.update(lib=lib, prefixes=size, impl=mod.__name__)
    table = run(benchmark, fn, size, rounds=2 if size >= LARGE else 5)
    assert len(table) == size
    if lib == "emu":
        benchmark.extra_info["memory_bytes"] = table.memory_bytes()
    mem = memory_report(size)
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
    print(json.dumps(measure_memory(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000)))
