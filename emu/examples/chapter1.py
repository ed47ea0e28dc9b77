"""Chapter 1 of the study notes: PCs on two switches, a router between the subnets.

pc1 and pc2 share switch sw1 (10.0.1.0/24): L2 switching, TTL stays 64. pc3 is behind
switch sw2 (10.0.2.0/24): pc1 reaches it through r1, its default gateway (L3, TTL 63).
Each switch is a namespace with a Linux bridge, so `bridge fdb show` there is its MAC table.
"""

from __future__ import annotations

from collections.abc import Callable

from emu.net import Lab
from emu.net.errors import NetError

# Each entry: namespace, command line. The same lines build the lab in real namespaces.
SETUP: list[tuple[str, str]] = [
    ("sw1", "ip link add br0 type bridge"),
    ("sw1", "ip link set br0 up"),
    ("sw2", "ip link add br0 type bridge"),
    ("sw2", "ip link set br0 up"),
    ("pc1", "ip link add eth0 type veth peer name pc1 netns sw1"),
    ("pc2", "ip link add eth0 type veth peer name pc2 netns sw1"),
    ("r1", "ip link add eth0 type veth peer name r1 netns sw1"),
    ("r1", "ip link add eth1 type veth peer name r1 netns sw2"),
    ("pc3", "ip link add eth0 type veth peer name pc3 netns sw2"),
    ("sw1", "ip link set pc1 master br0 up"),
    ("sw1", "ip link set pc2 master br0 up"),
    ("sw1", "ip link set r1 master br0 up"),
    ("sw2", "ip link set r1 master br0 up"),
    ("sw2", "ip link set pc3 master br0 up"),
    ("pc1", "ip addr add 10.0.1.10/24 dev eth0"),
    ("pc2", "ip addr add 10.0.1.11/24 dev eth0"),
    ("pc3", "ip addr add 10.0.2.10/24 dev eth0"),
    ("r1", "ip addr add 10.0.1.1/24 dev eth0"),
    ("r1", "ip addr add 10.0.2.1/24 dev eth1"),
    ("r1", "sysctl -w net.ipv4.ip_forward=1"),
    ("r1", "ip link set eth0 up"),
    ("r1", "ip link set eth1 up"),
    ("pc1", "ip link set eth0 up"),
    ("pc2", "ip link set eth0 up"),
    ("pc3", "ip link set eth0 up"),
    ("pc1", "ip route add default via 10.0.1.1"),
    ("pc2", "ip route add default via 10.0.1.1"),
    ("pc3", "ip route add default via 10.0.2.1"),
]

# What the chapter does, in order: look at the tables, ping within and across subnets, look again.
STEPS: list[tuple[str, str, str]] = [
    ("pc1", "route -n", "the PC's routing table: 0.0.0.0/0.0.0.0 is the default route, gateway 0.0.0.0 on-link"),
    ("pc1", "arp -n", "the ARP table starts empty"),
    ("pc1", "ping -c 2 10.0.1.11", "L2: same subnet, the switch forwards by MAC, TTL stays 64"),
    ("pc1", "ping -c 2 10.0.2.10", "L3: another subnet, via the default gateway r1, TTL 63"),
    ("pc1", "arp -n", "pc1 learned pc2 and its gateway, never pc3 (it is behind the router)"),
    ("r1", "arp -n", "the router learned a host on each side"),
    ("r1", "route -n", "the router's connected routes"),
    ("sw1", "bridge fdb show br br0", "the switch's MAC table: MAC -> port"),
    ("pc1", "traceroute -n 10.0.2.10", "each router on the way answers with ICMP time exceeded"),
    ("pc1", "ip route get 10.0.2.10", "the route the kernel picks"),
]


def build(seed: int = 0, *, pure_python: bool | None = None) -> Lab:
    lab = Lab(seed=seed, pure_python=pure_python)
    for name in ("sw1", "sw2", "r1", "pc1", "pc2", "pc3"):
        lab.netns(name).run("ip link set lo up")
    for ns, line in SETUP:
        res = lab[ns].run(line)
        if res.rc:
            raise NetError(f"{ns}: {line}: {res.stderr.strip()}")
    lab.capture_all()
    return lab


def run(lab: Lab, out: Callable[[str], None] = print) -> bool:
    """Runs the steps, printing each command as a reader would type it and what it printed."""
    ok = True
    for ns, line, why in STEPS:
        out(f"# {why}")
        out(f"{ns}$ {line}")
        res = lab[ns].run(line)
        text = (res.stdout + res.stderr).rstrip("\n")
        if text:
            out(text)
        out("")
        ok = ok and res.rc == 0
    return ok
