"""NAT is exact: every translated packet is well formed and every reply finds its way back.

A router `r` masquerades (or SNATs, second variant) three inside hosts toward a provider router
`r2`, and DNATs its public address 203.0.113.1 to an inside server `srv`:

    h1 10.0.1.11 --eth1\\                          /eth1-- s 198.51.100.10  (outside server)
    h2 10.0.2.12 --eth2-- r --eth0 203.0.113.0/24 -- r2
    srv 10.0.3.20 -eth3/                            \\eth2-- c 192.0.2.10    (outside client)

`r2` knows nothing of the inside networks, so a reply only gets back if NAT rewrote its flow.
Everything runs on both table implementations (`make_lab`), on the virtual clock, captured at
every interface. Checked:

* seeded random flows (UDP, TCP, ICMP echo; outbound through SNAT/MASQUERADE and inbound through
  DNAT): every frame anywhere has valid IP, TCP, UDP and ICMP checksums (Scapy: delete the field,
  rebuild, compare), the server sees the translated tuple, and the client sees its replies
  come from the address and port it contacted, to its own address and port;
* a source port (and an ICMP echo id) that two inside hosts both use toward the same server: the
  second flow gets another public port, as `conntrack -L` shows, and both get their replies;
* ICMP errors about NATed flows (time exceeded from beyond the router, port unreachable from the
  outside server, port unreachable from behind a DNAT) come back translated: the outer
  destination is the inside host (or the outer source the public address) and the quoted packet
  is the one the host sent, checksums included;
* conntrack states and timeouts as the flows progress, and expiry on the virtual clock.
"""

from __future__ import annotations

import random
import re
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror

from emu.apps.ping import Pinger
from emu.apps.sockets import tcp_serve, udp_echo
from emu.net import tcp
from emu.net.addr import ip2int

HOSTS = ["h1", "h2", "srv", "r", "r2", "s", "c"]
ADDR = {"h1": "10.0.1.11", "h2": "10.0.2.12", "srv": "10.0.3.20", "s": "198.51.100.10", "c": "192.0.2.10"}
PUBLIC = "203.0.113.1"
R2 = "203.0.113.2"
IFACE = {"h1": "eth0", "h2": "eth0", "srv": "eth0", "s": "eth0", "c": "eth0"}

SETUP = [
    ("h1", "ip link add eth0 type veth peer name eth1 netns r"),
    ("h2", "ip link add eth0 type veth peer name eth2 netns r"),
    ("srv", "ip link add eth0 type veth peer name eth3 netns r"),
    ("r", "ip link add eth0 type veth peer name eth0 netns r2"),
    ("s", "ip link add eth0 type veth peer name eth1 netns r2"),
    ("c", "ip link add eth0 type veth peer name eth2 netns r2"),
    ("h1", "ip addr add 10.0.1.11/24 dev eth0"),
    ("r", "ip addr add 10.0.1.1/24 dev eth1"),
    ("h2", "ip addr add 10.0.2.12/24 dev eth0"),
    ("r", "ip addr add 10.0.2.1/24 dev eth2"),
    ("srv", "ip addr add 10.0.3.20/24 dev eth0"),
    ("r", "ip addr add 10.0.3.1/24 dev eth3"),
    ("r", "ip addr add 203.0.113.1/24 dev eth0"),
    ("r2", "ip addr add 203.0.113.2/24 dev eth0"),
    ("s", "ip addr add 198.51.100.10/24 dev eth0"),
    ("r2", "ip addr add 198.51.100.1/24 dev eth1"),
    ("c", "ip addr add 192.0.2.10/24 dev eth0"),
    ("r2", "ip addr add 192.0.2.1/24 dev eth2"),
]
for _h, _devs in {"h1": ["eth0"], "h2": ["eth0"], "srv": ["eth0"], "s": ["eth0"], "c": ["eth0"],
                  "r": ["eth0", "eth1", "eth2", "eth3"], "r2": ["eth0", "eth1", "eth2"]}.items():
    SETUP += [(_h, f"ip link set {d} up") for d in ["lo", *_devs]]
SETUP += [
    ("h1", "ip route add default via 10.0.1.1"),
    ("h2", "ip route add default via 10.0.2.1"),
    ("srv", "ip route add default via 10.0.3.1"),
    ("r", "ip route add default via 203.0.113.2"),
    ("s", "ip route add default via 198.51.100.1"),
    ("c", "ip route add default via 192.0.2.1"),
    ("r", "sysctl -w net.ipv4.ip_forward=1"),
    ("r2", "sysctl -w net.ipv4.ip_forward=1"),
]

SOURCE_NAT = {
    "masquerade": "-A POSTROUTING -o eth0 -j MASQUERADE",
    "snat": "-A POSTROUTING -o eth0 -j SNAT --to-source 203.0.113.1",
}


def rules(variant: str) -> str:
    return f"""\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 203.0.113.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.3.20:80
-A PREROUTING -d 203.0.113.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.0.3.20:53
-A PREROUTING -d 203.0.113.1/32 -p icmp -m icmp --icmp-type 8 -j DNAT --to-destination 10.0.3.20
{SOURCE_NAT[variant]}
COMMIT
"""


@pytest.fixture(params=list(SOURCE_NAT))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


class Net:
    """The lab, its namespaces, and helpers to run flows and read what was captured."""

    def __init__(self, make_lab, variant: str, seed: int = 1, servers: bool = True) -> None:  # noqa: ANN001
        self.lab = make_lab(seed)
        self.ns = {h: self.lab.netns(h) for h in HOSTS}
        for who, cmd in SETUP:
            res = self.ns[who].run(cmd)
            assert res.rc == 0, f"[{who}] {cmd}: {res.stderr}"
        res = self.ns["r"].run("iptables-restore", stdin=rules(variant))
        assert res.rc == 0, res.stderr
        if servers:
            for h in ("s", "srv"):
                udp_echo(self.ns[h], 53, lambda b, h=h: h.encode() + b":" + b[::-1])
                tcp_serve(self.ns[h], 80, lambda b, h=h: h.encode() + b":" + b[::-1])
        self.lab.capture_all()

    def mark(self) -> int:
        return len(self.lab.records())

    def since(self, start: int, where: str | None = None) -> list:
        recs = self.lab.records()[start:]
        return [r for r in recs if where is None or r.ifname == where]

    def conntrack(self, host: str = "r", *args: str) -> list[str]:
        res = self.ns[host].run(" ".join(["conntrack -L", *args]))
        assert res.rc == 0, res.stderr
        return res.stdout.splitlines()

    # --- clients ---------------------------------------------------------------------
    def udp(self, host: str, dst: str, dport: int, sport: int, data: bytes, *, ttl: int | None = None,
            timeout: float = 2.0) -> bytes | None:
        ns = self.ns[host]
        got: list[bytes] = []
        ns.stack.udp_bind(sport, lambda s, sp, d, dp, payload, pid: got.append(payload))
        try:
            ns.stack.udp_send(ip2int(dst), dport, data, sport=sport, ttl=ttl)
            self.lab.clock.run_while(lambda: not got, timeout)
        finally:
            ns.stack.udp_close(sport)
        return got[0] if got else None

    def tcp_connect(self, host: str, dst: str, dport: int, sport: int, timeout: float = 5.0) -> tcp.Conn:
        layer = tcp.layer(self.ns[host])
        c = layer.connect(ip2int(dst), dport, sport)
        self.lab.clock.run_while(lambda: c.state == "SYN_SENT", timeout)
        return c

    def tcp_finish(self, host: str, c: tcp.Conn, data: bytes, timeout: float = 5.0) -> bytes:
        layer = tcp.layer(self.ns[host])
        layer.send(c, data)
        self.lab.clock.run_while(lambda: not c.closed_by_peer and c.state != "CLOSED", timeout)
        layer.close(c)
        self.lab.clock.run_while(lambda: c.state not in ("CLOSED", "TIME_WAIT"), timeout)
        self.lab.run(0.05)  # the last ACK reaches the far end
        return bytes(c.received)

    def tcp(self, host: str, dst: str, dport: int, sport: int, data: bytes) -> bytes | None:
        c = self.tcp_connect(host, dst, dport, sport)
        if c.state != "ESTABLISHED":
            return None
        return self.tcp_finish(host, c, data)

    def ping(self, host: str, dst: str, ident: int, size: int = 56) -> bool:
        ns = self.ns[host]
        p = Pinger(ns, ip2int(dst), size=size, ident=ident)
        ns.stack.icmp_handlers.append(p)
        try:
            p.send(1)
            self.lab.clock.run_while(lambda: not p.done, 2.0)
        finally:
            ns.stack.icmp_handlers.remove(p)
        return p.result.received == 1


# --- packets ---------------------------------------------------------------------------------

def ip_of(rec) -> bytes | None:  # noqa: ANN001
    f = rec.frame
    if len(f) < 34 or f[12:14] != b"\x08\x00":
        return None
    total = struct.unpack_from("!H", f, 16)[0]
    return bytes(f[14:14 + total])


def checksum_problems(pkt: bytes) -> list[str]:
    """Each checksum field alone: delete it, let Scapy rebuild, compare (quoted headers too)."""
    probs = []
    layers: list[type] = [IP, TCP, UDP, ICMP, IPerror]
    base = IP(pkt)
    if IPerror in base and len(bytes(base[IPerror])) >= base[IPerror].len:
        layers += [UDPerror, TCPerror]  # the whole datagram is quoted: its L4 checksum too
    for layer in layers:
        p = IP(pkt)
        if layer not in p:
            continue
        target = p if layer is IP else p[layer]
        if layer in (UDP, UDPerror) and target.chksum == 0:
            continue
        original = target.chksum
        del target.chksum
        rebuilt = IP(bytes(p))
        again = rebuilt.chksum if layer is IP else rebuilt[layer].chksum
        if again != original:
            probs.append(f"{layer.__name__} checksum {original:#06x}, should be {again:#06x}")
    return probs


def assert_checksums(recs: list, context: str) -> int:
    bad = []
    n = 0
    for r in recs:
        pkt = ip_of(r)
        if pkt is None:
            continue
        n += 1
        probs = checksum_problems(pkt)
        if probs:
            bad.append(f"{r.ifname} {r.direction}: {IP(pkt).summary()}: {probs}")
    assert not bad, f"{context}: frames with bad checksums:\n  " + "\n  ".join(bad)
    return n


def l4_ports(ip: IP) -> tuple[int, int] | None:
    if TCP in ip:
        return ip[TCP].sport, ip[TCP].dport
    if UDP in ip:
        return ip[UDP].sport, ip[UDP].dport
    return None


# --- random flows ------------------------------------------------------------------------------

KINDS = ["out-udp", "out-tcp", "out-icmp", "in-udp", "in-tcp", "in-icmp"]


def make_flows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    ports = rng.sample(range(20000, 60000), n)
    idents = rng.sample(range(1, 0xFFFF), n)
    flows = []
    for i in range(n):
        kind = rng.choice(KINDS)
        outbound = kind.startswith("out")
        proto = kind.split("-")[1]
        client = rng.choice(["h1", "h2"]) if outbound else rng.choice(["c", "s"])
        if outbound:
            dst, dport, server, seen_dst, seen_dport = ADDR["s"], {"udp": 53, "tcp": 80}.get(proto), "s", ADDR["s"], None
        else:
            dst, dport = PUBLIC, {"udp": 5353, "tcp": 8080}.get(proto)
            server, seen_dst, seen_dport = "srv", ADDR["srv"], {"udp": 53, "tcp": 80}.get(proto)
        size = rng.randrange(1 if proto == "tcp" else 0, 400)
        payload = bytes(rng.randrange(32, 127) for _ in range(size))
        flows.append({"kind": kind, "proto": proto, "client": client, "dst": dst, "dport": dport,
                      "sport": ports[i], "ident": idents[i], "payload": payload, "server": server,
                      "seen_dst": seen_dst, "seen_dport": seen_dport or dport, "outbound": outbound})
    return flows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_flows_are_translated_exactly(make_lab, variant, seed):
    net = Net(make_lab, variant, seed=seed)
    checked = 0
    for flow in make_flows(seed, 18):
        client, proto, dst, sport = flow["client"], flow["proto"], flow["dst"], flow["sport"]
        what = f"flow {flow['kind']} {client}:{sport} -> {dst}:{flow['dport']} ({len(flow['payload'])} bytes)"
        start = net.mark()
        if proto == "udp":
            reply = net.udp(client, dst, flow["dport"], sport, flow["payload"])
            assert reply == flow["server"].encode() + b":" + flow["payload"][::-1], what
        elif proto == "tcp":
            reply = net.tcp(client, dst, flow["dport"], sport, flow["payload"])
            assert reply == flow["server"].encode() + b":" + flow["payload"][::-1], what
        else:
            assert net.ping(client, dst, flow["ident"], size=len(flow["payload"]) + 8), what
        net.lab.run(0.05)
        recs = net.since(start)
        checked += assert_checksums(recs, what)

        # The client's own view: requests from itself, replies from what it contacted.
        at_client = [(r.direction, IP(ip_of(r))) for r in net.since(start, f"{client}/eth0") if ip_of(r)]
        sent = [ip for d, ip in at_client if d == "out"]
        got = [ip for d, ip in at_client if d == "in"]
        assert sent and got, f"{what}: nothing sent or nothing came back"
        for ip in sent:
            assert ip.src == ADDR[client] and ip.dst == dst, f"{what}: the client sent {ip.summary()}"
            if proto != "icmp":
                assert l4_ports(ip) == (sport, flow["dport"]), f"{what}: the client sent {ip.summary()}"
        for ip in got:
            assert (ip.src, ip.dst) == (dst, ADDR[client]), f"{what}: the client got {ip.summary()}"
            if proto == "icmp":
                assert ip[ICMP].type == 0 and ip[ICMP].id == flow["ident"], f"{what}: the client got {ip.summary()}"
            else:
                assert l4_ports(ip) == (flow["dport"], sport), f"{what}: the client got {ip.summary()}"

        # The server's view: the translated tuple.
        at_server = [(r.direction, IP(ip_of(r))) for r in net.since(start, f"{flow['server']}/eth0") if ip_of(r)]
        came = [ip for d, ip in at_server if d == "in"]
        assert came, f"{what}: nothing reached {flow['server']}"
        for ip in came:
            if flow["outbound"]:
                assert ip.src == PUBLIC and ip.dst == ADDR["s"], f"{what}: the server got {ip.summary()}"
            else:
                assert ip.src == ADDR[client] and ip.dst == flow["seen_dst"], f"{what}: the server got {ip.summary()}"
            if proto != "icmp":
                assert l4_ports(ip)[1] == flow["seen_dport"], f"{what}: the server got {ip.summary()}"
                if flow["outbound"]:
                    assert l4_ports(ip)[0] == sport, f"{what}: a free source port was not kept: {ip.summary()}"
            else:
                assert ip[ICMP].id == flow["ident"], f"{what}: a free echo id was not kept: {ip.summary()}"
    assert checked > 100


# --- port clashes ---------------------------------------------------------------------------------

def _entry(lines: list[str], proto: str, src: str, sport_key: str, sport: int) -> list[str]:
    return [ln for ln in lines if ln.startswith(proto) and f"src={src} " in ln and f"{sport_key}={sport} " in ln]


CLASH = {  # proto: (server port, the port or echo id both inside hosts use)
    "udp": (53, 40000),
    "tcp": (80, 45000),
    "icmp": (None, 0x4242),
}


@pytest.mark.parametrize("proto", list(CLASH))
def test_source_port_clash_gets_another_public_port(make_lab, variant, proto):
    """Two inside hosts, the same source port (or echo id), the same server: the second flow gets
    another public port (id), both get their own replies. (The kernel remaps ICMP ids too.)"""
    net = Net(make_lab, variant)
    dport, port = CLASH[proto]
    start = net.mark()
    for host in ("h1", "h2"):
        word = host.encode() + b" asks"
        if proto == "udp":
            assert net.udp(host, ADDR["s"], dport, port, word) == b"s:" + word[::-1], host
        elif proto == "tcp":
            assert net.tcp(host, ADDR["s"], dport, port, word) == b"s:" + word[::-1], host
        else:
            assert net.ping(host, ADDR["s"], port), f"{host}: no echo reply (id {port:#x} already in use)"
    net.lab.run(0.05)
    assert_checksums(net.since(start), f"{proto} port clash")

    lines = net.conntrack("r")
    key = "id" if proto == "icmp" else "sport"
    first = _entry(lines, proto, ADDR["h1"], key, port)
    second = _entry(lines, proto, ADDR["h2"], key, port)
    assert len(first) == 1 and len(second) == 1, lines
    # the reply tuple (the second src=... dst=... group) holds the public port
    rx = r"src=198\.51\.100\.10 dst=203\.0\.113\.1 .*?" + (r"id=(\d+)" if proto == "icmp" else r"dport=(\d+)")
    p1 = int(re.search(rx, first[0]).group(1))
    p2 = int(re.search(rx, second[0]).group(1))
    assert p1 == port, f"the first flow should keep {port}: {first[0]}"
    assert p2 != port, f"the second flow must get another public port: {second[0]}"

    # The server saw both flows from the public address, with two different ports (ids).
    at_s = [IP(ip_of(r)) for r in net.since(start, "s/eth0") if ip_of(r) and r.direction == "in"]
    assert {ip.src for ip in at_s} == {PUBLIC}
    used = {ip[ICMP].id for ip in at_s} if proto == "icmp" else {l4_ports(ip)[0] for ip in at_s}
    assert used == {p1, p2}
    # Each inside host got only its own replies, on its own port (id).
    for host in ("h1", "h2"):
        got = [IP(ip_of(r)) for r in net.since(start, f"{host}/eth0") if ip_of(r) and r.direction == "in"]
        assert got and all(ip.dst == ADDR[host] and ip.src == ADDR["s"] for ip in got)
        if proto == "icmp":
            assert [ip[ICMP].id for ip in got] == [port]
        else:
            assert {l4_ports(ip)[1] for ip in got} == {port}
            data = b"".join(bytes(ip[UDP if proto == "udp" else TCP].payload) for ip in got)
            assert data == b"s:" + (host.encode() + b" asks")[::-1]


# --- ICMP errors ------------------------------------------------------------------------------------

def _errors_at(net: Net, start: int, where: str) -> list[IP]:
    return [IP(ip_of(r)) for r in net.since(start, where)
            if ip_of(r) and r.direction == "in" and ICMP in IP(ip_of(r)) and IP(ip_of(r))[ICMP].type in (3, 11)]


def test_time_exceeded_beyond_the_nat(make_lab, variant):
    """A UDP probe whose TTL expires at r2, beyond the NAT router (traceroute's second hop)."""
    net = Net(make_lab, variant, servers=False)
    start = net.mark()
    assert net.udp("h1", ADDR["s"], 33434, 40100, b"probe", ttl=2, timeout=1.0) is None
    beyond = _errors_at(net, start, "r/eth0")
    assert len(beyond) == 1 and beyond[0].dst == PUBLIC and beyond[0][ICMP].type == 11, beyond
    assert beyond[0][IPerror].src == PUBLIC  # r2 quotes the translated packet
    errs = _errors_at(net, start, "h1/eth0")
    assert len(errs) == 1, errs
    e = errs[0]
    assert (e.src, e.dst, e[ICMP].type, e[ICMP].code) == (R2, ADDR["h1"], 11, 0), e.summary()
    q = e[IPerror]
    assert (q.src, q.dst, q.proto) == (ADDR["h1"], ADDR["s"], 17), q.summary()
    assert (q[UDPerror].sport, q[UDPerror].dport) == (40100, 33434), q.summary()
    assert bytes(q[UDPerror].payload) == b"probe"
    assert_checksums(net.since(start), "time exceeded beyond the NAT")


def test_port_unreachable_from_outside_server(make_lab, variant):
    net = Net(make_lab, variant, servers=False)
    start = net.mark()
    assert net.udp("h2", ADDR["s"], 9, 40200, b"closed", timeout=1.0) is None
    errs = _errors_at(net, start, "h2/eth0")
    assert len(errs) == 1, errs
    e = errs[0]
    assert (e.src, e.dst, e[ICMP].type, e[ICMP].code) == (ADDR["s"], ADDR["h2"], 3, 3), e.summary()
    q = e[IPerror]
    assert (q.src, q.dst, q[UDPerror].sport, q[UDPerror].dport) == (ADDR["h2"], ADDR["s"], 40200, 9), q.summary()
    assert bytes(q[UDPerror].payload) == b"closed"
    assert_checksums(net.since(start), "port unreachable from outside")


def test_port_unreachable_from_behind_the_dnat(make_lab, variant):
    """The outside client must see the error come from the public address it contacted,
    quoting its own packet to that address and port."""
    net = Net(make_lab, variant, servers=False)
    start = net.mark()
    assert net.udp("c", PUBLIC, 5353, 40300, b"dns?", timeout=1.0) is None
    at_srv = [IP(ip_of(r)) for r in net.since(start, "srv/eth0") if ip_of(r) and r.direction == "in"]
    assert [(ip.dst, ip[UDP].dport) for ip in at_srv if UDP in ip] == [(ADDR["srv"], 53)]
    errs = _errors_at(net, start, "c/eth0")
    assert len(errs) == 1, errs
    e = errs[0]
    assert (e.src, e.dst, e[ICMP].type, e[ICMP].code) == (PUBLIC, ADDR["c"], 3, 3), e.summary()
    q = e[IPerror]
    assert (q.src, q.dst, q[UDPerror].sport, q[UDPerror].dport) == (ADDR["c"], PUBLIC, 40300, 5353), q.summary()
    assert_checksums(net.since(start), "port unreachable behind the DNAT")


def test_reset_from_behind_the_dnat(make_lab, variant):
    """A SYN to a closed port behind the DNAT: the RST comes back from the public address."""
    net = Net(make_lab, variant, servers=False)
    start = net.mark()
    c = net.tcp_connect("c", PUBLIC, 8080, 40400)
    assert c.state == "CLOSED" and c.error == "Connection refused", (c.state, c.error)
    rst = [IP(ip_of(r)) for r in net.since(start, "c/eth0") if ip_of(r) and r.direction == "in"]
    assert [(ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport, str(ip[TCP].flags)) for ip in rst] == [
        (PUBLIC, 8080, ADDR["c"], 40400, "RA")]
    assert_checksums(net.since(start), "RST behind the DNAT")


# --- conntrack states and timeouts ----------------------------------------------------------------

_LINE = re.compile(r"^(?P<proto>\w+)\s+(?P<num>\d+) (?P<t>\d+) (?P<rest>.*)$")


def entries(net: Net, *args: str) -> dict[str, tuple[int, str]]:
    """`conntrack -L` at r: {line with the timeout masked: remaining seconds}."""
    out = {}
    for line in net.conntrack("r", *args):
        m = _LINE.match(line)
        assert m, f"not a conntrack line: {line!r}"
        out[f"{m['proto']:<8} {m['num']} <t> {m['rest']}"] = int(m["t"])
    return out


def one(net: Net, pattern: str) -> tuple[str, int]:
    found = [(k, t) for k, t in entries(net).items() if pattern in k]
    assert len(found) == 1, (pattern, entries(net))
    return found[0]


def count(net: Net) -> int:
    res = net.ns["r"].run("conntrack -C")
    assert res.rc == 0, res.stderr
    return int(res.stdout)


def test_udp_conntrack_states_and_expiry(make_lab, variant):
    net = Net(make_lab, variant, servers=False)
    heard: list[tuple[int, int]] = []
    net.ns["s"].stack.udp_bind(7, lambda src, sport, dst, dport, data, pid: heard.append((src, sport)))
    h1 = net.ns["h1"]
    h1.stack.udp_bind(41000, lambda *a: None)
    h1.stack.udp_send(ip2int(ADDR["s"]), 7, b"hello", sport=41000)
    net.lab.run(0.01)
    assert heard == [(ip2int(PUBLIC), 41000)]
    line, left = one(net, "sport=41000")
    assert line == ("udp      17 <t> src=10.0.1.11 dst=198.51.100.10 sport=41000 dport=7 [UNREPLIED] "
                    "src=198.51.100.10 dst=203.0.113.1 sport=7 dport=41000 mark=0 use=1"), line
    assert 29 <= left <= 30, left

    # The server answers (within 2 s): replied, not yet assured, 30 s.
    net.ns["s"].stack.udp_send(ip2int(PUBLIC), 41000, b"answer", sport=7)
    net.lab.run(0.01)
    line, left = one(net, "sport=41000")
    assert line == ("udp      17 <t> src=10.0.1.11 dst=198.51.100.10 sport=41000 dport=7 "
                    "src=198.51.100.10 dst=203.0.113.1 sport=7 dport=41000 mark=0 use=1"), line
    assert 29 <= left <= 30, left

    # Still talking after 2 s: a stream, [ASSURED], 120 s.
    net.lab.run(3)
    h1.stack.udp_send(ip2int(ADDR["s"]), 7, b"more", sport=41000)
    net.lab.run(0.01)
    line, left = one(net, "sport=41000")
    assert line.endswith("dport=41000 [ASSURED] mark=0 use=1"), line
    assert 119 <= left <= 120, left

    # A second, never answered flow expires after 30 s; the stream lives on until 120 s.
    h1.stack.udp_send(ip2int(ADDR["s"]), 7, b"lonely", sport=41001)
    net.lab.run(0.01)
    assert count(net) == 2
    net.lab.run(31)
    assert count(net) == 1 and one(net, "sport=41000")
    net.lab.run(90)
    assert count(net) == 0
    assert net.conntrack("r") == []


def test_tcp_conntrack_states_and_expiry(make_lab, variant):
    net = Net(make_lab, variant)
    # A SYN that nobody answers: the server drops it.
    assert net.ns["s"].run("iptables -A INPUT -p tcp --dport 81 -j DROP").rc == 0
    c = net.tcp_connect("h1", ADDR["s"], 81, 42100, timeout=0.5)
    assert c.state == "SYN_SENT"
    line, left = one(net, "sport=42100")
    assert line == ("tcp      6 <t> SYN_SENT src=10.0.1.11 dst=198.51.100.10 sport=42100 dport=81 [UNREPLIED] "
                    "src=198.51.100.10 dst=203.0.113.1 sport=81 dport=42100 mark=0 use=1"), line
    assert 119 <= left <= 120, left

    # A connection that completes its handshake and stays open.
    c2 = net.tcp_connect("h1", ADDR["s"], 80, 42200)
    assert c2.state == "ESTABLISHED"
    net.lab.run(0.05)  # the handshake's last ACK passes the router
    line, left = one(net, "sport=42200")
    assert line == ("tcp      6 <t> ESTABLISHED src=10.0.1.11 dst=198.51.100.10 sport=42200 dport=80 "
                    "src=198.51.100.10 dst=203.0.113.1 sport=80 dport=42200 [ASSURED] mark=0 use=1"), line
    assert 431999 <= left <= 432000, left

    # Request, answer, both FINs: TIME_WAIT for 120 s.
    assert net.tcp_finish("h1", c2, b"get") == b"s:teg"
    line, left = one(net, "sport=42200")
    assert line == ("tcp      6 <t> TIME_WAIT src=10.0.1.11 dst=198.51.100.10 sport=42200 dport=80 "
                    "src=198.51.100.10 dst=203.0.113.1 sport=80 dport=42200 [ASSURED] mark=0 use=1"), line
    assert 119 <= left <= 120, left

    # The same through the DNAT, seen from outside.
    c3 = net.tcp_connect("c", PUBLIC, 8080, 42300)
    assert c3.state == "ESTABLISHED"
    net.lab.run(0.05)
    line, left = one(net, "sport=42300")
    assert line == ("tcp      6 <t> ESTABLISHED src=192.0.2.10 dst=203.0.113.1 sport=42300 dport=8080 "
                    "src=10.0.3.20 dst=192.0.2.10 sport=80 dport=42300 [ASSURED] mark=0 use=1"), line
    assert 431999 <= left <= 432000, left

    # Expiry on the virtual clock: SYN_SENT and TIME_WAIT go after 120 s, ESTABLISHED stays.
    assert count(net) == 3
    net.lab.run(121)
    assert count(net) == 1
    assert list(entries(net)) == [
        "tcp      6 <t> ESTABLISHED src=192.0.2.10 dst=203.0.113.1 sport=42300 dport=8080 "
        "src=10.0.3.20 dst=192.0.2.10 sport=80 dport=42300 [ASSURED] mark=0 use=1"]
    assert net.tcp_finish("c", c3, b"late") == b"srv:etal"
    net.lab.run(121)
    assert count(net) == 0


def test_icmp_conntrack_entry_and_expiry(make_lab, variant):
    net = Net(make_lab, variant)
    assert net.ping("h2", ADDR["s"], 0x0BAD)
    line, left = one(net, "icmp")
    assert line == ("icmp     1 <t> src=10.0.2.12 dst=198.51.100.10 type=8 code=0 id=2989 "
                    "src=198.51.100.10 dst=203.0.113.1 type=0 code=0 id=2989 mark=0 use=1"), line
    assert 29 <= left <= 30, left
    net.lab.run(31)
    assert count(net) == 0
