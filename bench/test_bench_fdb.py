"""Benchmarks: emu's FdbTable against a Python dict mac -> (port, updated), on the same seeded MACs.

Sizes 4,096 and 65,536 MACs; the 65,536 lookup keys are half learned, half never seen.  Compares
learning every MAC into a fresh table, a scalar lookup loop (ours: lookup(); the dict: get() plus
the same ageing check), and one lookup_batch over all keys against the dict loop.  Group names
pair the two side by side.

Each "emu" benchmark also times its baseline in the same test and puts `speedup_vs_dict`
(baseline time / our time) in benchmark.extra_info.  There are no timed assertions.  With
--benchmark-disable (the normal test run) each body runs once and no ratios are computed.

"ours" is the compiled emu._fastpath; with EMU_NO_EXTENSIONS=1 it is the pure-Python twin
(a missing extension otherwise fails the run).
"""

from __future__ import annotations

from array import array

import pytest
from benchutil import ours_module, record_ratio

from emu.bench.tables import FDB_AGEING, FDB_NOW, fdb_keys, fdb_learn_dict, fdb_learn_ours, fdb_lookup_dict, fdb_macs

SIZES = [pytest.param(4096, id="4k"), pytest.param(65_536, id="64k")]
LIBS = ["emu", "dict"]
KEYS = 65_536


class Dataset:
    """MACs, lookup keys and both structures for one size, built once per module."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mod = ours_module()
        self.macs = fdb_macs(size)
        self.keys = fdb_keys(self.macs, KEYS)
        self.packed = array("Q", self.keys)
        self.ours = fdb_learn_ours(self.mod, self.macs)
        self.dict = fdb_learn_dict(self.macs)


@pytest.fixture(scope="module", params=SIZES)
def data(request: pytest.FixtureRequest) -> Dataset:
    return Dataset(request.param)


def test_results_agree_with_dict(data: Dataset) -> None:
    """Not a timing: both structures answer the same on every key, scalar and batch."""
    want = fdb_lookup_dict(data.dict, data.keys)
    assert data.ours.lookup_batch(data.packed, 0, FDB_NOW).tolist() == want
    assert [data.ours.lookup(m, 0, FDB_NOW) for m in data.keys[:2000]] == want[:2000]
    assert len(data.ours) == len(data.dict) == data.size
    assert sum(v >= 0 for v in want) == KEYS // 2
    # past the ageing time both forget every entry
    assert set(fdb_lookup_dict(data.dict, data.keys[:100], FDB_NOW + FDB_AGEING + 1)) == {-1}
    assert set(data.ours.lookup_batch(data.packed[:100], 0, FDB_NOW + FDB_AGEING + 1)) == {-1}


@pytest.mark.parametrize("lib", LIBS)
def test_learn(benchmark, data: Dataset, lib: str) -> None:  # noqa: ANN001
    """Learning every MAC (port i % 48) into a fresh table vs assigning (port, now) into a fresh dict."""
    mod, macs = data.mod, data.macs

    def baseline() -> object:
        return fdb_learn_dict(macs)

    def ours() -> object:
        return fdb_learn_ours(mod, macs)

    benchmark.group = f"fdb-{data.size}-learn"
    benchmark.extra_info.update(lib=lib, macs=data.size, impl=mod.__name__)
    table = benchmark(ours if lib == "emu" else baseline)
    assert len(table) == data.size
    if lib == "emu":
        record_ratio(benchmark, baseline, "dict")


@pytest.mark.parametrize("lib", LIBS)
def test_scalar_lookup(benchmark, data: Dataset, lib: str) -> None:  # noqa: ANN001
    """One lookup() per key in a Python loop vs dict.get() and the ageing check."""
    keys, d, now, age = data.keys, data.dict, FDB_NOW, FDB_AGEING

    def baseline() -> None:
        get = d.get
        for m in keys:
            e = get(m)
            _ = -1 if e is None or now - e[1] > age else e[0]

    if lib == "emu":
        lookup = data.ours.lookup

        def fn() -> None:
            for m in keys:
                lookup(m, 0, now)
    else:
        fn = baseline
    benchmark.group = f"fdb-{data.size}-scalar-x{KEYS}"
    benchmark.extra_info.update(lib=lib, keys=KEYS, macs=data.size, impl=data.mod.__name__)
    benchmark(fn)
    if lib == "emu":
        record_ratio(benchmark, baseline, "dict")


@pytest.mark.parametrize("lib", LIBS)
def test_batch_lookup(benchmark, data: Dataset, lib: str) -> None:  # noqa: ANN001
    """lookup_batch over 65,536 packed MACs vs the dict loop over the same MACs as ints."""
    d, keys = data.dict, data.keys

    def baseline() -> list[int]:
        return fdb_lookup_dict(d, keys)

    if lib == "emu":
        batch, packed = data.ours.lookup_batch, data.packed

        def fn() -> object:
            return batch(packed, 0, FDB_NOW)
    else:
        fn = baseline
    benchmark.group = f"fdb-{data.size}-batch-{KEYS}"
    benchmark.extra_info.update(lib=lib, keys=KEYS, macs=data.size, impl=data.mod.__name__)
    benchmark(fn)
    if lib == "emu":
        record_ratio(benchmark, baseline, "dict")
