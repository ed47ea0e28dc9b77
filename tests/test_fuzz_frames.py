"""Fuzzing the data plane: random and mutated frames into a bridge + router lab.

At least 100,000 frames (truncated headers, bad lengths, bad checksums, odd ethertypes, IP
options, fragments, martian and broadcast addresses, TTL 0/1, ...) are injected at six devices
of one lab. Nothing may raise; every frame is counted by the device it arrived on and ends
delivered or dropped with a reason; the same seed and the same frames give the same result.

Valid base frames are built once with Scapy (a few hundred templates); the 100,000 frames are
byte-level mutations of those templates made with a seeded `random.Random`, so the stream is
deterministic and cheap to generate.

Lab:

    h1 (10.0.1.10) --p1\\                                 /-- eth0 h2 (10.0.2.10)
    h3 (10.0.1.30) --p3-- br0 (sw, 10.0.1.2) --p2-- eth0 r eth1
                                                10.0.1.1    10.0.2.1   (ip_forward=1)
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from scapy.config import conf

conf.verb = 0

from scapy.layers.inet import (  # noqa: E402
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
)
from scapy.layers.l2 import ARP, Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from emu.net import Lab, tcp  # noqa: E402
from emu.trace import Drop  # noqa: E402

SEED = 20240113
N_FRAMES = 100_000  # the big run (trace off: only drop counters are kept)
SAMPLE_FRAMES = 3_000  # the traced runs (every frame's decisions are kept)
BATCH = 256  # frames injected between two `lab.settle()` calls
TIME_BUDGET = 60.0  # seconds of wall clock for the big run (generation + injection), on 2 cores

# --- addresses of the lab ---------------------------------------------------------------
R0, R1, BR = "10.0.1.1", "10.0.2.1", "10.0.1.2"
H1, H2, H3 = "10.0.1.10", "10.0.2.10", "10.0.1.30"
UNK1, UNK2, OFFNET = "10.0.1.99", "10.0.2.99", "198.51.100.7"
BC1, BC2, BCALL, MCAST = "10.0.1.255", "10.0.2.255", "255.255.255.255", "224.0.0.1"
SPECIAL_IPS = [
    "0.0.0.0", "127.0.0.1", "224.0.0.1", "239.255.255.250", "255.255.255.255", "10.0.1.0", "10.0.1.255",
    "10.0.2.255", R0, R1, BR, H1, H2, H3, UNK1, UNK2, OFFNET, "169.254.1.1", "240.0.0.1",
]
BCAST_MAC = "ff:ff:ff:ff:ff:ff"
MCAST_MAC = "01:00:5e:00:00:01"
STP_MAC = "01:80:c2:00:00:00"
LLDP_MAC = "01:80:c2:00:00:0e"
STRANGER_MACS = ["02:00:00:aa:bb:01", "02:00:00:aa:bb:02", "0a:1b:2c:3d:4e:5f"]
UDP_PORT = 5000  # a UDP socket listens here on r and h2
TCP_PORT = 80  # and a TCP server here

# (entry name, namespace, interface): a frame given to `link.rx()` arrives on that device
ENTRIES = [
    ("sw/p1", "sw", "p1"),  # a bridge port, from h1's wire
    ("sw/p3", "sw", "p3"),  # a bridge port, from h3's wire
    ("r/eth0", "r", "eth0"),  # the router's bridge-side leg
    ("r/eth1", "r", "eth1"),  # the router's leg to h2
    ("h2/eth0", "h2", "eth0"),  # h2, from the router
    ("h1/eth0", "h1", "eth0"),  # h1, from the bridge
]


# --- the lab ------------------------------------------------------------------------------
@dataclass
class Fixture:
    lab: Lab
    delivered: dict[str, int]  # UDP datagrams handed to the sockets, per namespace


def build_lab(seed: int = SEED, *, trace: bool = False, pure_python: bool | None = None) -> Fixture:
    """A switch (bridge br0 with ports to h1, the router and h3) and a router with a leg to h2."""
    lab = Lab(seed=seed, trace=trace, pure_python=pure_python)
    sw, r, h1, h2, h3 = (lab.netns(n) for n in ("sw", "r", "h1", "h2", "h3"))
    sw.link_add("br0", "bridge")
    sw.link_set("br0", up=True)
    for host, port in ((h1, "p1"), (r, "p2"), (h3, "p3")):
        host.link_add("eth0", "veth", peer=port, peer_ns=sw)
        sw.link_set(port, master="br0", up=True)
        host.link_set("eth0", up=True)
    sw.addr_add("br0", f"{BR}/24")
    sw.route_add("default", via=R0)
    r.link_add("eth1", "veth", peer="eth0", peer_ns=h2)
    r.link_set("eth1", up=True)
    h2.link_set("eth0", up=True)
    r.addr_add("eth0", f"{R0}/24")
    r.addr_add("eth1", f"{R1}/24")
    r.sysctl_set("net.ipv4.ip_forward", "1")
    for host, ip, gw in ((h1, H1, R0), (h3, H3, R0), (h2, H2, R1)):
        host.addr_add("eth0", f"{ip}/24")
        host.route_add("default", via=gw)
    delivered = {"r": 0, "h2": 0}
    for name in delivered:

        def handler(src: int, sport: int, dst: int, dport: int, payload: bytes, pid: int, name: str = name) -> None:
            delivered[name] += 1

        lab[name].stack.udp_bind(UDP_PORT, handler)
        tcp.layer(lab[name]).listen(TCP_PORT, lambda request: b"HTTP/1.0 200 OK\r\n\r\n")
    lab.settle()
    return Fixture(lab, delivered)


def mac_of(lab: Lab, ns: str, ifname: str) -> str:
    return ":".join(f"{b:02x}" for b in lab[ns].link(ifname).mac.to_bytes(6, "big"))


# --- valid base frames (Scapy, built once) ------------------------------------------------
def _l4_variants(rng: random.Random, src: str, dst: str) -> list:
    """Scapy IP packets from src to dst: ICMP, UDP, TCP, tunnels, options, big ones."""
    quote_udp = IP(src=dst, dst=src, ttl=1) / UDP(sport=40000, dport=33434)
    quote_tcp = IP(src=dst, dst=src) / TCP(sport=40001, dport=80, flags="S")
    return [
        IP(src=src, dst=dst) / ICMP(type=8, id=rng.randrange(65536), seq=1) / Raw(bytes(rng.choice([0, 8, 56]))),
        IP(src=src, dst=dst, flags="DF") / ICMP(type=8, id=7, seq=2) / Raw(bytes(1400)),
        IP(src=src, dst=dst, flags=rng.choice(["DF", 0])) / ICMP(type=8, id=8, seq=3) / Raw(bytes(2000)),
        IP(src=src, dst=dst) / ICMP(type=3, code=3) / quote_udp,
        IP(src=src, dst=dst) / ICMP(type=11, code=0) / quote_tcp,
        IP(src=src, dst=dst) / ICMP(type=13) / Raw(bytes(12)),
        IP(src=src, dst=dst) / ICMP(type=0, id=9, seq=9),
        IP(src=src, dst=dst) / UDP(sport=1234, dport=UDP_PORT) / Raw(b"x" * rng.choice([0, 16, 200])),
        IP(src=src, dst=dst) / UDP(sport=1234, dport=rng.choice([7, 53, 67, 33434, 8472])) / Raw(b"q" * 12),
        IP(src=src, dst=dst, flags=rng.choice(["DF", 0])) / UDP(sport=9, dport=UDP_PORT) / Raw(bytes(1600)),
        IP(src=src, dst=dst) / TCP(sport=40000, dport=rng.choice([22, TCP_PORT]), flags="S", seq=1000),
        IP(src=src, dst=dst) / TCP(sport=40000, dport=TCP_PORT, flags="PA", seq=1001, ack=1)
        / Raw(b"GET / HTTP/1.0\r\n\r\n"),
        IP(src=src, dst=dst) / TCP(sport=40000, dport=TCP_PORT, flags=rng.choice(["A", "FA", "R", "RA", "SA", "F"]),
                                   seq=1001, ack=rng.randrange(2**32)),
        IP(src=src, dst=dst, proto=4) / IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(),
        IP(src=src, dst=dst, proto=47) / Raw(b"\x00\x00\x08\x00" + bytes(20)),
        IP(src=src, dst=dst, proto=rng.choice([0, 2, 50, 132, 253, 255])) / Raw(bytes(8)),
        IP(src=src, dst=dst, options=[IPOption_RR(routers=["0.0.0.0"] * 2)]) / ICMP(type=8) / Raw(b"rr"),
        IP(src=src, dst=dst, options=[IPOption_Router_Alert(), IPOption_NOP()]) / UDP(dport=UDP_PORT),
    ]


@dataclass
class Entry:
    name: str
    ns: str
    ifname: str
    templates: list[bytes]
    fragmentable: list[bytes]  # valid IPv4 templates, for the fragment trains


def build_templates(lab: Lab, seed: int = SEED) -> list[Entry]:
    """A few hundred valid frames per entry point: what each device could really receive."""
    rng = random.Random(seed ^ 0x5EED)
    mac = {k: mac_of(lab, ns, ifn) for k, (ns, ifn) in {
        "h1": ("h1", "eth0"), "h3": ("h3", "eth0"), "h2": ("h2", "eth0"),
        "r0": ("r", "eth0"), "r1": ("r", "eth1"), "br": ("sw", "br0"),
    }.items()}
    stranger = STRANGER_MACS[0]
    # entry -> (sender MACs, sender IPs, [(destination MAC, destination IPs)])
    plan = {
        "sw/p1": ([mac["h1"], mac["h1"], stranger], [H1, H1, UNK1, OFFNET],
                  [(mac["r0"], [R0, R1, H2, UNK2, OFFNET, BC2, BC1]), (mac["br"], [BR, BC1, H2]),
                   (mac["h3"], [H3]), (BCAST_MAC, [BCALL, BC1, R0]), (STRANGER_MACS[1], [H3, R0]),
                   (MCAST_MAC, [MCAST])]),
        "sw/p3": ([mac["h3"], STRANGER_MACS[2]], [H3, UNK1],
                  [(mac["r0"], [R0, R1, H2, OFFNET]), (mac["h1"], [H1]), (mac["br"], [BR]),
                   (BCAST_MAC, [BCALL, BC1])]),
        "r/eth0": ([mac["h1"], mac["h3"], mac["br"]], [H1, H3, BR, UNK1, OFFNET],
                   [(mac["r0"], [R0, R1, H2, UNK2, OFFNET, BC1, BC2]), (BCAST_MAC, [BCALL, BC1, R0]),
                    (mac["h1"], [H1])]),
        "r/eth1": ([mac["h2"]], [H2, H2, UNK2, OFFNET],
                   [(mac["r1"], [R1, R0, H1, H3, BR, UNK1, OFFNET, BC1]), (BCAST_MAC, [BCALL, BC2])]),
        "h2/eth0": ([mac["r1"]], [R1, H1, H3, OFFNET],
                    [(mac["h2"], [H2, BC2, H1]), (BCAST_MAC, [BCALL, BC2])]),
        "h1/eth0": ([mac["r0"], mac["h3"], stranger], [R0, H3, H2, OFFNET],
                    [(mac["h1"], [H1, BC1, H2]), (BCAST_MAC, [BCALL, BC1])]),
    }
    entries = []
    for name, ns, ifname in ENTRIES:
        smacs, sips, targets = plan[name]
        ip_frames: list[bytes] = []
        for dmac, dips in targets:
            for dip in dips:
                variants = _l4_variants(rng, rng.choice(sips), dip)
                for pkt in rng.sample(variants, 7):
                    ip_frames.append(bytes(Ether(dst=dmac, src=rng.choice(smacs)) / pkt))
        others: list[bytes] = []
        for tip in (R0, R1, BR, H1, H2, H3, UNK1, UNK2, OFFNET):
            smac, sip = rng.choice(smacs), rng.choice(sips)
            others.append(bytes(Ether(dst=BCAST_MAC, src=smac) / ARP(op=1, hwsrc=smac, psrc=sip, pdst=tip)))
            dmac = rng.choice(targets)[0]
            others.append(bytes(Ether(dst=dmac, src=smac) / ARP(op=2, hwsrc=smac, psrc=tip, hwdst=dmac, pdst=sip)))
        smac = smacs[0]
        others += [
            bytes(Ether(dst=BCAST_MAC, src=smac) / ARP(op=1, hwsrc=smac, psrc=sips[0], pdst=sips[0])),  # gratuitous
            bytes(Ether(dst=BCAST_MAC, src=smac) / ARP(op=1, hwsrc=smac, psrc="0.0.0.0", pdst=sips[0])),  # probe
            bytes(Ether(dst=BCAST_MAC, src=smac, type=0x86DD) / Raw(bytes.fromhex("6000000000083a40") + bytes(40))),
            bytes(Ether(dst=targets[0][0], src=smac, type=0x8100) / Raw(b"\x00\x0a\x08\x00" + ip_frames[0][14:])),
            bytes(Ether(dst=LLDP_MAC, src=smac, type=0x88CC) / Raw(bytes.fromhex("0207040000000001") + bytes(8))),
            bytes(Ether(dst=STP_MAC, src=smac, type=38) / Raw(b"\x42\x42\x03" + bytes(35))),  # 802.3 + LLC
            bytes(Ether(dst=targets[0][0], src=smac, type=0x8847) / Raw(bytes(40))),
            bytes(Ether(dst=BCAST_MAC, src=smac, type=0x0842) / Raw(bytes(102))),
        ]
        entries.append(Entry(name, ns, ifname, ip_frames + others, ip_frames))
    return entries


# --- byte-level mutation --------------------------------------------------------------------
L3 = 14  # the IPv4 header follows a plain Ethernet header in every template that carries one


def csum(data: bytes | bytearray) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def is_ip(b: bytearray) -> bool:
    return len(b) >= L3 + 20 and b[12:14] == b"\x08\x00"


def is_arp(b: bytearray) -> bool:
    return len(b) >= L3 + 28 and b[12:14] == b"\x08\x06"


def ihl_of(b: bytearray) -> int:
    return (b[L3] & 0xF) * 4


def fix_ip_checksum(b: bytearray) -> None:
    if not is_ip(b):
        return
    ihl = ihl_of(b)
    if ihl < 20 or len(b) < L3 + ihl:
        return
    b[L3 + 10:L3 + 12] = b"\0\0"
    b[L3 + 10:L3 + 12] = csum(b[L3:L3 + ihl]).to_bytes(2, "big")


def l4_span(b: bytearray) -> tuple[int, int] | None:
    """Where the transport header and payload sit (start, end) as the IP header tells, clipped to the frame."""
    if not is_ip(b):
        return None
    ihl = ihl_of(b)
    total = int.from_bytes(b[L3 + 2:L3 + 4], "big")
    start, end = L3 + ihl, min(len(b), L3 + total)
    if ihl < 20 or end < start:
        return None
    return start, end


def fix_l4_checksum(b: bytearray) -> None:
    """A correct ICMP, UDP or TCP checksum for whatever the header and payload now are."""
    span = l4_span(b)
    if span is None:
        return
    start, end = span
    proto, seg = b[L3 + 9], b[start:end]
    pseudo = b[L3 + 12:L3 + 20] + bytes([0, proto])
    if proto == 1 and len(seg) >= 4:
        b[start + 2:start + 4] = b"\0\0"
        b[start + 2:start + 4] = csum(b[start:end]).to_bytes(2, "big")
    elif proto == 17 and len(seg) >= 8:
        ulen = int.from_bytes(seg[4:6], "big")
        n = ulen if 8 <= ulen <= len(seg) else len(seg)
        b[start + 6:start + 8] = b"\0\0"
        c = csum(pseudo + n.to_bytes(2, "big") + b[start:start + n]) or 0xFFFF
        b[start + 6:start + 8] = c.to_bytes(2, "big")
    elif proto == 6 and len(seg) >= 20:
        b[start + 16:start + 18] = b"\0\0"
        c = csum(pseudo + len(seg).to_bytes(2, "big") + b[start:end])
        b[start + 16:start + 18] = c.to_bytes(2, "big")


def ip_bytes(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


IP_OPTIONS = [
    b"\x01",  # NOP
    b"\x00",  # EOL
    b"\x07\x07\x04\x00\x00\x00\x00",  # record route, one slot
    b"\x94\x04\x00\x00",  # router alert
    b"\x44\x0c\x05\x00" + bytes(8),  # timestamp
    b"\x83\x07\x04\x0a\x00\x02\x0a",  # loose source route
    b"\x89\x03\x04",  # strict source route, too short
    b"\x07\x00",  # length 0: malformed
    b"\x07\xff",  # length past the header
    b"\x82\x0b" + bytes(9),  # security
]


class Mutator:
    """Turns templates into a stream of valid, mangled and fragmented frames, all from one seeded RNG."""

    def __init__(self, entries: list[Entry], seed: int) -> None:
        self.entries = entries
        self.rng = random.Random(seed)
        self.next_ident = 1
        ip_structural = [
            (self.total_length, 4), (self.header_length, 3), (self.options, 4), (self.fragment_bits, 4),
            (self.ttl, 3), (self.addresses, 4), (self.protocol, 2), (self.grow, 2), (self.empty, 2),
            (self.tos_version, 2), (self.udp_length, 2), (self.ethertype, 2), (self.src_mac, 2),
            (self.dst_mac, 2), (self.vlan, 1),
        ]
        arp_structural = [(self.arp_fields, 4), (self.arp_addresses, 4), (self.ethertype, 1),
                          (self.src_mac, 2), (self.dst_mac, 2)]
        other_structural = [(self.ethertype, 2), (self.src_mac, 1), (self.dst_mac, 1)]
        breaking = [(self.truncate, 5), (self.flip, 5), (self.bad_ip_checksum, 3), (self.bad_l4_checksum, 3),
                    (self.pad, 2), (self.random_frame, 1)]
        self.ip_structural = self._table(ip_structural)
        self.arp_structural = self._table(arp_structural)
        self.other_structural = self._table(other_structural)
        self.breaking = self._table(breaking)

    @staticmethod
    def _table(pairs: list) -> list:
        return [fn for fn, weight in pairs for _ in range(weight)]

    # --- the stream --------------------------------------------------------------------
    def stream(self, n: int) -> Iterator[tuple[int, bytes]]:
        """n frames as (entry index, frame bytes)."""
        rng, made = self.rng, 0
        while made < n:
            e = rng.randrange(len(self.entries))
            roll = rng.random()
            if roll < 0.02:
                burst = self.fragment_train(e)
            elif roll < 0.02003:
                burst = self.ping_of_death(e)
            else:
                burst = [self.one(e)]
            for frame in burst[:n - made]:
                yield e, frame
            made += min(len(burst), n - made)

    def one(self, e: int) -> bytes:
        rng = self.rng
        b = bytearray(rng.choice(self.entries[e].templates))
        if rng.random() < 0.12:
            return bytes(b)  # valid, as built
        table = self.ip_structural if is_ip(b) else self.arp_structural if is_arp(b) else self.other_structural
        for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3))):
            rng.choice(table)(b)
        if rng.random() < 0.7:
            fix_l4_checksum(b)
        if rng.random() < 0.85:
            fix_ip_checksum(b)
        if rng.random() < 0.45:
            rng.choice(self.breaking)(b)
        return bytes(b)

    # --- structural mutations: IPv4 -------------------------------------------------------
    def total_length(self, b: bytearray) -> None:
        if not is_ip(b):
            return
        size, ihl = len(b) - L3, ihl_of(b)
        value = self.rng.choice([0, 1, 19, ihl - 1, ihl, ihl + 1, size - 1, size + 1, size + 100, 65535,
                                 self.rng.randrange(65536)])
        b[L3 + 2:L3 + 4] = (value & 0xFFFF).to_bytes(2, "big")

    def header_length(self, b: bytearray) -> None:
        if is_ip(b):
            b[L3] = (b[L3] & 0xF0) | self.rng.randrange(16)

    def options(self, b: bytearray) -> None:
        """IHL 6..15 with option bytes (well-formed or not); total length follows."""
        if not is_ip(b) or ihl_of(b) != 20:
            return
        rng = self.rng
        words = rng.randint(1, 10)
        opts = bytearray()
        while len(opts) < words * 4:
            opts += rng.choice(IP_OPTIONS) if rng.random() < 0.8 else bytes(rng.randrange(256) for _ in range(3))
        opts = opts[:words * 4]
        b[L3 + 20:L3 + 20] = opts
        b[L3] = 0x40 | (5 + words)
        total = int.from_bytes(b[L3 + 2:L3 + 4], "big") + words * 4
        b[L3 + 2:L3 + 4] = (total & 0xFFFF).to_bytes(2, "big")

    def fragment_bits(self, b: bytearray) -> None:
        if not is_ip(b):
            return
        rng = self.rng
        flags = rng.choice([0x2000, 0x2000, 0x4000, 0x6000, 0x8000, 0])
        offset = rng.choice([0, 0, 1, 2, 3, 8, 185, 1000, 8189, 8191, rng.randrange(8192)])
        b[L3 + 6:L3 + 8] = (flags | offset).to_bytes(2, "big")
        if rng.random() < 0.5:
            b[L3 + 4:L3 + 6] = rng.randrange(4).to_bytes(2, "big")  # few idents: fragments meet in reassembly

    def ttl(self, b: bytearray) -> None:
        if is_ip(b):
            b[L3 + 8] = self.rng.choice([0, 1, 1, 2, 255])

    def addresses(self, b: bytearray) -> None:
        if not is_ip(b):
            return
        pos = self.rng.choice([L3 + 12, L3 + 16])
        b[pos:pos + 4] = ip_bytes(self.rng.choice(SPECIAL_IPS)) if self.rng.random() < 0.9 else \
            self.rng.randbytes(4)

    def protocol(self, b: bytearray) -> None:
        if is_ip(b):
            b[L3 + 9] = self.rng.choice([0, 1, 4, 6, 17, 41, 47, 50, 89, 132, 255, self.rng.randrange(256)])

    def grow(self, b: bytearray) -> None:
        """More payload than the MTU (or a lot more), with a consistent total length."""
        if not is_ip(b):
            return
        extra = self.rng.choice([1, 7, 1500, 3000, 9000])
        b += bytes(extra)
        total = min(65535, int.from_bytes(b[L3 + 2:L3 + 4], "big") + extra)
        b[L3 + 2:L3 + 4] = total.to_bytes(2, "big")

    def empty(self, b: bytearray) -> None:
        """A header and nothing else: zero-length transport."""
        if not is_ip(b):
            return
        ihl = ihl_of(b)
        if ihl >= 20:
            del b[L3 + ihl:]
            b[L3 + 2:L3 + 4] = ihl.to_bytes(2, "big")

    def tos_version(self, b: bytearray) -> None:
        if not is_ip(b):
            return
        if self.rng.random() < 0.5:
            b[L3 + 1] = self.rng.randrange(256)
        else:
            b[L3] = (self.rng.choice([0, 6, 15]) << 4) | (b[L3] & 0x0F)

    def udp_length(self, b: bytearray) -> None:
        span = l4_span(b)
        if span is None or b[L3 + 9] != 17 or span[1] - span[0] < 8:
            return
        start, end = span
        value = self.rng.choice([0, 7, 8, 9, end - start - 1, end - start + 1, 65535])
        b[start + 4:start + 6] = (value & 0xFFFF).to_bytes(2, "big")

    # --- structural mutations: ARP and Ethernet --------------------------------------------
    def arp_fields(self, b: bytearray) -> None:
        if not is_arp(b):
            return
        rng = self.rng
        field = rng.choice([(0, 2, [0, 6, 0xFFFF]), (2, 2, [0x86DD, 0]), (4, 1, [0, 5, 255]), (5, 1, [0, 16]),
                            (6, 2, [0, 3, 4, 8, 0xFFFF])])
        pos, width, values = field
        b[L3 + pos:L3 + pos + width] = rng.choice(values).to_bytes(width, "big")

    def arp_addresses(self, b: bytearray) -> None:
        if not is_arp(b):
            return
        rng = self.rng
        which = rng.choice(["sha", "spa", "tpa", "tha"])
        if which == "sha":
            b[L3 + 8:L3 + 14] = bytes.fromhex(rng.choice(["ffffffffffff", "01005e000001", "000000000000",
                                                           "020000aabb09"]))
        elif which == "tha":
            b[L3 + 18:L3 + 24] = rng.randbytes(6)
        else:
            pos = L3 + (14 if which == "spa" else 24)
            b[pos:pos + 4] = ip_bytes(rng.choice(SPECIAL_IPS))

    def ethertype(self, b: bytearray) -> None:
        if len(b) >= 14:
            b[12:14] = self.rng.choice([0x86DD, 0x8100, 0x88CC, 0x0806, 0x0800, 0x88A8, 0x0000, 0x05DC, 0xFFFF,
                                        self.rng.randrange(65536)]).to_bytes(2, "big")

    def src_mac(self, b: bytearray) -> None:
        if len(b) >= 12:
            b[6:12] = bytes.fromhex(self.rng.choice(["ffffffffffff", "01005e000001", "333300000001",
                                                     "000000000000", "020000aabb07", "0180c2000000"]))

    def dst_mac(self, b: bytearray) -> None:
        if len(b) >= 6:
            b[0:6] = bytes.fromhex(self.rng.choice(["ffffffffffff", "01005e000001", "333300000001",
                                                    "000000000000", "020000aabb08", "0180c2000000"]))

    def vlan(self, b: bytearray) -> None:
        """An 802.1Q tag in front of the ethertype (the lab has no VLAN devices)."""
        if len(b) >= 14:
            b[12:12] = b"\x81\x00" + self.rng.randrange(4096).to_bytes(2, "big")

    # --- breaking mutations (after the checksums were fixed) ----------------------------------
    def truncate(self, b: bytearray) -> None:
        rng = self.rng
        cut = rng.choice([0, 1, 6, 12, 13, 14, 15, 20, 33, 34, 35, 41, 42, 48, rng.randrange(len(b) + 1)])
        del b[cut:]

    def flip(self, b: bytearray) -> None:
        if not b:
            return
        for _ in range(self.rng.choice([1, 1, 2, 4, 8])):
            i = self.rng.randrange(len(b)) if self.rng.random() < 0.5 else self.rng.randrange(min(len(b), 60))
            b[i] = self.rng.randrange(256)

    def bad_ip_checksum(self, b: bytearray) -> None:
        if is_ip(b):
            b[L3 + 10] ^= self.rng.randrange(1, 256)

    def bad_l4_checksum(self, b: bytearray) -> None:
        span = l4_span(b)
        if span is None:
            return
        start, end = span
        pos = start + {1: 2, 17: 6, 6: 16}.get(b[L3 + 9], 2)
        if pos < end:
            b[pos] ^= self.rng.randrange(1, 256)

    def pad(self, b: bytearray) -> None:
        b += self.rng.randbytes(self.rng.choice([1, 2, 18, 60]))

    def random_frame(self, b: bytearray) -> None:
        b[:] = self.rng.randbytes(self.rng.choice([0, 1, 13, 14, 20, 42, 60, 64, 200, 1514]))

    # --- fragment trains -----------------------------------------------------------------
    def fragment_train(self, e: int) -> list[bytes]:
        """One datagram cut into fragments: in order, shuffled, duplicated, overlapping, tiny or incomplete."""
        rng = self.rng
        b = bytearray(rng.choice(self.entries[e].fragmentable))
        ihl = ihl_of(b)
        total = int.from_bytes(b[L3 + 2:L3 + 4], "big")
        eth, head, data = b[:L3], b[L3:L3 + ihl], b[L3 + ihl:L3 + total]
        if len(data) < 16:
            data += bytes(64)
        size = rng.choice([8, 8, 16, 24, 64, 512, 1480])
        ident = self.next_ident = (self.next_ident + 7919) & 0xFFFF
        pieces = [[off, data[off:off + size], True] for off in range(0, len(data), size)]
        pieces[-1][2] = False
        mode = rng.choice(["order", "reverse", "shuffle", "duplicate", "missing", "overlap", "no_last", "tiny_ihl"])
        if mode == "reverse":
            pieces.reverse()
        elif mode == "shuffle":
            rng.shuffle(pieces)
        elif mode == "duplicate":
            pieces.insert(rng.randrange(len(pieces) + 1), list(rng.choice(pieces)))
        elif mode == "missing" and len(pieces) > 1:
            pieces.pop(rng.randrange(len(pieces)))
        elif mode == "overlap" and len(pieces) > 1:
            i = rng.randrange(1, len(pieces))
            off = max(0, pieces[i][0] - 8 * rng.randint(1, 4))
            pieces[i] = [off, data[off:pieces[i][0] + len(pieces[i][1])] + rng.randbytes(rng.choice([0, 8])),
                         pieces[i][2]]
        elif mode == "no_last":
            pieces[-1][2] = True  # every fragment says more follow: waits for the reassembly timeout
        out = []
        for off, chunk, more in pieces:
            h = bytearray(head)
            struct.pack_into("!HHH", h, 2, len(h) + len(chunk), ident, (0x2000 if more else 0) | (off // 8))
            if mode == "tiny_ihl" and off == 0 and rng.random() < 0.5:
                h[9] = rng.choice([1, 6, 17])
            h[10:12] = b"\0\0"
            h[10:12] = csum(h).to_bytes(2, "big")
            out.append(bytes(eth + h + chunk))
        return out

    def ping_of_death(self, e: int) -> list[bytes]:
        """Fragments that reassemble to more than 65,535 bytes (offset 65,528 + 1,000 bytes)."""
        rng = self.rng
        b = bytearray(rng.choice(self.entries[e].fragmentable))
        eth, head = b[:L3], bytearray(b[L3:L3 + 20])
        head[0] = 0x45
        ident = self.next_ident = (self.next_ident + 7919) & 0xFFFF
        out = []
        offsets = list(range(0, 65528, 1480)) + [65528]
        for i, off in enumerate(offsets):
            last = i == len(offsets) - 1
            chunk = bytes(1000 if last else 1480)
            h = bytearray(head)
            struct.pack_into("!HHH", h, 2, 20 + len(chunk), ident, (0 if last else 0x2000) | (off // 8))
            h[10:12] = b"\0\0"
            h[10:12] = csum(h).to_bytes(2, "big")
            out.append(bytes(eth + h + chunk))
        return out


def frame_stream(lab: Lab, n: int, seed: int) -> list[tuple[int, bytes]]:
    return list(Mutator(build_templates(lab), seed).stream(n))


# --- injection and accounting -------------------------------------------------------------
def snapshot(lab: Lab) -> dict[str, dict[str, int]]:
    """Every device's counters."""
    return {f"{ns.name}/{link.ifname}": link.counters.as_dict()
            for ns in lab.namespaces.values() for link in ns.sorted_links()}


def culprit(exc: BaseException, batch: list[tuple[int, int, bytes]], entries: list[Entry]) -> str:
    """Which injected frame the emulator was handling when it raised (the `pid` in its stack)."""
    frames = {pid: (e, frame) for pid, e, frame in batch}
    found, tb = None, exc.__traceback__
    while tb is not None:
        pid = tb.tb_frame.f_locals.get("pid")
        if isinstance(pid, int) and pid in frames:
            found = pid
        tb = tb.tb_next
    if found is None:
        found = batch[-1][0]
        how = "while settling a batch; no injected frame in the stack, the last one of the batch"
    else:
        how = "handling injected frame"
    e, frame = frames[found]
    head = frame.rstrip(b"\0")
    text = frame.hex() if len(frame) - len(head) < 32 else f"{head.hex()} then {len(frame) - len(head)} zero bytes"
    return (f"the emulator raised {type(exc).__name__}: {exc}, {how}: pid {found} at {entries[e].name}, "
            f"{len(frame)} bytes: {text} (earlier frames may have set the stage: fragments, ARP, FDB)")


def inject(lab: Lab, frames: list[tuple[int, bytes]], entries: list[Entry]) -> tuple[list[int], list[int]]:
    """Gives every frame to its entry device, settling the clock every BATCH frames.

    Returns the pids used and the number of frames per entry. An exception from the emulator
    fails the test with the frames of the batch in which it happened."""
    links = [lab[e.ns].link(e.ifname) for e in entries]
    pids, per_entry = [], [0] * len(entries)
    batch: list[tuple[int, int, bytes]] = []
    for i, (e, frame) in enumerate(frames):
        pid = lab.new_pid()
        batch.append((pid, e, frame))
        try:
            links[e].rx(frame, pid)
            if len(batch) == BATCH or i == len(frames) - 1:
                lab.settle()
        except Exception as exc:
            raise AssertionError(culprit(exc, batch, entries)) from exc
        if len(batch) == BATCH:
            batch.clear()
        pids.append(pid)
        per_entry[e] += 1
    try:
        lab.settle(limit=600.0)  # past every ARP retry, DELAY probe and the 30 s reassembly timeout
    except Exception as exc:
        raise AssertionError(culprit(exc, batch or [(pids[-1], frames[-1][0], frames[-1][1])], entries)) from exc
    return pids, per_entry


def check_accounting(lab: Lab, entries: list[Entry], before: dict, after: dict, per_entry: list[int]) -> None:
    """Each entry device counted exactly the injected frames, besides what its veth peer really sent it."""
    for e, entry in enumerate(entries):
        link = lab[entry.ns].link(entry.ifname)
        peer = link.peer  # type: ignore[attr-defined]
        key, peer_key = f"{entry.ns}/{entry.ifname}", f"{peer.ns.name}/{peer.ifname}"
        got = after[key]["rx_packets"] - before[key]["rx_packets"]
        dropped = after[key]["rx_dropped"] - before[key]["rx_dropped"]
        from_peer = after[peer_key]["tx_packets"] - before[peer_key]["tx_packets"]
        assert dropped == 0, f"{key}: {dropped} frames dropped on a link that is up"
        assert got == per_entry[e] + from_peer, (
            f"{key}: rx_packets grew by {got}, expected {per_entry[e]} injected + {from_peer} sent by {peer_key}"
        )


# --- the tests -----------------------------------------------------------------------------
def test_fuzz_100k_frames_raise_nothing_and_are_counted() -> None:
    t0 = time.perf_counter()
    fx = build_lab(trace=False)
    lab = fx.lab
    entries = build_templates(lab)
    assert sum(len(e.templates) for e in entries) >= 300
    frames = list(Mutator(entries, SEED).stream(N_FRAMES))
    assert len(frames) == N_FRAMES
    t_gen = time.perf_counter() - t0

    before = snapshot(lab)
    pids, per_entry = inject(lab, frames, entries)
    after = snapshot(lab)
    elapsed = time.perf_counter() - t0
    counts = {e.name: n for e, n in zip(entries, per_entry, strict=True)}
    print(f"\nfuzz: {N_FRAMES} frames, generated in {t_gen:.1f} s, total {elapsed:.1f} s; "
          f"per entry {counts}; drops {dict(sorted(lab.trace.drops.items()))}")

    assert len(set(pids)) == N_FRAMES
    assert all(per_entry), per_entry
    check_accounting(lab, entries, before, after, per_entry)

    drops = lab.trace.drops
    assert sum(drops.values()) > 0
    assert set(drops) <= {d.value for d in Drop}, set(drops) - {d.value for d in Drop}
    for reason in (Drop.MALFORMED, Drop.BAD_CHECKSUM, Drop.UNSUPPORTED, Drop.TTL_EXPIRED, Drop.NOT_FOR_US):
        assert drops.get(reason.value, 0) > 0, f"no {reason.value} drop in {drops}"
    # Not everything was dropped: datagrams reached the sockets, and the router forwarded to h2.
    assert fx.delivered["r"] > 0 and fx.delivered["h2"] > 0, fx.delivered
    assert after["r/eth1"]["tx_packets"] > before["r/eth1"]["tx_packets"]
    assert after["h2/eth0"]["rx_packets"] > before["h2/eth0"]["rx_packets"]
    assert elapsed < TIME_BUDGET, f"fuzzing {N_FRAMES} frames took {elapsed:.1f} s"

    # Same seed, same frames: the same drops and the same counters, device by device.
    fx2 = build_lab(trace=False)
    assert snapshot(fx2.lab) == before
    inject(fx2.lab, frames, build_templates(fx2.lab))
    assert fx2.lab.trace.drops == drops
    assert snapshot(fx2.lab) == after
    assert fx2.delivered == fx.delivered


def test_fuzz_sample_every_frame_has_decisions(impl: str) -> None:
    """A traced lab (on both tables): every injected frame leaves at least one decision; every drop
    names a Drop reason; the same frames give the same decisions, to the text."""
    pure_python = impl == "python"
    fx = build_lab(trace=True, pure_python=pure_python)
    lab = fx.lab
    entries = build_templates(lab)
    frames = list(Mutator(entries, SEED + 1).stream(SAMPLE_FRAMES))
    before = snapshot(lab)
    pids, per_entry = inject(lab, frames, entries)
    check_accounting(lab, entries, before, snapshot(lab), per_entry)

    silent = [(pid, entries[e].name, frame.hex())
              for pid, (e, frame) in zip(pids, frames, strict=True) if not lab.decisions(pid)]
    assert not silent, f"{len(silent)} frames without any decision, first: {silent[:3]}"
    for pid in pids:
        for d in lab.decisions(pid):
            if d.drop is not None:
                assert isinstance(d.drop, Drop), d
                assert d.drop in Drop.__members__.values(), d
    # The drop counters and the recorded decisions tell the same story.
    assert len(lab.trace.decisions) < lab.trace.limit
    recorded_drops = sum(1 for d in lab.trace.decisions if d.drop is not None)
    assert recorded_drops == sum(lab.trace.drops.values()) > 0
    assert {Drop.MALFORMED.value, Drop.BAD_CHECKSUM.value} <= set(lab.trace.drops)

    # Deterministic down to every decision's time and text.
    fx2 = build_lab(trace=True, pure_python=pure_python)
    inject(fx2.lab, frames, build_templates(fx2.lab))
    assert fx2.lab.trace.drops == lab.trace.drops
    assert snapshot(fx2.lab) == snapshot(lab)
    assert fx2.lab.trace.render() == lab.trace.render()
