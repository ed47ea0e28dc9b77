"""The IPv4 pipeline of one namespace: L2 input, ARP, IP input, forwarding, local delivery, output.

It follows the kernel's order (ip_rcv -> ip_route_input -> ip_forward | ip_local_deliver;
ip_output -> ip_finish_output -> neigh_output) and drops with a reason instead of raising.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from emu import frames
from emu.net.addr import BROADCAST_MAC, int2ip, int2mac, is_multicast_mac, mac_bytes
from emu.net.flowcache import PUSH, SINK, STRIP, TRIM, TTL
from emu.net.route import BLACKHOLE, BROADCAST, LOCAL, PROHIBIT, SCOPE_LINK, UNREACHABLE, Route
from emu.trace import Drop

if TYPE_CHECKING:
    from emu.net.link import Link
    from emu.net.namespace import Namespace

ETH_IP = b"\x08\x00"
ICMP, TCP, UDP, IPIP = 1, 6, 17, 4
DF, MF = 0x4000, 0x2000
ICMP_ECHOREPLY, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
NET_UNREACH, HOST_UNREACH, PROT_UNREACH, PORT_UNREACH, FRAG_NEEDED, PKT_FILTERED = 0, 1, 2, 3, 4, 13
IPTOS_PREC_INTERNETCONTROL = 0xC0
ICMP_QUOTE_MAX = 576 - 20 - 8  # icmp_send quotes the original up to a 576-byte error
REASM_TIMEOUT = 30.0

IcmpHandler = Callable[[bytes, int], bool]
UdpHandler = Callable[[int, int, int, int, bytes, int], None]


class Stack:
    """Packet processing for one namespace."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.t = ns.tables
        self.ip_ident = self.t.IpIdent(ns.lab.clock.rng.randrange(0x10000))
        self.icmp_handlers: list[IcmpHandler] = []
        self.udp_sockets: dict[int, UdpHandler] = {}
        self.tcp = None  # set by emu.net.tcp when first used
        self.reasm: dict[tuple[int, int, int, int], dict[str, object]] = {}

    def next_ip_id(self) -> int:
        return self.ip_ident.next()

    # --- input ---------------------------------------------------------------------
    def l2_input(self, dev: Link, frame: bytes, pid: int) -> None:
        """netif_receive_skb: sort by destination MAC and ethertype."""
        rec = self.ns.lab.recorder(pid)
        if dev.l3:
            if rec is not None:
                rec.fail("l3 device")
            self.ip_input(dev, frame, pid, to_host=True)
            return
        if len(frame) < 14:
            self.ns.drop(dev, pid, Drop.MALFORMED, "runt frame")
            return
        dst = int.from_bytes(frame[0:6], "big")
        multicast = is_multicast_mac(dst)
        if not multicast and dst != dev.mac:
            self.ns.drop(dev, pid, Drop.NOT_FOR_US, f"frame for {int2mac(dst)}, not {dev.ifname}'s MAC")
            return
        etype = frame[12:14]
        if etype == ETH_IP:
            if rec is not None:
                rec.op(STRIP, 14)
                if multicast:
                    rec.fail("multicast")
            self.ip_input(dev, frame[14:], pid, to_host=not multicast)
        elif etype == b"\x08\x06":
            self.arp_input(dev, frame[14:], pid)
        else:
            self.ns.drop(dev, pid, Drop.UNSUPPORTED, f"ethertype 0x{etype.hex()} not handled")

    def arp_input(self, dev: Link, pkt: bytes, pid: int) -> None:
        """arp_process: answer for our addresses or by proxy, learn the sender."""
        if len(pkt) < 28:
            self.ns.drop(dev, pid, Drop.MALFORMED, "arp: truncated")
            return
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", pkt)
        if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4 or op not in (1, 2):
            self.ns.drop(dev, pid, Drop.MALFORMED, "arp: not Ethernet/IPv4 request or reply")
            return
        if dev.noarp:
            self.ns.drop(dev, pid, Drop.ARP_IGNORED, f"arp: {dev.ifname} is NOARP")
            return
        sha = int.from_bytes(pkt[8:14], "big")
        sip, tip = struct.unpack_from("!I", pkt, 14)[0], struct.unpack_from("!I", pkt, 24)[0]
        if is_multicast_mac(sha) or (sip >> 28) == 0xE or (tip >> 24) == 127:
            self.ns.drop(dev, pid, Drop.MARTIAN, "arp: bogus sender or target")
            return
        neigh = self.ns.neigh
        if op == 1:
            target = self.ns.fib[255].lookup(tip)
            if target is not None and target.type == LOCAL:
                if sip:
                    neigh.confirm(dev, sip, sha, create=True, state=0x04)
                self.ns.note(dev, pid, "arp", f"arp: who-has {int2ip(tip)} (ours): reply {int2mac(dev.mac)}")
                self._arp_reply(dev, tip, sip, sha)
                return
            if self._proxy_ok(dev, tip):
                if sip:
                    neigh.confirm(dev, sip, sha, create=True, state=0x04)
                delay = self.ns.lab.clock.rng.uniform(0, 0.8)
                self.ns.note(dev, pid, "arp",
                             f"proxy arp: {int2ip(tip)} routed via another device, reply {int2mac(dev.mac)} "
                             f"after {delay * 1000:.0f} ms proxy_delay")
                self.ns.lab.clock.call_later(delay, lambda: self._arp_reply(dev, tip, sip, sha))
                return
            neigh.confirm(dev, sip, sha, create=False, state=0x04)
            self.ns.note(dev, pid, "arp", f"arp: who-has {int2ip(tip)}: not ours, ignored")
            return
        neigh.confirm(dev, sip, sha, create=False)
        self.ns.note(dev, pid, "arp", f"arp: {int2ip(sip)} is-at {int2mac(sha)}")

    def _proxy_ok(self, dev: Link, tip: int) -> bool:
        """arp_fwd_proxy: proxy_arp on, forwarding on, and the route to the target leaves by another device."""
        if not self.ns.if_sysctl(dev, "proxy_arp") or not self.ns.forwarding:
            return False
        r = self.ns.route_lookup(tip)
        return r is not None and r.type == "unicast" and r.dev is not None and r.dev != dev.ifname

    def _arp_reply(self, dev: Link, sip: int, tip: int, tha: int) -> None:
        if dev.running:
            pid = self.ns.lab.new_pid()
            self.ns.note(dev, pid, "arp", f"arp: {int2ip(sip)} is-at {int2mac(dev.mac)} (reply to {int2ip(tip)})")
            dev.xmit(frames.arp(2, dev.mac, sip, tip, eth_dst=tha, target_mac=tha), pid)

    def arp_request(self, dev: Link, target: int, src_hint: int | None, dst_mac: int = -1) -> None:
        """arp_solicit: the source is the packet's own when it is local (arp_announce 0), else one of dev's."""
        src = src_hint if src_hint is not None and self.ns.is_local(src_hint) else None
        if src is None:
            src = self.ns.select_addr(dev, target, SCOPE_LINK) or 0
        eth_dst = BROADCAST_MAC if dst_mac < 0 else dst_mac
        pid = self.ns.lab.new_pid()
        kind = "broadcast" if dst_mac < 0 else "unicast probe"
        self.ns.note(dev, pid, "arp", f"arp: who-has {int2ip(target)} tell {int2ip(src)} ({kind})")
        dev.xmit(frames.arp(1, dev.mac, src, target, eth_dst=eth_dst), pid)

    def ip_input(self, dev: Link, pkt: bytes, pid: int, *, to_host: bool) -> None:
        """ip_rcv + ip_rcv_finish: sanity checks, then the routing decision."""
        if len(pkt) < 20 or pkt[0] >> 4 != 4 or (pkt[0] & 0xF) < 5:
            self.ns.drop(dev, pid, Drop.MALFORMED, "ip: bad version or header length")
            return
        ihl = (pkt[0] & 0xF) * 4
        total = int.from_bytes(pkt[2:4], "big")
        if len(pkt) < ihl or total < ihl or total > len(pkt):
            self.ns.drop(dev, pid, Drop.MALFORMED, f"ip: total length {total} does not fit")
            return
        if self.t.inet_checksum(pkt, 0, ihl) != 0:
            self.ns.drop(dev, pid, Drop.BAD_CHECKSUM, "ip: header checksum")
            return
        if total < len(pkt):
            pkt = pkt[:total]  # Ethernet padding
            rec = self.ns.lab.recorder(pid)
            if rec is not None:
                rec.op(TRIM, total)
        nf = self.ns.netfilter
        if nf.enabled:
            buf = bytearray(pkt)
            if not nf.prerouting(dev, buf, pid):
                nf.done(pid)
                return
            pkt = bytes(buf)
        src, dst = struct.unpack_from("!II", pkt, 12)
        if (src >> 28) == 0xE or src == 0xFFFFFFFF or (src >> 24) == 127 and dev.ifname != "lo":
            self.ns.drop(dev, pid, Drop.MARTIAN, f"ip: martian source {int2ip(src)}")
            return
        if dst == 0xFFFFFFFF:
            self.local_deliver(dev, pkt, pid, broadcast=True)
            return
        if (dst >> 28) == 0xE:
            self.ns.drop(dev, pid, Drop.UNSUPPORTED, f"ip: multicast {int2ip(dst)} not joined")
            return
        if dev.ifname != "lo" and self.ns.is_local(src):
            self.ns.drop(dev, pid, Drop.MARTIAN, f"ip: martian source {int2ip(src)} (one of ours)")
            return
        r = self.ns.route_lookup(dst)
        if r is not None and r.type in (LOCAL, BROADCAST):
            self.ns.note(dev, pid, "route", f"route {r.type} {int2ip(dst)}: deliver locally")
            self.local_deliver(dev, pkt, pid, broadcast=r.type == BROADCAST)
            return
        if not to_host:
            self.ns.drop(dev, pid, Drop.NOT_FOR_US, f"ip: {int2ip(dst)} in an L2 broadcast, not forwarded")
            return
        if self.ns.if_sysctl(dev, "rp_filter") and not self._rp_ok(dev, src):
            self.ns.drop(dev, pid, Drop.RP_FILTER, f"rp_filter: {int2ip(src)} not routed back via {dev.ifname}")
            return
        self.forward(dev, pkt, pid, r)

    def _rp_ok(self, dev: Link, src: int) -> bool:
        back = self.ns.route_lookup(src)
        return back is not None and back.dev == dev.ifname

    def forward(self, dev: Link, pkt: bytes, pid: int, r: Route | None) -> None:
        """ip_forward: forwarding on, a usable route, TTL, then output."""
        dst = int.from_bytes(pkt[16:20], "big")
        if not self.ns.forwarding:
            self.ns.drop(dev, pid, Drop.FORWARDING_OFF, f"ip: {int2ip(dst)} not local and ip_forward=0")
            return
        if r is None or r.type not in ("unicast",):
            kind = r.type if r is not None else None
            if kind == BLACKHOLE:
                self.ns.drop(dev, pid, Drop.BLACKHOLE, f"route blackhole {r.prefix}")  # type: ignore[union-attr]
                return
            code = {UNREACHABLE: HOST_UNREACH, PROHIBIT: PKT_FILTERED}.get(kind or "", NET_UNREACH)
            reason = {UNREACHABLE: Drop.UNREACHABLE, PROHIBIT: Drop.PROHIBIT}.get(kind or "", Drop.NO_ROUTE)
            why = f" ({r.type} {r.prefix})" if r else ""
            self.ns.drop(dev, pid, reason, f"no usable route to {int2ip(dst)}{why}")
            self.icmp_error(pkt, ICMP_DEST_UNREACH, code, pid)
            return
        if pkt[8] <= 1:
            self.ns.drop(dev, pid, Drop.TTL_EXPIRED, f"ip: ttl {pkt[8]} expires here")
            self.icmp_error(pkt, ICMP_TIME_EXCEEDED, 0, pid)
            return
        buf = bytearray(pkt)
        ttl = self.t.ttl_decrement(buf, 0)
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            rec.op(TTL, 0)
        self.ns.note(dev, pid, "forward", f"forward: ttl {ttl + 1} -> {ttl}")
        nf = self.ns.netfilter
        if nf.enabled and not nf.forward(dev, self.ns.links[r.dev or "lo"], buf, pid):
            nf.done(pid)
            return
        self.finish_output(r, bytes(buf), pid, forwarded=True)

    # --- local delivery ----------------------------------------------------------
    def local_deliver(self, dev: Link, pkt: bytes, pid: int, *, broadcast: bool = False) -> None:
        """ip_local_deliver: reassemble, then hand to ICMP, UDP, TCP or a tunnel."""
        frag = int.from_bytes(pkt[6:8], "big")
        if frag & (MF | 0x1FFF):
            whole = self._reassemble(dev, pkt, pid)
            if whole is None:
                return
            pkt = whole
        nf = self.ns.netfilter
        if nf.enabled:
            buf = bytearray(pkt)
            ok = nf.input(dev, buf, pid)
            nf.done(pid)
            if not ok:
                return
            pkt = bytes(buf)
        ihl = (pkt[0] & 0xF) * 4
        proto = pkt[9]
        src, dst = struct.unpack_from("!II", pkt, 12)
        body = pkt[ihl:]
        rec = self.ns.lab.recorder(pid)
        if rec is not None and (proto != UDP or broadcast):
            rec.fail("local delivery")
        if proto == ICMP:
            self._icmp_input(dev, pkt, body, pid, broadcast)
        elif proto == UDP:
            self._udp_input(dev, pkt, body, src, dst, pid, broadcast)
        elif proto == TCP:
            if self.tcp is None:
                from emu.net.tcp import TcpLayer

                self.tcp = TcpLayer(self.ns)
            self.tcp.input(dev, pkt, body, src, dst, pid)  # type: ignore[attr-defined]
        elif proto == IPIP:
            tun = self._find_tunnel("ipip", dst, src)
            if tun is None:
                self.ns.drop(dev, pid, Drop.NO_LISTENER, "ipip: no tunnel device")
                self.icmp_error(pkt, ICMP_DEST_UNREACH, PROT_UNREACH, pid)
                return
            self.ns.note(dev, pid, "decap", f"ipip {int2ip(src)} -> {int2ip(dst)} into {tun.ifname}")
            tun.decap(body, pid)  # type: ignore[attr-defined]
        else:
            self.ns.drop(dev, pid, Drop.NO_LISTENER, f"ip: protocol {proto} unreachable")
            if not broadcast:
                self.icmp_error(pkt, ICMP_DEST_UNREACH, PROT_UNREACH, pid)

    def _find_tunnel(self, kind: str, local: int, remote: int) -> Link | None:
        for link in self.ns.sorted_links():
            if link.kind == kind and link.up and getattr(link, "local", None) in (None, local):
                if getattr(link, "remote", None) in (None, remote):
                    return link
        return None

    def _reassemble(self, dev: Link, pkt: bytes, pid: int) -> bytes | None:
        """ip_defrag: collect fragments by (src, dst, id, proto); give up after 30 s."""
        key = (int.from_bytes(pkt[12:16], "big"), int.from_bytes(pkt[16:20], "big"),
               int.from_bytes(pkt[4:6], "big"), pkt[9])
        ihl = (pkt[0] & 0xF) * 4
        frag = int.from_bytes(pkt[6:8], "big")
        entry = self.reasm.get(key)
        if entry is None:
            entry = self.reasm[key] = {"parts": {}, "end": None, "head": None}
            entry["timer"] = self.ns.lab.clock.call_later(REASM_TIMEOUT, lambda: self._reasm_expire(dev, key, pid))
        offset = (frag & 0x1FFF) * 8
        if offset + len(pkt) > 65535:
            # ip_frag_queue: a datagram that would exceed 64 KiB is dropped whole ("ping of death").
            entry["timer"].cancel()  # type: ignore[union-attr]
            del self.reasm[key]
            self.ns.drop(dev, pid, Drop.MALFORMED, f"ip: oversized datagram, fragment at offset {offset}")
            return None
        parts: dict[int, bytes] = entry["parts"]  # type: ignore[assignment]
        parts[offset] = pkt[ihl:]
        if offset == 0:
            entry["head"] = pkt[:ihl]
        if not frag & MF:
            entry["end"] = offset + len(pkt) - ihl
        self.ns.note(dev, pid, "reasm", f"fragment offset {offset} of id {key[2]}")
        end = entry["end"]
        if end is None or entry["head"] is None:
            return None
        data, pos = bytearray(), 0
        for off in sorted(parts):
            if off > pos:
                return None
            data += parts[off][pos - off:]
            pos = max(pos, off + len(parts[off]))
        if pos < end:  # type: ignore[operator]
            return None
        entry["timer"].cancel()  # type: ignore[union-attr]
        del self.reasm[key]
        head = bytearray(entry["head"])  # type: ignore[arg-type]
        struct.pack_into("!H", head, 2, len(head) + len(data))
        struct.pack_into("!H", head, 6, 0)
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, self.t.inet_checksum(bytes(head), 0, len(head)))
        return bytes(head + data)

    def _reasm_expire(self, dev: Link, key: tuple[int, int, int, int], pid: int) -> None:
        if self.reasm.pop(key, None) is not None:
            self.ns.drop(dev, pid, Drop.REASM_TIMEOUT, f"reassembly of id {key[2]} timed out")

    def _icmp_input(self, dev: Link, pkt: bytes, body: bytes, pid: int, broadcast: bool) -> None:
        if len(body) < 8 or self.t.inet_checksum(body, 0, len(body)) != 0:
            self.ns.drop(dev, pid, Drop.BAD_CHECKSUM if len(body) >= 8 else Drop.MALFORMED, "icmp: bad checksum")
            return
        itype = body[0]
        src, dst = struct.unpack_from("!II", pkt, 12)
        if itype == ICMP_ECHO:
            if broadcast:  # icmp_echo_ignore_broadcasts=1
                self.ns.drop(dev, pid, Drop.FILTERED, "icmp: echo to broadcast ignored")
                return
            reply = bytearray(body)
            reply[0] = ICMP_ECHOREPLY
            struct.pack_into("!H", reply, 2, 0)
            struct.pack_into("!H", reply, 2, self.t.inet_checksum(bytes(reply), 0, len(reply)))
            self.ns.note(dev, pid, "deliver", f"icmp echo request from {int2ip(src)}: echo reply")
            self.send_ip(dst, src, ICMP, bytes(reply), df=False, tos=pkt[1])
            return
        for handler in list(self.icmp_handlers):
            if handler(pkt, pid):
                self.ns.note(dev, pid, "deliver", f"icmp type {itype} code {body[1]} to a local socket")
                return
        if itype in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED) and len(body) >= 28:
            inner = body[8:]
            if inner[9] == TCP and self.tcp is not None:
                self.tcp.icmp_error(inner, itype, body[1])  # type: ignore[attr-defined]
            self.ns.note(dev, pid, "deliver", f"icmp type {itype} code {body[1]}: error for a local flow")
            return
        self.ns.note(dev, pid, "deliver", f"icmp type {itype}: nobody waiting")

    def _udp_input(self, dev: Link, pkt: bytes, body: bytes, src: int, dst: int, pid: int, broadcast: bool) -> None:
        if len(body) < 8:
            self.ns.drop(dev, pid, Drop.MALFORMED, "udp: truncated header")
            return
        sport, dport, ulen, csum = struct.unpack_from("!HHHH", body)
        if ulen < 8 or ulen > len(body):
            self.ns.drop(dev, pid, Drop.MALFORMED, f"udp: length {ulen} does not fit")
            return
        body = body[:ulen]
        if csum and self.t.udp_checksum(src, dst, body[:6] + b"\0\0" + body[8:]) != csum:
            self.ns.drop(dev, pid, Drop.BAD_CHECKSUM, "udp: bad checksum")
            return
        for link in self.ns.sorted_links():
            if link.kind != "vxlan" or not link.up or link.dstport != dport:  # type: ignore[attr-defined]
                continue
            if getattr(link, "local", None) in (None, dst):
                decap = self.t.vxlan_decap(pkt, 0)
                if decap is None or decap[0] != link.vni:  # type: ignore[attr-defined]
                    continue
                rec = self.ns.lab.recorder(pid)
                if rec is not None:
                    rec.decap(decap[1])
                self.ns.note(dev, pid, "decap", f"vxlan vni {decap[0]} from {int2ip(src)} into {link.ifname}")
                link.decap(src, pkt[decap[1]:], pid)  # type: ignore[attr-defined]
                return
        handler = self.udp_sockets.get(dport)
        if handler is None:
            self.ns.drop(dev, pid, Drop.NO_LISTENER, f"udp: nothing listens on port {dport}")
            if not broadcast:
                self.icmp_error(pkt, ICMP_DEST_UNREACH, PORT_UNREACH, pid)
            return
        self.ns.note(dev, pid, "deliver", f"udp {int2ip(src)}:{sport} -> port {dport}: delivered to a socket")
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            if isinstance(handler, self.t.UdpSink):
                rec.op(SINK, handler, len(body) - 8)
            else:
                rec.fail("socket")
        handler(src, sport, dst, dport, body[8:], pid)

    # --- output ---------------------------------------------------------------------
    def select_source(self, dst: int) -> int | None:
        r = self.ns.route_lookup(dst)
        if r is None or r.type not in ("unicast", LOCAL, BROADCAST):
            return None
        return self.ns.route_source(r, dst)

    def build_ip(self, src: int, dst: int, proto: int, payload: bytes, *, ttl: int | None = None,
                 df: bool = True, tos: int = 0, ident: int | None = None) -> bytes:
        ttl = int(self.ns.sysctls["net.ipv4.ip_default_ttl"]) if ttl is None else ttl
        ident = self.next_ip_id() if ident is None else ident
        hdr = self.t.ipv4_build_header(20 + len(payload), ident, DF if df else 0, ttl, proto, src, dst, tos)
        return bytes(hdr) + payload

    def send_ip(self, src: int | None, dst: int, proto: int, payload: bytes, *, ttl: int | None = None,
                df: bool = True, tos: int = 0, pid: int | None = None) -> int:
        """A local socket sends: pick the source by route, build the header, output. Returns the frame id.

        Raises NetError with the errno text when there is no route (what `sendto` would return)."""
        if src is None:
            r = self._output_route(dst)
            src = self.ns.route_source(r, dst) or 0
        if proto == UDP:
            csum = self.t.udp_checksum(src, dst, payload[:6] + b"\0\0" + payload[8:])
            payload = payload[:6] + struct.pack("!H", csum) + payload[8:]
        elif proto == TCP:
            payload = self._tcp_checksummed(src, dst, payload)
        pkt = self.build_ip(src, dst, proto, payload, ttl=ttl, df=df, tos=tos)
        pid = self.ns.lab.new_pid() if pid is None else pid
        self.output_ip(pkt, pid)
        return pid

    def _tcp_checksummed(self, src: int, dst: int, seg: bytes) -> bytes:
        pseudo = struct.pack("!IIBBH", src, dst, 0, TCP, len(seg))
        seg = seg[:16] + b"\0\0" + seg[18:]
        csum = self.t.inet_checksum(pseudo + seg, 0, -1)
        return seg[:16] + struct.pack("!H", csum) + seg[18:]

    def _output_route(self, dst: int) -> Route:
        from emu.net.errors import NetError
        from emu.net.route import LOOKUP_ERRORS, REJECT_TYPES

        r = self.ns.route_lookup(dst)
        if r is None or r.type in REJECT_TYPES:
            raise NetError(LOOKUP_ERRORS[r.type if r else None], rc=1, netns=self.ns.name)
        return r

    def output_ip(self, pkt: bytes, pid: int, origin: Link | None = None) -> None:
        """ip_route_output + ip_output for a packet with a complete header."""
        dst = int.from_bytes(pkt[16:20], "big")
        r = self.ns.route_lookup(dst)
        nf = self.ns.netfilter
        if nf.enabled and r is not None:
            buf = bytearray(pkt)
            if not nf.output(buf, pid, r.dev):
                nf.done(pid)
                return
            pkt = bytes(buf)
            if int.from_bytes(pkt[16:20], "big") != dst:  # DNAT in OUTPUT: route again (ip_route_me_harder)
                dst = int.from_bytes(pkt[16:20], "big")
                r = self.ns.route_lookup(dst)
        if r is None or r.type in ("blackhole", "unreachable", "prohibit", "throw"):
            reason = {"blackhole": Drop.BLACKHOLE, "unreachable": Drop.UNREACHABLE,
                      "prohibit": Drop.PROHIBIT}.get(r.type if r else "", Drop.NO_ROUTE)
            self.ns.drop(origin, pid, reason, f"output: no route to {int2ip(dst)}")
            nf.done(pid)
            return
        self.finish_output(r, pkt, pid, forwarded=False)

    def finish_output(self, r: Route, pkt: bytes, pid: int, *, forwarded: bool) -> None:
        """ip_finish_output: MTU (fragment or ICMP), then the neighbour and the device."""
        dev = self.ns.links.get(r.dev or "")
        dst = int.from_bytes(pkt[16:20], "big")
        if dev is None:
            self.ns.drop(None, pid, Drop.NO_ROUTE, f"route {r.describe()}: no device")
            return
        self.ns.note(dev, pid, "route", f"route {r.describe()}")
        rec = self.ns.lab.recorder(pid)
        nf = self.ns.netfilter
        if nf.enabled:
            buf = bytearray(pkt)
            ok = nf.postrouting(dev, buf, pid, r)
            if not (r.type == LOCAL or dev.kind == "loopback"):
                nf.done(pid)
            if not ok:
                return
            pkt = bytes(buf)
        if rec is not None and (r.type == LOCAL or dev.kind == "loopback" or len(pkt) > dev.mtu or dev.l3
                                or r.type == BROADCAST or dst == 0xFFFFFFFF):
            rec.fail("output: local, fragmented, l3 or broadcast")
        if r.type == LOCAL or dev.kind == "loopback":
            dev = self.ns.links["lo"]
            dev.xmit(bytes(12) + ETH_IP + pkt, pid)
            return
        if len(pkt) > dev.mtu:
            if int.from_bytes(pkt[6:8], "big") & DF:
                self.ns.drop(dev, pid, Drop.FRAG_NEEDED, f"ip: {len(pkt)} bytes > mtu {dev.mtu} with DF")
                if forwarded:
                    self.icmp_error(pkt, ICMP_DEST_UNREACH, FRAG_NEEDED, pid, mtu=dev.mtu)
                else:
                    self.local_error(pkt, "message too long", dev.mtu)
                return
            pieces = self.fragment(pkt, dev.mtu)
            if not pieces:
                self.ns.drop(dev, pid, Drop.MALFORMED, "ip: fragment offset past 64 KiB")
                return
            self.ns.note(dev, pid, "forward", f"ip: fragmented into {len(pieces)} for mtu {dev.mtu}")
        else:
            pieces = [pkt]
        nexthop = r.nexthop_gateway if r.nexthop_gateway is not None else dst
        if dev.l3:
            for piece in pieces:
                dev.send_ip(piece, r.nexthop_gateway, pid)  # type: ignore[attr-defined]
            return
        if r.type == BROADCAST or dst == 0xFFFFFFFF:
            for piece in pieces:
                dev.xmit(mac_bytes(BROADCAST_MAC) + mac_bytes(dev.mac) + ETH_IP + piece, pid)
            return
        src = int.from_bytes(pkt[12:16], "big")

        def send(mac: int, dev: Link = dev) -> None:
            if rec is not None:
                rec.op(PUSH, mac_bytes(mac) + mac_bytes(dev.mac) + ETH_IP)
            self.ns.note(dev, pid, "neigh", f"neigh {int2ip(nexthop)} lladdr {int2mac(mac)}")
            for piece in pieces:
                dev.xmit(mac_bytes(mac) + mac_bytes(dev.mac) + ETH_IP + piece, pid)

        def fail() -> None:
            if forwarded or not self.ns.is_local(src):
                self.icmp_error(pkt, ICMP_DEST_UNREACH, HOST_UNREACH, pid)
            else:
                self.local_error(pkt, "Destination Host Unreachable", 0)

        self.ns.neigh.resolve(dev, nexthop, send, fail, pid, src)

    def fragment(self, pkt: bytes, mtu: int) -> list[bytes]:
        """ip_fragment: 8-byte aligned pieces, MF on all but the last, options not copied past the first."""
        ihl = (pkt[0] & 0xF) * 4
        head, data = bytearray(pkt[:ihl]), pkt[ihl:]
        base = int.from_bytes(pkt[6:8], "big")
        step = (mtu - ihl) & ~7
        if (base & 0x1FFF) * 8 + len(data) > 0xFFFF:
            return []  # a malformed fragment reaching past 64 KiB cannot be split further
        out = []
        for off in range(0, len(data), step):
            chunk = data[off:off + step]
            more = (off + step < len(data)) or bool(base & MF)
            h = bytearray(head)
            struct.pack_into("!H", h, 2, ihl + len(chunk))
            struct.pack_into("!H", h, 6, (base & DF) | (MF if more else 0) | ((base & 0x1FFF) + off // 8))
            struct.pack_into("!H", h, 10, 0)
            struct.pack_into("!H", h, 10, self.t.inet_checksum(bytes(h), 0, ihl))
            out.append(bytes(h) + chunk)
        return out

    # --- ICMP errors ------------------------------------------------------------------
    def icmp_error(self, pkt: bytes, itype: int, code: int, pid: int, *, mtu: int = 0) -> None:
        """icmp_send: not about ICMP errors, non-first fragments, broadcasts or unspecified sources."""
        src, dst = struct.unpack_from("!II", pkt, 12)
        if src == 0 or (src >> 28) == 0xE or src == 0xFFFFFFFF:
            return
        if int.from_bytes(pkt[6:8], "big") & 0x1FFF:
            return
        ihl = (pkt[0] & 0xF) * 4
        if pkt[9] == ICMP and len(pkt) > ihl and pkt[ihl] not in (ICMP_ECHO, ICMP_ECHOREPLY, 13, 14, 15, 16, 17, 18):
            return
        r = self.ns.route_lookup(dst)
        saddr = dst if r is not None and r.type == LOCAL else None
        quote = pkt[:ICMP_QUOTE_MAX]
        rest = struct.pack("!HH", 0, mtu) if itype == ICMP_DEST_UNREACH and code == FRAG_NEEDED else bytes(4)
        msg = bytearray(struct.pack("!BBH", itype, code, 0) + rest + quote)
        struct.pack_into("!H", msg, 2, self.t.inet_checksum(bytes(msg), 0, len(msg)))
        tos = (pkt[1] & 0x1E) | IPTOS_PREC_INTERNETCONTROL
        try:
            epid = self.send_ip(saddr, src, ICMP, bytes(msg), df=False, tos=tos)
        except Exception:  # noqa: BLE001 - no route back: the error is dropped, as in the kernel
            self.ns.drop(None, pid, Drop.NO_ROUTE, f"icmp error to {int2ip(src)}: no route back")
            return
        self.ns.note(None, epid, "icmp", f"icmp type {itype} code {code} to {int2ip(src)} about frame {pid}")

    def tcp_reset(self, pkt: bytes) -> None:
        """REJECT --reject-with tcp-reset: an RST to the segment's sender (nf_send_reset)."""
        ihl = (pkt[0] & 0xF) * 4
        if len(pkt) < ihl + 20 or pkt[ihl + 13] & 0x04:
            return
        src, dst = struct.unpack_from("!II", pkt, 12)
        sport, dport, seq, ack = struct.unpack_from("!HHII", pkt, ihl)
        flags = pkt[ihl + 13]
        data_len = len(pkt) - ihl - (pkt[ihl + 12] >> 4) * 4
        if flags & 0x10:
            rst = struct.pack("!HHIIBBHHH", dport, sport, ack, 0, 5 << 4, 0x04, 0, 0, 0)
        else:
            ack_no = (seq + data_len + (1 if flags & 0x02 else 0) + (1 if flags & 0x01 else 0)) & 0xFFFFFFFF
            rst = struct.pack("!HHIIBBHHH", dport, sport, 0, ack_no, 5 << 4, 0x14, 0, 0, 0)
        try:
            self.send_ip(dst, src, TCP, rst)
        except Exception:  # noqa: BLE001 - no route back: nothing is sent
            return

    def local_error(self, pkt: bytes, text: str, mtu: int) -> None:
        """A locally generated packet failed before leaving: tell the sockets (sk_err)."""
        for handler in list(self.icmp_handlers):
            if getattr(handler, "local_error", None):
                handler.local_error(pkt, text, mtu)  # type: ignore[attr-defined]

    # --- sockets ------------------------------------------------------------------------
    def udp_bind(self, port: int, handler: UdpHandler) -> None:
        if port in self.udp_sockets:
            from emu.net.errors import NetError

            raise NetError(f"bind: port {port}: Address already in use", rc=1, netns=self.ns.name)
        self.udp_sockets[port] = handler

    def udp_sink(self, port: int):  # noqa: ANN201 - the data plane's UdpSink
        """Binds a counting sink on `port` (packets and payload bytes); the fast path feeds it in C."""
        sink = self.t.UdpSink()
        self.udp_bind(port, sink)
        return sink

    def udp_close(self, port: int) -> None:
        self.udp_sockets.pop(port, None)

    def udp_send(self, dst: int, dport: int, payload: bytes, *, sport: int, src: int | None = None,
                 ttl: int | None = None, df: bool = True) -> int:
        seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        return self.send_ip(src, dst, UDP, seg, ttl=ttl, df=df)
