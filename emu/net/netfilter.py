"""The netfilter hooks of one namespace: conntrack, the nat and filter tables, and NAT rewriting.

The stack calls the hooks where the kernel does (ip_rcv: PREROUTING; ip_local_deliver: INPUT;
ip_forward: FORWARD; __ip_local_out: OUTPUT; ip_output: POSTROUTING). NAT rules are consulted
only for the first packet of a connection; every later packet follows its conntrack entry. A
packet's mark (skb->mark) lives for its passage through the namespace.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.net.addr import int2ip, mask
from emu.net.conntrack import DST_NAT, SRC_NAT, Conn, Conntrack, Packet, Tuple5, invert
from emu.net.flowcache import CT, NAT, RULE
from emu.net.iptables import REJECT_TYPES, Rule, Tables
from emu.trace import Drop

if TYPE_CHECKING:
    from emu.net.link import Link
    from emu.net.namespace import Namespace
    from emu.net.route import Route

ACCEPT, DROP = "ACCEPT", "DROP"
# Matches whose result is the same for every packet of a flow in one conntrack state (a cached flow
# replays their counters); the others (statistic, recent, limit) make a flow uncacheable.
STATIC_MATCHES = frozenset({"tcp", "udp", "icmp", "comment", "mark", "addrtype", "conntrack", "state", "multiport"})
ICMP_ERRORS = (3, 4, 5, 11, 12)


@dataclass
class Ctx:
    """One packet at one hook: what matches look at, and what targets change."""

    pkt: bytearray
    pid: int
    hook: str
    iif: str | None
    oif: str | None
    info: Packet
    conn: Conn | None
    direction: int
    ctstate: str
    mark: int = 0
    route: Route | None = None  # POSTROUTING: the route chosen (MASQUERADE picks its source by it)
    out_link: Link | None = None


class Netfilter:
    """iptables, conntrack and NAT for one namespace."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.rules = Tables()
        self.ct = Conntrack(ns)
        self.pending: dict[int, tuple[Conn, Packet]] = {}  # pid -> the unconfirmed entry it created
        self.tracked: dict[int, tuple[Conn, int, str]] = {}  # pid -> (entry, direction, ctstate) while here
        self.marks: dict[int, int] = {}
        self.recent: dict[str, dict[int, list[float]]] = {}
        self.enabled = False

    def changed(self) -> None:
        """Rules changed: conntrack runs once a nat rule or a conntrack match exists (as modules load)."""
        tables = self.rules.tables
        nat_used = any(c.rules or c.policy is None for c in tables["nat"].chains.values())
        any_rule = any(c.rules or c.policy != "ACCEPT" for t in tables.values() for c in t.chains.values())
        self.enabled = nat_used or any_rule
        self.ns.lab.bump()

    # --- packet facts --------------------------------------------------------------------
    def _info(self, pkt: bytes | bytearray) -> Packet | None:
        flow = self.ns.tables.parse_flow(bytes(pkt), 0)
        if flow is None:
            return None
        src, dst, proto, sport, dport, _ttl, ihl, total, frag = flow
        if frag & 0x1FFF:
            return Packet((src, dst, proto, 0, 0), total)
        if proto == 6 and len(pkt) >= ihl + 14:
            return Packet((src, dst, proto, sport, dport), total, tcp_flags=pkt[ihl + 13])
        if proto == 1 and len(pkt) >= ihl + 8:
            itype, code = pkt[ihl], pkt[ihl + 1]
            ident = struct.unpack_from("!H", pkt, ihl + 4)[0] if itype in (0, 8, 13, 14, 15, 16, 17, 18) else 0
            return Packet((src, dst, proto, ident, 0), total, icmp_type=itype, icmp_code=code)
        if proto in (6, 17):
            return Packet((src, dst, proto, sport, dport), total)
        return Packet((src, dst, proto, 0, 0), total)

    # --- conntrack in: the first hook a packet meets here ---------------------------------
    def _track(self, pkt: bytearray, pid: int) -> tuple[Packet | None, Conn | None, int, str]:
        if pid in self.tracked:
            c, d, st = self.tracked[pid]
            return self._info(pkt), c, d, st
        info = self._info(pkt)
        if info is None:
            return None, None, 0, "INVALID"
        proto = info.tuple[2]
        if proto == 1 and info.icmp_type in ICMP_ERRORS:
            related = self._related(pkt)
            if related is not None:
                rec = self.ns.lab.recorder(pid)
                if rec is not None:
                    rec.fail("conntrack: related")
                c, d = related
                self.tracked[pid] = (c, d, "RELATED")
                return info, c, d, "RELATED"
        c, d = self.ct.find(info.tuple)
        rec = self.ns.lab.recorder(pid)
        if c is not None:
            before = (c.state, c.status)
            if not self.ct.packet(c, d, info):
                self.tracked[pid] = (c, d, "INVALID")
                return info, None, 0, "INVALID"
            if rec is not None:
                if (c.state, c.status) != before:
                    rec.fail("conntrack state change")
                rec.op(CT, self.ct.table, c.id, d, self.ct.last_timeout, c.state, c.status, info.length,
                       self.ct.last_deadline)
            st = "ESTABLISHED" if d == 1 or c.status & 0x2 else "NEW"
            self.tracked[pid] = (c, d, st)
            return info, c, d, st
        if rec is not None:
            rec.fail("conntrack: new or related")
        c = self.ct.new(info)
        if c is None:
            return info, None, 0, "INVALID"
        self.pending[pid] = (c, info)
        self.tracked[pid] = (c, 0, "NEW")
        return info, c, 0, "NEW"

    def _related(self, pkt: bytearray) -> tuple[Conn, int] | None:
        ihl = (pkt[0] & 0xF) * 4
        inner = bytes(pkt[ihl + 8:])
        if len(inner) < 20:
            return None
        info = self._info(inner)
        if info is None:
            return None
        # icmp_error_message: the error travels against the quoted packet, so look up its inverse;
        # the direction found is the error's own.
        c, d = self.ct.find(invert(info.tuple))
        return (c, d) if c is not None else None

    # --- the hooks -------------------------------------------------------------------------------
    def prerouting(self, dev: Link, pkt: bytearray, pid: int) -> bool:
        """NF_INET_PRE_ROUTING: conntrack, then DNAT (rules for a new flow, the entry otherwise)."""
        if not self.enabled:
            return True
        info, c, d, st = self._track(pkt, pid)
        ctx = self._ctx(pkt, pid, "PREROUTING", dev.ifname, None, info, c, d, st)
        return self._nat_hook(ctx, "PREROUTING", dst=True)

    def output(self, pkt: bytearray, pid: int, oif: str | None) -> bool:
        """NF_INET_LOCAL_OUT: conntrack, DNAT, then the filter table's OUTPUT."""
        if not self.enabled:
            return True
        info, c, d, st = self._track(pkt, pid)
        ctx = self._ctx(pkt, pid, "OUTPUT", None, oif, info, c, d, st)
        if not self._nat_hook(ctx, "OUTPUT", dst=True):
            return False
        return self._filter(ctx, "OUTPUT")

    def input(self, dev: Link, pkt: bytearray, pid: int) -> bool:
        """NF_INET_LOCAL_IN: the filter table's INPUT, then SNAT's INPUT, then confirm."""
        if not self.enabled:
            return True
        info, c, d, st = self._track(pkt, pid)
        ctx = self._ctx(pkt, pid, "INPUT", dev.ifname, None, info, c, d, st)
        if not self._filter(ctx, "INPUT"):
            return False
        if not self._nat_hook(ctx, "INPUT", dst=False):
            return False
        return self._confirm(ctx)

    def forward(self, iif: Link, oif: Link, pkt: bytearray, pid: int) -> bool:
        """NF_INET_FORWARD: the filter table's FORWARD."""
        if not self.enabled:
            return True
        info, c, d, st = self._track(pkt, pid)
        ctx = self._ctx(pkt, pid, "FORWARD", iif.ifname, oif.ifname, info, c, d, st)
        return self._filter(ctx, "FORWARD")

    def postrouting(self, oif: Link, pkt: bytearray, pid: int, route: Route) -> bool:
        """NF_INET_POST_ROUTING: SNAT/MASQUERADE (rules for a new flow, the entry otherwise), then confirm."""
        if not self.enabled:
            return True
        info, c, d, st = self._track(pkt, pid)
        ctx = self._ctx(pkt, pid, "POSTROUTING", None, oif.ifname, info, c, d, st)
        ctx.route, ctx.out_link = route, oif
        if not self._nat_hook(ctx, "POSTROUTING", dst=False):
            return False
        return self._confirm(ctx)

    def done(self, pid: int) -> None:
        """The packet left this namespace or ended here: forget its per-passage state."""
        self.tracked.pop(pid, None)
        self.pending.pop(pid, None)
        self.marks.pop(pid, None)

    # --- helpers -----------------------------------------------------------------------------------
    def _ctx(self, pkt: bytearray, pid: int, hook: str, iif: str | None, oif: str | None, info: Packet | None,
             c: Conn | None, d: int, st: str) -> Ctx:
        return Ctx(pkt, pid, hook, iif, oif, info or Packet((0, 0, 0, 0, 0), len(pkt)), c, d, st,
                   self.marks.get(pid, 0))

    def _confirm(self, ctx: Ctx) -> bool:
        pend = self.pending.pop(ctx.pid, None)
        if pend is None:
            return True
        rec = self.ns.lab.recorder(ctx.pid)
        if rec is not None:
            rec.fail("conntrack: confirm")
        c, info = pend
        if not self.ct.confirm(c, info):
            self.ns.drop(None, ctx.pid, Drop.FILTERED, "conntrack: tuple clash on confirm")
            return False
        self.tracked[ctx.pid] = (c, 0, ctx.ctstate)
        return True

    def _filter(self, ctx: Ctx, chain: str) -> bool:
        verdict = self._traverse("filter", chain, ctx)
        self.marks[ctx.pid] = ctx.mark
        if verdict == DROP:
            self.ns.drop(None, ctx.pid, Drop.FILTERED, f"iptables filter {chain}: DROP")
            return False
        if isinstance(verdict, tuple) and verdict[0] == "REJECT":
            self.ns.drop(None, ctx.pid, Drop.FILTERED, f"iptables filter {chain}: REJECT --reject-with {verdict[1]}")
            self._reject(ctx, verdict[1])
            return False
        return True

    def _nat_hook(self, ctx: Ctx, chain: str, *, dst: bool) -> bool:
        c = ctx.conn
        if c is None:
            return True
        done_bit = 0x100 if dst else 0x80  # DST_NAT_DONE / SRC_NAT_DONE
        if ctx.pid in self.pending and not c.status & done_bit:
            verdict = self._traverse("nat", chain, ctx)
            self.marks[ctx.pid] = ctx.mark
            c.status |= done_bit
            if isinstance(verdict, tuple):
                if not self._bind(ctx, verdict[0], verdict[1]):
                    return False
        if ctx.ctstate == "RELATED":
            return self._translate_related(ctx, dst=dst)
        self._translate(ctx, dst=dst)
        return True

    def _bind(self, ctx: Ctx, target: str, o: dict[str, Any]) -> bool:
        """Sets up a NAT binding on a new entry: the reply tuple changes (nf_nat_setup_info)."""
        c = ctx.conn
        assert c is not None
        rs, rd, proto, rsp, rdp = c.reply
        if target in ("DNAT", "REDIRECT"):
            if target == "REDIRECT":
                dev = self.ns.links.get(ctx.iif or "")
                addr = 0x7F000001 if ctx.hook == "OUTPUT" else (dev.addrs[0].local if dev and dev.addrs else None)
                if addr is None:
                    self.ns.drop(None, ctx.pid, Drop.FILTERED, "REDIRECT: no address on the input device")
                    return False
                new_ip = addr
            else:
                new_ip = o["addr"][0] if o["addr"][0] is not None else c.orig[1]  # `--to-destination :PORT`
            port = o["ports"][0] if "ports" in o else rsp
            c.reply = (new_ip, rd, proto, port if proto in (6, 17) else rsp, rdp)
            c.status |= DST_NAT
            self.ns.note(None, ctx.pid, "nat", f"DNAT {int2ip(c.orig[1])}:{c.orig[4]} -> {int2ip(new_ip)}:{port}"
                         if proto in (6, 17) else f"DNAT {int2ip(c.orig[1])} -> {int2ip(new_ip)}")
            return True
        # SNAT / MASQUERADE: choose the new source, keep the port unless it clashes.
        if target == "MASQUERADE":
            # nf_nat_masquerade_ipv4: an address of the output device, chosen for the next hop.
            route, link = ctx.route, ctx.out_link
            daddr = struct.unpack_from("!I", ctx.pkt, 16)[0]
            nh = route.nexthop_gateway if route is not None and route.nexthop_gateway is not None else daddr
            new_ip = self.ns.select_addr(link, nh, 0) if link is not None else None
            if new_ip is None:
                self.ns.drop(None, ctx.pid, Drop.FILTERED, "MASQUERADE: no address on the output device")
                return False
        else:
            new_ip = o["addr"][0] if o["addr"][0] is not None else c.orig[0]  # `--to-source :PORTS`
        lo, hi = o.get("ports", (None, None))
        # The port SNAT may change: the reply's destination port, or for ICMP the echo id.
        want = rsp if proto == 1 else rdp
        candidates: list[int]
        if proto in (6, 17, 1):
            if proto == 1:
                lo, hi = 0, 65535
            elif lo is None:
                lo, hi = (1024, 65535) if want >= 1024 else (1, 1023)
            if o.get("random-fully") or o.get("random"):
                start = self.ns.lab.clock.rng.randrange(lo, hi + 1)
            else:
                start = want if lo <= want <= hi else lo
            span = hi - lo + 1
            candidates = [lo + (start - lo + i) % span for i in range(min(span, 65536))]
            if not (o.get("random-fully") or o.get("random")) and lo <= want <= hi:
                candidates = [want] + [p for p in candidates if p != want]
        else:
            candidates = [want]
        for port in candidates:
            new_reply = (rs, new_ip, proto, port, 0) if proto == 1 else (rs, new_ip, proto, rsp, port)
            if new_reply == c.reply or not self.ct.in_use(new_reply):
                break
        else:
            self.ns.drop(None, ctx.pid, Drop.FILTERED, "SNAT: no free source port")
            return False
        c.reply = new_reply
        c.status |= SRC_NAT
        self.ns.note(None, ctx.pid, "nat", f"{target} {int2ip(c.orig[0])}:{c.orig[3]} -> {int2ip(new_ip)}:{port}"
                     if proto in (6, 17) else f"{target} {int2ip(c.orig[0])} -> {int2ip(new_ip)}")
        return True

    def _translate(self, ctx: Ctx, *, dst: bool) -> None:
        """Rewrites the packet toward the tuple its entry expects (the inverse of the other direction)."""
        c = ctx.conn
        if c is None or not c.status & (SRC_NAT | DST_NAT):
            return
        target = invert(c.reply) if ctx.direction == 0 else invert(c.orig)
        self._rewrite(ctx.pkt, target, dst=dst, pid=ctx.pid)

    def _rewrite(self, pkt: bytearray, target: Tuple5, *, dst: bool, pid: int = 0) -> None:
        t = self.ns.tables
        rec = self.ns.lab.recorder(pid)
        ihl = (pkt[0] & 0xF) * 4
        proto = pkt[9]
        addr_off = 16 if dst else 12
        cur = struct.unpack_from("!I", pkt, addr_off)[0]
        want = target[1] if dst else target[0]
        if cur != want:
            t.set_ipv4_addr(pkt, 0, 1 if dst else 0, want)
            if rec is not None:
                rec.op(NAT, 0, 1 if dst else 0, want)
        if proto in (6, 17) and len(pkt) >= ihl + 4 and not (struct.unpack_from("!H", pkt, 6)[0] & 0x1FFF):
            port_off = ihl + (2 if dst else 0)
            cur_port = struct.unpack_from("!H", pkt, port_off)[0]
            want_port = target[4] if dst else target[3]
            if cur_port != want_port:
                t.set_l4_port(pkt, 0, 1 if dst else 0, want_port)
                if rec is not None:
                    rec.op(NAT, 1, 1 if dst else 0, want_port)
        elif proto == 1 and len(pkt) >= ihl + 8 and pkt[ihl] in (0, 8):
            # The echo id is both "ports" of an ICMP tuple: either manipulation may restore it.
            if struct.unpack_from("!H", pkt, ihl + 4)[0] != target[3]:
                t.set_l4_port(pkt, 0, 0, target[3])
                if rec is not None:
                    rec.op(NAT, 1, 0, target[3])

    def _translate_related(self, ctx: Ctx, *, dst: bool) -> bool:
        """An ICMP error about a NATed flow: translate the outer header and the quoted packet."""
        c = ctx.conn
        if c is None or not c.status & (SRC_NAT | DST_NAT):
            return True
        pkt = ctx.pkt
        ihl = (pkt[0] & 0xF) * 4
        inner_off = ihl + 8
        # The error travels in ctx.direction; the packet it quotes went the other way. Restore the
        # quote to what its sender sent here, and address the error to that sender.
        quoted_as_sent = c.reply if ctx.direction == 0 else c.orig
        quoted_after_nat = invert(c.orig if ctx.direction == 0 else c.reply)
        inner = bytearray(pkt[inner_off:])
        iihl = (inner[0] & 0xF) * 4
        if dst:
            self._rewrite_inner(inner, quoted_as_sent, iihl)
            pkt[inner_off:] = inner
            outer_dst = quoted_as_sent[0]
            if struct.unpack_from("!I", pkt, 16)[0] != outer_dst:
                self.ns.tables.set_ipv4_addr(pkt, 0, 1, outer_dst)
        elif struct.unpack_from("!I", pkt, 12)[0] == quoted_after_nat[1]:
            self.ns.tables.set_ipv4_addr(pkt, 0, 0, quoted_as_sent[1])
        struct.pack_into("!H", pkt, ihl + 2, 0)
        struct.pack_into("!H", pkt, ihl + 2, self.ns.tables.inet_checksum(bytes(pkt[ihl:]), 0, -1))
        return True

    def _rewrite_inner(self, inner: bytearray, t: Tuple5, iihl: int) -> None:
        """Rewrites the quoted packet like any packet: addresses, ports and their checksums, incrementally
        (the quoted L4 checksum is fixed as the kernel does, when the quote holds it)."""
        tables = self.ns.tables
        for which, value in ((0, t[0]), (1, t[1])):
            if struct.unpack_from("!I", inner, 12 + 4 * which)[0] != value:
                tables.set_ipv4_addr(inner, 0, which, value)
        if inner[9] in (6, 17) and len(inner) >= iihl + 4:
            for which, value in ((0, t[3]), (1, t[4])):
                if struct.unpack_from("!H", inner, iihl + 2 * which)[0] != value:
                    tables.set_l4_port(inner, 0, which, value)
        elif inner[9] == 1 and len(inner) >= iihl + 8 and inner[iihl] in (0, 8):
            if struct.unpack_from("!H", inner, iihl + 4)[0] != t[3]:
                tables.set_l4_port(inner, 0, 0, t[3])

    def _reject(self, ctx: Ctx, kind: str) -> None:
        itype, code = REJECT_TYPES[kind]
        stack = self.ns.stack
        if itype is None:
            stack.tcp_reset(bytes(ctx.pkt))
        else:
            stack.icmp_error(bytes(ctx.pkt), itype, code, ctx.pid)

    # --- rule evaluation ----------------------------------------------------------------------------
    def _traverse(self, table: str, chain: str, ctx: Ctx) -> Any:
        """Walks a built-in chain and the chains it jumps to; returns the verdict."""
        t = self.rules.tables[table]
        stack: list[tuple[str, int]] = []
        name, i = chain, 0
        rec = self.ns.lab.recorder(ctx.pid)
        while True:
            rules = t.chains[name].rules
            if i >= len(rules):
                if not stack:
                    c = t.chains[chain]
                    c.pkts += 1
                    c.bytes += ctx.info.length
                    if rec is not None:
                        rec.op(RULE, c, ctx.info.length)
                    return c.policy
                name, i = stack.pop()
                continue
            rule = rules[i]
            i += 1
            if not self._matches(rule, ctx):
                continue
            rule.pkts += 1
            rule.bytes += ctx.info.length
            if rec is not None:
                rec.op(RULE, rule, ctx.info.length)
            tgt = rule.target
            if tgt is None:
                continue
            n = tgt.name
            if n in ("ACCEPT", "DROP"):
                self.ns.note(None, ctx.pid, "netfilter", f"{table} {name}: {rule.spec()}")
                return n
            if n == "RETURN":
                if not stack:
                    c = t.chains[chain]
                    return c.policy
                name, i = stack.pop()
                continue
            if n == "REJECT":
                return ("REJECT", tgt.opts["with"])
            if n in ("DNAT", "SNAT", "MASQUERADE", "REDIRECT"):
                self.ns.note(None, ctx.pid, "netfilter", f"{table} {name}: {rule.spec()}")
                return (n, tgt.opts)
            if n == "MARK":
                ctx.mark = (ctx.mark & ~tgt.opts["mask"] & 0xFFFFFFFF) ^ tgt.opts["value"]
                continue
            if n == "LOG":
                self.ns.note(None, ctx.pid, "netfilter", f"LOG {tgt.opts.get('prefix', '')}".rstrip())
                continue
            if n in t.chains:
                if not tgt.goto:
                    stack.append((name, i))
                name, i = n, 0
                continue

    def _matches(self, r: Rule, ctx: Ctx) -> bool:
        src, dst, proto, sport, dport = ctx.info.tuple
        if r.proto is not None and (proto == r.proto) == r.proto_neg:
            return False
        if r.src is not None and ((src & mask(r.src[1])) == r.src[0]) == r.src_neg:
            return False
        if r.dst is not None and ((dst & mask(r.dst[1])) == r.dst[0]) == r.dst_neg:
            return False
        if r.iif is not None and _iface_match(r.iif, ctx.iif) == r.iif_neg:
            return False
        if r.oif is not None and _iface_match(r.oif, ctx.oif) == r.oif_neg:
            return False
        if r.frag is not None:
            is_frag = bool(struct.unpack_from("!H", ctx.pkt, 6)[0] & 0x1FFF)
            if is_frag != r.frag:
                return False
        return all(self._match(m.name, m.opts, ctx) for m in r.matches)

    def _match(self, name: str, o: dict[str, Any], ctx: Ctx) -> bool:
        src, dst, proto, sport, dport = ctx.info.tuple
        if name not in STATIC_MATCHES:
            rec = self.ns.lab.recorder(ctx.pid)
            if rec is not None:
                rec.fail(f"-m {name} depends on more than the flow")
        if name in ("tcp", "udp"):
            if proto != (6 if name == "tcp" else 17):
                return False
            if "sport" in o and (o["sport"][0] <= sport <= o["sport"][1]) == o["sport_neg"]:
                return False
            if "dport" in o and (o["dport"][0] <= dport <= o["dport"][1]) == o["dport_neg"]:
                return False
            if "flags" in o:
                m, c = o["flags"]
                if ((ctx.info.tcp_flags & m) == c) == o.get("flags_neg", False):
                    return False
            return True
        if name == "icmp":
            t, c = o["type"]
            if proto != 1:
                return False
            if t == "any":
                return not o["neg"]
            hit = ctx.info.icmp_type == t and (c is None or ctx.info.icmp_code == c)
            return hit != o["neg"]
        if name == "comment":
            return True
        if name == "mark":
            v, m = o["mark"]
            return ((ctx.mark & m) == v) != o["neg"]
        if name == "statistic":
            if o["mode"] == "random":
                hit = self.ns.lab.clock.rng.random() * 0x80000000 < o["p"]
                return hit != o.get("neg", False)
            o["count"] = (o.get("count", -1) + 1) % o["every"]
            return o["count"] == o["packet"]
        if name == "addrtype":
            for key, addr in (("src", src), ("dst", dst)):
                if key in o and (self._addrtype(addr) in o[key]) == o[f"{key}_neg"]:
                    return False
            return True
        if name in ("conntrack", "state"):
            states = {ctx.ctstate}
            c = ctx.conn
            if c is not None and c.status & DST_NAT:
                states.add("DNAT")
            if c is not None and c.status & SRC_NAT:
                states.add("SNAT")
            if "ctstate" in o and bool(states & set(o["ctstate"])) == o["ctstate_neg"]:
                return False
            if "ctstatus" in o:
                status = set()
                if c is not None:
                    status |= {"SEEN_REPLY"} if c.status & 0x2 else set()
                    status |= {"ASSURED"} if c.status & 0x4 else set()
                    status |= {"CONFIRMED"} if c.status & 0x8 else set()
                if bool(status & set(o["ctstatus"])) == o["ctstatus_neg"]:
                    return False
            return True
        if name == "recent":
            return self._recent(o, ctx)
        if name == "limit":
            # xt_limit's token bucket, in nanoseconds of the virtual clock.
            now = round(self.ns.lab.clock.now * 1_000_000_000)
            tokens = o["tokens_max"] if o["last"] is None else min(o["tokens"] + now - o["last"], o["tokens_max"])
            o["last"] = now
            if tokens >= o["cost"]:
                o["tokens"] = tokens - o["cost"]
                return True
            o["tokens"] = tokens
            return False
        if name == "multiport":
            if proto not in (6, 17):
                return False
            ports = {"sports": [sport], "dports": [dport], "ports": [sport, dport]}[o["kind"]]
            hit = any(lo <= p <= hi for p in ports for lo, hi in o["ports"])
            return hit != o["neg"]
        return False

    def _addrtype(self, addr: int) -> str:
        r = self.ns.fib[255].lookup(addr)
        if r is not None and r.type == "local":
            return "LOCAL"
        if r is not None and r.type == "broadcast" or addr == 0xFFFFFFFF:
            return "BROADCAST"
        if addr >> 28 == 0xE:
            return "MULTICAST"
        main = self.ns.route_lookup(addr)
        if main is None:
            return "UNREACHABLE"
        return {"blackhole": "BLACKHOLE", "unreachable": "UNREACHABLE", "prohibit": "PROHIBIT",
                "throw": "THROW"}.get(main.type, "UNICAST")

    def _recent(self, o: dict[str, Any], ctx: Ctx) -> bool:
        """xt_recent: a named list of addresses with the times they were seen."""
        src, dst = ctx.info.tuple[0], ctx.info.tuple[1]
        addr = (dst if o.get("side") == "dest" else src) & o.get("mask", 0xFFFFFFFF)
        table = self.recent.setdefault(o.get("name", "DEFAULT"), {})
        now = self.ns.lab.clock.now
        mode = o["mode"]
        if mode == "set":
            table.setdefault(addr, []).append(now)
            return True
        if mode == "remove":
            return table.pop(addr, None) is not None
        seen = table.get(addr)
        if not seen:
            return False
        if o.get("reap") and "seconds" in o:
            seen[:] = [t for t in seen if now - t <= o["seconds"]]
        recent = [t for t in seen if "seconds" not in o or now - t <= o["seconds"]]
        hit = len(recent) >= o.get("hitcount", 1) and bool(recent)
        if hit and mode == "update":
            seen.append(now)
        return hit

    # --- the commands --------------------------------------------------------------------------
    def conntrack_lines(self, extended: bool = False) -> list[str]:
        return self.ct.lines(extended=extended)


def _iface_match(pattern: str, name: str | None) -> bool:
    if name is None:
        return False
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern
