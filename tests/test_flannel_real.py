"""Flannel's VXLAN data path against the real kernel.

The emulated side is a real control plane: `Cluster(lab, nodes=2)` (kubelets, the flannel CNI plugin
delegating to bridge + host-local, flanneld) and two pods, `a` on node1 and `b` on node2. The real
side is built by hand, in isolated `emut-` namespaces, exactly as flanneld and the bridge plugin
leave a node: flannel.1 (`type vxlan id 1 local NODE dev eth0 dstport 8472 nolearning`, MTU 1450,
the VTEP MAC flanneld chose, `10.244.x.0/32`), the permanent neighbour, FDB and onlink route for the
other node, cni0 with the gateway address, a veth to the pod namespace, the pod's routes. The two
nodes' eth0 are the two ends of a veth pair (the emulated ones sit on an underlay segment).

Compared: the node tables flanneld made (`ip route`, `ip neigh show dev flannel.1`, `bridge fdb show
dev flannel.1`) with the kernel's text for the same entries; the frames a cross-node ping puts on
node1's eth0 (ARP for the remote node, then VXLAN: outer and inner addresses, TTLs, DF, lengths,
UDP port 8472 and checksum, VXLAN flags and VNI, a source port in 32768-60999 equal in both
directions); and that the emulator's pcapng decodes in tshark as VXLAN with no expert warnings.
flanneld's iptables rules are also replayed into a real namespace: `iptables-save` must agree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

from emu.k8s.cluster import Cluster
from emu.k8s.flannel import restore_payload
from tests.linux import emu_lab, real_netns  # noqa: F401  (real_netns is a fixture)
from tests.test_linux_frames import _wait_listening

pytestmark = pytest.mark.linux

WARN = 0x00600000  # PI_WARN in epan/proto.h
FLANNEL_TABLES = ("ip route", "ip neigh show dev flannel.1", "bridge fdb show dev flannel.1",
                  "ip addr show dev flannel.1", "ip link show dev flannel.1")


def _ifindex(text: str) -> str:
    """Interface indexes are allocation order: `3: flannel.1:` -> `N: flannel.1:`."""
    return re.sub(r"^\d+: ", "N: ", text, flags=re.M)


def build_emulated(pure_python: bool):
    lab = emu_lab(pure_python)
    cluster = Cluster(lab, nodes=2)
    a = cluster.create_pod("a", node="node1", wait=True)
    b = cluster.create_pod("b", node="node2", wait=True)
    assert a.status.pod_ip and b.status.pod_ip
    return lab, cluster, a, b


def node_facts(cluster: Cluster, node: str, pod: str) -> dict:
    """What the real side needs to be the same node: addresses, VTEP MAC, names."""
    ns = cluster.node_ns(node)
    d = cluster.flannel(node)
    pod_obj = cluster.pod(pod)
    sb = cluster.nodes[node].kubelet.sandboxes[pod_obj.metadata.uid]
    host_veth = next(lk.ifname for lk in ns.sorted_links() if lk.ifname.startswith("veth"))
    return {"ip": cluster.nodes[node].ip, "subnet": d.lease.subnet, "vtep": ns.link("flannel.1").mac_str,
            "gw": json.loads(ns.files[f"/var/lib/cni/flannel/{sb.container_id}"])["ipam"]["ranges"][0][0]["subnet"],
            "pod_ip": pod_obj.status.pod_ip, "host_veth": host_veth}


def real_setup(me: dict, other: dict, pod_ns: str, peer_node: str | None) -> tuple[list[str], list[str]]:
    """The command lines that leave a real node (and its pod) as flanneld and the bridge plugin do."""
    net = me["subnet"].split("/")[0]
    gw = net.rsplit(".", 1)[0] + ".1"
    onet = other["subnet"].split("/")[0]
    node = []
    if peer_node is not None:
        node.append(f"ip link add eth0 type veth peer name eth0 netns {peer_node}")
    node += [
        f"ip addr add {me['ip']}/24 dev eth0", "ip link set eth0 up", "ip link set lo up",
        "sysctl -qw net.ipv4.ip_forward=1",
        f"ip link add flannel.1 address {me['vtep']} mtu 1450 type vxlan id 1 local {me['ip']} dev eth0 "
        "dstport 8472 nolearning",
        f"ip addr add {net}/32 dev flannel.1", "ip link set flannel.1 up",
        f"ip neigh replace {onet} lladdr {other['vtep']} dev flannel.1 nud permanent",
        f"bridge fdb replace {other['vtep']} dev flannel.1 dst {other['ip']} self permanent",
        f"ip route replace {other['subnet']} via {onet} dev flannel.1 onlink",
        "ip link add cni0 mtu 1450 type bridge", f"ip addr add {gw}/24 dev cni0", "ip link set cni0 up",
        f"ip link add {me['host_veth']} mtu 1450 type veth peer name eth0 netns {pod_ns}",
        f"ip link set {me['host_veth']} master cni0", f"bridge link set dev {me['host_veth']} hairpin on",
        f"ip link set {me['host_veth']} up",
    ]
    pod = [f"ip addr add {me['pod_ip']}/24 dev eth0", "ip link set eth0 up", "ip link set lo up",
           f"ip route add default via {gw} dev eth0", f"ip route add 10.244.0.0/16 via {gw} dev eth0"]
    return node, pod


def _run_all(ns, cmds: list[str]) -> None:
    for cmd in cmds:
        rc, _out, err = ns.run(cmd)
        assert rc == 0, f"{ns.label}: {cmd}: {err}"


def frame_features(pkts, owners: dict[str, str]) -> list[dict]:
    """Comparable features of each frame (IPv6, IGMP and multicast other than broadcast left out)."""
    out = []
    for p in pkts:
        raw = bytes(p)
        eth = p[Ether]
        dst = eth.dst.lower()
        if eth.type == 0x86DD or (int(dst[:2], 16) & 1 and dst != "ff:ff:ff:ff:ff:ff") or (IP in p and p[IP].proto == 2):
            continue

        def who(mac: str) -> str:
            mac = mac.lower()
            return "broadcast" if mac == "ff:ff:ff:ff:ff:ff" else owners.get(mac, mac)

        f = {"len": len(raw), "src": who(eth.src), "dst": who(dst), "type": hex(eth.type)}
        if ARP in p:
            a = p[ARP]
            f.update(arp_op=a.op, psrc=a.psrc, pdst=a.pdst, hwsrc=who(a.hwsrc), hwdst=who(a.hwdst))
        elif IP in p:
            ip = p[IP]
            f.update(ip_src=ip.src, ip_dst=ip.dst, ttl=ip.ttl, df=bool(int(ip.flags) & 2), ip_len=ip.len,
                     proto=ip.proto)
            if UDP in p:
                u = p[UDP]
                vx = VXLAN(bytes(u.payload))
                inner = vx.payload
                f.update(dport=u.dport, sport_in_range=32768 <= u.sport <= 60999, udp_len=u.len,
                         udp_csum_set=u.chksum != 0, vxlan_flags=int(vx.flags), vni=vx.vni,
                         inner_src=who(inner.src), inner_dst=who(inner.dst), inner_ip_src=inner[IP].src,
                         inner_ip_dst=inner[IP].dst, inner_ttl=inner[IP].ttl,
                         inner_df=bool(int(inner[IP].flags) & 2), inner_len=inner[IP].len,
                         icmp_type=inner[ICMP].type, icmp_seq=inner[ICMP].seq)
                f["_sport"] = u.sport
        out.append(f)
    return out


def _sports_symmetric(frames: list[dict]) -> bool:
    sports = {f.pop("_sport") for f in frames if "_sport" in f}
    return len(sports) == 1


@pytest.mark.parametrize("pure_python", [False, True], ids=["cython", "pure"])
def test_vxlan_frames_match_the_kernel(real_netns, tmp_path, pure_python):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not found")
    lab, cluster, a, b = build_emulated(pure_python)
    n1f, n2f = node_facts(cluster, "node1", "a"), node_facts(cluster, "node2", "b")

    n1, n2, p1, p2 = (real_netns(x) for x in ("node1", "node2", "a", "b"))
    node1_cmds, pod1_cmds = real_setup(n1f, n2f, p1.name, n2.name)
    node2_cmds, pod2_cmds = real_setup(n2f, n1f, p2.name, None)
    _run_all(n1, node1_cmds[:1])  # the underlay cable first: node2's commands need its eth0
    _run_all(n2, node2_cmds)
    _run_all(n1, node1_cmds[1:])
    _run_all(p1, pod1_cmds)
    _run_all(p2, pod2_cmds)

    # The tables flanneld made are the kernel's tables for the same entries.
    for cmd in FLANNEL_TABLES:
        for real, node in ((n1, "node1"), (n2, "node2")):
            rc, out, err = real.run(cmd)
            emu = cluster.node_ns(node).run(cmd)
            assert (rc, _ifindex(out), err) == (emu.rc, _ifindex(emu.stdout), emu.stderr), f"{node}: {cmd}"

    time.sleep(1.2)  # cni0's IGMP reports stay on the bridge, but let the links settle
    path = tmp_path / "real-node1-eth0.pcap"
    proc = n1.popen(["tcpdump", "-i", "eth0", "-w", str(path), "-U", "--immediate-mode", "-n", "-Z", "root",
                     "-c", "20"], stdout=subprocess.DEVNULL)
    _wait_listening(proc, time.monotonic() + 10)
    rc, out, err = p1.run(f"ping -c 2 -W 1 {n2f['pod_ip']}")
    assert rc == 0, out + err
    assert "ttl=62" in out
    time.sleep(0.3)
    proc.terminate()
    proc.wait(timeout=10)

    lab.capture("node1", "eth0")
    res = cluster.pod_ns("a").run(f"ping -c 2 -W 1 {b.status.pod_ip}")
    assert res.rc == 0 and "ttl=62" in res.stdout
    emu_path = tmp_path / "emu-node1-eth0.pcapng"
    lab.write_pcap(str(emu_path), names={"node1/eth0"})

    owners = {n1f["vtep"]: "node1/flannel.1", n2f["vtep"]: "node2/flannel.1"}
    for side, nodes in (("real", (n1, n2)), ("emu", (cluster.node_ns("node1"), cluster.node_ns("node2")))):
        for label, ns in zip(("node1", "node2"), nodes, strict=True):
            rc, out, _ = ns.run("ip -j link show eth0") if side == "real" else (0, ns.run("ip -j link show eth0").stdout,
                                                                                  "")
            owners[json.loads(out)[0]["address"]] = f"{label}/eth0"
    real = frame_features(rdpcap(str(path)), owners)
    emu = frame_features(rdpcap(str(emu_path)), owners)
    assert _sports_symmetric(real), "the kernel's VXLAN source port differs between the directions"
    assert _sports_symmetric(emu), "the emulator's VXLAN source port differs between the directions"
    kinds = [(f.get("arp_op"), f.get("icmp_type")) for f in real]
    assert kinds == [(1, None), (2, None), (None, 8), (None, 0), (None, 8), (None, 0)], kinds
    assert real == emu, "\n".join(["kernel:"] + [str(f) for f in real] + ["emulator:"] + [str(f) for f in emu])


def test_emulated_pcapng_decodes_in_tshark(tmp_path):
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark not found")
    lab, cluster, a, b = build_emulated(False)
    lab.capture_all()
    res = cluster.pod_ns("a").run(f"ping -c 2 {b.status.pod_ip}")
    assert res.rc == 0
    path = tmp_path / "flannel.pcapng"
    assert lab.write_pcap(str(path)) > 0
    out = subprocess.run([tshark, "-r", str(path), "-d", "udp.port==8472,vxlan", "-o", "ip.check_checksum:TRUE",
                          "-o", "udp.check_checksum:TRUE", "-T", "fields", "-e", "frame.number",
                          "-e", "_ws.expert.severity", "-e", "_ws.malformed"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [ln.split("\t") for ln in out.stdout.splitlines()]
    assert len(rows) >= 8
    for number, severity, malformed in rows:
        assert not malformed, f"frame {number} is malformed"
        # expert severities: comment 0x100000 (our per-frame comments), chat, note; warn is 0x600000
        assert all(int(v, 0) < WARN for v in severity.split(",") if v), f"frame {number}: severity {severity}"
    proto = subprocess.run([tshark, "-r", str(path), "-d", "udp.port==8472,vxlan", "-Y", "vxlan", "-T", "fields",
                            "-e", "vxlan.vni", "-e", "udp.dstport", "-e", "ip.src"],
                           capture_output=True, text=True, timeout=60)
    rows = {tuple(ln.split("\t")) for ln in proto.stdout.splitlines() if ln}
    assert ("1", "8472", "192.168.1.1,10.244.0.2") in rows, rows


def test_flannel_iptables_rules_match_the_kernel(real_netns):
    if shutil.which("iptables-restore") is None:
        pytest.skip("iptables-restore not found")
    lab = emu_lab(False)
    cluster = Cluster(lab, nodes=2)
    d = cluster.flannel("node2")
    real = real_netns("node2")
    for table, chain, rules in (("nat", "FLANNEL-POSTRTG", d.masq_rules()),
                                ("filter", "FLANNEL-FWD", d.forward_rules())):
        rc, _, err = real.run(f"iptables -t {table} -N {chain}")
        assert rc == 0, err
        proc = subprocess.run(real.argv("iptables-restore --noflush"), input=restore_payload(table, rules),
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 0, proc.stderr

    def strip(text: str) -> str:
        return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#"))

    rc, out, err = real.run("iptables-save")
    assert rc == 0, err
    assert strip(out) == strip(cluster.node_ns("node2").run("iptables-save").stdout)
    for cmd in ("iptables -t nat -S FLANNEL-POSTRTG", "iptables -S FLANNEL-FWD", "iptables -t nat -L -n"):
        rc, out, err = real.run(cmd)
        emu = cluster.node_ns("node2").run(cmd)
        assert (rc, out, err) == (emu.rc, emu.stdout, emu.stderr), cmd
