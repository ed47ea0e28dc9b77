"""Underlay segments: the cable or L2 switch that several hosts' NICs plug into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.net.addr import is_multicast_mac

if TYPE_CHECKING:
    from emu.net.lab import Lab
    from emu.net.link import Link


@dataclass
class Segment:
    """A learning L2 switch with no IP stack of its own (a cable when it has two NICs)."""

    lab: Lab
    name: str
    delay: float = 0.00002
    nics: list[Link] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fdb = self.lab.tables.FdbTable(300.0)
        self._ids: dict[int, Link] = {}

    def attach(self, nic: Link) -> None:
        self.nics.append(nic)
        self._ids[len(self._ids) + 1] = nic
        nic.segment_port = len(self._ids)  # type: ignore[attr-defined]
        self.lab.bump()

    def detach(self, nic: Link) -> None:
        self.nics.remove(nic)
        self.lab.bump()
        self.fdb.flush_port(nic.segment_port)  # type: ignore[attr-defined]

    def send(self, src_nic: Link, frame: bytes, pid: int) -> None:
        now = self.lab.clock.now
        src = int.from_bytes(frame[6:12], "big")
        dst = int.from_bytes(frame[0:6], "big")
        rec = self.lab.recorder(pid)
        if not is_multicast_mac(src):
            learned = self.fdb.learn(src, 0, src_nic.segment_port, now)  # type: ignore[attr-defined]
            if rec is not None:
                rec.fdb(self.fdb, src, src_nic.segment_port, learn=True, ok=not learned)  # type: ignore[attr-defined]
        port = -1 if is_multicast_mac(dst) else self.fdb.lookup(dst, 0, now)
        if rec is not None:
            rec.fdb(self.fdb, dst, port, learn=False, ok=port > 0)
        targets = [self._ids[port]] if port > 0 and self._ids.get(port) in self.nics else [
            n for n in self.nics if n is not src_nic
        ]
        for nic in targets:
            if nic is not src_nic:
                if rec is not None:
                    rec.wire(self.delay)
                self.lab.clock.call_later(self.delay, lambda n=nic: n.rx(frame, pid))
