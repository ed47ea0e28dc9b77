"""Connection tracking: per-protocol state machines over the data plane's ConntrackTable, and `conntrack -L`.

Entries are found by either direction's tuple. The TCP transitions are the kernel's table
(nf_conntrack_proto_tcp.c, `tcp_conntracks`), the UDP rule is nf_conntrack_udp_packet's, and
timeouts are the kernel defaults; expiry runs on the virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.net.addr import int2ip

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

Tuple5 = tuple[int, int, int, int, int]

# Status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
SEEN_REPLY, ASSURED, CONFIRMED, SRC_NAT, DST_NAT = 0x2, 0x4, 0x8, 0x10, 0x20
SRC_NAT_DONE, DST_NAT_DONE = 0x80, 0x100

# TCP states, in the kernel's order.
sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2 = range(10)
sIV, sIG = 100, 101
TCP_NAMES = ["NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
             "CLOSE", "SYN_SENT2"]
TCP_TIMEOUTS = [0, 120, 60, 432000, 120, 60, 30, 120, 10, 120]
SYN, SYNACK, FIN, ACK, RST, NONE = range(6)
# tcp_conntracks[direction][flags][state]
TCP_TABLE = [
    [  # ORIGINAL
        [sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2],   # syn
        [sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR],   # synack
        [sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV],   # fin
        [sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV],   # ack
        [sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL],   # rst
        [sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV],   # none
    ],
    [  # REPLY
        [sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2],
        [sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR],
        [sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV],
        [sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG],
        [sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL],
        [sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV],
    ],
]
UDP_UNREPLIED, UDP_REPLIED, UDP_STREAM_AFTER = 30.0, 120.0, 2.0
ICMP_TIMEOUT, GENERIC_TIMEOUT = 30.0, 600.0
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}


def tcp_index(flags: int) -> int:
    """get_conntrack_index: which row of the table a segment's flags select."""
    if flags & 0x04:
        return RST
    if flags & 0x02:
        return SYNACK if flags & 0x10 else SYN
    if flags & 0x01:
        return FIN
    if flags & 0x10:
        return ACK
    return NONE


def invert(t: Tuple5) -> Tuple5:
    """The tuple of the other direction (ICMP keeps its echo id in the first port slot)."""
    src, dst, proto, sport, dport = t
    if proto == 1:
        return (dst, src, proto, sport, dport)
    return (dst, src, proto, dport, sport)


@dataclass
class Packet:
    """What conntrack and the rules need of one IPv4 packet."""

    tuple: Tuple5
    length: int
    tcp_flags: int = 0
    icmp_type: int = -1
    icmp_code: int = 0


@dataclass
class Conn:
    """A not yet confirmed entry (the first packet of a flow), or a handle on a table entry."""

    id: int
    orig: Tuple5
    reply: Tuple5
    state: int
    status: int
    expires: float
    mark: int = 0
    icmp_type: int = -1
    icmp_code: int = 0


class Conntrack:
    """The connection table of one namespace."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._table = None
        self.icmp_info: dict[int, tuple[int, int]] = {}  # id -> orig echo type/code, for -L
        self.created: dict[int, float] = {}  # id -> creation time (UDP's stream rule)
        self._timer = None
        self.last_timeout = 0.0  # what the last packet() set: its timeout, and when it would change state
        self.last_deadline = float("inf")

    @property
    def table(self):  # noqa: ANN201 - the data plane's ConntrackTable, made on first use
        if self._table is None:
            self._table = self.ns.tables.ConntrackTable()
        return self._table

    @property
    def now(self) -> float:
        return self.ns.lab.clock.now

    # --- lookup and the state machines --------------------------------------------------
    def find(self, t: Tuple5) -> tuple[Conn | None, int]:
        self.expire()
        cid, direction = self.table.find(t)
        if cid < 0:
            return None, 0
        return self.get(cid), direction

    def get(self, cid: int) -> Conn:
        orig, reply, state, status, expires, mark, *_ = self.table.get(cid)
        return Conn(cid, tuple(orig), tuple(reply), state, status, expires, mark)  # type: ignore[arg-type]

    def new(self, pkt: Packet) -> Conn | None:
        """An unconfirmed entry for the first packet of a flow; None when it cannot start one (INVALID)."""
        proto = pkt.tuple[2]
        state = 0
        if proto == 6:
            nxt = TCP_TABLE[0][tcp_index(pkt.tcp_flags)][sNO]
            if nxt in (sIV, sIG):
                return None
            state = nxt
            timeout = TCP_TIMEOUTS[state]
        elif proto == 17:
            timeout = UDP_UNREPLIED
        elif proto == 1:
            if pkt.icmp_type not in (8, 13, 15, 17):
                return None
            timeout = ICMP_TIMEOUT
        else:
            timeout = GENERIC_TIMEOUT
        c = Conn(-1, pkt.tuple, invert(pkt.tuple), state, 0, self.now + timeout)
        c.icmp_type, c.icmp_code = pkt.icmp_type, pkt.icmp_code
        return c

    def packet(self, c: Conn, direction: int, pkt: Packet) -> bool:
        """Advances a confirmed entry for one packet; False if the packet is INVALID for it."""
        proto = c.orig[2]
        status = c.status
        before = (c.state, c.status)
        deadline = float("inf")
        if direction == 1:
            status |= SEEN_REPLY
        if proto == 6:
            nxt = TCP_TABLE[direction][tcp_index(pkt.tcp_flags)][c.state]
            if nxt == sIV:
                return False
            if nxt != sIG:
                if c.state == sSR and nxt == sES and direction == 0:
                    status |= ASSURED
                c.state = nxt
            timeout = TCP_TIMEOUTS[c.state]
        elif proto == 17:
            timeout = UDP_UNREPLIED
            if status & SEEN_REPLY:
                stream_ts = self.created.get(c.id, self.now) + UDP_STREAM_AFTER
                if self.now > stream_ts:
                    timeout = UDP_REPLIED
                    status |= ASSURED
                else:
                    deadline = stream_ts
        elif proto == 1:
            timeout = ICMP_TIMEOUT
        else:
            timeout = GENERIC_TIMEOUT
        c.status = status
        c.expires = self.now + timeout
        self.table.update(c.id, c.state, c.status, c.expires)
        self.table.account(c.id, direction, pkt.length)
        self.last_timeout, self.last_deadline = timeout, deadline
        if (c.state, c.status) != before:
            self.ns.lab.bump()
        self._schedule()
        return True

    def confirm(self, c: Conn, pkt: Packet) -> bool:
        """Inserts an entry at the end of the hooks (__nf_conntrack_confirm); False on a tuple clash."""
        cid = self.table.create(c.orig, c.reply, c.state, c.status | CONFIRMED, c.expires, c.mark)
        if cid < 0:
            return False
        c.id = cid
        c.status |= CONFIRMED
        self.created[cid] = self.now
        if c.orig[2] == 1:
            self.icmp_info[cid] = (c.icmp_type, c.icmp_code)
        self.table.account(cid, 0, pkt.length)
        self._schedule()
        return True

    def in_use(self, t: Tuple5) -> bool:
        return bool(self.table.in_use(t))

    def set_mark(self, c: Conn, mark: int) -> None:
        c.mark = mark
        if c.id >= 0:
            self.table.set_mark(c.id, mark)

    # --- expiry -----------------------------------------------------------------------------
    def expire(self) -> list[int]:
        gone = self.table.expire(self.now)
        for cid in gone:
            self.icmp_info.pop(cid, None)
            self.created.pop(cid, None)
        if gone:
            self.ns.lab.bump()
        return gone

    def _schedule(self) -> None:
        nxt = self.table.next_expiry()
        if nxt == float("inf"):
            return
        if self._timer is not None and not self._timer.cancelled and self._timer.when <= nxt:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.ns.lab.clock.call_at(nxt, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.expire()
        self._schedule()

    # --- conntrack -L -------------------------------------------------------------------------
    def lines(self, *, extended: bool = False) -> list[str]:
        """`conntrack -L [-o extended]` lines, in id order."""
        self.expire()
        out = []
        for cid in self.table.ids():
            orig, reply, state, status, expires, mark, *_ = self.table.get(cid)
            proto = orig[2]
            name = PROTO_NAMES.get(proto, "unknown")
            left = max(0, int(expires - self.now))
            head = f"{name:<8} {proto} {left} "
            if proto == 6:
                head += f"{TCP_NAMES[state]} "
            o = self._tuple_text(orig, cid, reply=False)
            r = self._tuple_text(reply, cid, reply=True)
            unreplied = "[UNREPLIED] " if not status & SEEN_REPLY else ""
            assured = "[ASSURED] " if status & ASSURED else ""
            line = f"{head}{o} {unreplied}{r} {assured}mark={mark} use=1"
            out.append(("ipv4     2 " if extended else "") + line)
        return out

    def _tuple_text(self, t: tuple[int, ...], cid: int, *, reply: bool) -> str:
        src, dst, proto, sport, dport = t
        base = f"src={int2ip(src)} dst={int2ip(dst)}"
        if proto in (6, 17):
            return f"{base} sport={sport} dport={dport}"
        if proto == 1:
            itype, code = self.icmp_info.get(cid, (8, 0))
            if reply:
                itype = {8: 0, 13: 14, 15: 16, 17: 18}.get(itype, itype)
            return f"{base} type={itype} code={code} id={sport}"
        return base
