"""Virtual time: a deterministic event scheduler and the lab's one seeded random generator."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(order=True)
class Timer:
    """A scheduled callback; `cancel()` makes the scheduler skip it."""

    when: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """Virtual clock. Nothing reads the wall clock; ties run in scheduling order."""

    def __init__(self, seed: int = 0, start: float = 0.0) -> None:
        self.now = start
        self.rng = random.Random(seed)
        self._queue: list[Timer] = []
        self._seq = 0
        # How far the running loop will take time: a flow program may run only if its journey ends
        # by then (emu.net.flowcache), as the slow path's events would all have run by then too.
        self.horizon = float("-inf")

    def call_at(self, when: float, fn: Callable[[], None]) -> Timer:
        self._seq += 1
        timer = Timer(max(when, self.now), self._seq, fn)
        heapq.heappush(self._queue, timer)
        return timer

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        return self.call_at(self.now + delay, fn)

    def pending(self) -> int:
        return sum(1 for t in self._queue if not t.cancelled)

    def next_time(self) -> float | None:
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0].when if self._queue else None

    def step(self) -> bool:
        """Runs the earliest pending callback; False when nothing is left."""
        while self._queue:
            timer = heapq.heappop(self._queue)
            if timer.cancelled:
                continue
            self.now = timer.when
            timer.fn()
            return True
        return False

    def run_until(self, when: float, max_events: int = 10_000_000) -> None:
        """Runs every event due up to `when`, then sets the clock to `when`."""
        with self.looking_at(when):
            for _ in range(max_events):
                nxt = self.next_time()
                if nxt is None or nxt > when:
                    break
                self.step()
            else:
                raise RuntimeError(f"clock: more than {max_events} events before t={when}")
        self.now = max(self.now, when)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_while(self, busy: Callable[[], bool], limit: float) -> None:
        """Runs events while `busy()` holds, at most until `now + limit`."""
        end = self.now + limit
        with self.looking_at(end):
            while busy():
                nxt = self.next_time()
                if nxt is None or nxt > end:
                    break
                self.step()

    @contextmanager
    def looking_at(self, when: float) -> Iterator[None]:
        """Within the block, whoever drives the clock will run it up to `when` before looking (`horizon`)."""
        outer, self.horizon = self.horizon, when
        try:
            yield
        finally:
            self.horizon = outer
