"""Benchmarks: emu's ConntrackTable against a plain dict of tuples, on the same seeded flows, in one run.

The baseline is what a Python conntrack would write: {orig tuple: (id, 0), reply tuple: (id, 1)}
with one dict.get per lookup.  Sizes 100k and 1M entries (2 tuples each); the 65,536 lookup
keys are half present (an entry's orig or reply tuple), half absent.  Compares find_batch
against a dict.get loop, a scalar find loop against the same loop over dict.get, build time,
and memory (ours: memory_bytes(); the dict: tracemalloc of building it, tuples and ints
included).  Group names pair the two side by side.

Each "emu" benchmark also times its baseline in the same test (best of the same number of
rounds) and puts both figures and `speedup_vs_dict` (baseline time / our time) in
benchmark.extra_info; memory goes in as `memory_ratio_vs_dict` (ours / dict).  There are no
timed assertions.  With --benchmark-disable (the normal test run) each body runs once and
no ratios are computed.

"ours" is the compiled emu._fastpath; with EMU_NO_EXTENSIONS=1 it is the pure-Python twin
(a missing extension otherwise fails the run).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable

import pytest
from benchutil import ours_module, record_ratio, run

from emu.bench.tables import build_ct, build_ct_dict, ct_flows, ct_keys, ct_unpack

SIZES = [pytest.param(100_000, id="100k"), pytest.param(1_000_000, id="1M")]
LIBS = ["emu", "dict"]
BATCH = 65_536
LARGE = 500_000  # from this size on, benchmarks run pedantic with few rounds


def best_of(fn: Callable[[], object], rounds: int) -> float:
    """Smallest wall time of `rounds` calls (garbage collection off while timing, like the plugin)."""
    best = float("inf")
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return best


class Dataset:
    """Flows, lookup keys and both structures for one size, built once per module."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mod = ours_module()
        self.blob = ct_flows(size)
        self.tuples = ct_unpack(self.blob)
        self.ours = build_ct(self.mod, self.tuples)
        self.dict = build_ct_dict(self.tuples)
        self.keys = ct_keys(self.tuples, self.dict, BATCH)
        self.packed = self.mod.pack_tuples(self.keys)


@pytest.fixture(scope="module", params=SIZES)
def data(request: pytest.FixtureRequest) -> Dataset:
    return Dataset(request.param)


def test_results_agree_with_dict(data: Dataset) -> None:
    """Not a timing: both structures answer the same on every key (ids are equal: no clashes)."""
    assert len(data.ours) == len(data.dict) // 2 == data.size
    ours = data.ours.find_batch(data.packed).tolist()
    want = [-1 if v is None else 2 * v[0] + v[1] for v in map(data.dict.get, data.keys)]
    assert ours == want
    assert sum(v >= 0 for v in ours) == BATCH // 2
    assert [data.ours.find(k) for k in data.keys[:2000]] == [data.dict.get(k, (-1, 0)) for k in data.keys[:2000]]


@pytest.mark.parametrize("lib", LIBS)
def test_batch_lookup(benchmark, data: Dataset, lib: str) -> None:  # noqa: ANN001
    """find_batch over 65,536 packed keys vs a dict.get loop over the same keys as tuples."""
    get = data.dict.get
    keys = data.keys

    def baseline() -> list:
        return [get(k) for k in keys]

    if lib == "emu":
        find_batch, packed, pack = data.ours.find_batch, data.packed, data.mod.pack_tuples

        def fn() -> object:
            return find_batch(packed)
    else:
        fn = baseline
    benchmark.group = f"conntrack-{data.size}-batch-{BATCH}"
    benchmark.extra_info.update(lib=lib, keys=BATCH, entries=data.size, impl=data.mod.__name__)
    rounds = 5 if data.size >= LARGE else 20
    run(benchmark, fn, data.size, LARGE, rounds=rounds)
    if lib == "emu":
        record_ratio(benchmark, baseline, "dict", lambda fn: best_of(fn, rounds))
        if not benchmark.disabled and "dict_min_s" in benchmark.extra_info:
            # the same lookup including packing the tuples first, for callers that hold tuples
            with_pack = best_of(lambda: find_batch(pack(keys)), rounds)
            benchmark.extra_info.update(pack_and_batch_min_s=with_pack, speedup_vs_dict_with_packing=round(
                benchmark.extra_info["dict_min_s"] / with_pack, 2))


@pytest.mark.parametrize("lib", LIBS)
def test_scalar_find(benchmark, data: Dataset, lib: str) -> None:  # noqa: ANN001
    """One find() per key in a Python loop vs one dict.get() per key."""
    keys = data.keys
    get = data.dict.get

    def baseline() -> None:
        for k in keys:
            get(k)

    if lib == "emu":
        find = data.ours.find

        def fn() -> None:
            for k in keys:
                find(k)
    else:
        fn = baseline
    benchmark.group = f"conntrack-{data.size}-scalar-x{BATCH}"
    benchmark.extra_info.update(lib=lib, keys=BATCH, entries=data.size, impl=data.mod.__name__)
    rounds = 5 if data.size >= LARGE else 10
    run(benchmark, fn, data.size, LARGE, rounds=rounds)
    if lib == "emu":
        record_ratio(benchmark, baseline, "dict", lambda fn: best_of(fn, rounds))


@pytest.mark.parametrize("lib", LIBS)
def test_build(benchmark, data: Dataset, lib: str) -> None:  # noqa: ANN001
    """Creating every entry from tuples (ours also stores state, status, expiry and counters)."""
    tuples = data.tuples
    mod = data.mod

    def baseline() -> object:
        return build_ct_dict(tuples)

    def ours() -> object:
        return build_ct(mod, tuples)

    benchmark.group = f"conntrack-{data.size}-build"
    benchmark.extra_info.update(lib=lib, entries=data.size, impl=mod.__name__)
    if data.size >= LARGE:
        table = benchmark.pedantic(ours if lib == "emu" else baseline, rounds=2, iterations=1, warmup_rounds=0)
    else:
        table = benchmark.pedantic(ours if lib == "emu" else baseline, rounds=5, iterations=1, warmup_rounds=1)
    assert len(table) == data.size * (1 if lib == "emu" else 2)
    del table
    if lib == "emu":
        record_ratio(benchmark, baseline, "dict", lambda fn: best_of(fn, 2))


def dict_traced_bytes(blob: bytes) -> int:
    """Bytes tracemalloc sees held by a baseline dict built from fresh tuples and ints."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        d = build_ct_dict(ct_unpack(blob))  # the temporary list is freed before the measurement
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(d) == 2 * len(blob) // 32
    return held


def test_memory(benchmark, data: Dataset) -> None:  # noqa: ANN001
    """memory_bytes() of our table vs tracemalloc of the dict; a (cheap) timed len() keeps it a benchmark.

    Tracing the 1M dict takes ~15 s, so with --benchmark-disable only the smaller size traces it.
    """
    benchmark.group = f"conntrack-{data.size}-memory"
    ours = data.ours.memory_bytes()
    benchmark.extra_info.update(entries=data.size, impl=data.mod.__name__, ours_memory_bytes=ours,
                                ours_bytes_per_entry=round(ours / data.size, 1))
    if data.mod.__name__ == "emu._fastpath":
        assert ours < 300 * data.size  # slots + entry arrays, with growth slack
    if not benchmark.disabled or data.size < LARGE:
        theirs = dict_traced_bytes(data.blob)
        benchmark.extra_info.update(dict_traced_bytes=theirs, memory_ratio_vs_dict=round(ours / theirs, 3),
                                    dict_bytes_per_entry=round(theirs / data.size, 1))
        assert ours < theirs
    benchmark(data.ours.__len__)
