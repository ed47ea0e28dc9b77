"""Seeded random labs and traffic: the workload of the fast-path equality tests.

`make_plan(seed)` draws one lab and its traffic with `random.Random(seed)` and nothing else: a
topology family (two hosts on a veth, hosts on a Linux bridge, a routed chain of 1-3 routers, a
Flannel-like VXLAN overlay, a NAT node with DNAT, MASQUERADE and filter rules), realistic
addresses, a few random extras (MTU differences, static ARP entries, blackhole and metric routes,
hairpin, static FDB entries), 1-6 flows (UDP mostly, ICMP echo, TCP SYN then ACKs) and a schedule
of bursts, pauses long enough for ARP entries to go STALE, FDB entries to age and conntrack
entries to expire, and mid-run changes (routes replaced, links flapped, neighbours flushed,
iptables rules inserted).

A plan is data: namespace shell lines (`ip ...`, `iptables ...`, with `@mac(ns/ifname)` standing
for a MAC the lab's own seed picks), sockets to open, captures, generator sends and pauses.
`execute(plan, fastpath=...)` builds it on a fresh `Lab` and drives it; `snapshot(lab)` is
everything a user can observe, taken through the namespace shell where a command exists.

Frames enter where a real sender's frames would: a host's frames arrive on the interface of
the first namespace they enter (the far end of the sender's veth, or the bridge port of a pod's
veth), from the sender's MAC to the MAC the sender would have resolved (the peer on its subnet,
else its gateway). Some senders are clients in a dedicated namespace that is never configured
(only its veth end is up); their first hop routes them.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import random
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from emu.apps.sockets import tcp_serve, udp_echo
from emu.net import Lab
from emu.traffic import Generator, icmp_frame, tcp_frame, udp_frame

FAMILIES = ("veth", "bridge", "routed", "flannel", "nat")
UDP_PORTS = (53, 123, 514, 1812, 5000, 5353, 6379, 8000, 8080, 8125, 9000, 9090, 9999, 10053)
TCP_PORTS = (22, 80, 443, 3306, 5432, 6443, 8080, 8443)
CLOSED_PORTS = (7, 9, 19, 69, 4444, 33434, 33435, 33440)
UNKNOWN_MAC = "02:00:5e:10:00:99"  # a sender's idea of a neighbour that is not there
VIEWS = ("ip -s -d link show", "ip addr", "ip route show table all", "ip neigh show", "bridge fdb show")
_MAC_TOKEN = re.compile(r"@mac\(([^/()]+)/([^()]+)\)")


@dataclass(frozen=True)
class Ref:
    """The MAC of `ns/ifname`, read from the lab when the plan runs (the lab's seed picks MACs)."""

    ns: str
    ifname: str

    def __str__(self) -> str:
        return f"@mac({self.ns}/{self.ifname})"


@dataclass
class Source:
    """Who sends: where its frames arrive, from which MAC and address, and who it sends through."""

    label: str
    inject: tuple[str, str]
    mac: Ref
    ip: str
    net: ipaddress.IPv4Network
    gw: Ref | None
    home: str | None = None  # the namespace replies come back to (None: an unconfigured client)


@dataclass
class Target:
    """An address traffic goes to, with the UDP and TCP ports something answers on."""

    label: str
    ip: str
    ns: str | None = None
    udp: list[int] = field(default_factory=list)
    tcp: list[int] = field(default_factory=list)
    sinks: list[int] = field(default_factory=list)  # the UDP ports whose datagrams a counting sink gets


@dataclass
class Flow:
    kind: str  # udp, icmp, tcp
    inject: tuple[str, str]
    src_mac: Ref
    dst_mac: Ref | str
    src: str
    dst: str
    sport: int  # the ICMP echo identifier for icmp
    dport: int  # the ICMP echo sequence for icmp
    size: int  # payload bytes
    ttl: int
    label: str

    def text(self) -> str:
        what = f"{self.kind} {self.src}:{self.sport} -> {self.dst}:{self.dport} ({self.size} B, ttl {self.ttl})"
        return f"{what} [{self.label}] in at {self.inject[0]}/{self.inject[1]}"


@dataclass
class Send:
    """One `Generator.send`: the flows' frames round robin into `inject`."""

    inject: tuple[str, str]
    flows: list[int]
    phase: str  # syn (the SYNs of TCP flows), warm (one frame each), data
    count: int
    interval: float
    drain: float
    ip_id: int


@dataclass
class Plan:
    seed: int
    family: str
    steps: list[tuple[Any, ...]]
    flows: list[Flow]

    def describe(self) -> str:
        """The plan as text, to read a failing seed."""
        lines = [f"seed {self.seed}: family {self.family}"]
        for step in self.steps:
            if step[0] == "send":
                s: Send = step[1]
                lines.append(f"  send {s.phase} x{s.count} every {s.interval:.2g}s into {s.inject[0]}/{s.inject[1]}: "
                             + "; ".join(self.flows[i].text() for i in s.flows))
            else:
                lines.append("  " + " ".join(str(x) for x in step))
        return "\n".join(lines)


# --- drawing a lab --------------------------------------------------------------------------------------------
class Builder:
    """Collects the steps of one lab while the family functions draw it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.steps: list[tuple[Any, ...]] = []
        self.ifaces: list[tuple[str, str]] = []
        self.sources: list[Source] = []
        self.targets: list[Target] = []
        self.at: dict[str, Ref] = {}  # address -> the interface that holds it (what ARP would answer)
        self.changes: list[tuple[str, str]] = []  # candidate mid-run changes
        self.neighbours: list[tuple[str, str, str, Ref]] = []  # (ns, dev, ip, its MAC): static ARP candidates
        self.forwarders: list[str] = []
        self.udp_ports: dict[str, set[int]] = {}
        self.services: dict[str, tuple[list[int], list[int], list[int]]] = {}
        self.clients = 0

    def pick(self, seq: Any) -> Any:
        return self.rng.choice(list(seq))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def mac(self) -> str:
        raw = (self.rng.getrandbits(48) & ~(1 << 40)) | (2 << 40)
        return ":".join(f"{b:02x}" for b in raw.to_bytes(6, "big"))

    # --- objects --------------------------------------------------------------------------------
    def netns(self, *names: str) -> None:
        for name in names:
            self.steps.append(("netns", name))

    def sh(self, ns: str, *lines: str) -> None:
        for line in lines:
            self.steps.append(("sh", ns, line))

    def veth(self, ns: str, ifname: str, peer_ns: str, peer: str, *, mtu: int | None = None) -> None:
        opts = f" mtu {mtu}" if mtu else ""
        where = "" if peer_ns == ns else f" netns {peer_ns}"
        self.sh(ns, f"ip link add {ifname}{opts} type veth peer name {peer}{where}")
        self.ifaces += [(ns, ifname), (peer_ns, peer)]

    def nic(self, ns: str, ifname: str, segment: str, mtu: int | None = None) -> None:
        self.steps.append(("nic", ns, ifname, segment, mtu))
        self.ifaces.append((ns, ifname))

    def up(self, ns: str, *ifnames: str) -> None:
        for ifname in ifnames:
            self.sh(ns, f"ip link set {ifname} up")

    def addr(self, ns: str, ifname: str, ip: str, plen: int) -> None:
        self.sh(ns, f"ip addr add {ip}/{plen} dev {ifname}")
        self.at[ip] = Ref(ns, ifname)

    def forward(self, ns: str) -> None:
        if ns not in self.forwarders:
            self.forwarders.append(ns)
            self.sh(ns, "sysctl -w net.ipv4.ip_forward=1")

    def link_pair(self, a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str, plen: int,
                  mtu: int | None = None) -> None:
        """A veth between two namespaces, addressed and up; each end a neighbour of the other."""
        self.veth(a, a_if, b, b_if, mtu=mtu)
        for ns, ifname, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
            self.addr(ns, ifname, ip, plen)
            self.up(ns, ifname)
        self.neighbours += [(a, a_if, b_ip, Ref(b, b_if)), (b, b_if, a_ip, Ref(a, a_if))]

    # --- sockets ------------------------------------------------------------------------------------
    def free_udp(self, ns: str, choices: tuple[int, ...] = UDP_PORTS) -> int | None:
        used = self.udp_ports.setdefault(ns, set())
        free = [p for p in choices if p not in used]
        if not free:
            return None
        port = self.pick(free)
        used.add(port)
        return port

    def serve(self, ns: str) -> tuple[list[int], list[int], list[int]]:
        """The namespace's UDP sinks (1-2), maybe a UDP echo server and a TCP listener (once per namespace):
        (open UDP ports, TCP ports, sink ports)."""
        if ns not in self.services:
            udp: list[int] = []
            tcp: list[int] = []
            for _ in range(self.rng.randint(1, 2)):
                port = self.free_udp(ns)
                if port is not None:
                    self.steps.append(("sink", ns, port))
                    udp.append(port)
            sinks = list(udp)
            if self.chance(0.3):
                port = self.free_udp(ns)
                if port is not None:
                    self.steps.append(("echo", ns, port))
                    udp.append(port)
            if self.chance(0.4):
                port = self.pick(TCP_PORTS)
                self.steps.append(("listen", ns, port))
                tcp.append(port)
            self.services[ns] = (udp, tcp, sinks)
        return self.services[ns]

    def target(self, label: str, ip: str, ns: str | None, *, serve: bool = True) -> Target:
        udp, tcp, sinks = self.serve(ns) if ns is not None and serve else ([], [], [])
        t = Target(label, ip, ns, list(udp), list(tcp), list(sinks))
        self.targets.append(t)
        return t

    def host_source(self, label: str, inject: tuple[str, str], ns: str, ifname: str, ip: str,
                    net: ipaddress.IPv4Network, gw: Ref | None) -> Source:
        s = Source(label, inject, Ref(ns, ifname), ip, net, gw, ns)
        self.sources.append(s)
        return s

    def client(self, first_hop: str, net: str, return_routes: list[tuple[str, str]]) -> Source:
        """A client in its own unconfigured namespace behind `first_hop`, which routes for it."""
        k = self.clients
        self.clients += 1
        src = f"src{k}"
        ifname = f"c{k}"
        network = ipaddress.ip_network(net)
        gw_ip, client_ip = str(network.network_address + 1), str(network.network_address + 2)
        self.netns(src)
        self.veth(first_hop, ifname, src, "eth0")
        self.sh(src, "ip link set eth0 up")
        self.addr(first_hop, ifname, gw_ip, network.prefixlen)
        self.up(first_hop, ifname)
        self.forward(first_hop)
        self.at[client_ip] = Ref(src, "eth0")
        for ns, via in return_routes:
            self.sh(ns, f"ip route add {net} via {via}")
        if self.chance(0.5):  # otherwise replies wait for an ARP answer that never comes
            self.sh(first_hop, f"ip neigh add {client_ip} lladdr {Ref(src, 'eth0')} dev {ifname} nud permanent")
        s = Source(f"client {src}", (first_hop, ifname), Ref(src, "eth0"), client_ip, network,
                   Ref(first_hop, ifname), None)
        self.sources.append(s)
        return s


def _net24(rng: random.Random) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(rng.choice([
        f"10.{rng.randint(0, 254)}.{rng.randint(0, 254)}.0/24",
        f"192.168.{rng.randint(0, 254)}.0/24",
        f"172.{rng.randint(16, 31)}.{rng.randint(0, 254)}.0/24",
    ]))


def _host(net: ipaddress.IPv4Network, n: int) -> str:
    return str(net.network_address + n)


# --- the families ---------------------------------------------------------------------------------------------
def fam_veth(b: Builder) -> None:
    """Two hosts on one veth, on a /24 or a point-to-point /30."""
    a, c = b.pick([("a", "b"), ("host1", "host2"), ("client", "server")])
    net = _net24(b.rng)
    if b.chance(0.3):
        net = ipaddress.ip_network(f"{net.network_address + 4 * b.rng.randint(0, 60)}/30")
    ip_a, ip_c = _host(net, 1), _host(net, 2)
    b.netns(a, c)
    for ns in (a, c):
        b.sh(ns, "ip link set lo up")
    b.link_pair(a, "eth0", ip_a, c, "eth0", ip_c, net.prefixlen)
    b.host_source(a, (c, "eth0"), a, "eth0", ip_a, net, None)
    b.host_source(c, (a, "eth0"), c, "eth0", ip_c, net, None)
    b.target(a, ip_a, a)
    b.target(c, ip_c, c)
    if b.chance(0.35):
        hop, other, other_ip = b.pick([(a, c, ip_a), (c, a, ip_c)])
        cnet = f"172.16.{b.rng.randint(100, 199)}.0/24"
        back = [] if b.chance(0.15) else [(other, other_ip)]
        b.client(hop, cnet, back)
        if net.prefixlen == 24:
            b.target("unused address", _host(net, 99), None)
    b.changes += [(a, "ip neigh flush dev eth0"), (c, "ip neigh flush dev eth0")]


def fam_bridge(b: Builder) -> None:
    """Hosts on a Linux bridge whose address is their gateway; maybe an upstream host and a client."""
    gw = b.pick(["gw", "router", "host"])
    net = _net24(b.rng)
    gw_ip = _host(net, 1)
    b.netns(gw)
    b.sh(gw, "ip link set lo up")
    if b.chance(0.3):
        b.sh(gw, f"ip link add br0 address {b.mac()} type bridge")
    else:
        b.sh(gw, "ip link add br0 type bridge")
    b.ifaces.append((gw, "br0"))
    b.addr(gw, "br0", gw_ip, 24)
    b.up(gw, "br0")
    if b.chance(0.7):
        b.forward(gw)
    hosts = []
    for i in range(1, b.rng.randint(2, 4) + 1):
        h = f"h{i}"
        ip = _host(net, 10 + i)
        hosts.append((h, ip, f"veth{i}"))
        b.netns(h)
        b.veth(gw, f"veth{i}", h, "eth0")
        b.sh(gw, f"ip link set veth{i} master br0")
        b.up(gw, f"veth{i}")
        b.sh(h, "ip link set lo up")
        b.addr(h, "eth0", ip, 24)
        b.up(h, "eth0")
        b.sh(h, f"ip route add default via {gw_ip}")
        b.neighbours += [(h, "eth0", gw_ip, Ref(gw, "br0")), (gw, "br0", ip, Ref(h, "eth0"))]
        b.host_source(h, (gw, f"veth{i}"), h, "eth0", ip, net, Ref(gw, "br0"))
        b.target(h, ip, h)
        b.changes.append((gw, f"ip link set veth{i} down"))
    if b.chance(0.25):
        h, _ip, port = b.pick(hosts)
        b.sh(gw, f"bridge fdb add {Ref(h, 'eth0')} dev {port} master")
    if b.chance(0.15):
        _h, _ip, port = b.pick(hosts)
        b.sh(gw, f"ip link set {port} type bridge_slave hairpin on")
    b.target(f"{gw} br0", gw_ip, gw, serve=b.chance(0.5))
    b.target("unused address", _host(net, 200), None)
    up_routes: list[tuple[str, str]] = []
    if b.chance(0.5):
        up = "upstream"
        b.netns(up)
        b.sh(up, "ip link set lo up")
        b.link_pair(gw, "eth0", "100.64.0.1", up, "eth0", "100.64.0.2", 30)
        routed = b.chance(0.8)
        if routed:
            b.sh(up, f"ip route add {net} via 100.64.0.1")
        up_routes.append((up, "100.64.0.1"))
        b.target(up, "100.64.0.2", up)
        b.target(f"{gw} eth0", "100.64.0.1", gw, serve=b.chance(0.5))
        b.host_source(up, (gw, "eth0"), up, "eth0", "100.64.0.2", ipaddress.ip_network("100.64.0.0/30"),
                      Ref(gw, "eth0") if routed else None)
        b.changes.append((gw, "ip link set eth0 down"))
    if b.chance(0.3):
        b.client(gw, f"172.16.{b.rng.randint(100, 199)}.0/24", up_routes)
    b.changes += [(gw, "ip neigh flush dev br0"), (gw, "iptables -I FORWARD 1 -p udp -j DROP"),
                  (gw, f"iptables -A INPUT -d {gw_ip} -p udp -m comment --comment \"allow dns\" -j ACCEPT")]


def fam_routed(b: Builder) -> None:
    """h1 -- r1 [-- r2 [-- r3]] -- h2 (and maybe h3 on a middle router), static routes everywhere."""
    k = b.rng.randint(1, 3)
    routers = [f"r{i}" for i in range(1, k + 1)]
    base = b.rng.randint(0, 200)
    p2p_base = b.pick(["10.255.0", "172.31.255", "192.168.255"])
    b.netns(*routers)
    for r in routers:
        b.sh(r, "ip link set lo up")
        b.forward(r)
    nif = {r: 0 for r in routers}

    def next_if(r: str) -> str:
        nif[r] += 1
        return f"eth{nif[r] - 1}"

    owned: list[tuple[str, int, int]] = []  # (subnet, first and last router it is connected to)
    links: list[tuple[str, str, str, str]] = []  # (left if, left ip, right if, right ip) between r[i] and r[i+1]
    mtu = b.pick([None, None, None, 1400, 1280])
    for i in range(k - 1):
        net = ipaddress.ip_network(f"{p2p_base}.{4 * i}/30")
        lif, rif = next_if(routers[i]), next_if(routers[i + 1])
        lip, rip = _host(net, 1), _host(net, 2)
        b.link_pair(routers[i], lif, lip, routers[i + 1], rif, rip, 30, mtu=mtu if i == 0 else None)
        links.append((lif, lip, rif, rip))
        owned.append((str(net), i, i + 1))
    hosts = [("h1", 0), ("h2", k - 1)]
    if k > 1 and b.chance(0.4):
        hosts.append(("h3", b.rng.randint(0, k - 1)))
    for n, (h, ri) in enumerate(hosts):
        r = routers[ri]
        net = ipaddress.ip_network(f"10.{base + n}.{b.rng.randint(0, 254)}.0/24")
        rif = next_if(r)
        b.netns(h)
        b.sh(h, "ip link set lo up")
        hip, rip = _host(net, 10), _host(net, 1)
        b.link_pair(r, rif, rip, h, "eth0", hip, 24)
        b.sh(h, f"ip route add default via {rip}")
        owned.append((str(net), ri, ri))
        b.host_source(h, (r, rif), h, "eth0", hip, net, Ref(r, rif))
        b.target(h, hip, h)
        b.changes += [(r, f"ip link set {rif} down"), (r, f"ip neigh flush dev {rif}")]
    client_at = b.rng.randint(0, k - 1) if b.chance(0.3) else None
    client_net = f"172.16.{b.rng.randint(100, 199)}.0/24"
    if client_at is not None:
        owned.append((client_net, client_at, client_at))
    # routes: toward the subnet, through the neighbour on its side; sometimes a default to the right
    for i, r in enumerate(routers):
        default_right = i < k - 1 and b.chance(0.3)
        if default_right:
            b.sh(r, f"ip route add default via {links[i][3]}")
        for net_text, lo, hi in owned:
            if lo <= i <= hi or (lo > i and default_right):
                continue
            via = links[i][3] if lo > i else links[i - 1][1]
            b.sh(r, f"ip route add {net_text} via {via}")
            b.changes.append((r, f"ip route replace {net_text} via {via}"))
            if b.chance(0.1):
                b.sh(r, f"ip route add blackhole {net_text} metric 500")
                b.changes.append((r, f"ip route del {net_text} via {via} metric 0"))
            elif b.chance(0.1):
                b.changes.append((r, f"ip route replace blackhole {net_text}"))
    for i, (lif, lip, rif, rip) in enumerate(links):
        b.target(f"{routers[i]} {lif}", lip, routers[i], serve=b.chance(0.3))
        b.target(f"{routers[i + 1]} {rif}", rip, routers[i + 1], serve=b.chance(0.3))
        b.changes.append((routers[i], f"ip link set {lif} down"))
    if client_at is not None:
        b.client(routers[client_at], client_net, [])
    if b.chance(0.5):
        r = b.pick(routers)
        b.sh(r, "ip route add blackhole 10.222.0.0/16")
        b.target("blackholed", f"10.222.{b.rng.randint(0, 255)}.{b.rng.randint(1, 254)}", None)
    if b.chance(0.3):
        b.target("unrouted", "203.0.113.77", None)
    r = b.pick(routers)
    b.changes.append((r, f"iptables -I FORWARD 1 -d {b.pick(b.targets).ip} -m comment --comment \"change\" -j DROP"))


def fam_flannel(b: Builder) -> None:
    """2-3 nodes on one underlay segment, each with cni0, 1-2 pods and flannel.1 (VXLAN id 1, port 8472)."""
    n = b.rng.randint(2, 3)
    underlay, first = b.pick([("192.168.56.0/24", 101), ("10.0.0.0/24", 11), ("172.18.0.0/16", 2)])
    unet = ipaddress.ip_network(underlay)
    subnets = b.rng.sample(range(0, 256), n)
    apps = b.rng.sample(["web", "db", "dns", "cache", "api", "queue"], 6)
    nodes = []
    for i in range(n):
        name = f"node{i + 1}"
        nodes.append({"name": name, "ip": _host(unet, first + i), "x": subnets[i], "vtep": b.mac()})
    pod_mtu = 1500 if b.chance(0.15) else 1450
    masq = b.chance(0.4)
    gw = b.chance(0.4)
    gw_ip = _host(unet, 1)
    for node in nodes:
        ns, x = node["name"], node["x"]
        b.netns(ns)
        b.sh(ns, "ip link set lo up")
        b.nic(ns, "eth0", "underlay")
        b.addr(ns, "eth0", node["ip"], unet.prefixlen)
        b.up(ns, "eth0")
        b.forward(ns)
        if gw:
            b.sh(ns, f"ip route add default via {gw_ip}")
        b.sh(ns, f"ip link add flannel.1 address {node['vtep']} mtu 1450 type vxlan id 1 local {node['ip']} "
                 "dev eth0 dstport 8472 nolearning")
        b.ifaces.append((ns, "flannel.1"))
        b.sh(ns, f"ip addr add 10.244.{x}.0/32 dev flannel.1")
        b.up(ns, "flannel.1")
        b.sh(ns, "ip link add cni0 mtu 1450 type bridge")
        b.ifaces.append((ns, "cni0"))
        b.addr(ns, "cni0", f"10.244.{x}.1", 24)
        b.up(ns, "cni0")
        if masq:
            b.sh(ns, 'iptables -A FORWARD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
                 'iptables -A FORWARD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
                 'iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment '
                 '"flanneld masq" -j RETURN',
                 'iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment '
                 '"flanneld masq" -j MASQUERADE --random-fully')
        pnet = ipaddress.ip_network(f"10.244.{x}.0/24")
        for j in range(b.rng.randint(1, 2)):
            pod = f"{apps.pop()}-{ns[-1]}"
            host_if = f"veth{b.rng.getrandbits(32):08x}"
            ip = _host(pnet, 2 + j)
            b.netns(pod)
            b.veth(ns, host_if, pod, "eth0", mtu=pod_mtu)
            b.sh(ns, f"ip link set {host_if} master cni0")
            b.up(ns, host_if)
            b.sh(pod, "ip link set lo up")
            b.addr(pod, "eth0", ip, 24)
            b.up(pod, "eth0")
            b.sh(pod, f"ip route add default via 10.244.{x}.1")
            if b.chance(0.5):
                b.sh(pod, f"ip route add 10.244.0.0/16 via 10.244.{x}.1")
            b.neighbours.append((ns, "cni0", ip, Ref(pod, "eth0")))
            b.host_source(pod, (ns, host_if), pod, "eth0", ip, pnet, Ref(ns, "cni0"))
            b.target(pod, ip, pod)
            b.changes.append((ns, f"ip link set {host_if} down"))
        b.target(f"{ns} eth0", node["ip"], ns, serve=b.chance(0.3))
        b.target(f"unused pod address on {ns}", _host(pnet, 99), None)
    for node in nodes:
        ns = node["name"]
        for other in nodes:
            if other is node:
                continue
            x, vtep = other["x"], other["vtep"]
            b.sh(ns, f"ip neigh add 10.244.{x}.0 lladdr {vtep} dev flannel.1 nud permanent",
                 f"bridge fdb add {vtep} dev flannel.1 dst {other['ip']}",
                 f"ip route add 10.244.{x}.0/24 via 10.244.{x}.0 dev flannel.1 onlink")
            b.changes += [
                (ns, f"ip neigh del 10.244.{x}.0 dev flannel.1"),
                (ns, f"ip neigh replace 10.244.{x}.0 lladdr {vtep} dev flannel.1 nud permanent"),
                (ns, f"bridge fdb del {vtep} dev flannel.1 dst {other['ip']}"),
                (ns, f"bridge fdb replace {vtep} dev flannel.1 dst {other['ip']}"),
                (ns, f"ip route replace 10.244.{x}.0/24 via 10.244.{x}.0 dev flannel.1 onlink"),
            ]
        b.changes += [(ns, "ip link set flannel.1 down"), (ns, "ip neigh flush dev cni0")]
    if gw:
        b.netns("gateway")
        b.sh("gateway", "ip link set lo up")
        b.nic("gateway", "eth0", "underlay")
        b.addr("gateway", "eth0", gw_ip, unet.prefixlen)
        b.up("gateway", "eth0")
        if b.chance(0.6):
            for node in nodes:
                b.sh("gateway", f"ip route add 10.244.{node['x']}.0/24 via {node['ip']}")
        b.target("gateway", gw_ip, "gateway")
        node = b.pick(nodes)
        b.host_source("gateway", (node["name"], "eth0"), "gateway", "eth0", gw_ip, unet, Ref(node["name"], "eth0"))
    if b.chance(0.25):
        hop = b.pick(nodes)
        back = [(nd["name"], hop["ip"]) for nd in nodes if nd is not hop]
        b.client(hop["name"], f"172.16.{b.rng.randint(100, 199)}.0/24", back)
    b.target("no such node subnet", f"10.244.{b.pick([s for s in range(256) if s not in subnets])}.5", None)
    node = b.pick(nodes)
    b.changes.append((node["name"], f"iptables -I FORWARD 1 -d {b.pick(b.targets).ip} -j DROP"))


def fam_nat(b: Builder) -> None:
    """A NAT node: DNAT of a service address:port to a backend, MASQUERADE out, FORWARD filter rules."""
    nat = b.pick(["nat", "edge", "fw"])
    ext = "ext"
    pub_net = ipaddress.ip_network(b.pick(["203.0.113.0/24", "198.18.0.0/24"]))
    pub, ext_ip = _host(pub_net, 1), _host(pub_net, 10)
    b.netns(nat, ext)
    for ns in (nat, ext):
        b.sh(ns, "ip link set lo up")
    b.forward(nat)
    b.link_pair(nat, "eth0", pub, ext, "eth0", ext_ip, 24)
    inside = [("be1", "10.10.1.0/24")]
    if b.chance(0.5):
        inside.append(("be2", "10.10.2.0/24"))
    if b.chance(0.6):
        inside.append(("in1", "10.10.3.0/24"))
    for i, (h, net_text) in enumerate(inside, start=1):
        net = ipaddress.ip_network(net_text)
        b.netns(h)
        b.sh(h, "ip link set lo up")
        b.link_pair(nat, f"eth{i}", _host(net, 1), h, "eth0", _host(net, 10), 24)
        b.sh(h, f"ip route add default via {_host(net, 1)}")
        b.host_source(h, (nat, f"eth{i}"), h, "eth0", _host(net, 10), net, Ref(nat, f"eth{i}"))
        b.target(h, _host(net, 10), h)
        b.changes.append((nat, f"ip link set eth{i} down"))
    ext_default = b.chance(0.3)
    if ext_default:
        b.sh(ext, f"ip route add default via {pub}")
    b.host_source(ext, (nat, "eth0"), ext, "eth0", ext_ip, pub_net, Ref(nat, "eth0"))
    b.target(ext, ext_ip, ext)
    # services: DNAT to a backend's port
    vip = pub if b.chance(0.5) else f"10.96.{b.rng.randint(0, 255)}.{b.rng.randint(1, 254)}"
    if vip != pub and not ext_default:
        b.sh(ext, f"ip route add 10.96.0.0/12 via {pub}")
    backends = [h for h, _n in inside if h.startswith("be")]
    svc = Target("service", vip)
    for proto in ["udp"] + (["udp"] if b.chance(0.4) else []) + (["tcp"] if b.chance(0.4) else []):
        be = b.pick(backends)
        be_ip = _host(ipaddress.ip_network(dict(inside)[be]), 10)
        udp, tcp, sinks = b.serve(be)
        if proto == "udp":
            if not udp:
                continue
            port, svc_port = b.pick(udp), b.free_udp(nat) if vip == pub else b.pick(UDP_PORTS)
            if svc_port is None or svc_port in svc.udp:
                continue
            svc.udp.append(svc_port)
            if port in sinks:
                svc.sinks.append(svc_port)
                svc.ns = be
        else:
            port = b.pick(tcp) if tcp else b.pick(TCP_PORTS)
            svc_port = b.pick(TCP_PORTS)
            if svc_port in svc.tcp:
                continue
            svc.tcp.append(svc_port)
        b.sh(nat, f"iptables -t nat -A PREROUTING -d {vip}/32 -p {proto} --dport {svc_port} -m comment --comment "
                  f"\"svc {proto}/{svc_port}\" -j DNAT --to-destination {be_ip}:{port}")
        b.changes.append((nat, f"iptables -t nat -I PREROUTING 1 -d {vip}/32 -p {proto} --dport {svc_port} -j DNAT "
                               f"--to-destination {be_ip}:{b.pick(UDP_PORTS if proto == 'udp' else TCP_PORTS)}"))
    b.targets.append(svc)
    if b.chance(0.8):
        b.sh(nat, "iptables -t nat -A POSTROUTING -s 10.10.0.0/16 -o eth0 -j MASQUERADE")
    else:
        b.sh(nat, f"iptables -t nat -A POSTROUTING -s 10.10.0.0/16 -o eth0 -j SNAT --to-source {pub}")
    rules = [
        '-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "established" -j ACCEPT',
        '-A FORWARD -s 10.10.0.0/16 -o eth0 -m comment --comment "inside out" -j ACCEPT',
        '-A FORWARD -m conntrack --ctstate DNAT -m comment --comment "services" -j ACCEPT',
        '-A FORWARD -s 192.0.2.0/24 -m comment --comment "never" -j DROP',
        '-A FORWARD -p tcp --dport 23 -j REJECT --reject-with tcp-reset',
        f'-A FORWARD -d {ext_ip}/32 -p udp --dport 9 -j DROP',
        '-A FORWARD -i eth0 -d 10.10.3.0/24 -m comment --comment "no way in" -j DROP',
        '-A INPUT -p udp -m comment --comment "local services" -j ACCEPT',
    ]
    for rule in rules:
        if b.chance(0.6):
            b.sh(nat, f"iptables {rule}")
    if b.chance(0.3):
        b.sh(nat, "iptables -P FORWARD DROP")
    b.target(f"{nat} public", pub, nat, serve=b.chance(0.4))
    if b.chance(0.3):
        b.client(nat, f"198.51.100.{b.pick([0, 64, 128])}/26", [])
    b.changes += [(nat, "conntrack -F"), (nat, "iptables -I FORWARD 1 -p udp -j DROP"),
                  (nat, "iptables -t nat -F PREROUTING"), (nat, "ip neigh flush dev eth0")]


FAMILY_FUNCTIONS = {"veth": fam_veth, "bridge": fam_bridge, "routed": fam_routed, "flannel": fam_flannel,
                    "nat": fam_nat}


def _extras(b: Builder) -> None:
    """Random touches: MTU differences, static ARP entries, neighbour entries in other states."""
    if b.neighbours and b.chance(0.3):
        ns, dev, ip, ref = b.pick(b.neighbours)
        mac = ref if b.chance(0.8) else UNKNOWN_MAC  # sometimes a wrong static entry
        state = b.pick(["permanent", "permanent", "reachable", "stale", "noarp"])
        b.sh(ns, f"ip neigh replace {ip} lladdr {mac} dev {dev} nud {state}")
        b.changes.append((ns, f"ip neigh del {ip} dev {dev}"))
    if b.chance(0.2):
        ns, ifname = b.pick([x for x in b.ifaces if not x[0].startswith("src")])
        b.steps.append(("sh", ns, f"ip link set {ifname} mtu {b.pick([1280, 1400, 1450, 9000])}"))
    if b.forwarders and b.chance(0.2):
        b.sh(b.pick(b.forwarders), "ip route add blackhole 10.250.0.0/16 metric 100")


# --- traffic ------------------------------------------------------------------------------------------------------
def _dst_mac(b: Builder, src: Source, dst: str) -> Ref | str:
    if ipaddress.ip_address(dst) in src.net:
        return b.at.get(dst, UNKNOWN_MAC)
    return src.gw if src.gw is not None else UNKNOWN_MAC


def _sendable(src: Source, t: Target) -> bool:
    """A sender sends off its subnet only when it has a route (a gateway)."""
    return src.gw is not None or ipaddress.ip_address(t.ip) in src.net


def _flows(b: Builder) -> list[Flow]:
    rng = b.rng
    flows: list[Flow] = []
    for i in range(rng.randint(1, 6)):
        src = b.pick([s for s in b.sources if any(t.ip != s.ip and _sendable(s, t) for t in b.targets)])
        t = b.pick([t for t in b.targets if t.ip != src.ip and _sendable(src, t)])
        first = i == 0 and rng.random() < 0.9
        if first:  # mostly UDP to a sink somewhere else
            src, t = b.pick([(s, t) for s in b.sources for t in b.targets
                             if t.sinks and t.ns != s.home and t.ip != s.ip and _sendable(s, t)] or [(src, t)])
        kind = "udp" if first else rng.choices(["udp", "icmp", "tcp"], [65, 20, 15])[0]
        r = rng.random()
        size = rng.randint(0, 200) if r < 0.65 else rng.randint(200, 1000) if r < 0.85 else rng.randint(1000, 1472)
        ttl = 64 if first or rng.random() < 0.85 else rng.choice([1, 1, 2, 3])
        sport = rng.randint(32768, 60999)
        if kind == "udp":
            dport = b.pick(t.sinks) if first and t.sinks else \
                b.pick(t.udp) if t.udp and rng.random() < 0.8 else b.pick(CLOSED_PORTS)
            if src.home is not None and rng.random() < 0.4 and sport not in b.udp_ports.setdefault(src.home, set()):
                b.udp_ports[src.home].add(sport)
                b.steps.append(("sink", src.home, sport))  # replies have somewhere to go
        elif kind == "tcp":
            dport = b.pick(t.tcp) if t.tcp and rng.random() < 0.7 else b.pick(TCP_PORTS)
            size = min(size, 1460)
        else:
            sport, dport = rng.randint(1, 0xFFFF), rng.randint(1, 20)
        flows.append(Flow(kind, src.inject, src.mac, _dst_mac(b, src, t.ip), src.ip, t.ip, sport, dport, size, ttl,
                          f"{src.label} -> {t.label}"))
    return flows


def _between(b: Builder, downed: list[tuple[str, str]]) -> None:
    rng = b.rng
    if downed and rng.random() < 0.7:
        ns, line = downed.pop(0)
        b.steps.append(("change", ns, line))
    if rng.random() < 0.5:
        r = rng.random()
        b.steps.append(("pause", rng.uniform(0, 5) if r < 0.4 else rng.uniform(20, 45) if r < 0.75 else
                        rng.uniform(290, 400)))
    if rng.random() < 0.35:
        if b.changes and rng.random() < 0.7:
            ns, line = b.pick(b.changes)
        else:
            ns, ifname = b.pick([x for x in b.ifaces if not x[0].startswith("src")])
            line = b.pick([f"ip link set {ifname} down", f"ip neigh flush dev {ifname}",
                           "iptables -I INPUT 1 -p icmp -j ACCEPT"])
            ns = ns if not line.startswith("iptables") else b.pick(b.forwarders or [ns])
        b.steps.append(("change", ns, line))
        if " down" in line:
            downed.append((ns, line.replace(" down", " up")))
    if rng.random() < 0.1:
        ns, ifname = b.pick(b.ifaces)
        b.steps.append(("capture", ns, ifname))
    if rng.random() < 0.3:
        b.steps.append(("snap", f"after step {len(b.steps)}"))


def _traffic(b: Builder, flows: list[Flow]) -> None:
    rng = b.rng
    opened: set[int] = set()
    downed: list[tuple[str, str]] = []
    for burst in range(rng.randint(1, 4)):
        if burst:
            _between(b, downed)
        chosen = list(range(len(flows)))
        if len(flows) > 1 and rng.random() < 0.5:
            chosen = sorted(rng.sample(chosen, rng.randint(1, len(flows))))
            if burst == 0 and 0 not in chosen:
                chosen.insert(0, 0)
        groups: dict[tuple[str, str], list[int]] = {}
        for i in chosen:
            groups.setdefault(flows[i].inject, []).append(i)
        for inject, idxs in groups.items():
            # mostly 1 us .. 1 ms apart (frames overlap in flight); sometimes a trickle over tens of
            # virtual seconds, across ARP, conntrack and DELAY timers while the flow runs
            interval = 10 ** rng.uniform(-6, -3) if rng.random() < 0.9 else rng.uniform(0.2, 3.0)
            syn = [i for i in idxs if flows[i].kind == "tcp" and i not in opened]
            if syn:
                opened.update(syn)
                b.steps.append(("send", Send(inject, syn, "syn", len(syn), interval, 0.01, rng.randint(1, 0xFFFF))))
            if rng.random() < 0.4:
                b.steps.append(("send", Send(inject, idxs, "warm", len(idxs), 1e-3, 0.01, rng.randint(1, 0xFFFF))))
            per = rng.randint(1, 60) if rng.random() < 0.3 else rng.randint(1, 12)
            drain = 0.01 if rng.random() < 0.85 else 3.5  # long enough for unanswered ARP to fail
            b.steps.append(("send", Send(inject, idxs, "data", per * len(idxs), interval, drain,
                                         rng.randint(1, 0xFFFF))))
    b.steps.append(("pause", b.pick([0.0, 0.5, 6.0])))


def _captures(b: Builder) -> None:
    r = b.rng.random()
    if r < 0.3:
        return
    if r < 0.45:
        b.steps.insert(0, ("capture_all",))  # also covers the links made afterwards
    elif r < 0.65:
        b.steps.append(("capture_all",))
    else:
        for ns, ifname in b.rng.sample(b.ifaces, b.rng.randint(1, min(5, len(b.ifaces)))):
            b.steps.append(("capture", ns, ifname))


def make_plan(seed: int) -> Plan:
    """The random lab and traffic of `seed` (only `random.Random(seed)` is drawn from)."""
    rng = random.Random(seed)
    family = rng.choice(FAMILIES)
    b = Builder(rng)
    FAMILY_FUNCTIONS[family](b)
    _extras(b)
    _captures(b)
    b.steps.append(("snap", "built"))
    flows = _flows(b)
    _traffic(b, flows)
    b.steps.append(("snap", "end"))
    return Plan(seed, family, b.steps, flows)


# --- running a plan -------------------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _template(kind: str, phase: str, src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
              size: int, ttl: int) -> bytes:
    payload = bytes((i * 7 + sport) & 0xFF for i in range(size))
    if kind == "udp":
        return udp_frame(src_mac, dst_mac, src, dst, sport, dport, payload, ttl=ttl)
    if kind == "icmp":
        return icmp_frame(src_mac, dst_mac, src, dst, sport, dport, payload, ttl=ttl)
    if phase == "syn":
        return tcp_frame(src_mac, dst_mac, src, dst, sport, dport, "S", seq=1000, ttl=ttl)
    flags = "PA" if size else "A"
    return tcp_frame(src_mac, dst_mac, src, dst, sport, dport, flags, payload, seq=1001, ack=1, ttl=ttl)


def _with_ip_id(frame: bytes, ip_id: int) -> bytes:
    """The frame with another IPv4 identification and its header checksum recomputed (Scapy builds once)."""
    head = bytearray(frame[14:34])
    head[4:6] = ip_id.to_bytes(2, "big")
    head[10:12] = b"\0\0"
    total = sum(int.from_bytes(head[i:i + 2], "big") for i in range(0, 20, 2))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    head[10:12] = (~total & 0xFFFF).to_bytes(2, "big")
    return frame[:14] + bytes(head) + frame[34:]


def _mac_of(lab: Lab, ref: Ref | str) -> str:
    if isinstance(ref, str):
        return ref
    return lab[ref.ns].link(ref.ifname).mac_str


def _resolve(lab: Lab, line: str) -> str:
    return _MAC_TOKEN.sub(lambda m: lab[m[1]].link(m[2]).mac_str, line)


@dataclass
class Outcome:
    lab: Lab
    snapshots: list[tuple[str, dict[str, Any]]]
    log: list[str]  # what the mid-run changes answered


def _tcp_answer(data: bytes) -> bytes:
    return b"ok " + data[:8]


def execute(plan: Plan, *, fastpath: bool, pure_python: bool | None = None) -> Outcome:
    """Builds the plan's lab and runs its traffic; snapshots where the plan says."""
    # A third of the labs keep no trace: the fast path then runs vectors of frames stage by stage.
    lab = Lab(plan.seed, fastpath=fastpath, pure_python=pure_python, trace=plan.seed % 3 != 0)
    snaps: list[tuple[str, dict[str, Any]]] = []
    log: list[str] = []
    for step in plan.steps:
        op = step[0]
        if op == "netns":
            lab.netns(step[1])
        elif op in ("sh", "change"):
            line = _resolve(lab, step[2])
            res = lab[step[1]].run(line)
            if op == "sh" and res.rc != 0:
                raise AssertionError(f"seed {plan.seed}: {step[1]}$ {line}: rc {res.rc}: {res.stderr}")
            if op == "change":
                log.append(f"t={lab.clock.now!r} {step[1]}$ {line} -> rc {res.rc} {res.stdout}{res.stderr}")
        elif op == "nic":
            lab[step[1]].link_add(step[2], "nic", segment=step[3], mtu=step[4])
        elif op == "sink":
            lab[step[1]].stack.udp_sink(step[2])
        elif op == "echo":
            udp_echo(lab[step[1]], step[2])
        elif op == "listen":
            tcp_serve(lab[step[1]], step[2], _tcp_answer)
        elif op == "capture":
            if step[2] in lab[step[1]].links:
                lab.capture(step[1], step[2])
        elif op == "capture_all":
            lab.capture_all()
        elif op == "send":
            _send(lab, plan, step[1])
        elif op == "pause":
            lab.run(step[1])
        elif op == "snap":
            snaps.append((step[1], snapshot(lab)))
        else:  # pragma: no cover - a plan is made here
            raise ValueError(op)
    return Outcome(lab, snaps, log)


def _send(lab: Lab, plan: Plan, s: Send) -> None:
    ns, ifname = s.inject
    if ifname not in lab[ns].links:
        return
    frames = []
    for n, i in enumerate(s.flows):
        f = plan.flows[i]
        frame = _template(f.kind, s.phase, _mac_of(lab, f.src_mac), _mac_of(lab, f.dst_mac), f.src, f.dst, f.sport,
                          f.dport, f.size, f.ttl)
        frames.append(_with_ip_id(frame, (s.ip_id + 97 * n) & 0xFFFF))
    Generator(lab, ns, ifname, frames).send(s.count, interval=s.interval, drain=s.drain)


# --- what a user can observe ------------------------------------------------------------------------------------
def _sh(ns: Any, line: str) -> str:
    res = ns.run(line)
    return res.stdout + res.stderr + (f"[rc {res.rc}]\n" if res.rc else "")


def _record(r: Any) -> str:
    return f"{r.time!r} {r.direction} pid={r.pid} {r.frame.hex()} # " + " | ".join(r.comments)


def snapshot(lab: Lab) -> dict[str, Any]:
    """Everything observable, the most telling first: each capture point's records (time, direction,
    frame id, bytes, comments) and their order; each namespace's views through its shell (`ip -s -d
    link`, `ip addr`, `ip route show table all`, `ip neigh`, `bridge fdb`, `iptables-save -c` and
    `conntrack -L -o extended` where it has rules), its UDP sinks' counters, TCP sockets, neighbour
    and bridge FDB entries with their timestamps; the segments' FDBs; drops, frame ids, the clock;
    the pcapng file's bytes."""
    out: dict[str, Any] = {}
    now = lab.clock.now
    for cap in lab.captures.values():
        out[f"capture {cap.name}"] = [_record(r) for r in cap.records]
    out["capture order"] = [f"{r.ifname} {r.direction} pid={r.pid}" for r in lab.records()]
    for name in sorted(lab.namespaces):
        ns = lab.namespaces[name]
        for view in VIEWS:
            out[f"{name}$ {view}"] = _sh(ns, view)
        rules = _sh(ns, "iptables-save -c")
        if rules or ns.netfilter.enabled:
            out[f"{name}$ iptables-save -c"] = rules
            out[f"{name}$ conntrack -L -o extended"] = _sh(ns, "conntrack -L -o extended")
        sinks = {port: (h.packets, h.bytes) for port, h in sorted(ns.stack.udp_sockets.items())
                 if isinstance(h, lab.tables.UdpSink)}
        if sinks:
            out[f"{name} udp sinks (packets, bytes)"] = sinks
        tcp = ns.stack.tcp
        if tcp is not None:
            out[f"{name} tcp sockets"] = sorted(f"{k} {c.state} snd={c.snd_nxt} rcv={c.rcv_nxt} {c.error}"
                                                for k, c in tcp.conns.items())
        for link in ns.sorted_links():
            table = ns.neigh.tables.get(id(link))
            if table is not None:
                out[f"{name}/{link.ifname} neigh entries (ip, mac, state, updated)"] = sorted(table.items())
            if link.kind == "bridge":
                out[f"{name}/{link.ifname} fdb entries (mac, vlan, port, static, updated)"] = sorted(
                    link.fdb.entries(now))  # type: ignore[attr-defined]
    for name in sorted(lab.segments):
        out[f"segment {name} fdb entries (mac, vlan, port, static, updated)"] = sorted(
            lab.segments[name].fdb.entries(now))
    out["drops"] = dict(sorted(lab.trace.drops.items()))
    out["trace"] = lab.trace.render()  # every decision, in order, with its time (`emu trace` and pcap comments)
    out["frame ids"] = lab._pid
    out["clock"] = repr(now)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "all.pcapng")
        lab.write_pcap(path)
        with open(path, "rb") as f:
            out["pcapng"] = f.read()
    return out


def delivered(lab: Lab) -> int:
    """UDP datagrams the lab's sinks received."""
    return sum(h.packets for ns in lab.namespaces.values() for h in ns.stack.udp_sockets.values()
               if isinstance(h, lab.tables.UdpSink))


def first_difference(a: dict[str, Any], b: dict[str, Any], label: str = "",
                     names: tuple[str, str] = ("fast path off", "fast path on")) -> str | None:
    """A readable account of the first key whose values differ (None when the snapshots are equal)."""
    for key in list(a) + [k for k in b if k not in a]:
        if key not in a or key not in b:
            return f"{label}{key!r}: only in the snapshot with {names[1] if key not in a else names[0]}"
        x, y = a[key], b[key]
        if x == y:
            continue
        head = f"{label}{key!r} differs (-: {names[0]}, +: {names[1]})\n"
        if isinstance(x, bytes) and isinstance(y, bytes):
            at = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
            return head + f"lengths {len(x)} and {len(y)}; first difference at byte {at}: " \
                          f"{x[at:at + 32].hex()} vs {y[at:at + 32].hex()}"
        xs = x.splitlines() if isinstance(x, str) else [str(v) for v in x] if isinstance(x, list) else \
            [f"{k}: {v}" for k, v in x.items()] if isinstance(x, dict) else [repr(x)]
        ys = y.splitlines() if isinstance(y, str) else [str(v) for v in y] if isinstance(y, list) else \
            [f"{k}: {v}" for k, v in y.items()] if isinstance(y, dict) else [repr(y)]
        diff = [ln if len(ln) < 400 else ln[:400] + " ..." for ln in
                difflib.unified_diff(xs, ys, names[0], names[1], n=2, lineterm="")]
        return head + "\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else "")
    return None
