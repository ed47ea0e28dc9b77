"""Tunnel devices: VXLAN (Ethernet in UDP) and IPIP (tunl0, IPv4 in IPv4, protocol 4)."""

from __future__ import annotations

from dataclasses import dataclass, field

from emu.net.addr import int2ip, int2mac
from emu.net.flowcache import VXLAN
from emu.net.link import Link
from emu.trace import Drop

ZERO_MAC = 0


@dataclass
class Vxlan(Link):
    """`ip link add flannel.1 type vxlan id 1 local A dev eth0 dstport 8472 nolearning`.

    The FDB maps an inner MAC to remote VTEP addresses; all-zero MAC entries are the default
    destinations, each getting a copy (head-end replication).
    """

    vni: int = 0
    local: int | None = None
    dstport: int = 8472  # the kernel's default when iproute2 is not told (IANA's is 4789)
    learning: bool = True
    underlay: str | None = None
    ttl: int = 64
    vfdb: dict[int, list[int]] = field(default_factory=dict)
    kind = "vxlan"

    @property
    def operstate(self) -> str:
        return "UNKNOWN" if self.up else "DOWN"

    def wire(self, frame: bytes, pid: int) -> None:
        dst = int.from_bytes(frame[0:6], "big")
        remotes = self.vfdb.get(dst) or self.vfdb.get(ZERO_MAC, [])
        rec = self.ns.lab.recorder(pid)
        if rec is not None and len(remotes) != 1:
            rec.fail("vxlan: not one remote")
        if not remotes:
            self.ns.drop(self, pid, Drop.NO_NEIGH, f"vxlan {self.ifname}: no fdb entry for {int2mac(dst)}")
            return
        stack = self.ns.stack
        t = self.ns.tables
        flow = t.parse_flow(frame, 14) if len(frame) >= 34 and frame[12:14] == b"\x08\x00" else None
        if flow is not None:
            # ICMP echo: the identifier stands for both ports, so requests and replies hash alike.
            sport, dport = (flow[3], flow[3]) if flow[2] == 1 else (flow[3], flow[4])
            h = t.flow_hash(flow[0], flow[1], flow[2], sport, dport, self.ns.lab.hash_seed)
        else:
            h = t.flow_hash(int.from_bytes(frame[0:6], "big") & 0xFFFFFFFF,
                            int.from_bytes(frame[6:12], "big") & 0xFFFFFFFF, 0, 0, 0, self.ns.lab.hash_seed)
        sport = t.vxlan_source_port(h)
        for remote in remotes:
            src = self.local if self.local is not None else stack.select_source(remote)
            if src is None:
                self.ns.drop(self, pid, Drop.NO_ROUTE, f"vxlan {self.ifname}: no source for {int2ip(remote)}")
                continue
            ident = stack.next_ip_id()
            outer = t.vxlan_encap(frame, 0, 0, src, remote, sport, self.dstport, self.vni, ident, self.ttl)[14:]
            if rec is not None:
                rec.encap(VXLAN, src, remote, sport, self.dstport, self.vni, self.ttl, stack, ident)
            self.ns.note(self, pid, "encap",
                         f"vxlan vni {self.vni} {int2ip(src)}:{sport} -> {int2ip(remote)}:{self.dstport}")
            stack.output_ip(bytes(outer), pid, origin=self)

    def decap(self, outer_src: int, inner: bytes, pid: int) -> None:
        """A VXLAN payload for our VNI arrived: learn if asked, then receive the inner frame."""
        if self.learning and len(inner) >= 12:
            src = int.from_bytes(inner[6:12], "big")
            if self.vfdb.get(src) != [outer_src]:
                self.vfdb[src] = [outer_src]
                self.ns.lab.bump()
        self.rx(inner, pid)

    def detail(self) -> dict[str, object]:
        return {"id": self.vni, "local": int2ip(self.local) if self.local is not None else None,
                "dev": self.underlay, "port": self.dstport, "learning": self.learning}


@dataclass
class Ipip(Link):
    """An IPIP device (tunl0): routes say `via NODE dev tunl0 onlink`; the gateway is the outer destination."""

    local: int | None = None
    remote: int | None = None
    ttl: int = 0  # 0 = inherit the inner TTL, the kernel's default for ipip
    kind = "ipip"
    link_type = "ipip"
    l3 = True
    noarp = True

    def flags(self) -> list[str]:
        flags = ["NOARP"]
        if self.up:
            flags += ["UP", "LOWER_UP"]
        return flags

    @property
    def operstate(self) -> str:
        return "UNKNOWN" if self.up else "DOWN"

    def send_ip(self, packet: bytes, nexthop: int | None, pid: int) -> None:
        """Encapsulates one IPv4 packet toward `remote` or the route's on-link gateway."""
        outer_dst = self.remote if self.remote is not None else nexthop
        if outer_dst is None:
            self.ns.drop(self, pid, Drop.NO_ROUTE, f"ipip {self.ifname}: no remote and no gateway")
            return
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(packet)
        self.ns.lab.capture_point(self, packet, "out", pid)
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.fail("ipip")
        stack = self.ns.stack
        src = self.local if self.local is not None else stack.select_source(outer_dst)
        if src is None:
            self.ns.drop(self, pid, Drop.NO_ROUTE, f"ipip {self.ifname}: no source for {int2ip(outer_dst)}")
            return
        ttl = self.ttl or packet[8]
        # pmtudisc is on by default for ipip devices: the outer header always has DF set.
        outer = self.ns.tables.ipip_encap(packet, src, outer_dst, stack.next_ip_id(), ttl, 0, 1)
        self.ns.note(self, pid, "encap", f"ipip {int2ip(src)} -> {int2ip(outer_dst)}")
        stack.output_ip(bytes(outer), pid, origin=self)

    def decap(self, inner: bytes, pid: int) -> None:
        self.rx(inner, pid)

    def detail(self) -> dict[str, object]:
        return {"local": int2ip(self.local) if self.local is not None else "any",
                "remote": int2ip(self.remote) if self.remote is not None else "any"}

