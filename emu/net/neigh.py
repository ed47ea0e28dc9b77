"""The neighbour (ARP) table and its state machine (net/core/neighbour.c, net/ipv4/arp.c).

Entries (lladdr, state, updated) live in the data plane's per-device NeighTable; this module adds
what needs time: probes 1 s apart, frames queued while INCOMPLETE, REACHABLE -> STALE -> DELAY
-> PROBE, and FAILED after 3 unanswered probes. Changes here do not invalidate the flow cache's
programs: each checks the entries it uses every time it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.clock import Timer
from emu.net.addr import int2ip, int2mac
from emu.net.errors import NetError
from emu.net.flowcache import NEIGH
from emu.trace import Drop

if TYPE_CHECKING:
    from emu.net.link import Link
    from emu.net.namespace import Namespace

INCOMPLETE, REACHABLE, STALE, DELAY, PROBE, FAILED, NOARP, PERMANENT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
STATE_NAMES = {INCOMPLETE: "INCOMPLETE", REACHABLE: "REACHABLE", STALE: "STALE", DELAY: "DELAY", PROBE: "PROBE",
               FAILED: "FAILED", NOARP: "NOARP", PERMANENT: "PERMANENT"}
STATE_BY_NAME = {v.lower(): k for k, v in STATE_NAMES.items()}
VALID = REACHABLE | STALE | DELAY | PROBE | NOARP | PERMANENT  # NUD_VALID: has a usable lladdr

RETRANS_TIME = 1.0
MCAST_SOLICIT = 3
UCAST_SOLICIT = 3
DELAY_FIRST_PROBE = 5.0
UNRES_QLEN = 101


@dataclass
class Pending:
    """Resolution in progress: queued senders, probes sent, the retry timer."""

    queue: list[tuple[Callable[[int], None], Callable[[], None], int]] = field(default_factory=list)
    probes: int = 0
    timer: Timer | None = None
    src_hint: int | None = None


class NeighTable:
    """All neighbour entries of one namespace, one data-plane table per device."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.tables: dict[int, object] = {}
        self.pending: dict[tuple[int, int], Pending] = {}
        self.reachable_time: dict[int, float] = {}

    def _table(self, link: Link):  # noqa: ANN202 - a data-plane NeighTable
        t = self.tables.get(id(link))
        if t is None:
            t = self.tables[id(link)] = self.ns.tables.NeighTable()
            base = int(self.ns.sysctls["net.ipv4.neigh.default.base_reachable_time_ms"]) / 1000.0
            self.reachable_time[id(link)] = self.ns.lab.clock.rng.uniform(base / 2, 3 * base / 2)
        return t

    def _now(self) -> float:
        return self.ns.lab.clock.now

    def get(self, link: Link, ip: int) -> tuple[int, int, float] | None:
        """(mac, state, updated) with REACHABLE aged to STALE as the periodic work would."""
        t = self._table(link)
        e = t.get(ip)
        if e is None:
            return None
        mac, state, updated = e
        if state == REACHABLE and self._now() - updated > self.reachable_time[id(link)]:
            state = STALE
            t.set(ip, mac, STALE, updated)
        return mac, state, updated

    def entries(self, link: Link) -> list[tuple[int, int, int]]:
        """(ip, mac, state) for `ip neigh show`."""
        out = []
        for ip, _mac, _state, _upd in self._table(link).items():
            e = self.get(link, ip)
            if e is not None:
                out.append((ip, e[0], e[1]))
        return out

    # --- configuration -------------------------------------------------------------
    def add(self, link: Link, ip: int, mac: int, state: str, *, replace: bool = False) -> None:
        st = STATE_BY_NAME.get(state.lower())
        if st is None:
            raise NetError(f'Error: argument "{state}" is wrong: nud state is bad', rc=1)
        t = self._table(link)
        if t.get(ip) is not None and not replace:
            raise NetError("RTNETLINK answers: File exists")
        if mac < 0 and st & VALID:
            raise NetError("RTNETLINK answers: Invalid argument")
        t.set(ip, mac, st, self._now())
        self._resolved(link, ip, mac) if st & VALID else None

    def delete(self, link: Link, ip: int) -> bool:
        self._cancel(link, ip)
        ok = self._table(link).remove(ip)
        return bool(ok)

    def flush_dev(self, link: Link) -> None:
        for ip, *_ in self._table(link).items():
            self._cancel(link, ip)
        self.tables.pop(id(link), None)

    def _cancel(self, link: Link, ip: int) -> None:
        p = self.pending.pop((id(link), ip), None)
        if p and p.timer:
            p.timer.cancel()

    # --- output side -----------------------------------------------------------
    def resolve(self, link: Link, ip: int, send: Callable[[int], None], fail: Callable[[], None], pid: int,
                src_hint: int | None) -> None:
        """Calls `send(mac)` now or once `ip` resolves on `link`; `fail()` if it never does."""
        e = self.get(link, ip)
        rec = self.ns.lab.recorder(pid)
        if rec is not None:
            if e is not None and e[1] & VALID and e[1] != STALE:
                rec.op(NEIGH, self._table(link), ip, e[0], self.reachable_time[id(link)])
            else:
                rec.fail("neighbour not usable as it is")
        if e is not None and e[1] & VALID:
            mac, state, updated = e
            if state == STALE:
                # neigh_event_send: first use of a STALE entry starts the DELAY timer.
                self._table(link).set(ip, mac, DELAY, updated)
                p = self.pending.setdefault((id(link), ip), Pending(src_hint=src_hint))
                p.timer = self.ns.lab.clock.call_later(DELAY_FIRST_PROBE, lambda: self._delay_expired(link, ip))
                self.ns.note(link, pid, "neigh", f"neigh {int2ip(ip)} STALE -> DELAY")
            send(mac)
            return
        key = (id(link), ip)
        p = self.pending.get(key)
        if p is None or e is None or e[1] == FAILED:
            p = self.pending[key] = Pending(src_hint=src_hint)
            self._table(link).set(ip, -1, INCOMPLETE, self._now())
            self._probe(link, ip, broadcast=True, pid=pid)
        if len(p.queue) >= UNRES_QLEN:
            _, old_fail, old_pid = p.queue.pop(0)
            self.ns.drop(link, old_pid, Drop.QUEUE_FULL, f"arp: queue for {int2ip(ip)} full")
        p.queue.append((send, fail, pid))
        self.ns.note(link, pid, "arp", f"arp: queued until {int2ip(ip)} resolves")

    def _probe(self, link: Link, ip: int, *, broadcast: bool, pid: int) -> None:
        p = self.pending[(id(link), ip)]
        p.probes += 1
        mac = -1
        if not broadcast:
            e = self._table(link).get(ip)
            mac = e[0] if e else -1
        self.ns.stack.arp_request(link, ip, p.src_hint, mac)
        p.timer = self.ns.lab.clock.call_later(RETRANS_TIME, lambda: self._retry(link, ip, broadcast))

    def _retry(self, link: Link, ip: int, broadcast: bool) -> None:
        p = self.pending.get((id(link), ip))
        if p is None:
            return
        limit = MCAST_SOLICIT if broadcast else UCAST_SOLICIT
        if p.probes < limit:
            self._probe(link, ip, broadcast=broadcast, pid=0)
            return
        del self.pending[(id(link), ip)]
        self._table(link).set(ip, -1, FAILED, self._now())
        for _send, fail, pid in p.queue:
            self.ns.drop(link, pid, Drop.NO_NEIGH, f"arp: {int2ip(ip)} FAILED after {p.probes} probes")
            fail()

    def _delay_expired(self, link: Link, ip: int) -> None:
        e = self._table(link).get(ip)
        if e is None or e[1] != DELAY:
            return
        self._table(link).set(ip, e[0], PROBE, e[2])
        p = self.pending.setdefault((id(link), ip), Pending())
        p.probes = 0
        self._probe(link, ip, broadcast=False, pid=0)

    # --- input side -----------------------------------------------------------------
    def confirm(self, link: Link, ip: int, mac: int, *, create: bool, state: int = REACHABLE) -> None:
        """An ARP packet told us `ip` is at `mac` (neigh_update); `create` for requests addressed to us."""
        t = self._table(link)
        e = t.get(ip)
        if e is None and not create:
            return
        if e is not None and e[1] in (PERMANENT, NOARP):
            return
        if e is not None and e[1] & VALID and e[0] == mac and state == STALE:
            return  # a request from a known neighbour does not downgrade it
        t.set(ip, mac, state, self._now())
        self._resolved(link, ip, mac)

    def _resolved(self, link: Link, ip: int, mac: int) -> None:
        p = self.pending.pop((id(link), ip), None)
        if p is None:
            return
        if p.timer:
            p.timer.cancel()
        for send, _fail, pid in p.queue:
            self.ns.note(link, pid, "arp", f"arp: {int2ip(ip)} is at {int2mac(mac)}, queued frame sent")
            send(mac)
