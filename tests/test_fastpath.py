"""The flow cache: programs compiled from the slow path, their invalidation, and the equality it must keep.

Every test runs the same lab and traffic with the fast path off and on and compares everything a
user can see (tests.randlab.snapshot: `ip -s link`, routes, neighbours, FDBs, conntrack, iptables
counters, sinks, drops, pcap bytes), and checks that the fast path really carried frames.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emu import fastpath
from emu.net.lab import Lab
from emu.traffic import Generator, tcp_frame, udp_frame
from tests.randlab import first_difference, snapshot


def _ok(ns, line: str) -> None:  # noqa: ANN001
    r = ns.run(line)
    assert r.rc == 0, f"{ns.name}: {line}: {r.stderr}"


def routed(lab: Lab, *, two_ways: bool = False) -> Generator:
    """a -- r -- b, and with two_ways a second path r -- r2 -- b for 10.0.2.0/24."""
    for name in ("a", "r", "b"):
        lab.netns(name)
    _ok(lab["a"], "ip link add eth0 type veth peer name e0 netns r")
    _ok(lab["b"], "ip link add eth0 type veth peer name e1 netns r")
    cfg = [("a", "eth0", "10.0.1.2/24"), ("b", "eth0", "10.0.2.2/24"), ("r", "e0", "10.0.1.1/24"),
           ("r", "e1", "10.0.2.1/24")]
    if two_ways:
        lab.netns("r2")
        _ok(lab["r"], "ip link add e2 type veth peer name e0 netns r2")
        _ok(lab["b"], "ip link add eth1 type veth peer name e1 netns r2")
        cfg += [("r", "e2", "10.0.3.1/24"), ("r2", "e0", "10.0.3.2/24"), ("r2", "e1", "10.0.4.1/24"),
                ("b", "eth1", "10.0.4.2/24")]
        _ok(lab["r2"], "sysctl -w net.ipv4.ip_forward=1")
    for ns, dev, cidr in cfg:
        _ok(lab[ns], f"ip addr add {cidr} dev {dev}")
        _ok(lab[ns], f"ip link set {dev} up")
    _ok(lab["a"], "ip route add default via 10.0.1.1")
    _ok(lab["b"], "ip route add default via 10.0.2.1")
    _ok(lab["r"], "sysctl -w net.ipv4.ip_forward=1")
    if two_ways:
        _ok(lab["r2"], "ip route add 10.0.1.0/24 via 10.0.3.1")
    lab["b"].stack.udp_sink(9)
    lab.capture_all()
    frames = [udp_frame(lab["a"].link("eth0").mac, lab["r"].link("e0").mac, "10.0.1.2", "10.0.2.2", 4000 + i, 9,
                        b"hello") for i in range(3)]
    return Generator(lab, "r", "e0", frames)


def both(scenario: Callable[[Lab], None], seed: int = 7) -> tuple[Lab, Lab]:
    """Runs `scenario` on a slow-path lab and a fast-path lab; asserts they end the same."""
    labs = []
    snaps = []
    for fast in (False, True):
        lab = Lab(seed, fastpath=fast)
        scenario(lab)
        labs.append(lab)
        snaps.append(snapshot(lab))
    diff = first_difference(snaps[0], snaps[1])
    assert diff is None, diff
    assert labs[1].flows is not None and labs[1].flows.hits > 0, "the fast path carried no frame"
    return labs[0], labs[1]


def test_steady_flow_runs_in_the_cache_and_matches_the_slow_path() -> None:
    def sc(lab: Lab) -> None:
        routed(lab).send(300)

    slow, fast = both(sc)
    assert slow.flows is None
    st = fast.flows.stats()  # type: ignore[union-attr]
    assert st["hits"] >= 290 and st["programs"] >= 3
    assert fast["b"].stack.udp_sockets[9].packets == 300


def test_route_change_mid_flow() -> None:
    def sc(lab: Lab) -> None:
        g = routed(lab, two_ways=True)
        g.send(100)
        _ok(lab["r"], "ip route replace 10.0.2.0/24 via 10.0.3.2 dev e2")
        _ok(lab["r2"], "ip route add 10.0.2.0/24 dev e1")
        _ok(lab["b"], "ip route add 10.0.1.0/24 via 10.0.4.1")
        g.send(100)

    _, fast = both(sc)
    assert fast["r2"].link("e0").counters.rx_packets >= 100  # the frames after the change took r2
    assert fast["b"].stack.udp_sockets[9].packets == 200


def test_arp_entry_goes_stale_and_is_probed_again() -> None:
    def sc(lab: Lab) -> None:
        routed(lab).send(600, interval=0.2)  # two virtual minutes: REACHABLE -> STALE -> DELAY -> PROBE

    _, fast = both(sc)
    probes = [r for r in fast.records({"r/e1"}) if r.frame[12:14] == b"\x08\x06" and r.frame[0] != 0xFF]
    assert probes, "no unicast ARP probe: the entry never went through DELAY/PROBE"
    assert fast.flows.hits > 500  # type: ignore[union-attr]


def test_conntrack_expiry_between_bursts() -> None:
    def sc(lab: Lab) -> None:
        g = routed(lab)
        _ok(lab["r"], "iptables -t nat -A POSTROUTING -o e1 -j MASQUERADE")
        g.send(50)
        lab.run(45)  # UDP entries without a reply live 30 s
        g.send(50)

    _, fast = both(sc)
    lines = fast["r"].run("conntrack -L").stdout.splitlines()
    assert len(lines) == 3 and all("dst=10.0.2.1 sport=9" in line for line in lines)


def test_link_down_and_up_mid_flow() -> None:
    def sc(lab: Lab) -> None:
        g = routed(lab)
        g.send(60)
        _ok(lab["r"], "ip link set e1 down")
        g.send(30)
        _ok(lab["r"], "ip link set e1 up")
        g.send(60)

    _, fast = both(sc)
    assert fast["b"].stack.udp_sockets[9].packets == 120
    assert fast.trace.drops


def test_fdb_entry_moves_to_another_port() -> None:
    def sc(lab: Lab) -> None:
        node = lab.netns("node")
        _ok(node, "ip link add br0 type bridge")
        _ok(node, "ip link set br0 up")
        for i in range(3):
            p = lab.netns(f"p{i}")
            _ok(p, f"ip link add eth0 type veth peer name v{i} netns node")
            _ok(p, f"ip addr add 10.1.0.{10 + i}/24 dev eth0")
            _ok(p, "ip link set eth0 up")
            _ok(node, f"ip link set v{i} master br0")
            _ok(node, f"ip link set v{i} up")
        lab.capture_all()
        lab["p1"].stack.udp_sink(9)
        mac0, mac1 = lab["p0"].link("eth0").mac, lab["p1"].link("eth0").mac
        to_p1 = Generator(lab, "node", "v0", [udp_frame(mac0, mac1, "10.1.0.10", "10.1.0.11", 5, 9, b"x")])
        back = Generator(lab, "node", "v1", [udp_frame(mac1, mac0, "10.1.0.11", "10.1.0.10", 9, 5, b"y")])
        moved = Generator(lab, "node", "v2", [udp_frame(mac1, mac0, "10.1.0.11", "10.1.0.10", 9, 5, b"z")])
        back.send(1)
        to_p1.send(50)
        moved.send(1)  # p1's MAC now shows up behind v2
        to_p1.send(50)

    _, fast = both(sc)
    assert fast["node"].link("v2").counters.tx_packets >= 50
    assert "v2" in fast["node"].run("bridge fdb show br br0").stdout


def test_tcp_segments_through_a_dnat_router_hand_off_to_the_receiving_stack() -> None:
    def sc(lab: Lab) -> None:
        routed(lab)
        _ok(lab["r"], "iptables -t nat -A PREROUTING -d 10.96.0.10 -p tcp --dport 80 -j DNAT "
                      "--to-destination 10.0.2.2:8080")
        _ok(lab["r"], "iptables -A FORWARD -p tcp -m comment --comment web -j ACCEPT")
        a_mac, r_mac = lab["a"].link("eth0").mac, lab["r"].link("e0").mac
        syn = Generator(lab, "r", "e0", [tcp_frame(a_mac, r_mac, "10.0.1.2", "10.96.0.10", 3333, 80, "S")])
        syn.send(1)
        ack = Generator(lab, "r", "e0", [tcp_frame(a_mac, r_mac, "10.0.1.2", "10.96.0.10", 3333, 80, "A")])
        ack.send(40, interval=0.001)

    _, fast = both(sc)
    rule = [line for line in fast["r"].run("iptables-save -c").stdout.splitlines() if "web" in line][0]
    assert int(rule[1:rule.index(":")]) >= 41  # the SYN and every ACK (and the receiver's RSTs)


@pytest.mark.parametrize("pure", [False, True], ids=["cython", "python"])
def test_switch_turns_the_cache_off_and_on(pure: bool) -> None:
    lab = Lab(3, pure_python=pure)
    g = routed(lab)
    lab.use_fastpath = False
    g.send(20)
    assert lab.flows is None
    lab.use_fastpath = True
    g.send(20)
    assert lab.flows is not None and lab.flows.hits > 0


@pytest.mark.parametrize("topo", ["bridge", "flannel", "dnat"])
def test_vectors_end_like_frame_at_a_time_and_the_slow_path(topo: str) -> None:
    """The benchmark topologies, 64 flows: staged vectors, frame at a time and the slow path agree."""
    from emu.bench.topo import build

    snaps = []
    for fast, vector in ((False, False), (True, False), (True, True)):
        lab, g, sink = build(topo, 64, fastpath=fast)
        g.send(3000, interval=2e-4, vector=vector)
        assert sink.packets == 3000  # type: ignore[attr-defined]
        snaps.append(snapshot(lab))
        if fast:
            assert lab.flows.hits > 2500  # type: ignore[union-attr]
            if vector and fastpath.EXTENSION_LOADED:
                assert lab.flows.exec.staged > 2000  # type: ignore[union-attr]
    for other in snaps[1:]:
        diff = first_difference(snaps[0], other)
        assert diff is None, diff


def test_a_program_whose_dry_run_differs_from_the_slow_path_is_not_installed() -> None:
    """The check every new program passes: replayed on its own frame, it must give the slow path's bytes."""
    lab = Lab(5)
    g = routed(lab)
    flows = lab.flows
    real = flows.exec

    class Tampered:
        """The executor, except that its dry runs see one byte flipped (as a wrong step would)."""

        staged = 0

        def compile(self, ops):  # noqa: ANN001, ANN201
            return real.compile(ops)

        def dry_run(self, prog, frame):  # noqa: ANN001, ANN201
            seen = real.dry_run(prog, frame)
            return [seen[0][:-1] + bytes([seen[0][-1] ^ 1])] + seen[1:]

        def run(self, *a):  # noqa: ANN002, ANN201
            return real.run(*a)

        def send(self, *a):  # noqa: ANN002, ANN201
            return real.send(*a)

    flows.exec = Tampered()
    g.send(50)
    assert flows.hits == 0 and not flows.programs
    assert flows.rejected.get("dry run differs from the slow path", 0) > 0
    assert lab["b"].stack.udp_sockets[9].packets == 50
