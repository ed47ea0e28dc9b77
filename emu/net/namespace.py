"""A network namespace: its links, addresses, routing tables, neighbours, sysctls and files.

This is the netlink-like API that control planes call (`link_add`, `addr_add`, `route_add`,
`neigh_add`, `fdb_add`, ...). Each call validates like the kernel and raises NetError with
iproute2's text; the shell front end is a parser over these calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.net import errors
from emu.net.addr import broadcast_of, in_subnet, int2ip, ip2int, mac2int, network_of, parse_prefix
from emu.net.bridge import Bridge
from emu.net.errors import NetError
from emu.net.link import Address, Dummy, Ifb, Link, Loopback, Nic, Veth
from emu.net.neigh import NeighTable
from emu.net.netfilter import Netfilter
from emu.net.route import (
    BROADCAST,
    LOCAL,
    LOOKUP_ERRORS,
    REJECT_TYPES,
    SCOPE_BY_NAME,
    SCOPE_HOST,
    SCOPE_LINK,
    SCOPE_UNIVERSE,
    TABLE_LOCAL,
    TABLE_MAIN,
    UNICAST,
    FibTable,
    Route,
    proto_name,
)
from emu.net.stack import Stack
from emu.net.tunnel import Ipip, Vxlan
from emu.trace import Decision, Drop

if TYPE_CHECKING:
    from emu.net.lab import Lab

KINDS: dict[str, type[Link]] = {
    "veth": Veth, "bridge": Bridge, "vxlan": Vxlan, "ipip": Ipip, "dummy": Dummy, "ifb": Ifb, "nic": Nic,
}

DEFAULT_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.ipv4.conf.all.forwarding": "0",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.all.proxy_arp": "0",
    "net.ipv4.conf.default.proxy_arp": "0",
    "net.ipv4.ip_default_ttl": "64",
    "net.ipv4.neigh.default.base_reachable_time_ms": "30000",
    "net.bridge.bridge-nf-call-iptables": "1",
}
PER_IF_KEYS = ("rp_filter", "proxy_arp", "forwarding", "arp_notify", "route_localnet", "arp_ignore", "arp_announce",
               "accept_local", "send_redirects")


class Namespace:
    """One network namespace of a lab."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.tables = lab.tables
        self.links: dict[str, Link] = {}
        self._next_ifindex = 1
        self.fib = {TABLE_LOCAL: FibTable(self.tables, TABLE_LOCAL), TABLE_MAIN: FibTable(self.tables, TABLE_MAIN)}
        self.sysctls: dict[str, str] = dict(DEFAULT_SYSCTLS)
        self.files: dict[str, str] = {}
        self.neigh = NeighTable(self)
        self.stack = Stack(self)
        self.netfilter = Netfilter(self)
        lo = Loopback(ns=self, ifname="lo", ifindex=self._alloc_ifindex(), mac=0, mtu=65536)
        self.links["lo"] = lo

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"

    # --- helpers ----------------------------------------------------------------
    def _alloc_ifindex(self) -> int:
        idx = self._next_ifindex
        self._next_ifindex += 1
        return idx

    def link(self, ifname: str) -> Link:
        try:
            return self.links[ifname]
        except KeyError:
            raise errors.no_device(ifname) from None

    def link_by_index(self, ifindex: int) -> Link | None:
        for link in self.links.values():
            if link.ifindex == ifindex:
                return link
        return None

    def sorted_links(self) -> list[Link]:
        return sorted(self.links.values(), key=lambda lk: lk.ifindex)

    def note(self, link: Link | None, pid: int, point: str, detail: str) -> None:
        """Records one decision about frame `pid` at `link` (trace and pcap comment)."""
        self.lab.record(Decision(self.lab.clock.now, self.name, link.ifname if link else "", point, detail), pid)

    def drop(self, link: Link | None, pid: int, reason: Drop, detail: str, **_: object) -> None:
        self.netfilter.done(pid)
        self.lab.record(
            Decision(self.lab.clock.now, self.name, link.ifname if link else "", "drop", detail, reason), pid
        )

    def _err(self, exc: NetError, op: str) -> NetError:
        exc.netns, exc.op = self.name, op
        return exc

    # --- sysctl and files -----------------------------------------------------------
    def sysctl_get(self, key: str) -> str:
        key = key.replace("/", ".")
        if key in self.sysctls:
            return self.sysctls[key]
        parts = key.split(".")
        if len(parts) == 5 and parts[:3] == ["net", "ipv4", "conf"] and parts[4] in PER_IF_KEYS:
            if parts[3] in self.links or parts[3] in ("all", "default"):
                return self.sysctls.get(key, self.sysctls.get(f"net.ipv4.conf.default.{parts[4]}", "0"))
        raise NetError(f'sysctl: cannot stat /proc/sys/{key.replace(".", "/")}: No such file or directory', rc=255)

    def sysctl_set(self, key: str, value: str) -> None:
        key = key.replace("/", ".")
        self.sysctl_get(key)  # existence check
        self.sysctls[key] = str(value)
        if key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"):
            self.sysctls["net.ipv4.ip_forward"] = self.sysctls["net.ipv4.conf.all.forwarding"] = str(value)
        self.lab.bump()

    def if_sysctl(self, link: Link, name: str) -> bool:
        """A per-interface boolean sysctl; `all` ORs in as the kernel's IN_DEV_ORCONF does."""
        own = self.sysctls.get(f"net.ipv4.conf.{link.ifname}.{name}")
        if own is None:
            own = self.sysctls.get(f"net.ipv4.conf.default.{name}", "0")
        return own != "0" or self.sysctls.get(f"net.ipv4.conf.all.{name}", "0") != "0"

    @property
    def forwarding(self) -> bool:
        return self.sysctls["net.ipv4.ip_forward"] != "0"

    def write_file(self, path: str, content: str) -> None:
        self.files[path] = content

    def read_file(self, path: str) -> str:
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    # --- links -----------------------------------------------------------------------
    def link_add(
        self,
        ifname: str,
        kind: str = "veth",
        *,
        peer: str | None = None,
        peer_ns: Namespace | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        txqlen: int | None = None,
        **opts: object,
    ) -> Link:
        """`ip link add IFNAME [address MAC] [mtu N] [txqueuelen N] type KIND [...]`; a veth also creates its peer."""
        op = f"link add {ifname}"
        if kind not in KINDS:
            raise self._err(NetError(f'Error: Unknown device type "{kind}".', rc=2), op)
        if not ifname or len(ifname) > 15 or "/" in ifname or " " in ifname:
            raise self._err(NetError(f'Error: argument "{ifname}" is wrong: "name" not a valid ifname', rc=1), op)
        if ifname in self.links:
            raise self._err(errors.exists(), op)
        cls = KINDS[kind]
        link_mac = mac2int(mac) if mac else self.lab.random_mac()
        kw: dict[str, object] = {}
        if kind == "nic":
            seg = opts.pop("segment", None)
            if seg is None:
                raise self._err(NetError("Error: a nic needs a segment", rc=2), op)
            kw["segment"] = self.lab.segment(str(seg))
        if kind == "vxlan":
            if "vni" not in opts and "id" not in opts:
                raise self._err(NetError("Error: vxlan: missing virtual network identifier.", rc=2), op)
            kw["vni"] = int(opts.pop("vni", opts.pop("id", 0)))  # type: ignore[arg-type]
            if opts.get("local") is not None:
                kw["local"] = self._ip(str(opts.pop("local")), op)
            opts.pop("local", None)
            kw["dstport"] = int(opts.pop("dstport", 8472))  # type: ignore[arg-type]
            kw["learning"] = bool(opts.pop("learning", True))
            under = opts.pop("dev", None)
            if under is not None:
                kw["underlay"] = self.link(str(under)).ifname
        if kind == "ipip":
            for key in ("local", "remote"):
                if opts.get(key) not in (None, "any"):
                    kw[key] = self._ip(str(opts[key]), op)
                opts.pop(key, None)
        if opts:
            raise self._err(NetError(f"Error: unknown option {sorted(opts)[0]!r} for {kind}", rc=1), op)
        default_mtu = 1500
        if kind == "vxlan" and kw.get("underlay"):
            default_mtu = self.links[str(kw["underlay"])].mtu - 50
        if kind == "ipip":
            default_mtu, link_mac = 1480, 0
        if kind == "veth":
            pns = peer_ns or self
            pname = peer or f"veth{len(pns.links)}"
            if pname in pns.links or (pns is self and pname == ifname):
                raise self._err(errors.exists(), op)
            # veth_newlink registers the peer first: it gets the lower ifindex.
            peer_index = pns._alloc_ifindex()
            a = Veth(ns=self, ifname=ifname, ifindex=self._alloc_ifindex(), mac=link_mac, mtu=mtu or default_mtu)
            b = Veth(ns=pns, ifname=pname, ifindex=peer_index, mac=self.lab.random_mac(), mtu=mtu or default_mtu)
            a.peer, b.peer = b, a
            if txqlen is not None:
                a.txqlen = b.txqlen = txqlen
            self.links[ifname] = a
            pns.links[pname] = b
            return a
        link = cls(ns=self, ifname=ifname, ifindex=self._alloc_ifindex(), mac=link_mac, mtu=mtu or default_mtu, **kw)
        if kind == "bridge" and mac:
            link.mac_fixed = True  # type: ignore[attr-defined]
        if kind == "nic":
            link.segment.attach(link)  # type: ignore[attr-defined]
        if kind == "ifb":
            link.txqlen = 32
        if txqlen is not None:
            link.txqlen = txqlen
        self.links[ifname] = link
        return link

    def link_set(
        self,
        ifname: str,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        master: str | None = None,
        nomaster: bool = False,
        netns: Namespace | None = None,
        name: str | None = None,
        hairpin: bool | None = None,
        promisc: bool | None = None,
        txqlen: int | None = None,
    ) -> Link:
        """`ip link set DEV [up|down] [mtu N] [address MAC] [master BR|nomaster] [netns NS] [name NEW]`."""
        link = self.link(ifname)
        op = f"link set {ifname}"
        if netns is not None and netns is not self:
            self._move(link, netns)
            return link
        if name is not None and name != ifname:
            if name in self.links:
                raise self._err(errors.exists(), op)
            del self.links[ifname]
            link.ifname = name
            self.links[name] = link
        if mac is not None:
            link.mac = mac2int(mac)
            if isinstance(link, Bridge):
                link.mac_fixed = True
            if isinstance(link.master, Bridge):
                link.master._adopt_mac()
        if mtu is not None:
            if mtu < 68 or mtu > 65535:
                raise self._err(NetError("Error: mtu less than device minimum." if mtu < 68 else
                                         "Error: mtu greater than device maximum.", rc=2), op)
            link.mtu = mtu
        if nomaster and isinstance(link.master, Bridge):
            link.master.remove_port(link)
        if master is not None:
            br = self.link(master)
            if not isinstance(br, Bridge) or br is link:
                raise self._err(NetError("Error: Device does not allow enslaving to a master.", rc=2), op)
            if link.master is not br:
                if isinstance(link.master, Bridge):
                    link.master.remove_port(link)
                br.add_port(link)
        if hairpin is not None:
            link.hairpin = hairpin
        if promisc is not None:
            link.promisc = promisc
        if txqlen is not None:
            link.txqlen = txqlen
        if up is not None and up != link.up:
            link.up = up
            if up:
                self._dev_up(link)
            else:
                self._dev_down(link)
        return link

    def link_del(self, ifname: str) -> None:
        link = self.link(ifname)
        if isinstance(link, Loopback):
            raise self._err(NetError("RTNETLINK answers: Operation not supported"), f"link del {ifname}")
        self._unlink(link)
        if isinstance(link, Veth) and link.peer is not None:
            self._peer_gone(link.peer)

    def _unlink(self, link: Link) -> None:
        if link.up:
            link.up = False
            self._dev_down(link)
        if isinstance(link.master, Bridge):
            link.master.remove_port(link)
        if isinstance(link, Bridge):
            for p in list(link.ports):
                link.remove_port(p)
        if isinstance(link, Nic) and link.segment is not None:
            link.segment.detach(link)
        for addr in list(link.addrs):
            self._addr_del(link, addr)
        self.neigh.flush_dev(link)
        del self.links[link.ifname]

    def _peer_gone(self, peer: Veth) -> None:
        peer.ns._unlink(peer)

    def _move(self, link: Link, target: Namespace) -> None:
        """`ip link set DEV netns NS`: the device leaves with no addresses and down, as in Linux."""
        if link.ifname in target.links:
            raise self._err(errors.exists(), f"link set {link.ifname} netns {target.name}")
        self._unlink(link)
        link.ns = target
        link.ifindex = target._alloc_ifindex()
        target.links[link.ifname] = link
        if isinstance(link, Veth) and link.peer is not None:
            self.lab.bump()

    def _dev_up(self, link: Link) -> None:
        link.was_up = True
        if isinstance(link, Loopback) and not any(a.local == 0x7F000001 for a in link.addrs):
            # inetdev_event(NETDEV_UP): loopback gets 127.0.0.1/8 when it first comes up.
            self._addr_add(link, Address(local=0x7F000001, plen=8, scope=SCOPE_HOST, label="lo"))
        for addr in link.addrs:
            self._add_addr_routes(link, addr)
        self.lab.bump()

    def _dev_down(self, link: Link) -> None:
        """Routes through a downed device are flushed (fib_sync_down_dev), except its host-scope
        local entries; neighbours too."""
        for fib in self.fib.values():
            for r in [r for r in fib.routes() if r.dev == link.ifname and r.type != LOCAL]:
                fib.remove(r)
        self.neigh.flush_dev(link)
        if isinstance(link, Bridge):
            link.fdb.flush_port(-1)
        self.lab.bump()

    # --- addresses ---------------------------------------------------------------
    def _ip(self, text: str, op: str) -> int:
        try:
            return parse_prefix(text)[0] if "/" not in text else parse_prefix(text)[0]
        except ValueError:
            raise self._err(NetError(f'Error: any valid prefix is expected rather than "{text}".', rc=1), op) from None

    def addr_add(self, ifname: str, cidr: str, *, scope: str | int = "global", label: str | None = None,
                 broadcast: str | None = None) -> Address:
        """`ip addr add A/N dev DEV`: adds the local and broadcast entries and the connected route."""
        op = f"addr add {cidr} dev {ifname}"
        link = self.link(ifname)
        try:
            ip_text, _, plen_text = cidr.partition("/")
            ip = ip2int(ip_text)
            plen = int(plen_text) if plen_text else 32
            if not 0 <= plen <= 32 or (plen_text and not plen_text.isdigit()):
                raise ValueError
        except ValueError:
            raise self._err(NetError(f'Error: any valid prefix is expected rather than "{cidr}".', rc=1), op) from None
        scope_val = SCOPE_BY_NAME[scope] if isinstance(scope, str) else scope
        if any(a.local == ip and a.plen == plen for a in link.addrs):
            raise self._err(NetError("Error: ipv4: Address already assigned."), op)
        secondary = any(not a.secondary and a.plen == plen and in_subnet(ip, network_of(a.local, a.plen), plen)
                        for a in link.addrs)
        addr = Address(local=ip, plen=plen, scope=scope_val, secondary=secondary, label=label or link.ifname)
        if broadcast == "+":
            addr.broadcast = broadcast_of(ip, plen) if plen < 31 else None
        elif broadcast is not None:
            addr.broadcast = ip2int(broadcast)
        self._addr_add(link, addr)
        return addr

    def _addr_add(self, link: Link, addr: Address) -> None:
        if addr.secondary:
            link.addrs.append(addr)
        else:
            pos = len([a for a in link.addrs if not a.secondary])
            link.addrs.insert(pos, addr)
        if link.up:
            self._add_addr_routes(link, addr)
        self.lab.bump()

    def _primary_for(self, link: Link, addr: Address) -> int:
        if not addr.secondary:
            return addr.local
        for a in link.addrs:
            if not a.secondary and a.plen == addr.plen and in_subnet(addr.local, network_of(a.local, a.plen), a.plen):
                return a.local
        return addr.local

    def _add_addr_routes(self, link: Link, addr: Address) -> None:
        """fib_add_ifaddr: local /32 (or the whole /8 on lo), broadcast, connected route."""
        src = self._primary_for(link, addr)
        local = self.fib[TABLE_LOCAL]
        dev = link.ifname
        entries = [Route(addr.local, 32, LOCAL, dev, proto="kernel", scope=SCOPE_HOST, prefsrc=src, table=TABLE_LOCAL)]
        if isinstance(link, Loopback) and addr.plen < 32:
            entries.append(Route(network_of(addr.local, addr.plen), addr.plen, LOCAL, dev, proto="kernel",
                                 scope=SCOPE_HOST, prefsrc=src, table=TABLE_LOCAL))
        if addr.plen <= 30:
            entries.append(Route(broadcast_of(addr.local, addr.plen), 32, BROADCAST, dev, proto="kernel",
                                 scope=SCOPE_LINK, prefsrc=src, table=TABLE_LOCAL))
        for r in entries:
            if r not in local.find(r.dst, r.plen):
                local.insert(r)
        if addr.plen < 32 and not addr.secondary and not isinstance(link, Loopback):
            r = Route(network_of(addr.local, addr.plen), addr.plen, UNICAST, dev, proto="kernel",
                      scope=SCOPE_LINK, prefsrc=addr.local)
            main = self.fib[TABLE_MAIN]
            if r not in main.find(r.dst, r.plen):
                main.insert(r)

    def addr_del(self, ifname: str, cidr: str) -> None:
        link = self.link(ifname)
        op = f"addr del {cidr} dev {ifname}"
        try:
            ip, plen = parse_prefix(cidr, strict=False)
            ip = ip2int(cidr.partition("/")[0])
        except ValueError:
            raise self._err(NetError(f'Error: any valid prefix is expected rather than "{cidr}".', rc=1), op) from None
        for a in link.addrs:
            if a.local == ip and (a.plen == plen or "/" not in cidr):
                self._addr_del(link, a)
                return
        raise self._err(NetError("Error: ipv4: Address not found."), op)

    def _addr_del(self, link: Link, addr: Address) -> None:
        """fib_del_ifaddr: removes the entries the address made; a deleted primary takes its secondaries along."""
        link.addrs.remove(addr)
        doomed = [addr]
        if not addr.secondary:
            for a in list(link.addrs):
                if a.secondary and self._primary_for(link, a) == a.local:
                    link.addrs.remove(a)
                    doomed.append(a)
        still_local = {a.local for a in link.addrs}
        still_bcast = {broadcast_of(a.local, a.plen) for a in link.addrs if a.plen <= 30}
        for a in doomed:
            for fib in self.fib.values():
                for r in fib.routes():
                    if r.dev != link.ifname or r.proto != "kernel":
                        continue
                    if (r.type == LOCAL and r.dst == a.local and a.local not in still_local) or (
                        r.type == BROADCAST and r.dst == broadcast_of(a.local, a.plen) and r.dst not in still_bcast
                    ) or (r.type == UNICAST and r.prefsrc == a.local and r.plen == a.plen) or (
                        r.type == LOCAL and r.plen < 32 and r.prefsrc == a.local
                    ):
                        fib.remove(r)
        self.lab.bump()

    def local_addresses(self) -> list[int]:
        return [a.local for lk in self.sorted_links() for a in lk.addrs]

    def is_local(self, ip: int) -> bool:
        r = self.fib[TABLE_LOCAL].lookup(ip)
        return r is not None and r.type == LOCAL

    # --- routes --------------------------------------------------------------------
    def route_add(
        self,
        dst: str,
        *,
        via: str | None = None,
        dev: str | None = None,
        type: str = UNICAST,
        metric: int = 0,
        onlink: bool = False,
        src: str | None = None,
        proto: str = "boot",
        scope: str | None = None,
        table: int = TABLE_MAIN,
        replace: bool = False,
        append: bool = False,
    ) -> Route:
        """`ip route add|replace|append`: validates the next hop as fib_check_nh does."""
        op = f"route add {dst}"
        try:
            net, plen = parse_prefix(dst)
        except ValueError as exc:
            if str(exc) == "host bits":
                raise self._err(NetError("Error: Invalid prefix for given prefix length."), op) from None
            raise self._err(NetError(f'Error: any valid prefix is expected rather than "{dst}".', rc=1), op) from None
        gw = None
        if via is not None:
            try:
                gw = ip2int(via)
            except ValueError:
                raise self._err(NetError(f'Error: inet address is expected rather than "{via}".', rc=1), op) from None
            if gw == 0:
                gw = None  # `via 0.0.0.0` is a directly connected route
        link = self.link(dev) if dev is not None else None
        if type in REJECT_TYPES:
            link = None
            gw = None
        prefsrc = None
        if src is not None:
            prefsrc = ip2int(src)
            if not self.is_local(prefsrc):
                raise self._err(NetError("Error: Invalid prefsrc address."), op)
        if scope is not None:
            if scope not in SCOPE_BY_NAME and not str(scope).isdigit():
                raise self._err(NetError(f'Error: argument "{scope}" is wrong: invalid "scope" value', rc=1), op)
            scope_val = SCOPE_BY_NAME.get(scope, int(scope) if str(scope).isdigit() else 0)
        elif type == LOCAL:
            scope_val = SCOPE_HOST
        elif type == UNICAST and gw is None and via is None:
            scope_val = SCOPE_LINK
        else:
            scope_val = SCOPE_UNIVERSE
        nh_host = False
        if type not in REJECT_TYPES:
            if gw is not None and not onlink:
                link, nh_host = self._check_gateway(gw, link, op, scope_val)
            elif gw is not None and onlink:
                if link is None:
                    raise self._err(NetError("Error: Nexthop device required for onlink."), op)
                if not link.up:
                    raise self._err(NetError("Error: Nexthop device is not up."), op)
            if link is None:
                raise self._err(NetError("RTNETLINK answers: No such device"), op)
            if gw is None and not link.up and type == UNICAST:
                raise self._err(NetError("RTNETLINK answers: Network is down"), op)
        name = proto_name(str(proto))
        if name is None:
            raise self._err(NetError(f'Error: argument "{proto}" is wrong: "protocol" value is invalid\n', rc=255), op)
        proto = name
        route = Route(net, plen, type, link.ifname if link else None, gw, metric, proto, scope_val, prefsrc,
                      onlink and gw is not None, table, nh_host)
        fib = self.fib.setdefault(table, FibTable(self.tables, table))
        same = [r for r in fib.find(net, plen) if r.metric == metric]
        if replace and same:
            fib.remove(same[0])
        elif same and not append:
            raise self._err(errors.exists(), op)
        fib.insert(route, append=append)
        self.lab.bump()
        return route

    def _check_gateway(self, gw: int, link: Link | None, op: str, scope: int) -> tuple[Link, bool]:
        """fib_check_nh_v4_gw: look the gateway up with scope > the route's (at least link) and the
        given device; it must resolve to a unicast or local route."""
        want = max(scope + 1, SCOPE_LINK)
        oif = link.ifname if link is not None else None
        r = self.fib[TABLE_LOCAL].lookup(gw, want, oif) or self.fib[TABLE_MAIN].lookup(gw, want, oif)
        if r is None or r.type not in (UNICAST, LOCAL) or r.dev is None:
            raise self._err(NetError("Error: Nexthop has invalid gateway."), op)
        return (link if link is not None else self.link(r.dev)), r.type == LOCAL

    def route_del(self, dst: str, *, via: str | None = None, dev: str | None = None, metric: int | None = None,
                  type: str | None = None, table: int = TABLE_MAIN) -> None:
        op = f"route del {dst}"
        try:
            net, plen = parse_prefix(dst)
        except ValueError as exc:
            if str(exc) == "host bits":
                raise self._err(NetError("Error: Invalid prefix for given prefix length."), op) from None
            raise self._err(NetError(f'Error: any valid prefix is expected rather than "{dst}".', rc=1), op) from None
        if dev is not None:
            self.link(dev)
        gw = ip2int(via) if via else None
        fib = self.fib.get(table)
        for r in fib.find(net, plen) if fib else []:
            # `via 0.0.0.0` names a directly connected next hop, as it did on add.
            gw_ok = gw is None or r.gateway == gw or (gw == 0 and r.gateway is None)
            if (metric is None or r.metric == metric) and (dev is None or r.dev == dev) and gw_ok and (
                type is None or r.type == type):
                fib.remove(r)  # type: ignore[union-attr]
                self.lab.bump()
                return
        raise self._err(errors.no_such_process(), op)

    def route_lookup(self, addr: int) -> Route | None:
        """The local table first, then main (the default policy rules)."""
        r = self.fib[TABLE_LOCAL].lookup(addr)
        if r is not None:
            return r
        return self.fib[TABLE_MAIN].lookup(addr)

    def route_get(self, addr: int) -> tuple[Route, int | None]:
        """`ip route get`: the route used and the source address, or NetError with the kernel's answer."""
        r = self.route_lookup(addr)
        if r is None or r.type in REJECT_TYPES:
            raise self._err(NetError(f"RTNETLINK answers: {LOOKUP_ERRORS[r.type if r else None]}"), "route get")
        return r, self.route_source(r, addr)

    def route_source(self, r: Route, dst: int) -> int | None:
        """fib_result_prefsrc: the route's src, else inet_select_addr on its device."""
        if r.prefsrc is not None:
            return r.prefsrc
        if r.dev is None:
            return None
        # fib_info_update_nhc_saddr asks for an address near the gateway (0 for a direct route).
        return self.select_addr(self.links[r.dev], r.nexthop_gateway or 0, r.scope)

    def select_addr(self, link: Link, dst: int, scope: int) -> int | None:
        """inet_select_addr: a primary address of the device in dst's subnet (any, when dst is 0), else its
        first fitting one, else the first fitting address of another device (lo first; link scope excluded)."""
        first = None
        for a in link.addrs:
            if a.secondary or a.scope > scope:
                continue
            if not dst or in_subnet(dst, network_of(a.local, a.plen), a.plen):
                return a.local
            if first is None:
                first = a.local
        if first is not None:
            return first
        for other in self.sorted_links():
            for a in other.addrs:
                if not a.secondary and a.scope != SCOPE_LINK and a.scope <= scope:
                    return a.local
        return None

    # --- neighbours and fdb ----------------------------------------------------------
    def neigh_add(self, ip: str, *, dev: str, lladdr: str | None = None, state: str = "permanent",
                  replace: bool = False) -> None:
        self.neigh.add(self.link(dev), ip2int(ip), mac2int(lladdr) if lladdr else -1, state, replace=replace)

    def neigh_del(self, ip: str, *, dev: str) -> None:
        if not self.neigh.delete(self.link(dev), ip2int(ip)):
            raise self._err(NetError("RTNETLINK answers: No such file or directory"), f"neigh del {ip}")

    def fdb_add(self, mac: str, *, dev: str, dst: str | None = None, replace: bool = False) -> None:
        """`bridge fdb add|append|replace MAC dev DEV [dst IP]`: a VXLAN remote, or a static bridge entry."""
        link = self.link(dev)
        m = mac2int(mac)
        op = f"fdb add {mac} dev {dev}"
        if isinstance(link, Vxlan):
            if dst is None:
                raise self._err(NetError("RTNETLINK answers: Invalid argument"), op)
            ip = ip2int(dst)
            remotes = link.vfdb.setdefault(m, [])
            if ip in remotes and not replace:
                raise self._err(errors.exists(), op)
            if replace or m != 0:
                remotes[:] = [ip]
            elif ip not in remotes:
                remotes.append(ip)
            self.lab.bump()
            return
        if isinstance(link.master, Bridge):
            link.master.fdb.add_static(m, 0, link.ifindex)
            self.lab.bump()
            return
        raise self._err(NetError("RTNETLINK answers: Operation not supported"), op)

    def fdb_del(self, mac: str, *, dev: str, dst: str | None = None) -> None:
        link = self.link(dev)
        m = mac2int(mac)
        op = f"fdb del {mac} dev {dev}"
        if isinstance(link, Vxlan) and m in link.vfdb:
            if dst is None:
                del link.vfdb[m]
            else:
                link.vfdb[m] = [r for r in link.vfdb[m] if r != ip2int(dst)]
                if not link.vfdb[m]:
                    del link.vfdb[m]
            self.lab.bump()
            return
        if isinstance(link.master, Bridge) and link.master.fdb.remove(m, 0):
            self.lab.bump()
            return
        raise self._err(NetError("RTNETLINK answers: No such file or directory"), op)

    def addresses_text(self) -> list[str]:
        return [f"{int2ip(a.local)}/{a.plen}" for lk in self.sorted_links() for a in lk.addrs]

    # --- the shell -----------------------------------------------------------------------
    def run(self, line: str, stdin: str = ""):  # noqa: ANN201 - emu.net.shell.Result
        """Runs one command line (`ip route`, `ping -c 1 10.0.0.2`, ...) as the real tool would."""
        from emu.net.shell import Shell

        return Shell(self).run(line, stdin)
