"""One probe packet for `emu trace`: an ICMP echo, a UDP datagram or a TCP SYN from a namespace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.apps.ping import Pinger
from emu.net import tcp
from emu.net.addr import int2ip, ip2int
from emu.scenario.loader import ScenarioError

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

WAIT = 5.0


def parse_target(text: str) -> tuple[int, int | None]:
    """`ADDR` or `ADDR:PORT` from the command line."""
    addr, _, port = text.partition(":")
    try:
        ip = ip2int(addr)
    except ValueError:
        raise ScenarioError("--to", f"invalid IPv4 address {addr!r}") from None
    if not port:
        return ip, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ScenarioError("--to", f"invalid port {port!r} (1-65535)")
    return ip, int(port)


def send_probe(ns: Namespace, dst: int, port: int | None, proto: str) -> tuple[int, str]:
    """Sends one packet and lets the lab run until it is answered or 5 s pass; (frame id, flow text)."""
    clock = ns.lab.clock
    src = ns.stack.select_source(dst)
    where = f"{int2ip(src) if src is not None else '?'} -> {int2ip(dst)}"
    if proto == "icmp":
        p = Pinger(ns, dst)
        ns.stack.icmp_handlers.append(p)
        try:
            p.send(1)
            clock.run_while(lambda: not p.done, WAIT)
        finally:
            ns.stack.icmp_handlers.remove(p)
        return p.result.pids[0], f"icmp echo request {where} (id {p.ident}, seq 1) from {ns.name}"
    if port is None:
        raise ScenarioError("--to", f"{proto} needs a port: ADDR:PORT")
    sport = clock.rng.randrange(32768, 61000)
    if proto == "udp":
        pid = ns.stack.udp_send(dst, port, b"emu trace", sport=sport)
        clock.run_for(WAIT / 5)
        return pid, f"udp {where.replace(' ->', f':{sport} ->')}:{port} from {ns.name}"
    c = tcp.layer(ns).connect(dst, port, sport)
    clock.run_while(lambda: c.state == "SYN_SENT", WAIT)
    return c.syn_pid, f"tcp SYN {where.replace(' ->', f':{sport} ->')}:{port} from {ns.name}"
