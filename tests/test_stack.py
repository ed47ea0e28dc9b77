"""Kernel semantics of the emulated stack: ARP states, routing, forwarding, ICMP, MTU, tunnels, sockets."""

from __future__ import annotations

import struct

from emu.apps.sockets import tcp_request, tcp_serve, udp_echo, udp_request
from emu.frames import ICMP, IP, UDP, Ether
from emu.net import Lab
from emu.trace import Drop


def two_hosts(lab: Lab, mtu: int | None = None) -> tuple:
    a, b = lab.netns("a"), lab.netns("b")
    a.run("ip link add eth0 type veth peer name eth0 netns b")
    for ns, ip in ((a, "10.0.0.1/24"), (b, "10.0.0.2/24")):
        ns.run("ip link set lo up")
        ns.run("ip link set eth0 up")
        ns.run(f"ip addr add {ip} dev eth0")
    return a, b


def routed(lab: Lab, *, r_mtu: int = 1500) -> tuple:
    """h1 -- r -- h2 on two veth pairs, like the kernel tests build."""
    h1, r, h2 = lab.netns("h1"), lab.netns("r"), lab.netns("h2")
    h1.run("ip link add eth0 type veth peer name eth0 netns r")
    h2.run("ip link add eth0 type veth peer name eth1 netns r")
    for ns, dev, ip in ((h1, "eth0", "10.0.1.10/24"), (r, "eth0", "10.0.1.1/24"), (r, "eth1", "10.0.2.1/24"),
                        (h2, "eth0", "10.0.2.10/24")):
        ns.run(f"ip link set {dev} up")
        ns.run(f"ip addr add {ip} dev {dev}")
    r.run(f"ip link set eth1 mtu {r_mtu}")
    r.run("sysctl -w net.ipv4.ip_forward=1")
    h1.run("ip route add default via 10.0.1.1")
    h2.run("ip route add default via 10.0.2.1")
    return h1, r, h2


def frames_at(lab: Lab, name: str) -> list:
    return [(r.direction, Ether(r.frame)) for r in lab.records({name})]


def test_same_subnet_ping_is_arp_then_icmp(make_lab) -> None:
    lab = make_lab()
    a, b = two_hosts(lab)
    lab.capture("a", "eth0")
    res = a.run("ping -c 1 10.0.0.2")
    assert res.rc == 0 and "1 received" in res.stdout and "ttl=64" in res.stdout
    seq = frames_at(lab, "a/eth0")
    kinds = [("arp", p["ARP"].op) if p.haslayer("ARP") else ("icmp", p[ICMP].type) for _, p in seq]
    assert kinds == [("arp", 1), ("arp", 2), ("icmp", 8), ("icmp", 0)]
    req, reply = seq[2][1], seq[3][1]
    assert req[IP].ttl == 64 and req[IP].flags.DF and req[IP].len == 84
    assert reply[IP].ttl == 64 and not reply[IP].flags.DF  # kernel echo replies clear DF
    assert a.run("ip neigh").stdout.endswith("REACHABLE \n")


def test_routed_ping_decrements_ttl_and_arp_tables_fill(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab)
    res = h1.run("ping -c 2 10.0.2.10")
    assert "ttl=63" in res.stdout and "2 received" in res.stdout
    assert "10.0.1.1 " in h1.run("arp -n").stdout
    assert "10.0.2.10" not in h1.run("arp -n").stdout
    arp_r = r.run("arp -n").stdout
    assert "10.0.1.10" in arp_r and "10.0.2.10" in arp_r
    line = [ln for ln in h1.run("route -n").stdout.splitlines() if ln.startswith("0.0.0.0")][0]
    assert line.split()[:4] == ["0.0.0.0", "10.0.1.1", "0.0.0.0", "UG"]


def test_unanswered_arp_three_probes_then_failed(make_lab) -> None:
    lab = make_lab()
    a, _ = two_hosts(lab)
    lab.capture("a", "eth0")
    res = a.run("ping -c 1 10.0.0.99")
    assert res.rc == 1
    assert "From 10.0.0.1 icmp_seq=1 Destination Host Unreachable" in res.stdout
    probes = [r for r in lab.records({"a/eth0"}) if Ether(r.frame).haslayer("ARP")]
    assert len(probes) == 3
    assert [round(p.time - probes[0].time, 6) for p in probes] == [0.0, 1.0, 2.0]
    assert "10.0.0.99 dev eth0 FAILED" in a.run("ip neigh").stdout


def test_stale_entry_goes_delay_then_unicast_probe(make_lab) -> None:
    lab = make_lab()
    a, b = two_hosts(lab)
    lab.capture("b", "eth0")
    a.run("ping -c 1 10.0.0.2")
    # b learned a from its request (STALE); replying moved it to DELAY; 5 s later b probes by unicast.
    lab.run(6)
    arps = [Ether(r.frame) for r in lab.records({"b/eth0"}) if Ether(r.frame).haslayer("ARP")]
    probe = [p for p in arps if p["ARP"].op == 1 and p.src == b.link("eth0").mac_str]
    assert probe and probe[0].dst == a.link("eth0").mac_str  # unicast, not broadcast
    assert "REACHABLE" in b.run("ip neigh").stdout


def test_reject_routes_answer_like_the_kernel(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab)
    r.run("ip route add unreachable 10.9.0.0/16")
    r.run("ip route add prohibit 10.8.0.0/16")
    r.run("ip route add blackhole 10.7.0.0/16")
    assert "Destination Host Unreachable" in h1.run("ping -c 1 -W 1 10.9.0.1").stdout
    assert "Packet filtered" in h1.run("ping -c 1 -W 1 10.8.0.1").stdout
    out = h1.run("ping -c 1 -W 1 10.7.0.1").stdout
    assert "From" not in out and "100% packet loss" in out
    assert "Destination Net Unreachable" in h1.run("ping -c 1 -W 1 10.6.0.1").stdout
    assert lab.trace.drops[Drop.BLACKHOLE.value] == 1


def test_ttl_expiry_and_traceroute(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab)
    assert "From 10.0.1.1 icmp_seq=1 Time to live exceeded" in h1.run("ping -c 1 -t 1 10.0.2.10").stdout
    out = h1.run("traceroute -n 10.0.2.10").stdout.splitlines()
    assert out[0] == "traceroute to 10.0.2.10 (10.0.2.10), 30 hops max, 60 byte packets"
    assert out[1].startswith(" 1  10.0.1.1  ") and out[2].startswith(" 2  10.0.2.10  ")
    assert len(out) == 3


def test_df_packet_too_big_gets_frag_needed_with_next_hop_mtu(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab, r_mtu=1400)
    lab.capture("h1", "eth0")
    out = h1.run("ping -c 1 -s 1450 10.0.2.10").stdout
    assert "Frag needed and DF set (mtu = 1400)" in out
    err = [Ether(x.frame) for x in lab.records({"h1/eth0"}) if x.direction == "in"
           and Ether(x.frame).haslayer(ICMP) and Ether(x.frame)[ICMP].type == 3]
    assert err[0][ICMP].code == 4 and err[0][ICMP].nexthopmtu == 1400
    assert err[0][IP].tos == 0xC0  # icmp_send's precedence for errors


def test_without_df_forwarded_packets_are_fragmented_and_reassembled(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab, r_mtu=1000)
    got: list[bytes] = []
    h2.stack.udp_bind(5000, lambda s, sp, d, dp, data, pid: got.append(data))
    lab.capture("h2", "eth0")
    payload = bytes(range(256)) * 10
    h1.stack.udp_send(h2.link("eth0").addrs[0].local, 5000, payload, sport=4000, df=False)
    lab.settle()
    assert got == [payload]
    frags = [Ether(x.frame)[IP] for x in lab.records({"h2/eth0"}) if Ether(x.frame).haslayer(IP)]
    # h1 fragments for its 1500-byte link, r fragments each piece again for 1000: four pieces.
    assert all(len(f) <= 1000 for f in frags)
    assert [f.frag * 8 for f in frags] == [0, 976, 1480, 2456]
    assert [bool(f.flags.MF) for f in frags] == [True, True, True, False]


def test_udp_and_tcp_request_response(make_lab) -> None:
    lab = make_lab()
    a, b = two_hosts(lab)
    udp_echo(b, 7, bytes.upper)
    assert udp_request(a, "10.0.0.2", 7, b"ping") == b"PING"
    assert udp_request(a, "10.0.0.2", 8, b"x", timeout=1) is None
    assert lab.trace.drops[Drop.NO_LISTENER.value] == 1
    tcp_serve(b, 80, lambda req: b"200 " + req)
    assert tcp_request(a, "10.0.0.2", 80, b"GET /") == (b"200 GET /", None)
    assert tcp_request(a, "10.0.0.2", 81, b"x") == (b"", "Connection refused")


def test_proxy_arp_answers_for_routes_via_another_device(make_lab) -> None:
    """Calico's trick: the pod's gateway 169.254.1.1 exists nowhere; the host answers with its veth MAC."""
    lab = make_lab()
    pod, node = lab.netns("pod"), lab.netns("node")
    pod.run("ip link add eth0 type veth peer name cali1234 netns node")
    pod.run("ip link set eth0 up")
    pod.run("ip addr add 10.244.1.5/32 dev eth0")
    pod.run("ip route add 169.254.1.1 dev eth0 scope link")
    pod.run("ip route add default via 169.254.1.1 dev eth0")
    node.run("ip link set cali1234 address ee:ee:ee:ee:ee:ee")
    node.run("ip link set cali1234 up")
    node.run("ip link add eth0 type veth peer name up0")
    node.run("ip link set eth0 up")
    node.run("ip addr add 192.168.0.10/24 dev eth0")
    node.run("ip route add default via 192.168.0.1")
    node.run("ip route add 10.244.1.5 dev cali1234 scope link")
    node.run("sysctl -w net.ipv4.conf.cali1234.proxy_arp=1")
    node.run("sysctl -w net.ipv4.ip_forward=1")
    res = pod.run("ping -c 1 192.168.0.10")
    assert res.rc == 0, res.stdout
    assert "169.254.1.1 dev eth0 lladdr ee:ee:ee:ee:ee:ee REACHABLE" in pod.run("ip neigh").stdout
    # The node's ARP for the pod came from its main address: cali1234 has none.
    assert "10.244.1.5 dev cali1234 lladdr" in node.run("ip neigh").stdout


def test_bridge_learns_floods_and_ages(make_lab) -> None:
    lab = make_lab()
    sw = lab.netns("sw")
    sw.run("ip link add br0 type bridge")
    sw.run("ip link set br0 up")
    hosts = []
    for i in (1, 2, 3):
        h = lab.netns(f"h{i}")
        h.run(f"ip link add eth0 type veth peer name p{i} netns sw")
        sw.run(f"ip link set p{i} master br0 up")
        h.run("ip link set eth0 up")
        h.run(f"ip addr add 10.0.0.{i}/24 dev eth0")
        hosts.append(h)
    lab.capture("sw", "p3")
    assert hosts[0].run("ping -c 1 10.0.0.2").rc == 0
    fdb = sw.run("bridge fdb show").stdout
    assert f"{hosts[0].link('eth0').mac_str} dev p1 master br0 \n" in fdb
    assert f"{hosts[1].link('eth0').mac_str} dev p2 master br0 \n" in fdb
    # p3 saw the broadcast ARP request only: known unicast is not flooded.
    seen = [Ether(r.frame) for r in lab.records({"sw/p3"})]
    assert len(seen) == 1 and seen[0].dst == "ff:ff:ff:ff:ff:ff"
    lab.run(299)  # the last frame through the bridge was b's unicast ARP probe at t=5 s
    assert "dev p1 master br0 \n" in sw.run("bridge fdb show").stdout
    lab.run(10)
    assert "master br0 \n" not in sw.run("bridge fdb show").stdout  # aged out 300 s after last seen


def test_link_down_flushes_routes_and_drops(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab)
    r.run("ip link set eth1 down")
    assert "10.0.2.0/24" not in r.run("ip route").stdout
    assert r.run("ip route get 10.0.2.10").stderr == "RTNETLINK answers: Network is unreachable\n"
    r.run("ip link set eth1 up")
    assert "10.0.2.0/24 dev eth1 proto kernel scope link src 10.0.2.1 \n" in r.run("ip route").stdout


def test_vxlan_overlay_like_flannel(make_lab) -> None:
    """flannel.1 built by hand on two nodes of one underlay: the outer frame is what the kernel sends."""
    lab = make_lab()
    nodes = []
    for i in (1, 2):
        n = lab.netns(f"node{i}")
        n.link_add("eth0", "nic", segment="underlay")
        n.run("ip link set eth0 up")
        n.run(f"ip addr add 192.168.1.{i}/24 dev eth0")
        n.run(f"ip link add flannel.1 type vxlan id 1 local 192.168.1.{i} dev eth0 dstport 8472 nolearning")
        n.run("ip link set flannel.1 up")
        n.run(f"ip addr add 10.244.{i}.0/32 dev flannel.1")
        n.run("sysctl -w net.ipv4.ip_forward=1")
        nodes.append(n)
    for i, n in enumerate(nodes, 1):
        j = 3 - i
        peer = nodes[j - 1]
        mac = peer.link("flannel.1").mac_str
        n.run(f"ip neigh add 10.244.{j}.0 lladdr {mac} dev flannel.1 nud permanent")
        n.run(f"bridge fdb append {mac} dev flannel.1 dst 192.168.1.{j}")
        n.run(f"ip route add 10.244.{j}.0/24 via 10.244.{j}.0 dev flannel.1 onlink")
    assert nodes[0].link("flannel.1").mtu == 1450
    lab.capture("node1", "eth0")
    res = nodes[0].run("ping -c 1 10.244.2.0")
    assert res.rc == 0, res.stdout
    outer = [(r.direction, Ether(r.frame)) for r in lab.records({"node1/eth0"}) if Ether(r.frame).haslayer(UDP)]
    assert len(outer) == 2
    (d1, req), (d2, rep) = outer
    assert (d1, d2) == ("out", "in")
    for p in (req, rep):
        assert p[UDP].dport == 8472 and p[IP].ttl == 64 and not p[IP].flags.DF and p[UDP].chksum != 0
        assert 32768 <= p[UDP].sport <= 60999
        assert len(p[IP]) == len(p["VXLAN"].payload) + 50 - 14
        assert p["VXLAN"].vni == 1 and p["VXLAN"].flags == 0x08
    assert req[UDP].sport == rep[UDP].sport  # the flow hash is symmetric
    inner = req["VXLAN"].payload
    assert inner.src == nodes[0].link("flannel.1").mac_str and inner.dst == nodes[1].link("flannel.1").mac_str
    assert "lladdr" in nodes[0].run("ip neigh show").stdout


def test_ipip_encapsulates_with_protocol_4(make_lab) -> None:
    lab = make_lab()
    nodes = []
    for i in (1, 2):
        n = lab.netns(f"n{i}")
        n.link_add("eth0", "nic", segment="u")
        n.run("ip link set eth0 up")
        n.run(f"ip addr add 192.168.1.{i}/24 dev eth0")
        n.run("ip link add tunl0 type ipip")
        n.run("ip link set tunl0 up")
        n.run(f"ip addr add 10.10.{i}.1/32 dev tunl0")
        n.run("sysctl -w net.ipv4.ip_forward=1")
        nodes.append(n)
    nodes[0].run("ip route add 10.10.2.0/24 via 192.168.1.2 dev tunl0 onlink")
    nodes[1].run("ip route add 10.10.1.0/24 via 192.168.1.1 dev tunl0 onlink")
    lab.capture("n1", "eth0")
    assert nodes[0].run("ping -c 1 10.10.2.1").rc == 0
    outs = [Ether(r.frame) for r in lab.records({"n1/eth0"}) if Ether(r.frame).haslayer(IP)]
    assert outs[0][IP].proto == 4 and outs[0][IP].dst == "192.168.1.2" and outs[0][IP].flags.DF
    assert outs[0][IP].payload[IP].dst == "10.10.2.1" and len(outs[0][IP]) == 20 + 84


def test_same_seed_same_trace_and_errors_name_the_namespace() -> None:
    import pytest

    from emu.net.errors import NetError

    lab = Lab(seed=3)
    ns = lab.netns("node1")
    with pytest.raises(NetError) as exc:
        ns.route_add("10.244.2.0/24", via="10.244.9.1")
    assert str(exc.value) == "netns node1: route add 10.244.2.0/24: Error: Nexthop has invalid gateway."


def test_checksums_of_generated_frames_are_valid(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab)
    lab.capture_all()
    h1.run("ping -c 1 10.0.2.10")
    h1.run("traceroute -n -q 1 10.0.2.10")
    for rec in lab.records():
        p = Ether(rec.frame)
        if p.haslayer(IP):
            raw = bytes(p[IP])
            assert struct.unpack("!H", raw[10:12])[0] == IP(bytes(p[IP].copy().__class__(raw))).chksum
            rebuilt = IP(raw)
            del rebuilt.chksum
            assert IP(bytes(rebuilt)).chksum == p[IP].chksum
            if p.haslayer(UDP) and p[UDP].chksum:
                u = p[IP].copy()
                del u[UDP].chksum
                assert IP(bytes(u))[UDP].chksum == p[UDP].chksum
            if p.haslayer(ICMP):
                c = p[IP].copy()
                del c[ICMP].chksum
                assert IP(bytes(c))[ICMP].chksum == p[ICMP].chksum


def test_trace_follows_one_frame_hop_by_hop(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab)
    h1.run("ping -c 1 10.0.2.10")  # resolve neighbours first
    pid = h1.stack.udp_send(h2.link("eth0").addrs[0].local, 9, b"hi", sport=4000)  # nobody listens on 9
    lab.settle()
    steps = [(d.netns, d.ifname, d.point) for d in lab.decisions(pid)]
    assert steps[0] == ("h1", "eth0", "route")
    assert ("r", "eth0", "forward") in steps and ("r", "eth1", "route") in steps
    last = lab.decisions(pid)[-1]
    assert (last.netns, last.point, last.drop) == ("h2", "drop", Drop.NO_LISTENER)
    text = lab.trace_text(pid)
    assert "route 10.0.2.0/24 dev eth1" in text and "forward: ttl 64 -> 63" in text
    assert text.splitlines()[-1].endswith("[drop: NO_LISTENER]")


def test_rp_filter_drops_a_source_routed_back_elsewhere(make_lab) -> None:
    lab = make_lab()
    h1, r, h2 = routed(lab)
    # h2 pretends to be on h1's subnet: the reverse route to 10.0.1.99 leaves by eth0, not eth1.
    h2.run("ip addr add 10.0.1.99/32 dev eth0")
    got: list[bytes] = []
    h1.stack.udp_bind(7, lambda s, sp, d, dp, data, pid: got.append(data))
    send = lambda: h2.stack.udp_send(0x0A00010A, 7, b"spoof", sport=9, src=0x0A000163)  # noqa: E731
    send()
    lab.settle()
    assert got == [b"spoof"]  # rp_filter off (the default here): forwarded
    r.run("sysctl -w net.ipv4.conf.all.rp_filter=1")
    send()
    lab.settle()
    assert got == [b"spoof"] and lab.trace.drops[Drop.RP_FILTER.value] == 1
