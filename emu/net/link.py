"""Network devices: what every link has (name, index, MAC, MTU, state, counters) and how each kind moves frames.

A link's `xmit()` sends a frame out of it (the namespace has already routed it); its `rx()` is
called when a frame arrives from the wire. Frames are Ethernet `bytes`, except on L3 links (ipip),
which carry bare IPv4 packets as Linux does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu import fastpath
from emu.net.addr import int2mac
from emu.trace import Drop

if TYPE_CHECKING:
    from emu.net.namespace import Namespace
    from emu.net.segment import Segment


Counters = fastpath.load().LinkCounters  # C fields when compiled: the flow cache counts without Python


@dataclass
class Address:
    """An IPv4 address on a link, as `ip addr` holds it."""

    local: int
    plen: int
    scope: int = 0
    secondary: bool = False
    broadcast: int | None = None
    label: str = ""


@dataclass
class Link:
    """A device in one namespace. Subclasses are the kinds (`ip link add ... type KIND`)."""

    ns: Namespace
    ifname: str
    ifindex: int
    mac: int
    mtu: int = 1500
    up: bool = False
    addrs: list[Address] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    master: Link | None = None
    hairpin: bool = False  # as a bridge port: may send a frame back out of the port it came in on
    was_up: bool = False  # has been up once (it then keeps its qdisc)
    txqlen: int = 1000
    promisc: bool = False
    delay: float = 0.000005  # one-way latency of the wire behind this link
    kind = "ether"
    link_type = "ether"
    l3 = False  # carries bare IP packets, no Ethernet header
    noarp = False

    # --- state -------------------------------------------------------------
    @property
    def carrier(self) -> bool:
        return self.up

    @property
    def running(self) -> bool:
        return self.up and self.carrier

    @property
    def operstate(self) -> str:
        if not self.up:
            return "DOWN"
        return "UP" if self.carrier else "LOWERLAYERDOWN"

    def flags(self) -> list[str]:
        """The IFF_* flags in iproute2's order (NO-CARRIER first, M-DOWN last)."""
        flags = ["POINTOPOINT", "NOARP"] if self.l3 else ["BROADCAST", "MULTICAST"]
        if self.promisc:
            flags.append("PROMISC")
        if self.up:
            flags.append("UP")
        if self.running:
            flags.append("LOWER_UP")
        elif self.up:
            flags.insert(0, "NO-CARRIER")
        return flags

    def _local_by_index(self, ifindex: int) -> Link | None:
        """What a lookup of `ifindex` finds in this link's own namespace (iflink quirks depend on it)."""
        return self.ns.link_by_index(ifindex)

    @property
    def mac_str(self) -> str:
        return int2mac(self.mac)

    # --- frames ------------------------------------------------------------
    def xmit(self, frame: bytes, pid: int) -> None:
        """Sends `frame` out: counts, captures, then hands it to the wire of this kind."""
        if not self.running:
            self.counters.tx_dropped += 1
            self.ns.drop(self, pid, Drop.IFACE_DOWN if not self.up else Drop.NO_CARRIER, "link not running")
            return
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(frame)
        lab = self.ns.lab
        cap = lab.capture_point(self, frame, "out", pid)
        rec = lab.recorder(pid)
        if rec is not None:
            rec.tx(self, frame, cap)
        self.wire(frame, pid)

    def wire(self, frame: bytes, pid: int) -> None:
        """What this kind does with a transmitted frame; the default swallows it (dummy, ifb)."""

    def rx(self, frame: bytes, pid: int) -> None:
        """A frame arrives from the wire: the flow cache's program for it, or the slow path."""
        flows = self.ns.lab.flows
        if flows is None:
            self._rx(frame, pid)
            return
        if flows.enter(self, frame, pid):
            return
        try:
            self._rx(frame, pid)
        finally:
            flows.leave(pid)

    def _rx(self, frame: bytes, pid: int) -> None:
        if not self.running:
            self.counters.rx_dropped += 1
            self.ns.drop(self, pid, Drop.IFACE_DOWN, "link down", frame=frame, direction="in")
            return
        self.counters.rx_packets += 1
        self.counters.rx_bytes += len(frame)
        lab = self.ns.lab
        cap = lab.capture_point(self, frame, "in", pid)
        rec = lab.recorder(pid)
        if rec is not None:
            rec.rx(self, frame, cap, entry=True)
        if self.master is not None:
            self.master.port_input(self, frame, pid)  # type: ignore[attr-defined]
        else:
            self.ns.stack.l2_input(self, frame, pid)

    def detail(self) -> dict[str, object]:
        """Kind-specific attributes for `ip -d link` and JSON."""
        return {}


class Loopback(Link):
    kind = "loopback"
    link_type = "loopback"

    def flags(self) -> list[str]:
        return ["LOOPBACK"] + (["UP", "LOWER_UP"] if self.up else [])

    @property
    def operstate(self) -> str:
        return "UNKNOWN" if self.up else "DOWN"

    def wire(self, frame: bytes, pid: int) -> None:
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.fail("loopback")
        self.ns.lab.clock.call_later(0.0, lambda: self.rx(frame, pid))


@dataclass
class Veth(Link):
    peer: Veth | None = None
    kind = "veth"

    @property
    def carrier(self) -> bool:
        return self.up and self.peer is not None and self.peer.up

    @property
    def operstate(self) -> str:
        """default_operstate: without carrier, LOWERLAYERDOWN only when the device found under the
        peer's ifindex in this namespace has no carrier either; DOWN otherwise."""
        if not self.up:
            return "DOWN"
        if self.carrier:
            return "UP"
        other = self._local_by_index(self.peer.ifindex) if self.peer is not None else None
        if other is None or other is self:
            return "DOWN"
        # linkwatch computed this when our carrier went: a bridge we are a port of still had it then.
        had_carrier = other.carrier or self in getattr(other, "ports", ())
        return "DOWN" if had_carrier else "LOWERLAYERDOWN"

    def flags(self) -> list[str]:
        """iproute2 adds M-DOWN when the peer is in this namespace (no link-netnsid) and not up."""
        flags = super().flags()
        if self.peer is not None and self.peer.ns is self.ns and not self.peer.up:
            flags.append("M-DOWN")
        return flags

    def wire(self, frame: bytes, pid: int) -> None:
        peer = self.peer
        assert peer is not None
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.wire(self.delay)
        self.ns.lab.clock.call_later(self.delay, lambda: peer.rx(frame, pid))


class Dummy(Link):
    kind = "dummy"

    @property
    def operstate(self) -> str:
        return "UNKNOWN" if self.up else "DOWN"


class Ifb(Dummy):
    kind = "ifb"


@dataclass
class Nic(Link):
    """A physical-style NIC whose wire is an underlay segment shared with other hosts."""

    segment: Segment | None = None
    kind = "nic"

    @property
    def carrier(self) -> bool:
        return self.up and self.segment is not None

    def wire(self, frame: bytes, pid: int) -> None:
        assert self.segment is not None
        self.segment.send(self, frame, pid)

    def detail(self) -> dict[str, object]:
        return {"segment": self.segment.name if self.segment else None}
