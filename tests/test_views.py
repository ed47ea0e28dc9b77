"""Counters, bridge port flags, plain pcaps, and tunnels' frames as tshark decodes them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from emu.frames import ICMP, Ether
from emu.net import Lab
from tests.test_stack import two_hosts


def test_ip_s_link_counts_frames(make_lab) -> None:
    lab = make_lab()
    a, b = two_hosts(lab)
    a.run("ping -c 2 10.0.0.2")
    out = a.run("ip -s link show eth0").stdout.splitlines()
    c = a.link("eth0").counters
    assert c.tx_packets == 3 and c.rx_packets == 3  # ARP request + 2 echo requests; ARP reply + 2 replies
    assert out[2] == "    RX:  bytes packets errors dropped  missed   mcast           "
    assert out[3] == f"    {c.rx_bytes:>10} {3:>7} {0:>6} {0:>7} {0:>7} {0:>7} "
    assert out[5].split() == [str(c.tx_bytes), "3", "0", "0", "0", "0"]
    js = a.run("ip -s -j link show eth0").stdout
    assert f'"stats64":{{"rx":{{"bytes":{c.rx_bytes},"packets":3,' in js


def test_hairpin_port_sends_broadcasts_back(make_lab) -> None:
    lab = make_lab()
    sw, h = lab.netns("sw"), lab.netns("h")
    sw.run("ip link add br0 type bridge")
    sw.run("ip link set br0 up")
    h.run("ip link add eth0 type veth peer name p1 netns sw")
    sw.run("ip link set p1 master br0 up")
    h.run("ip link set eth0 up")
    h.run("ip addr add 10.0.0.5/24 dev eth0")
    assert sw.run("bridge link set dev p1 hairpin on").rc == 0
    assert "    hairpin on " in sw.run("bridge -d link").stdout
    lab.capture("h", "eth0")
    h.run("ping -c 1 -W 1 10.0.0.9")
    inbound = [Ether(r.frame) for r in lab.records({"h/eth0"}) if r.direction == "in"]
    # The pod's own ARP broadcasts come back to it through the hairpin port, as the kernel showed.
    assert inbound and all(p.src == h.link("eth0").mac_str for p in inbound)


def test_plain_per_interface_pcaps(tmp_path) -> None:
    lab = Lab(seed=2)
    a, b = two_hosts(lab)
    lab.capture("a", "eth0")
    lab.capture("b", "eth0")
    a.run("ping -c 1 10.0.0.2")
    counts = lab.write_pcaps(str(tmp_path))
    assert counts == {"a/eth0": 4, "b/eth0": 4}
    from scapy.utils import rdpcap

    frames = rdpcap(str(tmp_path / "a_eth0.pcap"))
    assert [p.haslayer(ICMP) for p in frames] == [False, False, True, True]


def _tunnel_lab(kind: str) -> Lab:
    lab = Lab(seed=4)
    for i in (1, 2):
        n = lab.netns(f"n{i}")
        n.link_add("eth0", "nic", segment="u")
        n.run("ip link set eth0 up")
        n.run(f"ip addr add 192.168.1.{i}/24 dev eth0")
        n.run("sysctl -w net.ipv4.ip_forward=1")
        if kind == "ipip":
            n.run("ip link add tunl0 type ipip")
            n.run("ip link set tunl0 up")
            n.run(f"ip addr add 10.10.{i}.1/32 dev tunl0")
        else:
            n.run(f"ip link add vxlan0 type vxlan id 42 local 192.168.1.{i} dev eth0 dstport 8472 nolearning")
            n.run("ip link set vxlan0 up")
            n.run(f"ip addr add 10.10.0.{i}/24 dev vxlan0")
            # Head-end replication: the all-zero MAC lists the other VTEP for broadcasts (ARP).
            n.run(f"bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst 192.168.1.{3 - i}")
    if kind == "ipip":
        lab["n1"].run("ip route add 10.10.2.0/24 via 192.168.1.2 dev tunl0 onlink")
        lab["n2"].run("ip route add 10.10.1.0/24 via 192.168.1.1 dev tunl0 onlink")
    lab.capture_all()
    return lab


def test_vxlan_default_destination_carries_arp_and_learns_nothing() -> None:
    lab = _tunnel_lab("vxlan")
    assert lab["n1"].run("ping -c 1 10.10.0.2").rc == 0
    assert "00:00:00:00:00:00 dev vxlan0 dst 192.168.1.2 self permanent" in lab["n1"].run("bridge fdb show").stdout
    # nolearning: the inner source MAC is not added as a remote.
    assert lab["n1"].run("bridge fdb show").stdout.count("dev vxlan0") == 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (.ci/run installs it)")
@pytest.mark.parametrize("kind", ["vxlan", "ipip"])
def test_tunnel_frames_decode_cleanly_in_tshark(kind: str, tmp_path) -> None:
    lab = _tunnel_lab(kind)
    dst = "10.10.0.2" if kind == "vxlan" else "10.10.2.1"
    assert lab["n1"].run(f"ping -c 2 {dst}").rc == 0
    path = tmp_path / f"{kind}.pcapng"
    n = lab.write_pcap(str(path))
    res = subprocess.run(["tshark", "-r", str(path), "-d", "udp.port==8472,vxlan", "-o", "ip.check_checksum:TRUE",
                          "-o", "udp.check_checksum:TRUE", "-T", "fields", "-e", "frame.protocols",
                          "-e", "_ws.expert.severity", "-e", "_ws.malformed"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [ln.split("\t") for ln in res.stdout.splitlines()]
    assert len(rows) == n
    inner = "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:icmp" if kind == "vxlan" else "eth:ethertype:ip:ip:icmp"
    assert any(r[0].startswith(inner) for r in rows), {r[0] for r in rows}
    for r in rows:
        assert not r[2] and "warn" not in r[1].lower() and "error" not in r[1].lower(), r
