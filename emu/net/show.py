"""The human and JSON views of a namespace, in the exact formats of iproute2 6.1 and net-tools."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.net.errors import NetError

from emu.net.addr import int2ip, int2mac, mask
from emu.net.bridge import Bridge
from emu.net.link import Dummy, Link, Loopback, Veth
from emu.net.neigh import FAILED, INCOMPLETE, PERMANENT, STATE_NAMES
from emu.net.route import (
    BROADCAST,
    LOCAL,
    SCOPE_NAMES,
    TABLE_LOCAL,
    TABLE_MAIN,
    TABLE_NAMES,
    UNICAST,
    Route,
)

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

FOREVER = 4294967295


def dumps(obj: Any) -> str:
    """iproute2's JSON: compact, keys in insertion order, one line."""
    return json.dumps(obj, separators=(",", ":")) + "\n"


# --- links and addresses ----------------------------------------------------------------
def _qdisc(link: Link) -> str:
    if not link.was_up:
        return "noop"  # a device gets its qdisc when it first comes up and keeps it
    return "pfifo_fast" if type(link) is not Dummy and link.kind == "ifb" else "noqueue"


def _flags(link: Link) -> list[str]:
    flags = link.flags()
    if link.kind == "ifb":
        flags = [f if f != "MULTICAST" else "NOARP" for f in flags]
    return flags


def _operstate(link: Link) -> str:
    return "UNKNOWN" if link.kind == "ifb" and link.up else link.operstate


def _peer_suffix(ns: Namespace, link: Link, *, by_index: bool = False) -> str:
    """`@peer` after a veth's name: `ip` names a peer in another namespace `ifN`; `bridge` resolves the
    peer's ifindex in its own namespace whatever device that finds."""
    if isinstance(link, Veth) and link.peer is not None:
        if by_index:
            found = ns.link_by_index(link.peer.ifindex)
            return f"@{found.ifname}" if found is not None else f"@if{link.peer.ifindex}"
        return f"@{link.peer.ifname}" if link.peer.ns is ns else f"@if{link.peer.ifindex}"
    return ""


def link_json(ns: Namespace, link: Link, *, mode: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"ifindex": link.ifindex}
    if isinstance(link, Veth) and link.peer is not None:
        if link.peer.ns is ns:
            out["link"] = link.peer.ifname
        else:
            out["link_index"] = link.peer.ifindex
    out.update(ifname=link.ifname, flags=_flags(link), mtu=link.mtu, qdisc=_qdisc(link))
    if link.master is not None:
        out["master"] = link.master.ifname
    out["operstate"] = _operstate(link)
    if mode:
        out["linkmode"] = "DEFAULT"
    out["group"] = "default"
    if link.txqlen:
        out["txqlen"] = link.txqlen
    out["link_type"] = link.link_type
    if isinstance(link, Loopback):
        out.update(address="00:00:00:00:00:00", broadcast="00:00:00:00:00:00")
    elif not link.l3:
        out.update(address=link.mac_str, broadcast="ff:ff:ff:ff:ff:ff")
    if isinstance(link, Veth) and link.peer is not None and link.peer.ns is not ns:
        out["link_netnsid"] = 0
    return out


def _link_head(ns: Namespace, link: Link, *, mode: bool) -> str:
    master = f"master {link.master.ifname} " if link.master is not None else ""
    mode_s = "mode DEFAULT " if mode else ""
    head = (f"{link.ifindex}: {link.ifname}{_peer_suffix(ns, link)}: <{','.join(_flags(link))}> mtu {link.mtu} "
            f"qdisc {_qdisc(link)} {master}state {_operstate(link)} {mode_s}group default "
            + (f"qlen {link.txqlen}\n" if link.txqlen else "\n"))
    if isinstance(link, Loopback):
        l2 = "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
    elif link.l3:
        l2 = f"    link/{link.link_type} 0.0.0.0 brd 0.0.0.0\n"
    else:
        l2 = f"    link/ether {link.mac_str} brd ff:ff:ff:ff:ff:ff"
        if isinstance(link, Veth) and link.peer is not None and link.peer.ns is not ns:
            l2 += f" link-netns {link.peer.ns.name}"
        l2 += "\n"
    return head + l2


def _select(ns: Namespace, dev: str | None) -> list[Link]:
    return [ns.link(dev)] if dev else ns.sorted_links()


def _stats_json(link: Link) -> dict[str, Any]:
    c = link.counters
    return {"rx": {"bytes": c.rx_bytes, "packets": c.rx_packets, "errors": 0, "dropped": c.rx_dropped,
                   "over_errors": 0, "multicast": 0},
            "tx": {"bytes": c.tx_bytes, "packets": c.tx_packets, "errors": 0, "dropped": c.tx_dropped,
                   "carrier_errors": 0, "collisions": 0}}


def _stats_text(link: Link) -> str:
    c = link.counters
    return ("    RX:  bytes packets errors dropped  missed   mcast           \n"
            f"    {c.rx_bytes:>10} {c.rx_packets:>7} {0:>6} {c.rx_dropped:>7} {0:>7} {0:>7} \n"
            "    TX:  bytes packets errors dropped carrier collsns           \n"
            f"    {c.tx_bytes:>10} {c.tx_packets:>7} {0:>6} {c.tx_dropped:>7} {0:>7} {0:>7} \n")


GSO = "gso_max_size 65536 gso_max_segs 65535 tso_max_size 524280 tso_max_segs 65535 gro_max_size 65536 "


def _details(link: Link) -> str:
    """`ip -d link`'s extra lines for a vxlan or veth device (what flannel's users look at)."""
    head = f" promiscuity {int(link.promisc)}  allmulti 0 minmtu 68 maxmtu 65535 \n"
    if link.kind == "vxlan":
        v: Any = link
        local = f"local {int2ip(v.local)} " if v.local is not None else ""
        dev = f"dev {v.underlay} " if v.underlay else ""
        learn = "" if v.learning else "nolearning "
        return head + (f"    vxlan id {v.vni} {local}{dev}srcport 0 0 dstport {v.dstport} {learn}ttl auto ageing 300 "
                       "udpcsum noudp6zerocsumtx noudp6zerocsumrx addrgenmode eui64 numtxqueues 1 numrxqueues 1 "
                       f"{GSO}\n")
    if link.kind == "veth":
        cpus = os.cpu_count() or 1  # veths get a queue per possible CPU
        return head + f"    veth addrgenmode eui64 numtxqueues {cpus} numrxqueues {cpus} {GSO}\n"
    return head


def ip_link(ns: Namespace, dev: str | None = None, *, as_json: bool = False, stats: bool = False,
            details: bool = False) -> str:
    """`ip [-s] [-d] [-j] link show [DEV]`; `-s` adds the rx/tx counters, `-d` the device details."""
    links = _select(ns, dev)
    if as_json:
        return dumps([{**link_json(ns, lk, mode=True), **({"stats64": _stats_json(lk)} if stats else {})}
                      for lk in links])
    out = []
    for lk in links:
        text = _link_head(ns, lk, mode=True)
        if details:
            text = text[:-1] + _details(lk)
        out.append(text + (_stats_text(lk) if stats else ""))
    return "".join(out)


def _addr_json(link: Link) -> list[dict[str, Any]]:
    out = []
    for a in link.addrs:
        d: dict[str, Any] = {"family": "inet", "local": int2ip(a.local), "prefixlen": a.plen}
        if a.broadcast is not None:
            d["broadcast"] = int2ip(a.broadcast)
        d["scope"] = SCOPE_NAMES.get(a.scope, str(a.scope))
        if a.secondary:
            d["secondary"] = True
        d.update(label=a.label, valid_life_time=FOREVER, preferred_life_time=FOREVER)
        out.append(d)
    return out


def ip_addr(ns: Namespace, dev: str | None = None, *, as_json: bool = False) -> str:
    links = _select(ns, dev)
    if as_json:
        return dumps([{**link_json(ns, lk, mode=False), "addr_info": _addr_json(lk)} for lk in links])
    out = []
    for lk in links:
        out.append(_link_head(ns, lk, mode=False))
        for a in lk.addrs:
            brd = f"brd {int2ip(a.broadcast)} " if a.broadcast is not None else ""
            sec = "secondary " if a.secondary else ""
            out.append(f"    inet {int2ip(a.local)}/{a.plen} {brd}scope {SCOPE_NAMES.get(a.scope, a.scope)} "
                       f"{sec}{a.label}\n       valid_lft forever preferred_lft forever\n")
    return "".join(out)


# --- routes -------------------------------------------------------------------------------
def _linkdown(ns: Namespace, r: Route) -> bool:
    link = ns.links.get(r.dev or "")
    return link is not None and link.up and not link.carrier


@dataclass
class RouteFilter:
    """`ip route show` selectors; a field given as a selector is not printed (iproute2's masks)."""

    table: str = "main"
    dev: str | None = None
    proto: str | None = None
    scope: int | None = None
    via: int | None = None
    types: set[str] | None = None
    root: tuple[int, int] | None = None
    match: tuple[int, int] | None = None

    def keeps(self, r: Route) -> bool:
        if self.dev is not None and r.dev != self.dev:
            return False
        if self.proto is not None and r.proto != self.proto:
            return False
        if self.scope is not None and r.scope != self.scope:
            return False
        if self.via is not None and r.gateway != self.via:
            return False
        if self.types is not None and r.type not in self.types:
            return False
        if self.root is not None and (r.plen < self.root[1] or r.dst & mask(self.root[1]) != self.root[0]):
            return False
        return self.match is None or (r.plen <= self.match[1] and self.match[0] & mask(r.plen) == r.dst)

    def hidden(self) -> dict[str, bool]:
        return {"dev": self.dev is not None, "proto": self.proto is not None, "scope": self.scope is not None,
                "via": self.via is not None}


def route_fields(ns: Namespace, r: Route, *, show_table: bool, hide: dict[str, bool] | None = None) -> dict[str, Any]:
    """One route as iproute2's JSON object (the text form is rendered from the same fields)."""
    hide = hide or {}
    d: dict[str, Any] = {}
    if r.type != UNICAST:
        d["type"] = r.type
    d["dst"] = r.prefix
    if r.gateway is not None and not hide.get("via"):
        d["gateway"] = int2ip(r.gateway)
    if r.dev and not hide.get("dev"):
        d["dev"] = r.dev
    if show_table and r.table != TABLE_MAIN:
        d["table"] = TABLE_NAMES.get(r.table, str(r.table))
    if r.proto != "boot" and not hide.get("proto"):
        d["protocol"] = r.proto
    if r.scope and not hide.get("scope"):
        d["scope"] = SCOPE_NAMES.get(r.scope, str(r.scope))
    if r.prefsrc is not None:
        d["prefsrc"] = int2ip(r.prefsrc)
    if r.metric:
        d["metric"] = r.metric
    flags = []
    if r.onlink:
        flags.append("onlink")
    if _linkdown(ns, r):
        flags.append("linkdown")
    d["flags"] = flags
    return d


def route_text(d: dict[str, Any]) -> str:
    parts = []
    if "type" in d:
        parts.append(d["type"])
    parts.append(d["dst"])
    for key, word in (("gateway", "via"), ("dev", "dev"), ("table", "table"), ("protocol", "proto"),
                      ("scope", "scope"), ("prefsrc", "src"), ("metric", "metric")):
        if key in d:
            parts.append(f"{word} {d[key]}")
    parts.extend(d.get("flags", []))
    return " ".join(parts) + " \n"


def ip_route(ns: Namespace, *, as_json: bool = False, filt: RouteFilter | None = None) -> str:
    filt = filt or RouteFilter()
    table = filt.table
    if table == "all":
        ids = [TABLE_MAIN, TABLE_LOCAL] + sorted(t for t in ns.fib if t not in (TABLE_MAIN, TABLE_LOCAL))
    else:
        ids = [TABLE_LOCAL if table == "local" else TABLE_MAIN if table == "main" else int(table)]
    rows = []
    for tid in ids:
        fib = ns.fib.get(tid)
        if fib is None:
            continue
        for r in fib.routes():
            if filt.keeps(r):
                rows.append(route_fields(ns, r, show_table=table == "all", hide=filt.hidden()))
    if as_json:
        return dumps(rows)
    return "".join(route_text(d) for d in rows)


def route_get(ns: Namespace, addr: int, *, fibmatch: bool = False, as_json: bool = False) -> str:
    """`ip route get [fibmatch] ADDR` (raises NetError as the kernel answers)."""
    if addr == 0:
        # ip_route_output: no destination means this host, via lo.
        if fibmatch:
            raise NetError("RTNETLINK answers: No route to host")
        d: dict[str, Any] = {"type": "local", "dst": "0.0.0.0", "dev": "lo", "prefsrc": "127.0.0.1", "flags": [],
                             "uid": 0, "cache": ["local"]}
        return _route_get_out(d, as_json)
    r, src = ns.route_get(addr)
    # __mkroute_output: a unicast route to a multicast or limited-broadcast address changes type.
    cast = "multicast" if addr >> 28 == 0xE else "broadcast" if addr == 0xFFFFFFFF else None
    cast = cast if r.type == UNICAST else None
    if fibmatch:
        d = route_fields(ns, r, show_table=False)
        if cast:
            d = {"type": cast, **d}
        return dumps([d]) if as_json else route_text(d)
    d = {}
    if r.type != UNICAST or cast:
        d["type"] = cast or r.type
    d["dst"] = int2ip(addr)
    # "If multicast route do not exist use default one, but do not gateway in this case."
    gw = r.nexthop_gateway
    if gw is not None and not (cast == "broadcast" or (cast == "multicast" and r.plen < 4)):
        d["gateway"] = int2ip(gw)
    d["dev"] = "lo" if r.type == LOCAL else r.dev
    if src is not None:
        d["prefsrc"] = int2ip(src)
    # What iproute2 6.1 prints for RTCF_MULTICAST reported by this kernel (a flag-bit collision).
    d["flags"] = ["rt_offload_failed"] if cast == "multicast" else (
        ["linkdown"] if r.type == UNICAST and _linkdown(ns, r) else [])
    d["uid"] = 0
    if cast == "multicast":
        cache = ["local", "mc"] if addr == 0xE0000001 else ["mc"]  # 224.0.0.1 is always joined
    else:
        cache = ["local"] if r.type == LOCAL else ["local", "brd"] if BROADCAST in (r.type, cast) else []
    d["cache"] = cache
    return _route_get_out(d, as_json)


def _route_get_out(d: dict[str, Any], as_json: bool) -> str:
    cache = d["cache"]
    if as_json:
        return dumps([d])
    parts = [d["type"]] if "type" in d else []
    parts.append(d["dst"])
    if "gateway" in d:
        parts.append(f"via {d['gateway']}")
    parts.append(f"dev {d['dev']}")
    if "prefsrc" in d:
        parts.append(f"src {d['prefsrc']}")
    parts.extend(d["flags"])
    parts.append("uid 0")
    tail = f"<{','.join(cache)}> " if cache else ""
    return " ".join(parts) + " \n    cache " + tail + "\n"


def route_n(ns: Namespace) -> str:
    """net-tools `route -n`: the main table in the kernel's /proc/net/route order."""
    lines = ["Kernel IP routing table\n",
             "Destination     Gateway         Genmask         Flags Metric Ref    Use Iface\n"]
    for r in ns.fib[TABLE_MAIN].routes():
        reject = r.type in ("unreachable", "prohibit")
        flags = "!" if reject else "U"
        if r.gateway is not None:
            flags += "G"
        if r.plen == 32:
            flags += "H"
        gw = "-" if reject else int2ip(r.gateway or 0)
        iface = "-" if reject else (r.dev or "*")
        ref = "-" if reject else "0"
        lines.append(f"{int2ip(r.dst):<15} {gw:<15} {int2ip(mask(r.plen)):<15} {flags:<5} {r.metric:<6} "
                     f"{ref:<6} {0:>3} {iface}\n")
    return "".join(lines)


# --- neighbours -----------------------------------------------------------------------------
def _neigh_rows(ns: Namespace, dev: str | None = None, prefix: tuple[int, int] | None = None,
                ) -> list[tuple[Link, int, int, int]]:
    rows = []
    for link in ns.sorted_links():
        if dev is not None and link.ifname != dev:
            continue
        for ip, mac, state in ns.neigh.entries(link):
            if prefix is None or ip & mask(prefix[1]) == prefix[0]:
                rows.append((link, ip, mac, state))
    return rows


def ip_neigh(ns: Namespace, *, as_json: bool = False, dev: str | None = None,
             prefix: tuple[int, int] | None = None) -> str:
    out_json, out = [], []
    for link, ip, mac, state in _neigh_rows(ns, dev, prefix):
        d: dict[str, Any] = {"dst": int2ip(ip)}
        if dev is None:
            d["dev"] = link.ifname
        if mac >= 0 and state not in (INCOMPLETE, FAILED):
            d["lladdr"] = int2mac(mac)
        d["state"] = [STATE_NAMES[state]]
        out_json.append(d)
        ll = f"lladdr {d['lladdr']} " if "lladdr" in d else ""
        on = f"dev {link.ifname} " if dev is None else ""
        out.append(f"{d['dst']} {on}{ll}{STATE_NAMES[state]} \n")
    return dumps(out_json) if as_json else "".join(out)


def arp_n(ns: Namespace) -> str:
    """net-tools `arp -n` (C complete, M permanent)."""
    lines = ["Address                  HWtype  HWaddress           Flags Mask            Iface\n"]
    for link, ip, mac, state in _neigh_rows(ns):
        if state in (INCOMPLETE, FAILED) or mac < 0:
            lines.append(f"{int2ip(ip):<24} {'':<7} {'(incomplete)':<20}{'':<22}{link.ifname}\n")
            continue
        flags = "CM" if state == PERMANENT else "C"
        lines.append(f"{int2ip(ip):<24} {'ether':<7} {int2mac(mac):<19} {flags:<5} {'':<15} {link.ifname}\n")
    return "".join(lines)


# --- bridges --------------------------------------------------------------------------------
def bridge_fdb(ns: Namespace, *, as_json: bool = False, br: str | None = None, dev: str | None = None) -> str:
    """`bridge fdb show`: learned and static entries per port, the ports' own MACs, VXLAN remotes."""
    rows: list[dict[str, Any]] = []
    now = ns.lab.clock.now
    for link in ns.sorted_links():
        if isinstance(link, Bridge) and (br is None or link.ifname == br):
            live = {}
            for mac, _vlan, port, static, _upd in link.fdb.entries(now):
                live.setdefault(port, []).append((mac, static))
            for port in link.ports:
                for mac, static in live.get(port.ifindex, []):
                    rows.append({"mac": int2mac(mac), "ifname": port.ifname, "flags": [], "master": link.ifname,
                                 "state": "static" if static else ""})
                rows.append({"mac": port.mac_str, "ifname": port.ifname, "flags": [], "master": link.ifname,
                             "state": "permanent"})
        if link.kind == "vxlan" and br is None:
            for mac in sorted(link.vfdb):  # type: ignore[attr-defined]
                for dst in link.vfdb[mac]:  # type: ignore[attr-defined]
                    rows.append({"mac": int2mac(mac), "ifname": link.ifname, "dst": int2ip(dst), "flags": ["self"],
                                 "state": "permanent"})
    if dev is not None:
        rows = [{k: v for k, v in d.items() if k != "ifname"} for d in rows if d["ifname"] == dev]
    if as_json:
        return dumps(rows)
    out = []
    for d in rows:
        on = f"dev {d['ifname']} " if "ifname" in d else ""
        master = f"master {d['master']} " if "master" in d else ""
        dst = f"dst {d['dst']} " if "dst" in d else ""
        self_ = "self " if "self" in d["flags"] else ""
        state = f"{d['state']}" if d["state"] else ""
        out.append(f"{d['mac']} {on}{dst}{master}{self_}{state}\n".replace("  \n", " \n"))
    return "".join(out)


def bridge_link(ns: Namespace, *, details: bool = False) -> str:
    """`bridge [-d] link`: bridge ports, their STP state and (with -d) their flags such as hairpin."""
    out = []
    for link in ns.sorted_links():
        if link.master is not None:
            state = "forwarding" if link.running else "disabled"
            out.append(f"{link.ifindex}: {link.ifname}{_peer_suffix(ns, link, by_index=True)}: "
                       f"<{','.join(link.flags())}> mtu "
                       f"{link.mtu} master {link.master.ifname} state {state} priority 32 cost 2 \n")
            if details:
                out.append(f"    hairpin {'on' if link.hairpin else 'off'} guard off root_block off fastleave off "
                           "learning on flood on mcast_flood on bcast_flood on mcast_router 1 mcast_to_unicast off "
                           "neigh_suppress off vlan_tunnel off isolated off locked off \n")
    return "".join(out)
