"""The Linux bridge: MAC learning with aging, forwarding by FDB, flooding, hairpin, delivery up to its own stack."""

from __future__ import annotations

from dataclasses import dataclass, field

from emu.net.addr import int2ip, int2mac, is_multicast_mac, mac_bytes
from emu.net.flowcache import PUSH, STRIP, TRIM
from emu.net.link import Link
from emu.trace import Drop


@dataclass
class Bridge(Link):
    """A bridge device (`ip link add br0 type bridge`). Ports are links whose `master` is this bridge."""

    ports: list[Link] = field(default_factory=list)
    mac_fixed: bool = False  # set by `address`; otherwise the bridge takes its lowest port MAC, like Linux
    kind = "bridge"

    def __post_init__(self) -> None:
        self.fdb = self.ns.tables.FdbTable(300.0)

    @property
    def carrier(self) -> bool:
        return self.up and any(p.running for p in self.ports)

    @property
    def operstate(self) -> str:
        if not self.up:
            return "DOWN"
        return "UP" if self.carrier else "UNKNOWN" if not self.ports else "DOWN"

    def flags(self) -> list[str]:
        flags = ["BROADCAST", "MULTICAST"] + (["PROMISC"] if self.promisc else [])
        if self.up:
            flags.append("UP")
            if self.carrier:
                flags.append("LOWER_UP")
            elif self.ports:
                flags.insert(0, "NO-CARRIER")
        return flags

    def add_port(self, port: Link) -> None:
        port.master = self
        self.ports.append(port)
        self._adopt_mac()

    def remove_port(self, port: Link) -> None:
        port.master = None
        self.ports.remove(port)
        self.fdb.flush_port(port.ifindex)
        self._adopt_mac()

    def _adopt_mac(self) -> None:
        if not self.mac_fixed and self.ports:
            self.mac = min(p.mac for p in self.ports)

    def port_by_index(self, ifindex: int) -> Link | None:
        for p in self.ports:
            if p.ifindex == ifindex:
                return p
        return None

    def _is_local(self, mac: int) -> bool:
        return mac == self.mac or any(p.mac == mac for p in self.ports)

    # --- frames ---------------------------------------------------------------
    def port_input(self, port: Link, frame: bytes, pid: int) -> None:
        """A frame came in on `port`: learn, then deliver up, forward or flood (br_handle_frame)."""
        if len(frame) < 14:
            self.ns.drop(port, pid, Drop.MALFORMED, "bridge: runt frame")
            return
        dst = int.from_bytes(frame[0:6], "big")
        src = int.from_bytes(frame[6:12], "big")
        if is_multicast_mac(src) or src == 0:
            self.ns.drop(port, pid, Drop.MALFORMED, f"bridge {self.ifname}: invalid source MAC {int2mac(src)}")
            return
        now = self.ns.lab.clock.now
        rec = self.ns.lab.recorder(pid)
        if not self._is_local(src):
            learned = self.fdb.learn(src, 0, port.ifindex, now)
            if rec is not None:
                rec.fdb(self.fdb, src, port.ifindex, learn=True, ok=not learned)
            if learned:
                what = "learned" if learned == 1 else "moved"
                self.ns.note(port, pid, "bridge", f"fdb {what}: {int2mac(src)} on {port.ifname}")
        if is_multicast_mac(dst):
            if rec is not None:
                rec.fail("bridge flood")
            self._flood(port, frame, pid, "broadcast" if dst == 0xFFFFFFFFFFFF else "multicast")
            self._up(frame, pid)
            return
        local = self._is_local(dst)
        nf = self.ns.netfilter
        if nf.enabled and frame[12:14] == b"\x08\x00" and self.ns.sysctls.get(
                "net.bridge.bridge-nf-call-iptables") == "1":
            self._netfilter(port, frame, pid, local)
            return
        if local:
            self.ns.note(port, pid, "bridge", f"to {self.ifname} itself: up to the IP stack")
            self._up(frame, pid)
            return
        self._forward(port, frame, pid)

    def _netfilter(self, port: Link, frame: bytes, pid: int, local: bool) -> None:
        """br_netfilter: a bridged IPv4 frame meets PREROUTING, FORWARD and POSTROUTING with -i/-o the bridge.

        When DNAT sends it to an address behind this same bridge it stays bridged (TTL kept, the
        client's MAC kept, the new MAC from the bridge's neighbour table); otherwise it is routed."""
        nf = self.ns.netfilter
        pkt = bytearray(frame[14:])
        if len(pkt) < 20:
            self._forward(port, frame, pid)
            return
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.op(STRIP, 14)
        total = int.from_bytes(pkt[2:4], "big")
        if 20 <= total < len(pkt):
            pkt = pkt[:total]
            if rec is not None:
                rec.op(TRIM, total)
        old_dst = bytes(pkt[16:20])
        if not nf.prerouting(self, pkt, pid):
            nf.done(pid)
            return
        head = frame[:14]
        if bytes(pkt[16:20]) != old_dst:
            new_dst = int.from_bytes(pkt[16:20], "big")
            r = self.ns.route_lookup(new_dst)
            if r is None or r.type != "unicast" or r.dev != self.ifname:
                self.ns.note(port, pid, "bridge", f"DNAT to {int2ip(new_dst)}: routed, up to the IP stack")
                if rec is not None:
                    rec.op(PUSH, mac_bytes(self.mac) + frame[6:14])
                self._up(mac_bytes(self.mac) + frame[6:14] + bytes(pkt), pid)
                return
            nexthop = r.nexthop_gateway if r.nexthop_gateway is not None else new_dst

            def resend(mac: int) -> None:
                self.ns.note(port, pid, "bridge", f"DNAT to {int2ip(new_dst)} behind {self.ifname}: bridged to "
                             f"{int2mac(mac)}")
                self._finish(port, mac_bytes(mac) + head[6:], pkt, pid)

            self.ns.neigh.resolve(self, nexthop, resend, lambda: None, pid, None)
            return
        if local:
            self.ns.note(port, pid, "bridge", f"to {self.ifname} itself: up to the IP stack")
            if rec is not None:
                rec.op(PUSH, bytes(head))
            self._up(head + bytes(pkt), pid)
            return
        self._finish(port, head, pkt, pid)

    def _finish(self, port: Link, head: bytes, pkt: bytearray, pid: int) -> None:
        nf = self.ns.netfilter
        if not nf.forward(self, self, pkt, pid) or not nf.postrouting(self, pkt, pid, None):  # type: ignore[arg-type]
            nf.done(pid)
            return
        nf.done(pid)
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.op(PUSH, bytes(head))
        self._forward(port, head + bytes(pkt), pid)

    def _forward(self, port: Link, frame: bytes, pid: int) -> None:
        """Known unicast to its port (not back where it came from unless hairpin), else flood."""
        dst = int.from_bytes(frame[0:6], "big")
        now = self.ns.lab.clock.now
        out = self.fdb.lookup(dst, 0, now)
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.fdb(self.fdb, dst, out, learn=False, ok=out >= 0)
        if out < 0:
            self._flood(port, frame, pid, f"fdb miss for {int2mac(dst)}")
            return
        target = self.port_by_index(out)
        if target is None:
            self._flood(port, frame, pid, f"fdb stale for {int2mac(dst)}")
            return
        if target is port and not port.hairpin:
            self.ns.drop(port, pid, Drop.HAIRPIN, f"bridge {self.ifname}: {int2mac(dst)} is behind the ingress port")
            return
        self.ns.note(port, pid, "bridge", f"fdb hit: {int2mac(dst)} -> {target.ifname}")
        target.xmit(frame, pid)

    def _flood(self, ingress: Link | None, frame: bytes, pid: int, why: str) -> None:
        out = [p for p in self.ports if p.running and (p is not ingress or p.hairpin)]
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.fail("flood")
        where = f" (hairpin back to {ingress.ifname})" if ingress in out and ingress is not None else ""
        self.ns.note(ingress or self, pid, "bridge", f"{why}: flooded to {len(out)} ports{where}")
        for p in out:
            p.xmit(frame, pid)

    def _up(self, frame: bytes, pid: int) -> None:
        self.counters.rx_packets += 1
        self.counters.rx_bytes += len(frame)
        lab = self.ns.lab
        cap = lab.capture_point(self, frame, "in", pid)
        rec = lab.recorder(pid)
        if rec is not None:
            rec.rx(self, frame, cap, entry=False)
        self.ns.stack.l2_input(self, frame, pid)

    def xmit(self, frame: bytes, pid: int) -> None:
        """The bridge's own stack sends: forward by FDB from the bridge's local port (br_dev_xmit)."""
        if not self.up:
            self.counters.tx_dropped += 1
            self.ns.drop(self, pid, Drop.IFACE_DOWN, "bridge down")
            return
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(frame)
        lab = self.ns.lab
        cap = lab.capture_point(self, frame, "out", pid)
        dst = int.from_bytes(frame[0:6], "big")
        out = -1 if is_multicast_mac(dst) else self.fdb.lookup(dst, 0, self.ns.lab.clock.now)
        target = self.port_by_index(out) if out >= 0 else None
        rec = lab.recorder(pid)
        if rec is not None:
            rec.tx(self, frame, cap)
            rec.fdb(self.fdb, dst, out, learn=False, ok=target is not None)
        if target is None:
            self._flood(None, frame, pid, "broadcast" if is_multicast_mac(dst) else f"fdb miss for {int2mac(dst)}")
            return
        self.ns.note(self, pid, "bridge", f"fdb hit: {int2mac(dst)} -> {target.ifname}")
        target.xmit(frame, pid)

    def detail(self) -> dict[str, object]:
        return {"ageing_time": int(self.fdb.ageing_time * 100)}
