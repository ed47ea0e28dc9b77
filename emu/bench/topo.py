"""Forwarding workloads: 60-byte UDP frames through emulated topologies on the fast path.

`topo.veth|bridge|routed|flannel|dnat` build the same topology as the kernel baseline
(emu.bench.kernel.topology: the very same iproute2/bridge/iptables lines) and count frames
delivered to a UDP sink in the receiving pod. Frames enter where the sender pod's veth delivers
them (the sender's own socket and IP output are the kernel's work only). Each is measured in
batch mode (Generator.send: vectors of frames run stage by stage in C), frame by frame (in C, each
frame through all its steps before the next), and in batch mode with a pcap on the receiving pod's
host-side interface; against the kernel (root only, one pinned sender core), a Scapy-only loop doing
the same per-hop rewrites, and the emulator's own slow path (`--no-fastpath`). `path.svc` is one
node: a ClusterIP DNATed by conntrack to two
backends (kube-proxy's statistic rule), a 500k-route table, FDB and MAC rewrite, against a
pure-Python pipeline (struct + dict + pytricia).
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator

from emu.bench import kernel
from emu.bench.registry import Row, workload
from emu.net.addr import int2ip, ip2int
from emu.net.lab import Lab
from emu.net.route import Route
from emu.traffic import Generator, udp_frame

PAYLOAD = b"\0" * 18  # 14 + 20 + 8 + 18 = 60-byte frames
SPORT_BASE = 10000
INTERVAL = 1e-4  # virtual seconds between frames: every journey ends before the next frame starts


def build(topo: str, flows: int, *, pcap: bool = False, fastpath: bool = True) -> tuple[Lab, Generator, object]:
    """The emulated topology, a generator of `flows` UDP flows into it, and the receiving sink."""
    lab = Lab(seed=1, trace=False, fastpath=fastpath)
    names = {r: r for r in kernel.roles(topo)}
    plan = kernel.topology(topo, names)
    for role in kernel.roles(topo):
        lab.netns(role)
    for role, tool, lines in plan.steps:
        ns = lab[role]
        cmds = [("iptables-restore", "\n".join(lines) + "\n")] if tool == "iptables-restore" else [
            (f"sysctl -w {line}" if tool == "sysctl" else f"{tool} {line}", "") for line in lines]
        for cmd, stdin in cmds:
            res = ns.run(cmd, stdin)
            if res.rc:
                raise RuntimeError(f"{topo}: {role}: {cmd}: {res.stderr.strip()}")
    sink = lab[plan.receiver].stack.udp_sink(plan.port)
    if pcap:
        lab.capture(*plan.capture)
    sender = lab[plan.sender]
    out = sender.link("eth0")
    # The sender's next hop MAC, as its own ARP finds it.
    sender.run(f"ping -c 1 -W 1 {plan.dst}")
    r = sender.route_lookup(ip2int(plan.dst))
    hop = r.nexthop_gateway if r is not None and r.nexthop_gateway is not None else ip2int(plan.dst)
    entry = sender.neigh.get(out, hop)
    if entry is None or entry[0] < 0:
        raise RuntimeError(f"{topo}: the sender could not resolve {int2ip(hop)}")
    dst_mac = entry[0]
    frames = [udp_frame(out.mac, dst_mac, plan.src, plan.dst, SPORT_BASE + i, plan.dport, PAYLOAD)
              for i in range(flows)]
    peer = out.peer  # type: ignore[attr-defined]
    return lab, Generator(lab, peer.ns.name, peer.ifname, frames), sink


def _rate(g: Generator, sink: object, count: int, *, batch: bool = True, vector: bool = True) -> float:
    """Frames per second delivered at the sink (after a warm-up that compiles every flow's program)."""
    flows = len(g.templates)
    g.send(3 * flows + 20, interval=INTERVAL)
    before = sink.packets  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    g.send(count, interval=INTERVAL, batch=batch, vector=vector)
    dt = time.perf_counter() - t0
    got = sink.packets - before  # type: ignore[attr-defined]
    if got != count:
        raise RuntimeError(f"{got} of {count} frames delivered")
    return count / dt


# --- the Scapy-only baseline ----------------------------------------------------------------------------

def _scapy_hops(topo: str) -> list[str]:
    """The per-hop work of each topology, as a Scapy-only emulator would do it (parse, rewrite, bytes())."""
    return {
        "veth": ["deliver"],
        "bridge": ["l2", "deliver"],
        "routed": ["route", "deliver"],
        "flannel": ["l2", "route", "encap", "decap", "route", "l2", "deliver"],
        "dnat": ["l2", "dnat", "l2", "deliver"],
    }[topo]


def scapy_rate(topo: str, count: int) -> float:
    """Frames per second of a loop that carries each frame hop by hop with Scapy objects."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    frame = udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.244.1.2", "10.244.2.2", SPORT_BASE, 5001,
                      PAYLOAD)
    fdb = {"02:00:00:00:00:02": 2, "02:00:00:00:00:03": 3}
    hops = _scapy_hops(topo)
    delivered = 0
    t0 = time.perf_counter()
    for _ in range(count):
        buf = frame
        for hop in hops:
            p = Ether(buf)
            if hop == "l2":
                fdb.get(p.dst)
            elif hop == "route":
                p[IP].ttl -= 1
                del p[IP].chksum
                p.src, p.dst = p.dst, "02:00:00:00:00:03"
            elif hop == "dnat":
                p[IP].dst, p[UDP].dport = "10.244.1.3", 5353
                del p[IP].chksum
                del p[UDP].chksum
            elif hop == "encap":
                p = (Ether(src="0e:00:00:00:00:01", dst="0e:00:00:00:00:02") / IP(src="192.168.50.1",
                     dst="192.168.50.2") / UDP(sport=40000, dport=8472) / VXLAN(vni=1) / p)
            elif hop == "decap":
                p = p[VXLAN].payload
            elif hop == "deliver":
                delivered += len(bytes(p[UDP].payload)) > 0
                continue
            buf = bytes(p)
    dt = time.perf_counter() - t0
    assert delivered == count
    return count / dt


# --- workloads -----------------------------------------------------------------------------------------

def _topo_rows(topo: str, quick: bool) -> Iterator[Row]:
    count = 200_000 if quick else 1_000_000
    per_frame = count // 2
    why = kernel.available()
    scapy = scapy_rate(topo, 100 if quick else 500)
    for flows in (1, 1024):
        k = {pcap: (kernel.kernel_pps(topo, flows, pcap=pcap, packets=100_000 if quick else 200_000,
                                      seconds=0.5 if quick else 2.0) if why is None else None)
             for pcap in (False, True)}
        base = {pcap: (r.pps if r is not None else None) for pcap, r in k.items()}
        note = {pcap: (f"kernel skipped: {why}" if why else r.note if r is not None and r.pps is None else "")
                for pcap, r in k.items()}
        label = f"topo.{topo} {flows} flow{'s' if flows > 1 else ''}"
        lab, g, sink = build(topo, flows)
        batch = _rate(g, sink, count)
        yield Row(f"{label} batch", batch, "kernel, 1 core", base[False], "pps", note=note[False])
        yield Row(f"{label} frame-by-frame", _rate(g, sink, per_frame, vector=False), "kernel, 1 core", base[False],
                  "pps", note=note[False])
        lab, g, sink = build(topo, flows, pcap=True)
        yield Row(f"{label} batch +pcap", _rate(g, sink, count // 4), "kernel + tcpdump", base[True], "pps",
                  note=note[True])
        yield Row(f"{label} batch", batch, "Scapy-only loop", scapy, "pps")
        if flows == 1:
            lab, g, sink = build(topo, flows, fastpath=False)
            yield Row(f"{label} batch", batch, "emu slow path", _rate(g, sink, 2_000 if quick else 20_000), "pps")


def _register(topo: str) -> None:
    def run(quick: bool) -> Iterator[Row]:
        return _topo_rows(topo, quick)

    run.__name__ = f"topo_{topo}"
    workload(f"topo.{topo}")(run)


for _t in kernel.TOPOLOGIES:
    _register(_t)


# --- path.svc ----------------------------------------------------------------------------------------------

SVC_PLAN = [
    ("node", "sysctl -w net.ipv4.ip_forward=1"),
    ("node", "ip link add cni0 type bridge"), ("node", "ip addr add 10.244.1.1/24 dev cni0"),
    ("node", "ip link set cni0 up"),
    ("node", "ip link add vethc type veth peer name eth0 netns client"),
    ("node", "ip addr add 10.244.0.1/24 dev vethc"), ("node", "ip link set vethc up"),
    ("client", "ip addr add 10.244.0.2/24 dev eth0"), ("client", "ip link set eth0 up"),
    ("client", "ip route add default via 10.244.0.1"),
]


def build_svc(routes: int, *, fastpath: bool = True) -> tuple[Lab, list[tuple[int, int]]]:
    """One node: client -> 10.96.0.10:80 DNAT (two backends, kube-proxy's statistic rule) -> cni0 -> backend.
    The node's main table also holds `routes` random prefixes (outside 10/8). Returns the lab and the prefixes."""
    lab = Lab(seed=1, trace=False, fastpath=fastpath)
    for name in ("node", "client", "be1", "be2"):
        lab.netns(name)
    plan = list(SVC_PLAN)
    for i, be in ((2, "be1"), (3, "be2")):
        plan += [("node", f"ip link add veth{be} type veth peer name eth0 netns {be}"),
                 ("node", f"ip link set veth{be} master cni0"), ("node", f"ip link set veth{be} up"),
                 (be, f"ip addr add 10.244.1.{i}/24 dev eth0"), (be, "ip link set eth0 up")]
    for ns, cmd in plan:
        res = lab[ns].run(cmd)
        if res.rc:
            raise RuntimeError(f"path.svc: {ns}: {cmd}: {res.stderr.strip()}")
    rules = ("*nat\n:KUBE-SVC-X - [0:0]\n-A PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 80 -j KUBE-SVC-X\n"
             "-A KUBE-SVC-X -p udp -m statistic --mode random --probability 0.50000000000 -j DNAT "
             "--to-destination 10.244.1.2:8080\n-A KUBE-SVC-X -p udp -j DNAT --to-destination 10.244.1.3:8080\n"
             "COMMIT\n")
    res = lab["node"].run("iptables-restore", rules)
    if res.rc:
        raise RuntimeError(f"path.svc: iptables-restore: {res.stderr.strip()}")
    rng = random.Random(500)
    prefixes = set()
    fib = lab["node"].fib[254]
    while len(prefixes) < routes:
        plen = rng.choice((16, 20, 22, 24, 24, 24, 28, 32))
        dst = rng.getrandbits(32) & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        if dst >> 24 in (10, 127, 0) or dst >> 28 >= 14 or (dst, plen) in prefixes:
            continue
        prefixes.add((dst, plen))
        fib.insert(Route(dst, plen, type="blackhole", proto="static"))
    lab.bump()
    return lab, sorted(prefixes)


def svc_generator(lab: Lab, flows: int) -> Generator:
    client, node = lab["client"].link("eth0"), lab["node"].link("vethc")
    frames = [udp_frame(client.mac, node.mac, "10.244.0.2", "10.96.0.10", 1024 + i, 80, PAYLOAD)
              for i in range(flows)]
    return Generator(lab, "node", "vethc", frames)


def python_pipeline(prefixes: list[tuple[int, int]], frames: list[bytes], count: int) -> float:
    """The same per-frame work in plain Python: parse, conntrack dict, DNAT with checksum fix, LPM, FDB, MACs."""
    import pytricia

    pyt = pytricia.PyTricia(32)
    for dst, plen in prefixes:
        pyt.insert(struct.pack("!I", dst), plen, "blackhole")
    pyt.insert(bytes([10, 244, 1, 0]), 24, "cni0")
    ct = {}
    for i, f in enumerate(frames):
        ct[(f[26:30], f[30:34], 17, f[34:36], f[36:38])] = (bytes([10, 244, 1, 2 + i % 2]), struct.pack("!H", 8080))
    neigh = {bytes([10, 244, 1, 2]): b"\x02\0\0\0\0\x02", bytes([10, 244, 1, 3]): b"\x02\0\0\0\0\x03"}
    fdb = {b"\x02\0\0\0\0\x02": 2, b"\x02\0\0\0\0\x03": 3}
    out = 0
    n = len(frames)
    t0 = time.perf_counter()
    for i in range(count):
        f = bytearray(frames[i % n])
        key = (bytes(f[26:30]), bytes(f[30:34]), f[23], bytes(f[34:36]), bytes(f[36:38]))
        new_ip, new_port = ct[key]
        f[30:34], f[36:38] = new_ip, new_port
        f[22] -= 1
        f[24:26] = b"\0\0"
        s = sum(struct.unpack("!10H", f[14:34]))
        s = (s & 0xFFFF) + (s >> 16)
        f[24:26] = struct.pack("!H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF)
        f[40:42] = b"\0\0"  # the UDP checksum recomputed as "none"
        if pyt.get(bytes(f[30:34])) != "cni0":
            raise RuntimeError("route")
        mac = neigh[new_ip]
        f[0:6], f[6:12] = mac, b"\x02\0\0\0\0\x01"
        out += fdb[mac]
    return count / (time.perf_counter() - t0)


@workload("path.svc")
def path_svc(quick: bool) -> Iterator[Row]:
    routes = 500_000
    lab, prefixes = build_svc(routes)
    s1, s2 = lab["be1"].stack.udp_sink(8080), lab["be2"].stack.udp_sink(8080)
    for flows in ((1_000, 10_000) if quick else (1_000, 100_000)):
        g = svc_generator(lab, flows)
        g.send(3 * flows + 10, interval=INTERVAL)
        count = 200_000 if quick else 1_000_000
        before = s1.packets + s2.packets
        t0 = time.perf_counter()
        g.send(count, interval=INTERVAL)
        ours = count / (time.perf_counter() - t0)
        if s1.packets + s2.packets - before != count:
            raise RuntimeError("path.svc: frames lost")
        base = python_pipeline(prefixes, g.templates, min(count, 200_000))
        yield Row(f"path.svc {routes // 1000}k routes, {flows // 1000}k flows", ours, "Python struct+dict+pytricia",
                  base, "pps")

