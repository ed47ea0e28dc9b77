"""The workload registry: every workload yields rows of (ours, baseline) rates measured in one run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

WorkloadFn = Callable[[bool], Iterable["Row"]]


@dataclass
class Row:
    """One measured line of the table; rates are per second unless `higher_is_better` is False."""

    workload: str  # e.g. "lpm.500k batch-256"
    ours: float
    baseline: str  # what we compare against, e.g. "pytricia"
    base: float | None  # the baseline measured in the same run; None when it could not run
    unit: str = "ops/s"
    higher_is_better: bool = True
    note: str = ""  # e.g. "kernel column skipped: needs root"
    error: str = ""  # set by the runner on the row standing for a workload that raised

    @property
    def ratio(self) -> float | None:
        if self.base is None or self.base == 0 or self.ours == 0:
            return None
        return self.ours / self.base if self.higher_is_better else self.base / self.ours


WORKLOADS: dict[str, WorkloadFn] = {}


def workload(name: str) -> Callable[[WorkloadFn], WorkloadFn]:
    """Registers `fn(quick)` under `name`; `quick` asks for small sizes and short runs."""

    def deco(fn: WorkloadFn) -> WorkloadFn:
        WORKLOADS[name] = fn
        return fn

    return deco
