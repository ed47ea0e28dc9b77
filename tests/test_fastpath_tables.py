"""Property tests for the data-plane tables and byte ops: compiled module vs twin vs oracles.

Every test runs on both implementations (`impl` fixture: "c" = emu._fastpath, "py" = the
pure-Python twin); a missing extension fails the "c" runs unless EMU_NO_EXTENSIONS=1.
"""

from __future__ import annotations

import random
import struct
from array import array
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

U32 = st.integers(0, 2**32 - 1)
U16 = st.integers(0, 0xFFFF)
MAC = st.integers(0, 2**48 - 1)


from tests.tables import both, impl  # noqa: E402,F401  (fixtures)


# ---------------------------------------------------------------------------
# reference helpers
# ---------------------------------------------------------------------------


def mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


def oracle_lookup(routes: dict[tuple[int, int], int], addr: int) -> tuple[int, int, int] | None:
    """Brute force: scan every prefix, keep the longest that contains addr."""
    best = None
    for (p, n), v in routes.items():
        if addr & mask(n) == p and (best is None or n > best[1]):
            best = (p, n, v)
    return best


def ref_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_csum(data: bytes) -> int:
    """Plain RFC 1071 checksum, written independently of the modules."""
    return ~ref_sum(data) & 0xFFFF


def pseudo(src: int, dst: int, proto: int, length: int) -> bytes:
    return struct.pack("!IIBBH", src, dst, 0, proto, length)


def ip_header(tot: int, ident: int, frag: int, ttl: int, proto: int, src: int, dst: int,
              options: bytes = b"", tos: int = 0) -> bytes:
    ihl = (20 + len(options)) // 4
    h = struct.pack("!BBHHHBBHII", 0x40 | ihl, tos, tot, ident, frag, ttl, proto, 0, src, dst) + options
    return h[:10] + struct.pack("!H", ref_csum(h)) + h[12:]


def l4_segment(proto: int, src: int, dst: int, sport: int, dport: int, payload: bytes,
               udp_zero: bool, icmp_type: int = 8) -> bytes:
    """TCP/UDP/ICMP segment with a from-scratch checksum (UDP may carry 0 = none)."""
    if proto == 6:
        seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 2, 5 << 4, 0x18, 1000, 0, 0) + payload
        c = ref_csum(pseudo(src, dst, 6, len(seg)) + seg)
        return seg[:16] + struct.pack("!H", c) + seg[18:]
    if proto == 17:
        seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        c = 0 if udp_zero else (ref_csum(pseudo(src, dst, 17, len(seg)) + seg) or 0xFFFF)
        return seg[:6] + struct.pack("!H", c) + seg[8:]
    if proto == 1:
        seg = struct.pack("!BBHHH", icmp_type, 0, 0, sport, 1) + payload
        return seg[:2] + struct.pack("!H", ref_csum(seg)) + seg[4:]
    return payload  # opaque protocol


ETH = bytes.fromhex("020000000001020000000002") + b"\x08\x00"


def build_frame(f: dict) -> bytearray:
    """Ethernet + IPv4 (+options) + L4 + padding, all checksums from scratch."""
    first = f["frag"] & 0x1FFF == 0
    if first:
        seg = l4_segment(f["proto"], f["src"], f["dst"], f["sport"], f["dport"], f["payload"],
                         f["udp_zero"], f["icmp_type"])
    else:
        seg = f["opaque"]
    tot = 20 + len(f["options"]) + len(seg)
    hdr = ip_header(tot, f["ident"], f["frag"], f["ttl"], f["proto"], f["src"], f["dst"], f["options"])
    return bytearray(ETH + hdr + seg + f["pad"])


packet_fields = st.fixed_dictionaries({
    "proto": st.sampled_from([6, 17, 17, 1, 47]),
    "src": U32,
    "dst": U32,
    "sport": U16,
    "dport": U16,
    "payload": st.binary(max_size=41),
    "opaque": st.binary(max_size=30),
    "udp_zero": st.booleans(),
    "icmp_type": st.sampled_from([0, 8, 3, 11]),
    "ttl": st.integers(1, 255),
    "ident": U16,
    "frag": st.sampled_from([0, 0x4000, 0x2000, 0x2000 | 185, 0x0001, 0x4000]),
    "options": st.sampled_from([b"", b"\x01\x01\x01\x00", bytes([0x44, 8, 5, 0]) + b"\0" * 4]),
    "pad": st.sampled_from([b"", b"\0" * 6, b"\xaa" * 3]),
})


# ---------------------------------------------------------------------------
# LPM
# ---------------------------------------------------------------------------

ADDRS = st.one_of(
    st.sampled_from([0, 0xFFFFFFFF, 0x0A000000, 0x0A010000, 0x0A0100FF, 0x0A010080, 0x0AF40100,
                     0xC0A80101, 0x80000000, 0x7FFFFFFF, 0xA9FE0001]),
    U32,
)
LPM_OP = st.one_of(
    st.tuples(st.just("ins"), ADDRS, st.integers(0, 32), st.integers(0, 2**63 - 1)),
    st.tuples(st.just("ins"), ADDRS, st.sampled_from([0, 8, 16, 24, 30, 31, 32]), st.integers(0, 50)),
    st.tuples(st.just("rm"), ADDRS, st.integers(0, 32)),
    st.tuples(st.just("rm_some"), st.integers(0, 10**6)),
    st.tuples(st.just("replace"), st.integers(0, 10**6), st.integers(0, 9)),
)


def check_lpm(t: object, routes: dict[tuple[int, int], int], probes: list[int]) -> None:
    assert len(t) == len(routes)
    for a in probes:
        want = oracle_lookup(routes, a)
        assert t.lookup_prefix(a) == want, hex(a)
        assert t.lookup(a) == (-1 if want is None else want[2])
    assert list(t.lookup_batch(array("I", probes))) == [t.lookup(a) for a in probes]


@settings(SETTINGS, max_examples=200)
@given(ops=st.lists(LPM_OP, min_size=10, max_size=150), extra=st.lists(U32, max_size=8),
       prefill=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_lpm_sequences_match_bruteforce(impl: ModuleType, ops: list, extra: list[int], prefill: int,
                                        seed: int) -> None:
    t = impl.LpmTable()
    routes: dict[tuple[int, int], int] = {}
    rng = random.Random(seed)
    for i in range(prefill):  # clustered routes so that many runs work on the trie form
        n = rng.choice([0, 8, 16, 23, 24, 24, 25, 30, 32, rng.randint(0, 32)])
        p = (0x0A000000 | rng.getrandbits(18)) & mask(n)
        t.insert(p, n, i)
        routes[(p, n)] = i
    for op in ops:
        if op[0] == "ins":
            _, a, n, v = op
            p = a & mask(n)
            t.insert(p, n, v)
            routes[(p, n)] = v
            probe = a
        elif op[0] == "rm":
            _, a, n = op
            p = a & mask(n)
            assert t.remove(p, n) == ((p, n) in routes)
            routes.pop((p, n), None)
            probe = a
        elif op[0] == "rm_some":
            if not routes:
                continue
            p, n = sorted(routes)[op[1] % len(routes)]
            assert t.remove(p, n) is True
            assert t.remove(p, n) is False
            del routes[(p, n)]
            probe = p
        else:
            if not routes:
                continue
            p, n = sorted(routes)[op[1] % len(routes)]
            t.insert(p, n, op[2])
            routes[(p, n)] = op[2]
            probe = p | (~mask(n) & 0xFFFFFFFF)
        check_lpm(t, routes, [probe, probe ^ 1, (probe + 1) & 0xFFFFFFFF])
    assert t.items() == sorted((p, n, v) for (p, n), v in routes.items())
    for (p, n), v in routes.items():
        assert t.get(p, n) == v
    last = [p | (~mask(n) & 0xFFFFFFFF) for p, n in routes]
    check_lpm(t, routes, [p for p, _ in routes] + last + extra + [0, 0xFFFFFFFF])


def test_lpm_edges(impl: ModuleType) -> None:
    t = impl.LpmTable()
    assert t.lookup(0) == -1 and t.lookup_prefix(123) is None and len(t) == 0
    t.insert(0, 0, 7)
    t.insert(0xFFFFFFFF, 32, 9)
    t.insert(0x0A000000, 8, 1)
    assert t.lookup(0xFFFFFFFF) == 9 and t.lookup(0xFFFFFFFE) == 7 and t.lookup(0x0A0A0A0A) == 1
    assert t.lookup_prefix(0x0B000000) == (0, 0, 7)
    t.insert(0x0A000000, 8, 2)  # replace
    assert len(t) == 3 and t.get(0x0A000000, 8) == 2 and t.get(0x0A000000, 9) == -1
    assert t.remove(0, 0) and not t.remove(0, 0) and t.lookup(0x01020304) == -1
    t.clear()
    assert len(t) == 0 and t.items() == [] and t.lookup(0xFFFFFFFF) == -1


def test_lpm_validation(impl: ModuleType) -> None:
    t = impl.LpmTable()
    for args in [(0x0A000001, 8, 1), (0, 33, 1), (0, -1, 1), (0, 0, -1), (2**32, 32, 1),
                 (-1, 0, 1), (0, 0, 2**63)]:
        with pytest.raises(ValueError):
            t.insert(*args)
    with pytest.raises(ValueError):
        t.remove(0x0A000001, 8)
    with pytest.raises(ValueError):
        t.get(1, 0)
    with pytest.raises(TypeError):
        t.insert(1.5, 32, 1)
    with pytest.raises(OverflowError):
        t.lookup(2**32)
    with pytest.raises(OverflowError):
        t.lookup(-1)
    with pytest.raises(ValueError):
        t.lookup_batch(b"\0" * 5)
    with pytest.raises(ValueError):
        t.lookup_batch(array("H", [1, 2]))
    assert len(t) == 0


def test_lpm_batch_buffers(impl: ModuleType) -> None:
    t = impl.LpmTable()
    rng = random.Random(5)
    for i in range(40):
        n = rng.randint(8, 32)
        t.insert(rng.getrandbits(32) & mask(n), n, i)
    addrs = array("I", [p | rng.getrandbits(32 - n) if n < 32 else p for p, n, _ in t.items()]
                  + [rng.getrandbits(32) for _ in range(100)])
    want = [t.lookup(a) for a in addrs]
    out = t.lookup_batch(addrs)
    assert isinstance(out, array) and out.typecode == "q" and list(out) == want
    assert list(t.lookup_batch(addrs.tobytes())) == want
    assert list(t.lookup_batch(memoryview(addrs))) == want
    assert list(t.lookup_batch(memoryview(addrs.tobytes()).cast("I"))) == want
    assert list(t.lookup_batch(bytearray(addrs.tobytes()))) == want
    assert list(t.lookup_batch(array("i", addrs.tobytes()))) == want
    assert list(t.lookup_batch(b"")) == []


def test_lpm_large_against_twin(both: tuple[ModuleType, ModuleType]) -> None:
    """Thousands of clustered and random prefixes, churned: compiled == twin everywhere."""
    c_mod, py_mod = both
    rng = random.Random(1234)
    c, ref = c_mod.LpmTable(), py_mod.LpmTable()
    keys: list[tuple[int, int]] = []

    def rand_prefix() -> tuple[int, int]:
        n = rng.choice([0, 8, 12, 16, 18, 20, 22, 24, 24, 24, 25, 26, 28, 30, 31, 32, rng.randint(0, 32)])
        base = rng.choice([0x0A000000, 0x0AF40000, 0xC0A80000, rng.getrandbits(32)])
        a = base | rng.getrandbits(16) if rng.random() < 0.7 else rng.getrandbits(32)
        return a & mask(n), n

    def compare(k: int) -> None:
        probes = array("I", [rng.getrandbits(32) for _ in range(k)])
        probes.extend((p | rng.getrandbits(32 - n)) if n < 32 else p for p, n in rng.sample(keys, min(k, len(keys))))
        assert list(c.lookup_batch(probes)) == list(ref.lookup_batch(probes))
        for a in probes[:200]:
            assert c.lookup_prefix(a) == ref.lookup_prefix(a)

    for round_ in range(3):
        for _ in range(3000):
            p, n = rand_prefix()
            v = rng.getrandbits(40)
            c.insert(p, n, v)
            ref.insert(p, n, v)
            keys.append((p, n))
        keys = sorted(set(keys))
        assert len(c) == len(ref) == len(keys)
        compare(3000)
        rng.shuffle(keys)
        for p, n in keys[: len(keys) // 2 + round_ * 100]:
            assert c.remove(p, n) == ref.remove(p, n)
        keys = keys[len(keys) // 2 + round_ * 100 :]
        assert len(c) == len(ref)
        compare(2000)
        assert c.items() == ref.items()
        # freed blocks stay bounded: the trie is compacted once they pass a quarter of live data
        mode, nodes, n_used, n_cap, n_free, r_used, r_cap, r_free = c._debug_stats()
        assert mode == "trie" and n_free <= nodes // 4 + 64 and r_free <= len(c) // 4 + 64
        assert n_used - n_free == nodes and r_used - r_free == len(c)
        assert n_cap <= 1.25 * n_used + 8 and r_cap <= 1.25 * r_used + 8
    # shrink back to the linear form and grow again
    for p, n in keys[5:]:
        assert c.remove(p, n) and ref.remove(p, n)
    keys = keys[:5]
    assert c.items() == ref.items() and len(c) == 5
    compare(500)
    small = c.memory_bytes()
    assert small < 8192
    for i in range(50):
        c.insert(0x0A000000 | (i << 8), 24, i)
        ref.insert(0x0A000000 | (i << 8), 24, i)
    assert c.items() == ref.items() and c.memory_bytes() > small
    compare(500)
    c.clear()
    assert c.memory_bytes() <= small and len(c) == 0


def test_lpm_three_routes_memory(impl: ModuleType) -> None:
    t = impl.LpmTable()
    t.insert(0, 0, 0)
    t.insert(0x0AF40100, 24, 1)
    t.insert(0xA9FE0101, 32, 2)
    assert 0 < t.memory_bytes() < 8192


# ---------------------------------------------------------------------------
# FDB
# ---------------------------------------------------------------------------

FDB_MACS = [0x020000000001, 0x020000000002, 0xFFFFFFFFFFFF, 0, 0x3C0000ABCDEF]
FDB_OP = st.one_of(
    st.tuples(st.just("learn"), st.integers(0, 4), st.sampled_from([0, 1, 4095]), st.integers(-1, 3),
              st.sampled_from([0.0, 0.5, 3.0, 10.0, 10.5, 25.0])),
    st.tuples(st.just("static"), st.integers(0, 4), st.sampled_from([0, 1, 4095]), st.integers(1, 3)),
    st.tuples(st.just("remove"), st.integers(0, 4), st.sampled_from([0, 1, 4095])),
    st.tuples(st.just("expire"), st.sampled_from([0.0, 5.0, 11.0])),
    st.tuples(st.just("flush"), st.integers(-1, 3)),
    st.tuples(st.just("ageing"), st.sampled_from([0.0, 2.0, 10.0, 300.0])),
)


@settings(SETTINGS, max_examples=200)
@given(ops=st.lists(FDB_OP, min_size=5, max_size=80))
def test_fdb_sequences_match_dict(impl: ModuleType, ops: list) -> None:
    fdb = impl.FdbTable(10.0)
    oracle: dict[tuple[int, int], list] = {}  # key -> [port, updated, static]
    ageing = 10.0
    now = 100.0

    def aged(e: list) -> bool:
        return not e[2] and now - e[1] > ageing

    for op in ops:
        kind = op[0]
        if kind == "learn":
            _, mi, vlan, port, dt = op
            now += dt
            key = (FDB_MACS[mi], vlan)
            e = oracle.get(key)
            if e is not None and e[2]:
                want = 0  # static entries are never overwritten by learning
            elif e is None or aged(e):
                want = 1  # an aged entry counts as absent
                oracle[key] = [port, now, False]
            else:
                want = 2 if e[0] != port else 0
                e[0], e[1] = port, now
            assert fdb.learn(key[0], vlan, port, now) == want
        elif kind == "static":
            _, mi, vlan, port = op
            fdb.add_static(FDB_MACS[mi], vlan, port)
            oracle[(FDB_MACS[mi], vlan)] = [port, 0.0, True]
        elif kind == "remove":
            key = (FDB_MACS[op[1]], op[2])
            assert fdb.remove(*key) == (key in oracle)
            oracle.pop(key, None)
        elif kind == "expire":
            now += op[1]
            gone = sorted((k[0], k[1], e[0]) for k, e in oracle.items() if aged(e))
            for mac, vlan, _ in gone:
                del oracle[(mac, vlan)]
            assert fdb.expire(now) == gone
        elif kind == "flush":
            keys = [k for k, e in oracle.items() if not e[2] and e[0] == op[1]]
            for k in keys:
                del oracle[k]
            assert fdb.flush_port(op[1]) == len(keys)
        else:
            ageing = op[1]
            fdb.ageing_time = ageing
            assert fdb.ageing_time == ageing
        assert len(fdb) == len(oracle)
        for mac in FDB_MACS:
            for vlan in (0, 1, 4095):
                e = oracle.get((mac, vlan))
                assert fdb.lookup(mac, vlan, now) == (-1 if e is None or aged(e) else e[0])
        want_entries = sorted((k[0], k[1], e[0], e[2], 0.0 if e[2] else e[1])
                              for k, e in oracle.items() if not aged(e))
        assert fdb.entries(now) == want_entries
        batch = array("Q", FDB_MACS + [2**48, 2**64 - 1])
        assert list(fdb.lookup_batch(batch, 1, now)) == [fdb.lookup(m, 1, now) for m in FDB_MACS] + [-1, -1]


def test_fdb_many_macs(both: tuple[ModuleType, ModuleType]) -> None:
    """Growth, shrink and deletion chains of the compiled hash table against the twin."""
    rng = random.Random(7)
    tables = [m.FdbTable(300.0) for m in both]
    macs = [rng.getrandbits(48) for _ in range(6000)]
    vlan_of = {}
    for i, mac in enumerate(macs):
        vlan_of[mac] = i % 3
        assert tables[0].learn(mac, i % 3, i % 17, float(i)) == tables[1].learn(mac, i % 3, i % 17, float(i))
    for mac in rng.sample(macs, 4500):
        assert tables[0].remove(mac, vlan_of[mac]) == tables[1].remove(mac, vlan_of[mac])
    assert len(tables[0]) == len(tables[1])
    probe = array("Q", macs[:3000])
    for vlan in range(3):
        assert list(tables[0].lookup_batch(probe, vlan, 500.0)) == list(tables[1].lookup_batch(probe, vlan, 500.0))
    assert tables[0].entries(6000.0) == tables[1].entries(6000.0)
    assert tables[0].flush_port(3) == tables[1].flush_port(3)
    assert tables[0].expire(5900.0) == tables[1].expire(5900.0)
    assert tables[0].entries(5900.0) == tables[1].entries(5900.0)


def test_fdb_semantics(impl: ModuleType) -> None:
    fdb = impl.FdbTable()
    assert fdb.ageing_time == 300.0
    assert fdb.learn(1, 0, 5, 0.0) == 1
    assert fdb.learn(1, 0, 5, 1.0) == 0
    assert fdb.learn(1, 0, 6, 2.0) == 2
    assert fdb.lookup(1, 0, 302.0) == 6 and fdb.lookup(1, 0, 302.5) == -1
    assert fdb.entries(2.0) == [(1, 0, 6, False, 2.0)]
    assert len(fdb) == 1  # aged but not yet expired
    assert fdb.learn(1, 0, 6, 400.0) == 1  # an aged entry counts as absent
    fdb.add_static(2, 7, 9)
    assert fdb.learn(2, 7, 3, 1.0) == 0 and fdb.lookup(2, 7, 1e9) == 9
    assert fdb.flush_port(9) == 0 and fdb.expire(1e9) == [(1, 0, 6)]
    assert fdb.entries(1e9) == [(2, 7, 9, True, 0.0)]
    for bad in [(2**48, 0), (0, 4096)]:
        with pytest.raises(ValueError):
            fdb.lookup(*bad, 0.0)
        with pytest.raises(ValueError):
            fdb.learn(*bad, 1, 0.0)
    with pytest.raises(OverflowError):
        fdb.lookup(-1, 0, 0.0)
    with pytest.raises(ValueError):
        fdb.ageing_time = -1.0
    with pytest.raises(ValueError):
        fdb.lookup_batch(b"\0" * 12, 0, 0.0)
    assert list(fdb.lookup_batch(array("Q", [2]).tobytes(), 7, 0.0)) == [9]


# ---------------------------------------------------------------------------
# neighbours
# ---------------------------------------------------------------------------

NEIGH_OP = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 5), st.integers(-1, 3), st.integers(0, 0x80),
              st.floats(0, 1e6, allow_nan=False)),
    st.tuples(st.just("rm"), st.integers(0, 5)),
)
NEIGH_IPS = [0, 1, 0x0A000001, 0xFFFFFFFF, 0xC0A80101, 0x0A000002]


@SETTINGS
@given(ops=st.lists(NEIGH_OP, max_size=60), many=st.integers(0, 300))
def test_neigh_matches_dict(impl: ModuleType, ops: list, many: int) -> None:
    t = impl.NeighTable()
    oracle: dict[int, tuple[int, int, float]] = {}
    for i in range(many):
        t.set(0x64000000 + i * 7, i, 2, float(i))
        oracle[0x64000000 + i * 7] = (i, 2, float(i))
    for op in ops:
        ip = NEIGH_IPS[op[1]]
        if op[0] == "set":
            t.set(ip, op[2], op[3], op[4])
            oracle[ip] = (op[2], op[3], op[4])
        else:
            assert t.remove(ip) == (ip in oracle)
            oracle.pop(ip, None)
        assert len(t) == len(oracle)
        for q in NEIGH_IPS:
            assert t.get(q) == oracle.get(q)
    assert t.items() == sorted((ip, *rec) for ip, rec in oracle.items())
    probe = array("I", NEIGH_IPS + list(oracle)[:50])
    assert list(t.lookup_batch(probe)) == [oracle[ip][0] if ip in oracle else -1 for ip in probe]
    with pytest.raises(ValueError):
        t.set(1, 2**48, 0, 0.0)
    with pytest.raises(ValueError):
        t.set(2**32, 1, 0, 0.0)


# ---------------------------------------------------------------------------
# checksums and header rewriting
# ---------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=301), off=st.integers(0, 5), cut=st.integers(0, 5))
def test_inet_checksum_matches_reference(impl: ModuleType, data: bytes, off: int, cut: int) -> None:
    off = min(off, len(data))
    length = max(0, len(data) - off - cut)
    assert impl.inet_checksum(data) == ref_csum(data)
    assert impl.inet_checksum(bytearray(data), off, length) == ref_csum(data[off : off + length])
    assert impl.inet_checksum(memoryview(data), off) == ref_csum(data[off:])
    with pytest.raises(ValueError):
        impl.inet_checksum(data, 0, len(data) + 1)


@SETTINGS
@given(f=packet_fields)
def test_parse_flow_matches_reference(impl: ModuleType, f: dict) -> None:
    frame = bytes(build_frame(f))
    ihl = 20 + len(f["options"])
    tot = len(frame) - 14 - len(f["pad"])
    sport = dport = 0
    if f["frag"] & 0x1FFF == 0:
        if f["proto"] in (6, 17):
            sport, dport = f["sport"], f["dport"]
        elif f["proto"] == 1:
            dport = f["icmp_type"] << 8
            sport = f["sport"] if f["icmp_type"] in (0, 8) else 0
    want = (f["src"], f["dst"], f["proto"], sport, dport, f["ttl"], ihl, tot, f["frag"])
    assert impl.parse_flow(frame) == want
    assert impl.parse_flow(b"\0" * 7 + frame[14:], 7) == want
    assert impl.ipv4_header_checksum_ok(frame, 14)
    assert impl.parse_flow(frame[: 14 + tot - 1]) is None  # truncated
    assert impl.parse_flow(frame[:33]) is None
    bad_version = bytearray(frame)
    bad_version[14] = 0x65
    assert impl.parse_flow(bad_version) is None
    bad_ihl = bytearray(frame)
    bad_ihl[14] = 0x44
    assert impl.parse_flow(bad_ihl) is None
    short_tot = bytearray(frame)
    struct.pack_into("!H", short_tot, 16, ihl - 4)
    assert impl.parse_flow(short_tot) is None
    broken = bytearray(frame)
    broken[22] ^= 0x01
    assert not impl.ipv4_header_checksum_ok(broken, 14)
    assert impl.parse_flow_batch([frame, frame[:20], broken], 14) == [
        want, None, impl.parse_flow(broken)]


@SETTINGS
@given(f=packet_fields)
def test_ttl_decrement_matches_recompute(impl: ModuleType, f: dict) -> None:
    buf = build_frame(f)
    new_ttl = impl.ttl_decrement(buf, 14)
    assert new_ttl == f["ttl"] - 1
    assert buf == build_frame({**f, "ttl": f["ttl"] - 1})
    if new_ttl == 0:
        with pytest.raises(ValueError):
            impl.ttl_decrement(buf, 14)
    with pytest.raises(TypeError):
        impl.ttl_decrement(bytes(buf), 14)


@SETTINGS
@given(f=packet_fields, uid=st.integers(0, 2**32 - 1), cut=st.integers(0, 80), frag=st.sampled_from([0, 0x4000, 0x2001]))
def test_flow_key_is_the_same_in_c_and_python(both: tuple[ModuleType, ModuleType], f: dict, uid: int, cut: int,
                                              frag: int) -> None:
    frame = bytes(build_frame({**f, "frag": frag}))
    c, py = both
    for fr in (frame, frame[:cut]):
        assert c.flow_key(uid, fr) == py.flow_key(uid, fr)
    ident = bytearray(frame)
    ident[18:20] = b"\x12\x34"  # the IP ID is not part of a flow's key
    assert py.flow_key(uid, bytes(ident)) == py.flow_key(uid, frame)


@SETTINGS
@given(f=packet_fields, count=st.integers(0, 5), first=st.integers(0xFFF0, 0x1000F))
def test_stamp_frames_matches_recompute(impl: ModuleType, f: dict, count: int, first: int) -> None:
    tpl = bytes(build_frame(f))
    out = impl.stamp_frames(tpl, count, first & 0xFFFF)
    assert bytes(out) == b"".join(bytes(build_frame({**f, "ident": (first + i) & 0xFFFF})) for i in range(count))


@SETTINGS
@given(f=packet_fields, which=st.integers(0, 1), addr=U32)
def test_set_ipv4_addr_matches_recompute(impl: ModuleType, f: dict, which: int, addr: int) -> None:
    buf = build_frame(f)
    impl.set_ipv4_addr(buf, 14, which, addr)
    g = {**f, ("src", "dst")[which]: addr}
    want = build_frame(g)
    if f["proto"] == 1 or f["frag"] & 0x1FFF or f["proto"] == 47:
        # no pseudo header involved: L4 bytes unchanged
        assert buf[14 + 20 + len(f["options"]):] == build_frame(f)[14 + 20 + len(f["options"]):]
    assert buf == want
    if f["proto"] == 17 and f["udp_zero"] and f["frag"] & 0x1FFF == 0:
        l4 = 14 + 20 + len(f["options"])
        assert buf[l4 + 6 : l4 + 8] == b"\0\0"


@SETTINGS
@given(f=packet_fields, which=st.integers(0, 1), port=U16)
def test_set_l4_port_matches_recompute(impl: ModuleType, f: dict, which: int, port: int) -> None:
    buf = build_frame(f)
    ok = f["frag"] & 0x1FFF == 0 and (
        f["proto"] in (6, 17) or (f["proto"] == 1 and which == 0 and f["icmp_type"] in (0, 8)))
    if not ok:
        before = bytes(buf)
        with pytest.raises(ValueError):
            impl.set_l4_port(buf, 14, which, port)
        assert bytes(buf) == before
        return
    impl.set_l4_port(buf, 14, which, port)
    key = "sport" if which == 0 else "dport"
    assert buf == build_frame({**f, key: port})


def test_l4_truncated_and_readonly(impl: ModuleType) -> None:
    seg = l4_segment(17, 1, 2, 10, 20, b"abcd", False)
    frame = bytearray(ETH + ip_header(20 + 6, 1, 0, 64, 17, 1, 2) + seg[:6])  # no UDP csum field
    before = bytes(frame)
    impl.set_ipv4_addr(frame, 14, 1, 3)
    assert frame[14 + 20 :] == before[14 + 20 :]  # L4 untouched
    assert ref_csum(bytes(frame[14:34])) == 0
    with pytest.raises(ValueError):
        impl.set_l4_port(frame, 14, 0, 5)
    with pytest.raises(TypeError):
        impl.set_ipv4_addr(bytes(frame), 14, 0, 1)
    with pytest.raises(ValueError):
        impl.set_ipv4_addr(frame, 14, 2, 1)
    with pytest.raises(ValueError):
        impl.set_ipv4_addr(frame, 40, 0, 1)
    with pytest.raises(OverflowError):
        impl.set_l4_port(frame, 14, 0, 70000)


@SETTINGS
@given(words=st.binary(min_size=6, max_size=40), pos=st.integers(0, 100), new=U32, new16=U16,
       udp=st.booleans(), zero=st.booleans())
def test_csum_replace_matches_recompute(impl: ModuleType, words: bytes, pos: int, new: int,
                                        new16: int, udp: bool, zero: bool) -> None:
    # body starts with a fixed non-zero word, as every real header/pseudo header has
    body = bytearray(b"\x45\x00" + words + (b"\0" if len(words) % 2 else b""))

    def field_for(b: bytes) -> int:
        c = ref_csum(bytes(b))
        return (c or 0xFFFF) if udp else c

    buf = bytearray(struct.pack("!H", 0 if (udp and zero) else field_for(body))) + body
    # rewritten words never include the fixed one, so the sum never becomes +0
    pos4 = 4 + 2 * (pos % ((len(body) - 6) // 2 + 1))
    old = int.from_bytes(buf[pos4 : pos4 + 4], "big")
    struct.pack_into("!I", buf, pos4, new)
    impl.csum_replace4(buf, 0, old, new, udp=udp)
    want = 0 if (udp and zero) else field_for(buf[2:])
    assert int.from_bytes(buf[:2], "big") == want
    pos2 = 4 + 2 * (pos % ((len(body) - 2) // 2))
    old16 = int.from_bytes(buf[pos2 : pos2 + 2], "big")
    struct.pack_into("!H", buf, pos2, new16)
    impl.csum_replace2(buf, 0, old16, new16, udp=udp)
    want = 0 if (udp and zero) else field_for(buf[2:])
    assert int.from_bytes(buf[:2], "big") == want


@SETTINGS
@given(src=U32, dst=U32, ports=st.tuples(U16, U16), payload=st.binary(max_size=51))
def test_udp_checksum(impl: ModuleType, src: int, dst: int, ports: tuple[int, int], payload: bytes) -> None:
    seg = l4_segment(17, src, dst, ports[0], ports[1], payload, False)
    stored = int.from_bytes(seg[6:8], "big")
    assert impl.udp_checksum(src, dst, seg) == stored
    zeroed = seg[:6] + b"\0\0" + seg[8:]
    assert impl.udp_checksum(src, dst, bytearray(zeroed)) == stored
    assert ref_sum(pseudo(src, dst, 17, len(seg)) + seg) == 0xFFFF


@SETTINGS
@given(tot=U16, ident=U16, ff=U16, ttl=st.integers(0, 255), proto=st.integers(0, 255), src=U32,
       dst=U32, tos=st.integers(0, 255))
def test_ipv4_build_header(impl: ModuleType, tot: int, ident: int, ff: int, ttl: int, proto: int,
                           src: int, dst: int, tos: int) -> None:
    h = impl.ipv4_build_header(tot, ident, ff, ttl, proto, src, dst, tos)
    assert isinstance(h, bytes) and h == ip_header(tot, ident, ff, ttl, proto, src, dst, tos=tos)
    assert impl.ipv4_header_checksum_ok(h, 0)


@SETTINGS
@given(inner=st.binary(min_size=14, max_size=200), smac=MAC, dmac=MAC, src=U32, dst=U32, sport=U16,
       dport=U16, vni=st.integers(0, 2**24 - 1), ident=U16, ttl=st.integers(0, 255))
def test_vxlan_round_trip(impl: ModuleType, inner: bytes, smac: int, dmac: int, src: int, dst: int,
                          sport: int, dport: int, vni: int, ident: int, ttl: int) -> None:
    out = impl.vxlan_encap(inner, smac, dmac, src, dst, sport, dport, vni, ident, ttl)
    assert isinstance(out, bytes) and len(out) == 14 + 20 + 8 + 8 + len(inner)
    assert out[:14] == dmac.to_bytes(6, "big") + smac.to_bytes(6, "big") + b"\x08\x00"
    assert out[14:34] == ip_header(len(out) - 14, ident, 0, ttl, 17, src, dst)
    udp = out[34:]
    assert udp[:6] == struct.pack("!HHH", sport, dport, len(udp))
    assert ref_sum(pseudo(src, dst, 17, len(udp)) + udp) == 0xFFFF and udp[6:8] != b"\0\0"
    assert udp[8:16] == bytes([0x08, 0, 0, 0]) + (vni << 8).to_bytes(4, "big")
    assert impl.udp_checksum(src, dst, udp) == int.from_bytes(udp[6:8], "big")
    assert impl.vxlan_decap(out) == (vni, 50) and out[50:] == inner
    assert impl.vxlan_decap(out[14:], 0) == (vni, 36)
    assert impl.parse_flow(out)[:5] == (src, dst, 17, sport, dport)
    no_i = bytearray(out)
    no_i[42] = 0
    assert impl.vxlan_decap(no_i) is None
    assert impl.vxlan_decap(out[:-1]) is None
    frag = bytearray(out)
    frag[20] |= 0x20
    assert impl.vxlan_decap(frag) is None
    tcp = bytearray(out)
    tcp[23] = 6
    assert impl.vxlan_decap(tcp) is None
    assert impl.vxlan_decap(out[: 14 + 20 + 16 + 13]) is None


def test_vxlan_small_inner_rejected(impl: ModuleType) -> None:
    out = impl.vxlan_encap(b"\x01" * 10, 1, 2, 3, 4, 5, 4789, 7, 1)
    assert impl.vxlan_decap(out) is None
    with pytest.raises(ValueError):
        impl.vxlan_encap(b"x" * 20, 1, 2, 3, 4, 5, 6, 2**24, 1)
    with pytest.raises(ValueError):
        impl.vxlan_encap(b"x" * 20, 2**48, 2, 3, 4, 5, 6, 1, 1)


@SETTINGS
@given(f=packet_fields, src=U32, dst=U32, ident=U16, ttl=st.integers(0, 255), tos=st.integers(0, 255),
       df=st.sampled_from([-1, 0, 1]))
def test_ipip_encap(impl: ModuleType, f: dict, src: int, dst: int, ident: int, ttl: int, tos: int,
                    df: int) -> None:
    inner = bytes(build_frame({**f, "pad": b""})[14:])
    out = impl.ipip_encap(inner, src, dst, ident, ttl, tos, df=df)
    flags = (f["frag"] & 0x4000) if df < 0 else (0x4000 if df else 0)
    assert out == ip_header(len(inner) + 20, ident, flags, ttl, 4, src, dst, tos=tos) + inner
    assert impl.ipip_encap(inner, src, dst, ident) == ip_header(
        len(inner) + 20, ident, f["frag"] & 0x4000, 64, 4, src, dst) + inner
    assert impl.parse_flow(out, 0)[2] == 4
    with pytest.raises(ValueError):
        impl.ipip_encap(inner[:19], src, dst, ident)


# ---------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------


@SETTINGS
@given(src=U32, dst=U32, proto=st.integers(0, 255), sport=U16, dport=U16,
       seed=st.integers(-(2**70), 2**70))
def test_flow_hash_symmetric(impl: ModuleType, src: int, dst: int, proto: int, sport: int, dport: int,
                             seed: int) -> None:
    h = impl.flow_hash(src, dst, proto, sport, dport, seed)
    assert 0 <= h < 2**32
    assert h == impl.flow_hash(dst, src, proto, dport, sport, seed)
    assert h == impl.flow_hash(src, dst, proto, sport, dport, seed & 0xFFFFFFFF)
    p = impl.vxlan_source_port(h)
    assert 32768 <= p < 60999 and p == ((h * (60999 - 32768)) >> 32) + 32768
    assert impl.vxlan_source_port(h, 1000, 1000) == 1000


@SETTINGS
@given(src=U32, dst=U32, proto=st.integers(0, 255), sport=U16, dport=U16, seed=st.integers(0, 2**40))
def test_flow_hash_equal_across_impls(both: tuple[ModuleType, ModuleType], src: int, dst: int, proto: int,
                                      sport: int, dport: int, seed: int) -> None:
    c, py = both
    assert c.flow_hash(src, dst, proto, sport, dport, seed) == py.flow_hash(src, dst, proto, sport, dport, seed)


def test_flow_hash_spreads(impl: ModuleType) -> None:
    hs = {impl.flow_hash(0x0A000001, 0x0A000002, 6, 40000 + i, 80, 1) for i in range(1000)}
    assert len(hs) == 1000
    ports = {impl.vxlan_source_port(h) for h in hs}
    assert len(ports) > 900
    assert impl.flow_hash(1, 2, 6, 3, 4, 1) != impl.flow_hash(1, 2, 6, 3, 4, 2)
    assert impl.flow_hash(1, 2, 6, 3, 4, 1) != impl.flow_hash(1, 2, 17, 3, 4, 1)


# ---------------------------------------------------------------------------
# both implementations fail the same way
# ---------------------------------------------------------------------------

BAD_CALLS = [
    ("flow_hash", (2**32, 0, 6, 1, 2, 0)),
    ("flow_hash", (0, 0, 256, 1, 2, 0)),
    ("flow_hash", (0, 0, 6, -1, 2, 0)),
    ("vxlan_source_port", (1, 10, 5)),
    ("vxlan_source_port", (2**32,)),
    ("ipv4_build_header", (70000, 0, 0, 64, 6, 1, 2)),
    ("ipv4_build_header", (20, 0, 0, 256, 6, 1, 2)),
    ("csum_replace4", (bytearray(4), 3, 0, 1)),
    ("csum_replace2", (bytearray(4), 0, 0, 2**16)),
    ("csum_replace2", (b"\0\0", 0, 0, 1)),
    ("udp_checksum", (1, 2, b"1234567")),
    ("inet_checksum", (b"abc", 4)),
    ("inet_checksum", ([1, 2],)),
    ("parse_flow", (b"", -1)),
    ("ttl_decrement", (bytearray(b"\x45" + bytes(19)), 0)),
    ("ttl_decrement", (bytearray(10), 0)),
    ("ipip_encap", (b"\x60" + bytes(39), 1, 2, 3)),
]


@pytest.mark.parametrize(("name", "args"), BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_CALLS)])
def test_same_errors(both: tuple[ModuleType, ModuleType], name: str, args: tuple) -> None:
    kinds = []
    for mod in both:
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is what is compared
            getattr(mod, name)(*args)
        kinds.append(type(info.value))
    assert kinds[0] is kinds[1], kinds


def test_same_public_api(both: tuple[ModuleType, ModuleType]) -> None:
    c, py = both
    for name in py.__all__:
        assert hasattr(c, name), name
    for cls in ("LpmTable", "FdbTable", "NeighTable"):
        methods = {m for m in dir(getattr(py, cls)) if not m.startswith("_")}
        assert methods <= set(dir(getattr(c, cls))), cls
