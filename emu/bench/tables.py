"""Table and edge workloads of `emu bench`: each measures emu against a baseline in the same run.

* `lpm.*`: LpmTable vs pytricia on seeded random prefix tables (half the keys inside a prefix);
* `fdb.*`: FdbTable learn and lookup vs a dict mac -> (port, updated);
* `ct.*`: ConntrackTable find and find_batch vs a dict of tuples;
* `scapy.edge`: UDP frames stamped in C from one template (stamp_frames) vs building each frame with Scapy;
* `pcap.write`: emu.pcap's pcapng writer vs Scapy's RawPcapNgWriter, on the same records.

"ours" is the compiled emu._fastpath (emu.fastpath.load()); a row's note says so when the
pure-Python twin ran instead.  The data generators are shared with the pytest-benchmark files
in bench/.  Every workload checks that both sides give the same answers before timing them.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from emu import fastpath
from emu.bench.registry import Row, workload
from emu.pcap import DIRECTION, LINKTYPE_ETHERNET, LINKTYPE_RAW, Record, write_pcapng

BATCH = 65_536
QUICK_BUDGET, FULL_BUDGET = 0.15, 1.0  # seconds spent timing one side of one row
TWIN_NOTE = "ours: the pure-Python twin"


# ---------------------------------------------------------------------------------------------
# timing


def _timed(fn: Callable[[], object], inner: int) -> float:
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return time.perf_counter() - t0
    finally:
        if gc_was:
            gc.enable()


def per_call(fn: Callable[[], object], budget: float, min_round: float = 0.002) -> float:
    """Best seconds per call of `fn` (garbage collection off): rounds of enough calls to last
    `min_round`, repeated for about `budget` seconds (at least one round)."""
    inner = 1
    t = _timed(fn, 1)
    while t < min_round:
        inner = max(inner * 2, int(inner * min_round / t * 1.2) if t > 0 else inner * 16)
        t = _timed(fn, inner)
    best = t / inner
    deadline = time.perf_counter() + budget - t
    while time.perf_counter() < deadline:
        best = min(best, _timed(fn, inner) / inner)
    return best


def _budget(quick: bool) -> float:
    return QUICK_BUDGET if quick else FULL_BUDGET


def rate_row(name: str, n: int, ours: Callable[[], object], baseline: str, base: Callable[[], object] | None,
             quick: bool, *, base_n: int | None = None, note: str = "", unit: str = "ops/s") -> Row:
    """A rate row: `n` operations per call of `ours` (and `base_n`, default `n`, per call of `base`)."""
    budget = _budget(quick)
    mine = n / per_call(ours, budget)
    theirs = None if base is None else (base_n or n) / per_call(base, budget)
    return Row(name, mine, baseline, theirs, unit=unit, note=note)


def _tables() -> tuple[ModuleType, str]:
    """The table module and the note its rows carry (empty for the compiled one)."""
    mod = fastpath.load()
    if fastpath.name(mod) == "cython":
        return mod, ""
    return mod, TWIN_NOTE


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"emu and the baseline disagree: {what}")


def _keys(n: int) -> str:
    """A key count for a row name: 256, 16k, 64k."""
    return f"{n // 1024}k" if n >= 1024 else str(n)


# ---------------------------------------------------------------------------------------------
# longest-prefix match

LPM_SEED = 20240611
# prefix-length mix loosely modelled on an Internet table: mostly /24, some host routes
_PLEN_WEIGHTS = {8: 1, 12: 1, 14: 1, 16: 6, 18: 3, 19: 4, 20: 6, 21: 6, 22: 12, 23: 9, 24: 40,
                 25: 1, 26: 1, 27: 1, 28: 1, 29: 2, 30: 2, 32: 3}


def lpm_prefixes(n: int, seed: int = LPM_SEED) -> list[tuple[int, int]]:
    """n distinct random (prefix, plen) pairs, deterministic for a seed."""
    rng = random.Random(seed)
    plens = list(_PLEN_WEIGHTS)
    weights = list(_PLEN_WEIGHTS.values())
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < n:
        for plen in rng.choices(plens, weights, k=n - len(seen)):
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            seen[(rng.getrandbits(32) & mask, plen)] = None
    return list(seen)


def lpm_keys(prefixes: list[tuple[int, int]], count: int, seed: int = LPM_SEED + 1) -> array:
    """count uint32 keys: even positions inside a random table prefix, odd ones uniform."""
    rng = random.Random(seed)
    keys = array("I")
    for i in range(count):
        if i % 2 == 0:
            p, n = prefixes[rng.randrange(len(prefixes))]
            keys.append(p | (rng.getrandbits(32 - n) if n < 32 else 0))
        else:
            keys.append(rng.getrandbits(32))
    return keys


def build_lpm(mod: ModuleType, prefixes: list[tuple[int, int]]) -> Any:
    """Our LpmTable with prefix i mapped to i."""
    t = mod.LpmTable()
    ins = t.insert
    for i, (p, n) in enumerate(prefixes):
        ins(p, n, i)
    return t


def build_pytricia(prefixes: list[tuple[int, int]]) -> Any:
    """The baseline: a pytricia trie with prefix i mapped to i."""
    import pytricia

    t = pytricia.PyTricia(32)
    ins = t.insert
    for i, (p, n) in enumerate(prefixes):
        ins(p, n, i)
    return t


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def lpm_memory(size: int) -> dict[str, dict[str, int]]:
    """Build each structure in this process and report RSS deltas (meant for a fresh process)."""
    prefixes = lpm_prefixes(size)
    out: dict[str, dict[str, int]] = {}
    gc.collect()
    before = _rss()
    ours = build_lpm(fastpath.load(), prefixes)
    gc.collect()
    out["emu"] = {"memory_bytes": ours.memory_bytes(), "rss_delta": _rss() - before}
    gc.collect()
    before = _rss()
    pyt = build_pytricia(prefixes)
    gc.collect()
    out["pytricia"] = {"rss_delta": _rss() - before}
    del ours, pyt
    return out


_MEMORY_CHILD = ("import json, sys; from emu.bench.tables import lpm_memory; "
                 "print(json.dumps(lpm_memory(int(sys.argv[1]))))")


@functools.cache
def lpm_memory_report(size: int) -> dict[str, dict[str, int]] | None:
    """lpm_memory(size) in a fresh subprocess, so earlier allocations cannot hide growth (None off Linux)."""
    if not os.path.exists("/proc/self/statm"):
        return None
    import emu  # the child must import the same package as this process

    root = Path(emu.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(size)], capture_output=True, text=True,
                         env=env, timeout=600, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


class LpmData:
    """Prefixes, keys and both tables for one size; the first build of each is timed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mod, self.note = _tables()
        self.prefixes = lpm_prefixes(size)
        self.keys = lpm_keys(self.prefixes, BATCH)
        t0 = time.perf_counter()
        self.ours = build_lpm(self.mod, self.prefixes)
        t1 = time.perf_counter()
        self.pyt = build_pytricia(self.prefixes)
        self.build_s = {"emu": t1 - t0, "pytricia": time.perf_counter() - t1}


@functools.cache
def lpm_data(size: int) -> LpmData:
    return LpmData(size)


def _lpm_lookup_rows(label: str, d: LpmData, keys: array, scalar: int, batches: list[int],
                     quick: bool) -> Iterator[Row]:
    ours_all = d.ours.lookup_batch(keys).tolist()
    pget = d.pyt.get
    _check(ours_all == [-1 if v is None else v for v in map(pget, keys.tolist())], f"{label} lookups")
    klist = keys[:scalar].tolist()
    lookup = d.ours.lookup

    def ours_scalar() -> None:
        for k in klist:
            lookup(k)

    def pyt_scalar() -> None:
        for k in klist:
            pget(k)

    yield rate_row(f"{label} scalar", scalar, ours_scalar, "pytricia get()", pyt_scalar, quick, note=d.note,
                   unit="lookups/s")
    for batch in batches:
        chunk = keys[:batch]
        blist = chunk.tolist()
        yield rate_row(f"{label} batch-{_keys(batch)}", batch,
                       functools.partial(d.ours.lookup_batch, chunk), "pytricia get() loop",
                       lambda blist=blist: [pget(k) for k in blist], quick, note=d.note, unit="lookups/s")


def _lpm_rows(label: str, size: int, quick: bool) -> Iterator[Row]:
    d = lpm_data(size)
    keys = d.keys if not quick or size < 100_000 else d.keys[:16_384]
    yield from _lpm_lookup_rows(label, d, keys, min(10_000, len(keys)), [256, len(keys)], quick)
    builds = d.build_s
    if not quick:
        for _ in range(2):
            t0 = time.perf_counter()
            build_lpm(d.mod, d.prefixes)
            t1 = time.perf_counter()
            build_pytricia(d.prefixes)
            builds = {"emu": min(builds["emu"], t1 - t0), "pytricia": min(builds["pytricia"], time.perf_counter() - t1)}
    yield Row(f"{label} build", builds["emu"], "pytricia", builds["pytricia"], unit="s", higher_is_better=False,
              note=_join(d.note, f"{size:,} prefixes" + ("; one build, not a best of" if quick else "")))
    mem = lpm_memory_report(size)
    note = _join(d.note, "ours: memory_bytes(); pytricia: RSS growth in a fresh process")
    if mem is None:
        yield Row(f"{label} memory", d.ours.memory_bytes(), "pytricia RSS", None, unit="bytes",
                  higher_is_better=False, note="pytricia not measured: needs /proc/self/statm")
    else:
        grew = mem["emu"]["rss_delta"] / 2**20
        yield Row(f"{label} memory", mem["emu"]["memory_bytes"], "pytricia RSS", mem["pytricia"]["rss_delta"],
                  unit="bytes", higher_is_better=False, note=f"{note}; our RSS growth {grew:.1f} MiB")


@workload("lpm.10k")
def lpm_10k(quick: bool) -> Iterator[Row]:
    """LpmTable vs pytricia, 10,000 random prefixes: lookups, build, memory."""
    yield from _lpm_rows("lpm.10k", 10_000, quick)


@workload("lpm.500k")
def lpm_500k(quick: bool) -> Iterator[Row]:
    """LpmTable vs pytricia, 500,000 random prefixes (quick: fewer lookup keys, same table)."""
    yield from _lpm_rows("lpm.500k", 500_000, quick)


@workload("lpm.hot")
def lpm_hot(quick: bool) -> Iterator[Row]:
    """1,024 distinct destinations looked up over and over in the 500k-prefix table."""
    d = lpm_data(500_000)
    hot = d.keys[:1024]
    keys = array("I", hot.tobytes() * (BATCH // 1024))
    yield from _lpm_lookup_rows("lpm.hot", d, keys, 10_000, [BATCH], quick)


# ---------------------------------------------------------------------------------------------
# bridge FDB

FDB_SEED = 20240613
FDB_NOW = 100.0
FDB_AGEING = 300.0


def fdb_macs(n: int, seed: int = FDB_SEED) -> list[int]:
    """n distinct random unicast MAC addresses as 48-bit ints, deterministic for a seed."""
    rng = random.Random(seed)
    seen: dict[int, None] = {}
    while len(seen) < n:
        seen[rng.getrandbits(48) & ~(1 << 40)] = None  # clear the group bit
    return list(seen)


def fdb_keys(macs: list[int], count: int, seed: int = FDB_SEED + 1) -> list[int]:
    """count lookup MACs: even positions learned ones, odd ones never learned."""
    rng = random.Random(seed)
    known = set(macs)
    keys: list[int] = []
    while len(keys) < count:
        if len(keys) % 2 == 0:
            keys.append(macs[rng.randrange(len(macs))])
        else:
            m = rng.getrandbits(48) & ~(1 << 40)
            if m not in known:
                keys.append(m)
    return keys


def fdb_learn_ours(mod: ModuleType, macs: list[int], now: float = FDB_NOW) -> Any:
    """A fresh FdbTable that learned mac i on port i % 48."""
    t = mod.FdbTable(FDB_AGEING)
    learn = t.learn
    for i, m in enumerate(macs):
        learn(m, 0, i % 48, now)
    return t


def fdb_learn_dict(macs: list[int], now: float = FDB_NOW) -> dict[int, tuple[int, float]]:
    """The baseline: a dict mac -> (port, updated) that learned the same."""
    d: dict[int, tuple[int, float]] = {}
    for i, m in enumerate(macs):
        d[m] = (i % 48, now)
    return d


def fdb_lookup_dict(d: dict[int, tuple[int, float]], keys: list[int], now: float = FDB_NOW) -> list[int]:
    """The baseline lookup with the same ageing rule as FdbTable (-1 for a miss or an aged entry)."""
    get = d.get
    out = []
    for m in keys:
        e = get(m)
        out.append(-1 if e is None or now - e[1] > FDB_AGEING else e[0])
    return out


def _fdb_rows(label: str, size: int, quick: bool) -> Iterator[Row]:
    mod, note = _tables()
    macs = fdb_macs(size)
    keys = fdb_keys(macs, BATCH if not quick else 16_384)
    packed = array("Q", keys)
    ours = fdb_learn_ours(mod, macs)
    d = fdb_learn_dict(macs)
    _check(ours.lookup_batch(packed, 0, FDB_NOW).tolist() == fdb_lookup_dict(d, keys), f"{label} lookups")
    yield rate_row(f"{label} learn", size, lambda: fdb_learn_ours(mod, macs), "dict", lambda: fdb_learn_dict(macs),
                   quick, note=note, unit="learns/s")
    lookup = ours.lookup
    now = FDB_NOW

    def ours_scalar() -> None:
        for m in keys:
            lookup(m, 0, now)

    def dict_scalar() -> None:
        get = d.get
        for m in keys:
            e = get(m)
            _ = -1 if e is None or now - e[1] > FDB_AGEING else e[0]

    yield rate_row(f"{label} lookup scalar", len(keys), ours_scalar, "dict", dict_scalar, quick, note=note,
                   unit="lookups/s")
    yield rate_row(f"{label} lookup batch-{_keys(len(keys))}", len(keys),
                   functools.partial(ours.lookup_batch, packed, 0, now), "dict loop",
                   functools.partial(fdb_lookup_dict, d, keys), quick, note=note, unit="lookups/s")


@workload("fdb.4k")
def fdb_4k(quick: bool) -> Iterator[Row]:
    """FdbTable vs a dict mac -> (port, updated), 4,096 MACs: learn, scalar and batch lookups."""
    yield from _fdb_rows("fdb.4k", 4096, quick)


@workload("fdb.64k")
def fdb_64k(quick: bool) -> Iterator[Row]:
    """FdbTable vs a dict mac -> (port, updated), 65,536 MACs: learn, scalar and batch lookups."""
    yield from _fdb_rows("fdb.64k", 65_536, quick)


# ---------------------------------------------------------------------------------------------
# conntrack

CT_SEED = 20240612
CT_REC = struct.Struct("=IIHHB3x")
Tuple5 = tuple[int, int, int, int, int]


def ct_flows(n: int, seed: int = CT_SEED) -> bytes:
    """n flows as packed (orig, reply) record pairs, 32 bytes each, deterministic for a seed.

    A pod (10.0.0.0/8) talks to a Service VIP (10.96.0.0/20) on 80/443/53/8080; the reply
    comes from a backend pod (DNAT), and for every other flow to the node's address on a
    masquerade port (SNAT), so orig and reply differ in more than the swap.
    """
    rng = random.Random(seed)
    out = bytearray()
    pack = CT_REC.pack
    for a, b, c, d in struct.iter_unpack("=IIII", rng.randbytes(16 * n)):
        src = 0x0A000000 | (a & 0xFFFFFF)
        vip = 0x0A600000 | (b & 0xFFF)
        proto = 6 if c & 1 else 17
        sport = 32768 + ((c >> 1) & 0x7FFF)
        dport = (80, 443, 53, 8080)[(c >> 16) & 3]
        backend = 0x0A000000 | (d & 0xFFFFFF)
        if d >> 31:
            reply = pack(backend, 0xC0A80001 + ((b >> 12) & 0xFF), dport, 1024 + ((c >> 18) & 0x7FFF), proto)
        else:
            reply = pack(backend, src, dport, sport, proto)
        out += pack(src, vip, sport, dport, proto) + reply
    return bytes(out)


def ct_unpack(blob: bytes) -> list[Tuple5]:
    """Records back to (src, dst, proto, sport, dport) tuples (fresh objects each call)."""
    return [(s, d, p, sp, dp) for s, d, sp, dp, p in CT_REC.iter_unpack(blob)]


def build_ct(mod: ModuleType, tuples: list[Tuple5]) -> Any:
    """Our ConntrackTable with one entry per (orig, reply) pair."""
    t = mod.ConntrackTable()
    create = t.create
    for i in range(0, len(tuples), 2):
        create(tuples[i], tuples[i + 1], 1, 0x8, 120.0 + (i & 1023))
    return t


def build_ct_dict(tuples: list[Tuple5]) -> dict[Tuple5, tuple[int, int]]:
    """The baseline: both tuples of each flow mapped to (id, direction), clashes skipped."""
    d: dict[Tuple5, tuple[int, int]] = {}
    for i in range(0, len(tuples), 2):
        o, r = tuples[i], tuples[i + 1]
        if o in d or r in d:
            continue
        d[o] = (i >> 1, 0)
        d[r] = (i >> 1, 1)
    return d


def ct_keys(tuples: list[Tuple5], present: dict, count: int, seed: int = CT_SEED + 1) -> list[Tuple5]:
    """count lookup keys: even positions an entry's orig or reply tuple, odd ones absent."""
    rng = random.Random(seed)
    keys: list[Tuple5] = []
    while len(keys) < count:
        if len(keys) % 2 == 0:
            keys.append(tuples[rng.randrange(len(tuples))])
        else:
            k = (rng.getrandbits(32), rng.getrandbits(32), 6, rng.getrandbits(16), 80)
            if k not in present:
                keys.append(k)
    return keys


def _ct_rows(label: str, size: int, quick: bool) -> Iterator[Row]:
    mod, note = _tables()
    tuples = ct_unpack(ct_flows(size))
    t0 = time.perf_counter()
    ours = build_ct(mod, tuples)
    t1 = time.perf_counter()
    d = build_ct_dict(tuples)
    t2 = time.perf_counter()
    keys = ct_keys(tuples, d, BATCH if not quick else 16_384)
    packed = mod.pack_tuples(keys)
    want = [-1 if v is None else 2 * v[0] + v[1] for v in map(d.get, keys)]
    _check(len(ours) == size and ours.find_batch(packed).tolist() == want, f"{label} lookups")
    n = len(keys)
    find, get = ours.find, d.get

    def ours_scalar() -> None:
        for k in keys:
            find(k)

    def dict_scalar() -> None:
        for k in keys:
            get(k)

    yield rate_row(f"{label} find scalar", n, ours_scalar, "dict.get()", dict_scalar, quick, note=note,
                   unit="lookups/s")
    batch = f"batch-{_keys(n)}"
    dict_loop = lambda: [get(k) for k in keys]
    yield rate_row(f"{label} find {batch}", n, functools.partial(ours.find_batch, packed), "dict.get() loop",
                   dict_loop, quick, note=note, unit="lookups/s")
    yield rate_row(f"{label} pack+find {batch}", n, lambda: ours.find_batch(mod.pack_tuples(keys)),
                   "dict.get() loop", dict_loop, quick, note=_join(note, "ours includes packing the tuples"),
                   unit="lookups/s")
    yield Row(f"{label} build", t1 - t0, "dict", t2 - t1, unit="s", higher_is_better=False,
              note=_join(note, f"{size:,} entries, 2 tuples each; one build, not a best of"))


@workload("ct.100k")
def ct_100k(quick: bool) -> Iterator[Row]:
    """ConntrackTable vs a dict of tuples, 100,000 entries: find, find_batch, build."""
    yield from _ct_rows("ct.100k", 100_000, quick)


@workload("ct.1m")
def ct_1m(quick: bool) -> Iterator[Row]:
    """ConntrackTable vs a dict of tuples, 1,000,000 entries: find, find_batch, build."""
    yield from _ct_rows("ct.1m", 1_000_000, quick)


# ---------------------------------------------------------------------------------------------
# frames at the edge: generation and pcapng output

EDGE = {"src_mac": 0x020000000001, "dst_mac": 0x020000000002, "src_ip": 0x0A000001, "dst_ip": 0x0A000002,
        "sport": 40000, "dport": 7}


def _ip(v: int) -> str:
    return ".".join(str(b) for b in v.to_bytes(4, "big"))


def _mac(v: int) -> str:
    return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))


def scapy_frames(count: int, first_ip_id: int, payload: bytes) -> list[bytes]:
    """The baseline: each frame built with Scapy, Ether()/IP()/UDP()/payload then bytes()."""
    from emu.frames import IP, UDP, Ether, Raw

    src, dst, ips, ipd = _mac(EDGE["src_mac"]), _mac(EDGE["dst_mac"]), _ip(EDGE["src_ip"]), _ip(EDGE["dst_ip"])
    sport, dport = EDGE["sport"], EDGE["dport"]
    return [bytes(Ether(src=src, dst=dst) / IP(src=ips, dst=ipd, id=(first_ip_id + i) & 0xFFFF)
                  / UDP(sport=sport, dport=dport) / Raw(payload)) for i in range(count)]


def templated_frames(count: int, first_ip_id: int, payload: bytes, template: bytes | None = None) -> bytearray:
    """Ours: the same frames from one template (built once with Scapy), stamped back to back in C."""
    template = scapy_frames(1, 0, payload)[0] if template is None else template
    return fastpath.load().stamp_frames(template, count, first_ip_id)


@workload("scapy.edge")
def scapy_edge(quick: bool) -> Iterator[Row]:
    """UDP frames from a stamped template vs built one by one with Scapy (the same bytes)."""
    ours_n, scapy_n = (16_384, 300) if quick else (65_536, 3000)
    note = "" if fastpath.EXTENSION_LOADED else TWIN_NOTE
    for payload_len in (18, 1458):
        payload = bytes(range(256)) * (payload_len // 256) + bytes(payload_len % 256)
        frames = scapy_frames(64, 65500, payload)
        size = len(frames[0])
        stamped = templated_frames(64, 65500, payload)
        _check(frames == [bytes(stamped[i * size:(i + 1) * size]) for i in range(64)], "UDP frame bytes")
        tpl = frames[0]
        yield rate_row(f"scapy.edge udp-{size}B", ours_n, lambda p=payload, t=tpl: templated_frames(ours_n, 0, p, t),
                       "Scapy build+bytes()", lambda p=payload: scapy_frames(scapy_n, 0, p), quick, base_n=scapy_n,
                       note=note, unit="frames/s")


def scapy_write_pcapng(path: str, records: list[Record], epoch: float) -> int:
    """The baseline and reference: records written through Scapy's RawPcapNgWriter, as emu once did."""
    from scapy.utils import RawPcapNgWriter

    from emu.fileio import atomic_path

    class Writer(RawPcapNgWriter):
        """RawPcapNgWriter without the unnamed interface 0 it adds before the first named one."""

        def _write_header(self, pkt: object) -> None:
            if not self.header_present:
                self.header_present = True
                self._write_block_shb()
                self.interfaces2id = {}

        def _write_packet(self, packet, linktype, sec=None, usec=None, caplen=None, wirelen=None,  # noqa: ANN001
                          ifname=None, direction=None, comments=None) -> None:
            if ifname not in self.interfaces2id:
                self.interfaces2id[ifname] = len(self.interfaces2id)
                self._write_block_idb(linktype=linktype, ifname=ifname)
            super()._write_packet(packet, linktype, sec, usec, caplen, wirelen, ifname, direction, comments)

    count = 0
    with atomic_path(path) as tmp:
        writer = Writer(tmp)
        writer.linktype = LINKTYPE_ETHERNET
        writer.sync = False
        writer._write_header(None)
        for rec in records:
            comment = "; ".join(rec.comments) or f"{rec.direction} {rec.ifname}"
            sec = round((epoch + rec.time) * 1_000_000) / 1_000_000
            writer._write_packet(rec.frame, rec.linktype, sec=sec, ifname=rec.ifname.encode(),
                                 direction=DIRECTION[rec.direction], comments=[comment.encode()])
            count += 1
        writer.close()
    return count


def sample_records(count: int) -> list[Record]:
    """count capture records like a lab's: 8 capture points, both directions, comments, a raw-IP tunnel."""
    points = ["pc1/eth0", "sw1/br0", "sw1/veth-pc1", "r1/eth0", "r1/eth1", "node1/flannel.1", "node1/tunl0",
              "pod-a/eth0"]
    sizes = [18, 31, 100, 1458, 7]
    templates = [scapy_frames(1, 0, bytes(n))[0] for n in sizes]
    out = []
    for i in range(count):
        point = points[i % len(points)]
        raw = point.endswith("tunl0")
        frame = templates[i % len(templates)]
        comments = [] if i % 5 == 0 else [f"route 10.0.{i % 7}.0/24 dev eth1", f"neigh 10.0.2.{i % 250} lladdr 02:00"]
        out.append(Record(i * 1.25e-5, point, frame[14:] if raw else frame, "in" if i % 3 else "out",
                          comments[: i % 3], LINKTYPE_RAW if raw else LINKTYPE_ETHERNET, i))
    return out


@workload("pcap.write")
def pcap_write(quick: bool) -> Iterator[Row]:
    """Writing capture records to pcapng: emu.pcap vs Scapy's RawPcapNgWriter (byte-identical files)."""
    n = 5000 if quick else 50_000
    records = sample_records(n)
    epoch = 1_705_147_200.0
    with tempfile.TemporaryDirectory(prefix="emu-bench-") as tmp:
        ours_path, scapy_path = os.path.join(tmp, "ours.pcapng"), os.path.join(tmp, "scapy.pcapng")
        write_pcapng(ours_path, records, epoch)
        scapy_write_pcapng(scapy_path, records, epoch)
        _check(Path(ours_path).read_bytes() == Path(scapy_path).read_bytes(), "pcapng bytes")
        nbytes = os.path.getsize(ours_path)
        yield rate_row(f"pcap.write {n // 1000}k frames", n, lambda: write_pcapng(ours_path, records, epoch),
                       "Scapy RawPcapNgWriter", lambda: scapy_write_pcapng(scapy_path, records, epoch), quick,
                       note=f"{nbytes / 2**20:.1f} MiB file, atomic rename included", unit="frames/s")
