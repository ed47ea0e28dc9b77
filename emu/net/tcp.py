"""Enough TCP for request/response flows: handshake, data, FIN both ways, RST for a closed port.

Connections are transition tables (state, event) -> state, as in RFC 793's diagram; the
emulated wire does not lose frames unless a table says so, so there is no retransmission:
a lost segment ends in a timeout that the caller sees.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.net.addr import int2ip
from emu.trace import Drop

if TYPE_CHECKING:
    from emu.net.link import Link
    from emu.net.namespace import Namespace

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
WINDOW = 64240
MSS_OPTION = struct.pack("!BBH", 2, 4, 1460)

Handler = Callable[[bytes], bytes]


@dataclass
class Conn:
    """One endpoint of a connection."""

    local: tuple[int, int]
    remote: tuple[int, int]
    state: str
    snd_nxt: int
    rcv_nxt: int = 0
    received: bytearray = field(default_factory=bytearray)
    handler: Handler | None = None
    closed_by_peer: bool = False
    error: str | None = None
    syn_pid: int = 0


class TcpLayer:
    """The TCP sockets of one namespace."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.listeners: dict[int, Handler] = {}
        self.conns: dict[tuple[int, int, int, int], Conn] = {}

    def _isn(self) -> int:
        return self.ns.lab.clock.rng.getrandbits(32)

    def _send(self, c: Conn, flags: int, data: bytes = b"", *, seq: int | None = None) -> int:
        opts = MSS_OPTION if flags & SYN else b""
        off = (20 + len(opts)) // 4
        seg = struct.pack("!HHIIBBHHH", c.local[1], c.remote[1], c.snd_nxt if seq is None else seq,
                          c.rcv_nxt if flags & ACK else 0, off << 4, flags, WINDOW, 0, 0) + opts + data
        pid = self.ns.stack.send_ip(c.local[0], c.remote[0], 6, seg)
        if seq is None:
            c.snd_nxt = (c.snd_nxt + len(data) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return pid

    # --- API ----------------------------------------------------------------------------
    def listen(self, port: int, handler: Handler) -> None:
        self.listeners[port] = handler

    def connect(self, dst: int, dport: int, sport: int) -> Conn:
        src = self.ns.stack.select_source(dst)
        if src is None:
            from emu.net.errors import NetError

            raise NetError("Network is unreachable", rc=1, netns=self.ns.name)
        c = Conn((src, sport), (dst, dport), "SYN_SENT", self._isn())
        self.conns[(src, sport, dst, dport)] = c
        c.syn_pid = self._send(c, SYN)
        return c

    def send(self, c: Conn, data: bytes) -> None:
        self._send(c, PSH | ACK, data)

    def close(self, c: Conn) -> None:
        if c.state == "ESTABLISHED":
            c.state = "FIN_WAIT_1"
            self._send(c, FIN | ACK)
        elif c.state == "CLOSE_WAIT":
            c.state = "LAST_ACK"
            self._send(c, FIN | ACK)

    # --- input ----------------------------------------------------------------------------
    def input(self, dev: Link, pkt: bytes, seg: bytes, src: int, dst: int, pid: int) -> None:
        if len(seg) < 20 or (seg[12] >> 4) * 4 < 20 or (seg[12] >> 4) * 4 > len(seg):
            self.ns.drop(dev, pid, Drop.MALFORMED, "tcp: bad header")
            return
        pseudo = struct.pack("!IIBBH", src, dst, 0, 6, len(seg))
        if self.ns.tables.inet_checksum(pseudo + seg, 0, -1) != 0:
            self.ns.drop(dev, pid, Drop.BAD_CHECKSUM, "tcp: bad checksum")
            return
        sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", seg)
        data = seg[(off >> 4) * 4:]
        key = (dst, dport, src, sport)
        c = self.conns.get(key)
        if c is None:
            handler = self.listeners.get(dport)
            if flags & SYN and not flags & ACK and handler is not None:
                c = Conn((dst, dport), (src, sport), "SYN_RECV", self._isn(), (seq + 1) & 0xFFFFFFFF,
                         handler=handler)
                self.conns[key] = c
                self.ns.note(dev, pid, "deliver", f"tcp SYN to port {dport}: SYN_RECV, send SYN-ACK")
                self._send(c, SYN | ACK)
                return
            if flags & RST:
                return
            self.ns.drop(dev, pid, Drop.NO_LISTENER, f"tcp: nothing listens on port {dport}: RST")
            tmp = Conn((dst, dport), (src, sport), "CLOSED", ack if flags & ACK else 0,
                       (seq + len(data) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF)
            self._send(tmp, RST | (0 if flags & ACK else ACK))
            return
        self.ns.note(dev, pid, "deliver", f"tcp {int2ip(src)}:{sport} -> :{dport} in {c.state}")
        if flags & RST:
            refused = c.state == "SYN_SENT"
            c.state, c.error = "CLOSED", "Connection refused" if refused else "Connection reset by peer"
            return
        if c.state == "SYN_SENT":
            if flags & SYN and flags & ACK:
                c.rcv_nxt = (seq + 1) & 0xFFFFFFFF
                c.state = "ESTABLISHED"
                self._send(c, ACK)
            return
        if c.state == "SYN_RECV" and flags & ACK:
            c.state = "ESTABLISHED"
        if data and seq == c.rcv_nxt:
            c.received += data
            c.rcv_nxt = (c.rcv_nxt + len(data)) & 0xFFFFFFFF
            if c.handler is not None:
                reply = c.handler(bytes(c.received))
                c.received.clear()
                self._send(c, PSH | ACK, reply)
                c.state = "FIN_WAIT_1"
                self._send(c, FIN | ACK)
                return
            self._send(c, ACK)
        if flags & FIN:
            c.rcv_nxt = (c.rcv_nxt + 1) & 0xFFFFFFFF
            c.closed_by_peer = True
            if c.state == "ESTABLISHED":
                c.state = "CLOSE_WAIT"
                self._send(c, ACK)
            elif c.state in ("FIN_WAIT_1", "FIN_WAIT_2"):
                c.state = "TIME_WAIT"
                self._send(c, ACK)
            return
        if flags & ACK:
            if c.state == "FIN_WAIT_1" and ack == c.snd_nxt:
                c.state = "FIN_WAIT_2"
            elif c.state == "LAST_ACK" and ack == c.snd_nxt:
                c.state = "CLOSED"
                del self.conns[key]

    def icmp_error(self, inner: bytes, itype: int, code: int) -> None:
        ihl = (inner[0] & 0xF) * 4
        if len(inner) < ihl + 4:
            return
        sport, dport = struct.unpack_from("!HH", inner, ihl)
        src, dst = struct.unpack_from("!II", inner, 12)
        c = self.conns.get((src, sport, dst, dport))
        if c is not None and c.state == "SYN_SENT":
            c.state, c.error = "CLOSED", "No route to host" if itype == 3 else "Connection timed out"


def layer(ns: Namespace) -> TcpLayer:
    if ns.stack.tcp is None:
        ns.stack.tcp = TcpLayer(ns)
    return ns.stack.tcp  # type: ignore[return-value]


def request(ns: Namespace, dst: int, dport: int, data: bytes, *, timeout: float = 5.0) -> tuple[bytes, str | None]:
    """Connects, sends `data`, reads until the server closes, closes: (response, error or None)."""
    tcp = layer(ns)
    sport = ns.lab.clock.rng.randrange(32768, 61000)
    c = tcp.connect(dst, dport, sport)
    clock = ns.lab.clock
    clock.run_while(lambda: c.state == "SYN_SENT", timeout)
    if c.state != "ESTABLISHED":
        return b"", c.error or ("Connection refused" if c.state == "CLOSED" else "Connection timed out")
    tcp.send(c, data)
    clock.run_while(lambda: not c.closed_by_peer and c.state != "CLOSED", timeout)
    tcp.close(c)
    clock.run_while(lambda: c.state not in ("CLOSED",) and c.state != "TIME_WAIT" and c.state != "LAST_ACK", timeout)
    clock.run_while(lambda: c.state == "LAST_ACK", timeout)
    return bytes(c.received), c.error
