"""UDP and TCP endpoints for scenarios and tests: echo servers and request/response clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from emu.net import tcp
from emu.net.addr import ip2int

if TYPE_CHECKING:
    from emu.net.namespace import Namespace


def udp_echo(ns: Namespace, port: int, transform: Callable[[bytes], bytes] = lambda b: b) -> None:
    """Listens on UDP `port` and answers every datagram to its sender."""

    def handler(src: int, sport: int, dst: int, dport: int, payload: bytes, pid: int) -> None:
        ns.stack.udp_send(src, sport, transform(payload), sport=dport, src=dst)

    ns.stack.udp_bind(port, handler)


def udp_request(ns: Namespace, dst: str, port: int, payload: bytes, *, timeout: float = 2.0,
                sport: int | None = None) -> bytes | None:
    """Sends one datagram and waits for one answer on the same socket (None on timeout)."""
    sport = sport if sport is not None else ns.lab.clock.rng.randrange(32768, 61000)
    got: list[bytes] = []
    ns.stack.udp_bind(sport, lambda s, sp, d, dp, data, pid: got.append(data))
    try:
        ns.stack.udp_send(ip2int(dst), port, payload, sport=sport)
        ns.lab.clock.run_while(lambda: not got, timeout)
    finally:
        ns.stack.udp_close(sport)
    return got[0] if got else None


def tcp_serve(ns: Namespace, port: int, handler: Callable[[bytes], bytes]) -> None:
    """Accepts connections on `port`; each request gets `handler(request)` and the server closes."""
    tcp.layer(ns).listen(port, handler)


def tcp_request(ns: Namespace, dst: str, port: int, data: bytes, *, timeout: float = 5.0) -> tuple[bytes, str | None]:
    return tcp.request(ns, ip2int(dst), port, data, timeout=timeout)
