"""`traceroute`: UDP probes with rising TTL; routers answer time exceeded, the target port unreachable."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from emu.net.addr import int2ip, ip2int
from emu.net.errors import NetError
from emu.net.shell import Result, Usage
from emu.net.stack import ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, UDP

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

BASE_PORT = 33434
MARKS = {0: " !N", 1: " !H", 2: " !P", 4: " !F", 9: " !X", 10: " !X", 13: " !X"}


def traceroute(ns: Namespace, dst: int, *, max_hops: int = 30, queries: int = 3, wait: float = 5.0,
               numeric: bool = True, size: int = 60) -> list[str]:
    """Returns traceroute's hop lines (without the header)."""
    clock = ns.lab.clock
    sport = ns.lab.clock.rng.randrange(32768, 61000)
    answers: dict[int, tuple[int, int, int, float]] = {}

    def handler(pkt: bytes, pid: int) -> bool:
        ihl = (pkt[0] & 0xF) * 4
        body = pkt[ihl:]
        if body[0] not in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED) or len(body) < 36:
            return False
        inner = body[8:]
        iihl = (inner[0] & 0xF) * 4
        if inner[9] != UDP or len(inner) < iihl + 4:
            return False
        s, d = struct.unpack_from("!HH", inner, iihl)
        if s != sport or not BASE_PORT <= d < BASE_PORT + max_hops * queries:
            return False
        answers[d] = (int.from_bytes(pkt[12:16], "big"), body[0], body[1], clock.now)
        return True

    ns.stack.icmp_handlers.append(handler)
    lines: list[str] = []
    try:
        port = BASE_PORT
        for ttl in range(1, max_hops + 1):
            parts, last, done = [], None, False
            for _ in range(queries):
                sent = clock.now
                ns.stack.udp_send(dst, port, bytes(size - 28), sport=sport, ttl=ttl, df=False)
                p = port
                clock.run_while(lambda p=p: p not in answers, wait)
                if p in answers:
                    src, itype, code, when = answers[p]
                    if src != last:
                        parts.append(f" {int2ip(src)}" if numeric else f" {int2ip(src)} ({int2ip(src)})")
                        last = src
                    mark = "" if itype == ICMP_TIME_EXCEEDED or code == 3 else MARKS.get(code, f" !<{code}>")
                    parts.append(f"  {(when - sent) * 1000:.3f} ms{mark}")
                    done = done or itype == ICMP_DEST_UNREACH
                else:
                    parts.append(" *")
                port += 1
            lines.append(f"{ttl:2d} " + "".join(parts).replace("  ", "  ", 1))
            if done:
                break
    finally:
        ns.stack.icmp_handlers.remove(handler)
    return lines


def traceroute_command(ns: Namespace, args: list[str]) -> Result:
    """`traceroute [-n] [-m MAX] [-q N] [-w S] HOST`."""
    numeric, max_hops, queries, wait, dest = False, 30, 3, 5.0, None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "-q", "-w"):
            if i + 1 >= len(args):
                what = {"-m": "max_ttl", "-q": "nqueries", "-w": "MAX,HERE,NEAR"}[a]
                raise Usage(f"Option `{a}' (argc {i + 1}) requires an argument: `{a} {what}'", 2)
            try:
                val = float(args[i + 1]) if a == "-w" else int(args[i + 1])
            except ValueError:
                raise Usage(f"Cannot handle `{a}' option with arg `{args[i + 1]}' (argc {i + 1})", 2) from None
            max_hops, queries, wait = (int(val), queries, wait) if a == "-m" else (
                (max_hops, int(val), wait) if a == "-q" else (max_hops, queries, float(val)))
            i += 2
            continue
        if a == "-n":
            numeric = True
        elif a.startswith("-"):
            raise Usage(f"Bad option `{a}' (argc {i + 1})", 2)
        else:
            dest = a
        i += 1
    if dest is None:
        raise Usage("Specify \"host\" missing argument.", 2)
    try:
        dst = ip2int(dest)
    except ValueError:
        return Result(2, "", f"{dest}: Name or service not known\n"
                             f"Cannot handle \"host\" cmdline arg `{dest}' on position 1 (argc 1)\n")
    try:
        lines = traceroute(ns, dst, max_hops=max_hops, queries=queries, wait=wait, numeric=numeric)
    except NetError as exc:
        return Result(1, "", f"connect: {exc.message}\n")
    head = f"traceroute to {dest} ({int2ip(dst)}), {max_hops} hops max, 60 byte packets\n"
    return Result(0, head + "".join(line + "\n" for line in lines))
