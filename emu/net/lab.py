"""A lab: namespaces and underlay segments on one virtual clock, with captures and the trace."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu import fastpath as tables_module
from emu.clock import Clock
from emu.net.errors import NetError
from emu.net.flowcache import FlowCache, Recorder
from emu.net.namespace import Namespace
from emu.net.segment import Segment
from emu.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, Record, write_pcap, write_pcapng
from emu.trace import Decision, Trace

if TYPE_CHECKING:
    from emu.net.link import Link

EPOCH = 1_705_147_200.0  # 2024-01-13 12:00 UTC, the day of the study notes: virtual t=0 in pcaps


@dataclass
class Capture:
    """A capture point on one interface; `records` fill as frames pass."""

    netns: str
    ifname: str
    records: list[Record] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.netns}/{self.ifname}"


class Lab:
    """Holds namespaces on one deterministic clock: same seed, same frames, same bytes."""

    def __init__(self, seed: int = 0, *, pure_python: bool | None = None, trace: bool = True,
                 fastpath: bool = True) -> None:
        self.seed = seed
        self.tables = tables_module.load(pure_python)
        self.clock = Clock(seed)
        self.hash_seed = self.clock.rng.getrandbits(32)
        self.namespaces: dict[str, Namespace] = {}
        self.segments: dict[str, Segment] = {}
        self.trace = Trace(enabled=trace)
        self.captures: dict[tuple[str, str], Capture] = {}
        self._captured_links: set[int] = set()
        self.capture_everything = False
        self._hop: dict[tuple[int, str], list[str]] = {}
        self._records: list[Record] = []
        self._pid = 0
        self.version = 0
        self.by_pid: dict[int, list[Decision]] = {}
        self.rec: Recorder | None = None  # the journey the flow cache is recording, if any
        self.flows: FlowCache | None = None
        self.use_fastpath = fastpath

    @property
    def use_fastpath(self) -> bool:
        """Whether later frames of a flow run its compiled program (emu.net.flowcache)."""
        return self.flows is not None

    @use_fastpath.setter
    def use_fastpath(self, on: bool) -> None:
        if on and self.flows is None:
            self.flows = FlowCache(self)
        elif not on:
            self.flows = None
            self.rec = None

    # --- objects -----------------------------------------------------------------
    def netns(self, name: str) -> Namespace:
        """`ip netns add NAME` (returns the existing one when it is there)."""
        if name not in self.namespaces:
            if not name or "/" in name or len(name) > 64:
                raise NetError(f'Invalid netns name "{name}"', rc=1)
            self.namespaces[name] = Namespace(self, name)
        return self.namespaces[name]

    def delete_netns(self, name: str) -> None:
        """`ip netns del NAME`: every device goes (a veth takes its peer along), then the namespace.
        Its captures keep what they recorded."""
        ns = self[name]
        for link in list(ns.sorted_links()):
            if link.kind != "loopback" and link.ifname in ns.links:
                ns.link_del(link.ifname)
        del self.namespaces[name]
        self.bump()

    def __getitem__(self, name: str) -> Namespace:
        try:
            return self.namespaces[name]
        except KeyError:
            raise NetError(f'Cannot open network namespace "{name}": No such file or directory', rc=1) from None

    def segment(self, name: str) -> Segment:
        if name not in self.segments:
            self.segments[name] = Segment(self, name)
        return self.segments[name]

    def random_mac(self) -> int:
        """A locally administered unicast MAC from the lab's seeded generator."""
        raw = self.clock.rng.getrandbits(48)
        return (raw & ~(0x01 << 40) | (0x02 << 40)) & 0xFFFFFFFFFFFF

    def new_pid(self) -> int:
        self._pid += 1
        return self._pid

    def inject(self, link: Link, frame: bytes, *, horizon: float | None = None) -> int:
        """A frame arrives on `link` from its wire now; returns its frame id. `horizon`: the caller will
        run the clock at least that far before looking (the flow cache may then carry the frame)."""
        pid = self.new_pid()
        if horizon is None:
            link.rx(frame, pid)
        else:
            with self.clock.looking_at(horizon):
                link.rx(frame, pid)
        return pid

    def bump(self) -> None:
        """Some table changed: flows compiled from the old state are invalid."""
        self.version += 1

    # --- time -------------------------------------------------------------------------
    def run(self, seconds: float) -> None:
        self.clock.run_for(seconds)

    def settle(self, limit: float = 10.0) -> None:
        """Runs until no event is pending (or `limit` virtual seconds pass)."""
        self.clock.run_while(lambda: True, limit)

    # --- the trace and the captures ---------------------------------------------------
    def recorder(self, pid: int) -> Recorder | None:
        """The flow cache's recorder if it is recording frame `pid`: the slow path reports its steps to it."""
        rec = self.rec
        return rec if rec is not None and rec.pid == pid else None

    def record(self, d: Decision, pid: int) -> None:
        rec = self.recorder(pid)
        if rec is not None:
            rec.note(d)
        if self.trace.add(d):
            self.by_pid.setdefault(pid, []).append(d)
        if not self._captured_links:
            return  # hop contexts only feed capture comments
        hop = self._hop.get((pid, d.netns))
        if hop is None:
            hop = self._hop[(pid, d.netns)] = []
        text = d.detail if d.drop is None else f"drop {d.drop.value}: {d.detail}"
        hop.append(text)

    def new_hop(self, pid: int, netns: str) -> None:
        """A frame entered `netns` (not through a bridge port): later decisions there start a new capture
        comment, as capture_point does (the flow cache's programs call it in its place)."""
        if self._captured_links:
            self._hop[(pid, netns)] = []

    def decisions(self, pid: int) -> list[Decision]:
        """The ordered decisions taken for frame `pid` at every hop."""
        return list(self.by_pid.get(pid, []))

    def trace_text(self, pid: int) -> str:
        """The journey of frame `pid` as text, one decision a line."""
        return self.trace.render(self.decisions(pid))

    def capture(self, netns: str, ifname: str) -> Capture:
        """Starts capturing on `netns/ifname` (both directions)."""
        link = self[netns].link(ifname)
        key = (netns, ifname)
        if key not in self.captures:
            self.captures[key] = Capture(netns, ifname)
        if id(link) not in self._captured_links:
            self._captured_links.add(id(link))
            self.bump()
        return self.captures[key]

    def capture_all(self) -> None:
        """Captures on every interface but lo, including those created from now on."""
        self.capture_everything = True
        for ns in self.namespaces.values():
            for link in ns.sorted_links():
                if link.kind != "loopback":
                    self.capture(ns.name, link.ifname)

    def capture_point(self, link: Link, frame: bytes, direction: str, pid: int) -> Record | None:
        """Called by every link on rx and tx; starts a new hop context on rx."""
        if self.capture_everything and id(link) not in self._captured_links and link.kind != "loopback" \
                and link.ns.name in self.namespaces and link.ifname in link.ns.links:
            self.capture(link.ns.name, link.ifname)
        if not self._captured_links:
            return None
        if len(self._hop) > 1_000_000:
            # Forget the older half: contexts of frames long gone (in-flight records keep their own lists).
            for k in list(self._hop)[:500_000]:
                del self._hop[k]
        key = (pid, link.ns.name)
        if direction == "in" and link.master is None:
            hop = self._hop[key] = []
        else:
            hop = self._hop.setdefault(key, [])
        if id(link) not in self._captured_links:
            return None
        cap = self.captures.get((link.ns.name, link.ifname))
        if cap is None:
            return None
        comments = hop if direction == "in" else list(hop)
        rec = Record(self.clock.now, cap.name, frame, direction, comments,
                     LINKTYPE_RAW if link.l3 else LINKTYPE_ETHERNET, pid)
        cap.records.append(rec)
        self._records.append(rec)
        return rec

    def records(self, names: set[str] | None = None) -> list[Record]:
        """Capture records in the order they happened, optionally only from the named points."""
        return [r for r in self._records if names is None or r.ifname in names]

    def write_pcaps(self, directory: str) -> dict[str, int]:
        """Plain per-interface pcaps: `<directory>/<netns>_<ifname>.pcap`, frame counts by capture point."""
        out = {}
        for cap in self.captures.values():
            linktype = cap.records[0].linktype if cap.records else LINKTYPE_ETHERNET
            path = os.path.join(directory, f"{cap.netns}_{cap.ifname}.pcap")
            out[cap.name] = write_pcap(path, cap.records, EPOCH, linktype)
        return out

    def write_pcap(self, path: str, names: set[str] | None = None) -> int:
        """Writes the captured frames (all points, or `names`) to one pcapng file."""
        return write_pcapng(path, self.records(names), EPOCH)
