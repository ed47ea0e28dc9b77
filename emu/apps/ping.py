"""iputils `ping`: ICMP echo requests on the virtual clock, with iputils' output and summary."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.net.addr import int2ip, ip2int
from emu.net.errors import NetError
from emu.net.shell import Result, Usage
from emu.net.stack import ICMP, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_TIME_EXCEEDED

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

UNREACH_TEXT = {0: "Destination Net Unreachable", 1: "Destination Host Unreachable",
                2: "Destination Protocol Unreachable", 3: "Destination Port Unreachable",
                4: "Frag needed and DF set", 9: "Destination Net Prohibited", 10: "Destination Host Prohibited",
                13: "Packet filtered"}


@dataclass
class PingResult:
    """Replies and errors of one run; `lines` is what ping printed, in order."""

    sent: int = 0
    received: int = 0
    errors: int = 0
    rtts: list[float] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


class Pinger:
    """One ping process: an ICMP socket identified by its echo id."""

    def __init__(self, ns: Namespace, dst: int, *, size: int = 56, ttl: int | None = None, ident: int | None = None):
        self.ns, self.dst, self.size, self.ttl = ns, dst, size, ttl
        self.ident = ns.lab.clock.rng.randrange(1, 0xFFFF) if ident is None else ident
        self.sent_at: dict[int, float] = {}
        self.result = PingResult()
        self.done: set[int] = set()

    def _payload(self, seq: int) -> bytes:
        now = self.ns.lab.clock.now
        ts = struct.pack("<qq", int(now), int((now % 1) * 1e6))  # struct timeval, host order
        body = bytes(i & 0xFF for i in range(16, self.size))
        data = (ts + body)[: self.size] if self.size >= 16 else body[: self.size]
        msg = bytearray(struct.pack("!BBHHH", ICMP_ECHO, 0, 0, self.ident, seq) + data)
        struct.pack_into("!H", msg, 2, self.ns.tables.inet_checksum(bytes(msg), 0, len(msg)))
        return bytes(msg)

    def send(self, seq: int) -> None:
        self.sent_at[seq] = self.ns.lab.clock.now
        self.result.sent += 1
        pid = self.ns.stack.send_ip(None, self.dst, ICMP, self._payload(seq), ttl=self.ttl, df=True)
        self.result.pids.append(pid)

    def __call__(self, pkt: bytes, pid: int) -> bool:
        ihl = (pkt[0] & 0xF) * 4
        body = pkt[ihl:]
        itype, code = body[0], body[1]
        src = int.from_bytes(pkt[12:16], "big")
        if itype == ICMP_ECHOREPLY:
            ident, seq = struct.unpack_from("!HH", body, 4)
            if ident != self.ident or seq not in self.sent_at:
                return False
            rtt = (self.ns.lab.clock.now - self.sent_at[seq]) * 1000
            dup = " (DUP!)" if seq in self.done else ""
            if not dup:
                self.result.received += 1
                self.result.rtts.append(rtt)
                self.done.add(seq)
            self.result.lines.append(f"{len(body)} bytes from {int2ip(src)}: icmp_seq={seq} ttl={pkt[8]} "
                                     f"time={_ms(rtt)} ms{dup}")
            return True
        if itype in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED) and len(body) >= 36:
            inner = body[8:]
            iihl = (inner[0] & 0xF) * 4
            if inner[9] != ICMP or len(inner) < iihl + 8 or inner[iihl] != ICMP_ECHO:
                return False
            ident, seq = struct.unpack_from("!HH", inner, iihl + 4)
            if ident != self.ident:
                return False
            if itype == ICMP_TIME_EXCEEDED:
                text = "Time to live exceeded"
            else:
                text = UNREACH_TEXT.get(code, f"Dest Unreachable, Bad Code: {code}")
                if code == 4:
                    text += f" (mtu = {int.from_bytes(body[6:8], 'big')})"
            self._error(src, seq, text)
            return True
        return False

    def _error(self, src: int, seq: int, text: str) -> None:
        self.result.errors += 1
        self.done.add(seq)
        self.result.lines.append(f"From {int2ip(src)} icmp_seq={seq} {text}")

    def local_error(self, pkt: bytes, text: str, mtu: int) -> None:
        ihl = (pkt[0] & 0xF) * 4
        if pkt[9] != ICMP or pkt[ihl] != ICMP_ECHO:
            return
        ident, seq = struct.unpack_from("!HH", pkt, ihl + 4)
        if ident != self.ident:
            return
        if mtu:
            self.result.errors += 1
            self.done.add(seq)
            self.result.lines.append(f"ping: local error: message too long, mtu={mtu}")
        else:
            self._error(int.from_bytes(pkt[12:16], "big"), seq, text)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def ping(ns: Namespace, dst: str | int, *, count: int = 1, interval: float = 1.0, size: int = 56,
         ttl: int | None = None, timeout: float = 10.0) -> tuple[int, PingResult, str]:
    """Runs ping on the virtual clock; returns (exit code, result, the summary text)."""
    addr = ip2int(dst) if isinstance(dst, str) else dst
    p = Pinger(ns, addr, size=size, ttl=ttl)
    ns.stack.icmp_handlers.append(p)
    clock = ns.lab.clock
    start = clock.now
    try:
        for seq in range(1, count + 1):
            p.send(seq)
            if seq < count:
                clock.run_until(start + seq * interval)
        last_send = clock.now
        clock.run_while(lambda: len(p.done) < count, timeout)
        # Let in-flight frames and retries settle without waiting out unrelated timers.
        clock.run_until(max(clock.now, last_send))
    finally:
        ns.stack.icmp_handlers.remove(p)
    r = p.result
    elapsed = round((last_send - start) * 1000)
    loss_text = f"{(r.sent - r.received) * 100 / r.sent:g}" if r.sent else "0"
    errs = f", +{r.errors} errors" if r.errors else ""
    summary = (f"\n--- {int2ip(addr)} ping statistics ---\n"
               f"{r.sent} packets transmitted, {r.received} received{errs}, {loss_text}% packet loss, "
               f"time {elapsed}ms\n")
    if r.rtts:
        mean = sum(r.rtts) / len(r.rtts)
        mdev = math.sqrt(max(0.0, sum(x * x for x in r.rtts) / len(r.rtts) - mean * mean))
        summary += f"rtt min/avg/max/mdev = {min(r.rtts):.3f}/{mean:.3f}/{max(r.rtts):.3f}/{mdev:.3f} ms\n"
    else:
        summary += "\n"
    rc = 0 if r.received else 1
    return rc, r, summary


def ping_command(ns: Namespace, args: list[str]) -> Result:
    """`ping [-c N] [-i S] [-s N] [-t TTL] [-W S] [-w S] [-q] [-n] DEST`."""
    count, interval, size, ttl, timeout, quiet = 0, 1.0, 56, None, 10.0, False
    dest = None
    i = 0
    try:
        while i < len(args):
            a = args[i]
            if a in ("-c", "-i", "-s", "-t", "-W", "-w"):
                if i + 1 >= len(args):
                    raise Usage(f"ping: option requires an argument -- '{a[1]}'", 2)
                v = args[i + 1]
                if a == "-c":
                    count = int(v)
                elif a == "-i":
                    interval = float(v)
                elif a == "-s":
                    size = int(v)
                elif a == "-t":
                    ttl = int(v)
                elif a in ("-W", "-w"):
                    timeout = float(v)
                i += 2
                continue
            if a == "-q":
                quiet = True
            elif a in ("-n", "-4"):
                pass
            elif a.startswith("-"):
                raise Usage(f"ping: invalid option -- '{a[1:]}'", 2)
            else:
                dest = a
            i += 1
    except ValueError:
        raise Usage(f"ping: invalid argument: '{args[i + 1]}'", 1) from None
    if dest is None:
        raise Usage("ping: usage error: Destination address required", 1)
    if count <= 0:
        count = 1 if count == 0 else count
    try:
        addr = ip2int(dest)
    except ValueError:
        return Result(2, "", f"ping: {dest}: Name or service not known\n")
    head = f"PING {dest} ({dest}) {size}({size + 28}) bytes of data.\n"
    try:
        rc, r, summary = ping(ns, addr, count=count, interval=interval, size=size, ttl=ttl, timeout=timeout)
    except NetError as exc:
        return Result(2, "", f"ping: connect: {exc.message}\n")
    body = "" if quiet else "".join(line + "\n" for line in r.lines)
    return Result(rc, head + body + summary)
