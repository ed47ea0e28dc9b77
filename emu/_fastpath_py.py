"""Pure-Python twin of ``emu._fastpath``: same public API, same results, no compiler needed.

Used when the extension is not built (or EMU_NO_EXTENSIONS=1) and as the reference in tests.
Conventions (shared with the compiled module): addresses are host-order ints, MACs 48-bit
ints; mutators raise ValueError for out-of-range arguments; hot-path scalar arguments that
would not fit the compiled module's C type raise OverflowError, exactly like Cython does.
"""

from __future__ import annotations

import heapq
import struct
import sys
from dataclasses import dataclass
from typing import Any
from array import array
from collections.abc import Iterable
from operator import index

__all__ = [
    "ConntrackTable",
    "FdbTable",
    "LpmTable",
    "NeighTable",
    "csum_replace2",
    "csum_replace4",
    "flow_hash",
    "inet_checksum",
    "ipip_encap",
    "ipv4_build_header",
    "ipv4_header_checksum_ok",
    "pack_tuples",
    "parse_flow",
    "parse_flow_batch",
    "set_ipv4_addr",
    "set_l4_port",
    "ttl_decrement",
    "udp_checksum",
    "vxlan_decap",
    "vxlan_encap",
    "vxlan_source_port",
]

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_IP_HDR = struct.Struct("!BBHHHBBHII")
_MAX_I64 = (1 << 63) - 1
_MASKS = [0] + [(0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for n in range(1, 33)]


# ---------------------------------------------------------------------------
# argument conversion mimicking Cython's C-typed parameters
# ---------------------------------------------------------------------------


def _cu(x: object, bits: int) -> int:
    """Convert like Cython does for an unsigned C integer of `bits` bits."""
    v = index(x)  # type: ignore[arg-type]
    if v < 0:
        raise OverflowError(f"can't convert negative value to uint{bits}_t")
    if v >> bits:
        raise OverflowError(f"value too large to convert to uint{bits}_t")
    return v


def _cs(x: object, bits: int) -> int:
    """Convert like Cython does for a signed C integer of `bits` bits."""
    v = index(x)  # type: ignore[arg-type]
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        raise OverflowError(f"value too large to convert to int{bits}_t")
    return v


def _cf(x: object) -> float:
    """Convert like Cython does for a C double."""
    if isinstance(x, float):
        return x
    if isinstance(x, int):
        return float(x)
    raise TypeError(f"must be real number, not {type(x).__name__}")


def _words(buf: object, itemsize: int) -> memoryview:
    """Flat view of buf as native-endian words of `itemsize` bytes (ValueError if unsuitable)."""
    mv = memoryview(buf)  # type: ignore[arg-type]
    if not mv.c_contiguous:
        raise ValueError("buffer must be C-contiguous")
    if mv.itemsize != itemsize:
        if mv.itemsize != 1:
            raise ValueError(f"expected a buffer of {itemsize * 8}-bit words or raw bytes")
        if mv.nbytes % itemsize:
            raise ValueError(f"byte buffer length must be a multiple of {itemsize}")
    return mv.cast("B").cast("I" if itemsize == 4 else "Q")


def _ro(buf: object) -> memoryview:
    """Byte view for reading (TypeError if buf has no buffer)."""
    mv = memoryview(buf)  # type: ignore[arg-type]
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _rw(buf: object) -> memoryview:
    """Byte view for writing (TypeError when read-only)."""
    mv = _ro(buf)
    if mv.readonly:
        raise TypeError("buffer is read-only; pass a bytearray")
    return mv


# ---------------------------------------------------------------------------
# LPM
# ---------------------------------------------------------------------------


def _check_prefix(prefix: object, plen: object) -> tuple[int, int]:
    p = index(prefix)  # type: ignore[arg-type]
    n = index(plen)  # type: ignore[arg-type]
    if not 0 <= n <= 32:
        raise ValueError(f"plen must be in 0..32, got {n}")
    if not 0 <= p <= 0xFFFFFFFF:
        raise ValueError(f"prefix out of range: {p}")
    if p & ~_MASKS[n] & 0xFFFFFFFF:
        raise ValueError(f"prefix has host bits set beyond /{n}")
    return p, n


class LpmTable:
    """Longest-prefix-match table for IPv4 prefixes mapping to non-negative ints.

    One dict per prefix length; lookups probe the populated lengths longest first.
    """

    __slots__ = ("_by_len", "_lens", "_count")

    def __init__(self) -> None:
        self._by_len: dict[int, dict[int, int]] = {}
        self._lens: list[int] = []  # populated lengths, longest first
        self._count = 0

    def insert(self, prefix: int, plen: int, value: int) -> None:
        """Map prefix/plen to value (replacing an existing value)."""
        p, n = _check_prefix(prefix, plen)
        v = index(value)
        if not 0 <= v <= _MAX_I64:
            raise ValueError(f"value must be a non-negative int64, got {v}")
        d = self._by_len.get(n)
        if d is None:
            d = self._by_len[n] = {}
            self._lens.append(n)
            self._lens.sort(reverse=True)
        if p not in d:
            self._count += 1
        d[p] = v

    def remove(self, prefix: int, plen: int) -> bool:
        """Delete prefix/plen; True if it was present."""
        p, n = _check_prefix(prefix, plen)
        d = self._by_len.get(n)
        if d is None or p not in d:
            return False
        del d[p]
        self._count -= 1
        if not d:
            del self._by_len[n]
            self._lens.remove(n)
        return True

    def get(self, prefix: int, plen: int) -> int:
        """Exact-match value of prefix/plen, or -1."""
        p, n = _check_prefix(prefix, plen)
        d = self._by_len.get(n)
        return -1 if d is None else d.get(p, -1)

    def _find(self, addr: int) -> tuple[int, int, int] | None:
        by_len = self._by_len
        for n in self._lens:
            p = addr & _MASKS[n]
            v = by_len[n].get(p)
            if v is not None:
                return p, n, v
        return None

    def lookup(self, addr: int) -> int:
        """Value of the longest prefix containing addr, or -1."""
        hit = self._find(_cu(addr, 32))
        return -1 if hit is None else hit[2]

    def lookup_prefix(self, addr: int) -> tuple[int, int, int] | None:
        """(prefix, plen, value) of the longest prefix containing addr, or None."""
        return self._find(_cu(addr, 32))

    def lookup_batch(self, addrs: object) -> array:
        """Look up every uint32 in a buffer; array('q') of values (-1 = miss)."""
        out = array("q")
        find = self._find
        for a in _words(addrs, 4):
            hit = find(a)
            out.append(-1 if hit is None else hit[2])
        return out

    def items(self) -> list[tuple[int, int, int]]:
        """All (prefix, plen, value) sorted by (prefix, plen)."""
        return sorted((p, n, v) for n, d in self._by_len.items() for p, v in d.items())

    def clear(self) -> None:
        """Remove all routes."""
        self._by_len.clear()
        self._lens.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        """Approximate bytes held: the containers plus the key and value int objects."""
        total = object.__sizeof__(self) + sys.getsizeof(self._by_len) + sys.getsizeof(self._lens)
        for d in self._by_len.values():
            total += sys.getsizeof(d) + sum(sys.getsizeof(p) + sys.getsizeof(v) for p, v in d.items())
        return total

    def __sizeof__(self) -> int:
        return self.memory_bytes()

    def __repr__(self) -> str:
        return f"<LpmTable routes={self._count} py>"


# ---------------------------------------------------------------------------
# FDB and neighbour tables
# ---------------------------------------------------------------------------


def _fdb_key(mac: object, vlan: object) -> tuple[int, int]:
    m = _cu(mac, 64)
    v = _cu(vlan, 32)
    if m >> 48:
        raise ValueError("mac must be a 48-bit value")
    if v > 4095:
        raise ValueError("vlan must be in 0..4095")
    return m, v


class FdbTable:
    """Bridge forwarding database: (mac, vlan) -> port with Linux-style ageing.

    Dynamic entries older than ageing_time (now - updated > ageing_time) are invisible
    to lookups/entries but stay stored until expire() (or a learn, which treats them as
    new).  Static entries never age or move.
    """

    __slots__ = ("_ageing", "_e")

    def __init__(self, ageing_time: float = 300.0) -> None:
        a = _cf(ageing_time)
        if not a >= 0.0:
            raise ValueError("ageing_time must be >= 0")
        self._ageing = a
        # (mac, vlan) -> [port, updated, is_static]
        self._e: dict[tuple[int, int], list] = {}

    @property
    def ageing_time(self) -> float:
        """Seconds after which a dynamic entry is considered gone."""
        return self._ageing

    @ageing_time.setter
    def ageing_time(self, value: float) -> None:
        a = _cf(value)
        if not a >= 0.0:
            raise ValueError("ageing_time must be >= 0")
        self._ageing = a

    def learn(self, mac: int, vlan: int, port: int, now: float) -> int:
        """Learn mac on port: 0 refreshed/unchanged (or static), 1 new, 2 moved."""
        key = _fdb_key(mac, vlan)
        port = _cs(port, 64)
        now = _cf(now)
        e = self._e.get(key)
        if e is None:
            self._e[key] = [port, now, False]
            return 1
        if e[2]:
            return 0
        if now - e[1] > self._ageing:
            e[0] = port
            e[1] = now
            return 1
        e[1] = now
        if e[0] != port:
            e[0] = port
            return 2
        return 0

    def add_static(self, mac: int, vlan: int, port: int) -> None:
        """Add (or convert to) a permanent entry."""
        key = _fdb_key(mac, vlan)
        self._e[key] = [_cs(port, 64), 0.0, True]

    def remove(self, mac: int, vlan: int) -> bool:
        """Delete an entry (static or not); True if it existed."""
        return self._e.pop(_fdb_key(mac, vlan), None) is not None

    def lookup(self, mac: int, vlan: int, now: float) -> int:
        """Port for (mac, vlan), or -1 if absent or aged out."""
        e = self._e.get(_fdb_key(mac, vlan))
        now = _cf(now)
        if e is None or (not e[2] and now - e[1] > self._ageing):
            return -1
        return e[0]

    def lookup_batch(self, macs: object, vlan: int, now: float) -> array:
        """Ports for a buffer of uint64 MACs on one vlan; array('q'), -1 = miss."""
        vlan = _cu(vlan, 32)
        now = _cf(now)
        words = _words(macs, 8)
        if vlan > 4095:
            raise ValueError("vlan must be in 0..4095")
        out = array("q")
        get = self._e.get
        age = self._ageing
        for m in words:
            e = None if m >> 48 else get((m, vlan))
            out.append(e[0] if e is not None and (e[2] or not now - e[1] > age) else -1)
        return out

    def expire(self, now: float) -> list[tuple[int, int, int]]:
        """Remove aged dynamic entries; returns their (mac, vlan, port) sorted."""
        now = _cf(now)
        gone = sorted(
            (k[0], k[1], e[0]) for k, e in self._e.items() if not e[2] and now - e[1] > self._ageing
        )
        for mac, vlan, _ in gone:
            del self._e[(mac, vlan)]
        return gone

    def flush_port(self, port: int) -> int:
        """Remove all dynamic entries on port (aged or not); returns the count."""
        port = _cs(port, 64)
        keys = [k for k, e in self._e.items() if not e[2] and e[0] == port]
        for k in keys:
            del self._e[k]
        return len(keys)

    def entries(self, now: float) -> list[tuple[int, int, int, bool, float]]:
        """Live entries (mac, vlan, port, is_static, updated) sorted by (mac, vlan)."""
        now = _cf(now)
        out = []
        for (mac, vlan), (port, updated, static) in self._e.items():
            if static:
                out.append((mac, vlan, port, True, 0.0))
            elif not now - updated > self._ageing:
                out.append((mac, vlan, port, False, updated))
        out.sort()
        return out

    def __len__(self) -> int:
        """Stored entries, including aged ones not yet expired."""
        return len(self._e)

    def memory_bytes(self) -> int:
        """Approximate bytes held by the dict and its entries."""
        return object.__sizeof__(self) + sys.getsizeof(self._e) + sum(
            sys.getsizeof(k) + sys.getsizeof(e) for k, e in self._e.items()
        )


class NeighTable:
    """Per-interface IPv4 neighbour records: ip -> (mac or -1, state, updated)."""

    __slots__ = ("_e",)

    def __init__(self) -> None:
        self._e: dict[int, tuple[int, int, float]] = {}

    def set(self, ip: int, mac: int, state: int, updated: float) -> None:
        """Create or overwrite the record for ip."""
        ip = index(ip)
        mac = index(mac)
        state = index(state)
        updated = _cf(updated)
        if not 0 <= ip <= 0xFFFFFFFF:
            raise ValueError("ip out of range")
        if not -1 <= mac <= 0xFFFFFFFFFFFF:
            raise ValueError("mac must be -1 or a 48-bit value")
        if not -0x80000000 <= state <= 0x7FFFFFFF:
            raise ValueError("state must fit in int32")
        self._e[ip] = (mac, state, updated)

    def get(self, ip: int) -> tuple[int, int, float] | None:
        """(mac, state, updated) for ip, or None."""
        return self._e.get(_cu(ip, 32))

    def remove(self, ip: int) -> bool:
        """Delete the record for ip; True if it existed."""
        return self._e.pop(_cu(ip, 32), None) is not None

    def items(self) -> list[tuple[int, int, int, float]]:
        """All (ip, mac, state, updated) sorted by ip."""
        return sorted((ip, *rec) for ip, rec in self._e.items())

    def lookup_batch(self, ips: object) -> array:
        """MAC for each uint32 ip in a buffer; array('q'), -1 = none."""
        get = self._e.get
        out = array("q")
        for ip in _words(ips, 4):
            rec = get(ip)
            out.append(-1 if rec is None else rec[0])
        return out

    def __len__(self) -> int:
        return len(self._e)

    def memory_bytes(self) -> int:
        """Approximate bytes held by the dict and its records."""
        return object.__sizeof__(self) + sys.getsizeof(self._e) + sum(
            sys.getsizeof(rec) for rec in self._e.values()
        )


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------


def _acc(mv: memoryview | bytes, start: int, end: int, acc: int = 0) -> int:
    """Sum of big-endian 16-bit words of mv[start:end] (odd tail zero-padded)."""
    chunk = bytes(mv[start:end])
    if len(chunk) & 1:
        chunk += b"\0"
    return acc + sum(struct.unpack(f"!{len(chunk) // 2}H", chunk))


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _fix(mv: memoryview, pos: int, neg_old: int, pos_new: int, udp: bool) -> None:
    """RFC 1624 eqn. 3 on the checksum at mv[pos:pos+2]."""
    hc = (mv[pos] << 8) | mv[pos + 1]
    if udp and hc == 0:
        return
    nc = ~_fold((~hc & 0xFFFF) + neg_old + pos_new) & 0xFFFF
    if udp and nc == 0:
        nc = 0xFFFF
    mv[pos] = nc >> 8
    mv[pos + 1] = nc & 0xFF


def _neg32(v: int) -> int:
    return (~(v >> 16) & 0xFFFF) + (~v & 0xFFFF)


def _pos32(v: int) -> int:
    return (v >> 16) + (v & 0xFFFF)


def inet_checksum(data: bytes | bytearray | memoryview, off: int = 0, length: int = -1) -> int:
    """RFC 1071 checksum (complemented one's complement sum) of data[off:off+length]."""
    mv = _ro(data)
    off = _cs(off, 64)
    length = _cs(length, 64)
    n = len(mv)
    if off < 0 or off > n:
        raise ValueError("offset out of range")
    if length == -1:
        length = n - off
    elif length < 0 or off + length > n:
        raise ValueError("length out of range")
    return ~_fold(_acc(mv, off, off + length)) & 0xFFFF


def _ip_hdr(mv: memoryview, off: int) -> int:
    """IHL in bytes if a plausible IPv4 header starts at off, else 0."""
    n = len(mv)
    if off < 0 or n - off < 20 or mv[off] >> 4 != 4:
        return 0
    ihl = (mv[off] & 15) * 4
    if ihl < 20 or n - off < ihl:
        return 0
    return ihl


def ipv4_header_checksum_ok(data: bytes | bytearray | memoryview, off: int = 14) -> bool:
    """True when an IPv4 header at off is present and its checksum verifies."""
    mv = _ro(data)
    ihl = _ip_hdr(mv, _cs(off, 64))
    return ihl != 0 and _fold(_acc(mv, off, off + ihl)) == 0xFFFF


def _rd16(mv: memoryview, pos: int) -> int:
    return (mv[pos] << 8) | mv[pos + 1]


def _parse(mv: memoryview, off: int) -> tuple | None:
    n = len(mv)
    if n - off < 20 or mv[off] >> 4 != 4:
        return None
    ihl = (mv[off] & 15) * 4
    if ihl < 20:
        return None
    tot = _rd16(mv, off + 2)
    if tot < ihl or off + tot > n:
        return None
    _, _, _, _, frag, ttl, proto, _, src, dst = _IP_HDR.unpack_from(mv, off)
    sport = dport = 0
    if frag & 0x1FFF == 0:
        l4 = off + ihl
        l4len = tot - ihl
        if proto in (6, 17):
            if l4len >= 4:
                sport = _rd16(mv, l4)
                dport = _rd16(mv, l4 + 2)
        elif proto == 1 and l4len >= 2:
            typ = mv[l4]
            dport = (typ << 8) | mv[l4 + 1]
            if typ in (0, 8) and l4len >= 6:
                sport = _rd16(mv, l4 + 4)
    return (src, dst, proto, sport, dport, ttl, ihl, tot, frag)


def parse_flow(frame: bytes | bytearray | memoryview, off: int = 14) -> tuple | None:
    """(src, dst, proto, sport, dport, ttl, ihl_bytes, total_length, frag_field) or None."""
    off = _cs(off, 64)
    if off < 0:
        raise ValueError("negative offset")
    return _parse(_ro(frame), off)


def parse_flow_batch(frames: Iterable, off: int = 14) -> list:
    """parse_flow over a sequence of frames; list of tuples/None."""
    off = _cs(off, 64)
    if off < 0:
        raise ValueError("negative offset")
    return [_parse(_ro(f), off) for f in frames]


def ttl_decrement(buf: bytearray, off: int = 14) -> int:
    """Decrement the IPv4 TTL in place, patching the header checksum; returns new TTL."""
    mv = _rw(buf)
    off = _cs(off, 64)
    if _ip_hdr(mv, off) == 0:
        raise ValueError("no IPv4 header at offset")
    ttl = mv[off + 8]
    if ttl == 0:
        raise ValueError("TTL is already 0")
    old = _rd16(mv, off + 8)
    mv[off + 8] = ttl - 1
    _fix(mv, off + 10, ~old & 0xFFFF, old - 0x100, False)
    return ttl - 1


def csum_replace4(buf: bytearray, csum_off: int, old: int, new: int, udp: bool = False) -> None:
    """Patch the 16-bit checksum at csum_off for a 32-bit word changing old -> new."""
    mv = _rw(buf)
    csum_off = _cs(csum_off, 64)
    old = _cu(old, 32)
    new = _cu(new, 32)
    if csum_off < 0 or csum_off + 2 > len(mv):
        raise ValueError("checksum offset out of range")
    _fix(mv, csum_off, _neg32(old), _pos32(new), bool(udp))


def stamp_frames(template: bytes | bytearray, count: int, first_ip_id: int) -> bytearray:
    """`count` copies of an Ethernet/IPv4 `template` back to back, copy i with IP ID first_ip_id + i
    (mod 2**16) and its header checksum patched (the UDP/TCP checksum does not cover the ID)."""
    size = len(template)
    if size < 34 or template[12:14] != b"\x08\x00" or template[14] >> 4 != 4:
        raise ValueError("template must be an Ethernet frame carrying an IPv4 header")
    if count < 0:
        raise ValueError("count must be >= 0")
    buf = bytearray(template) * count
    old = int.from_bytes(template[18:20], "big")
    for i in range(count):
        new = (first_ip_id + i) & 0xFFFF
        csum_replace2(buf, i * size + 24, old, new)
        buf[i * size + 18:i * size + 20] = new.to_bytes(2, "big")
    return buf


def csum_replace2(buf: bytearray, csum_off: int, old: int, new: int, udp: bool = False) -> None:
    """Patch the 16-bit checksum at csum_off for a 16-bit word changing old -> new."""
    mv = _rw(buf)
    csum_off = _cs(csum_off, 64)
    old = _cu(old, 16)
    new = _cu(new, 16)
    if csum_off < 0 or csum_off + 2 > len(mv):
        raise ValueError("checksum offset out of range")
    _fix(mv, csum_off, ~old & 0xFFFF, new, bool(udp))


def set_ipv4_addr(buf: bytearray, off: int, which: int, new_addr: int) -> None:
    """Rewrite src (which=0) or dst (1) address, fixing IP and TCP/UDP checksums."""
    off = _cs(off, 64)
    which = _cs(which, 32)
    new_addr = _cu(new_addr, 32)
    if which not in (0, 1):
        raise ValueError("which must be 0 (source) or 1 (destination)")
    mv = _rw(buf)
    ihl = _ip_hdr(mv, off)
    if ihl == 0:
        raise ValueError("no IPv4 header at offset")
    pos = off + 12 + 4 * which
    old = _I.unpack_from(mv, pos)[0]
    _I.pack_into(mv, pos, new_addr)
    neg, new = _neg32(old), _pos32(new_addr)
    _fix(mv, off + 10, neg, new, False)
    if _rd16(mv, off + 6) & 0x1FFF:
        return
    end = min(off + _rd16(mv, off + 2), len(mv))
    l4 = off + ihl
    proto = mv[off + 9]
    if proto == 6 and l4 + 18 <= end:
        _fix(mv, l4 + 16, neg, new, False)
    elif proto == 17 and l4 + 8 <= end:
        _fix(mv, l4 + 6, neg, new, True)


def set_l4_port(buf: bytearray, off: int, which: int, new_port: int) -> None:
    """Rewrite TCP/UDP sport (0)/dport (1) or the ICMP echo id (0), fixing the L4 checksum."""
    off = _cs(off, 64)
    which = _cs(which, 32)
    new_port = _cu(new_port, 16)
    if which not in (0, 1):
        raise ValueError("which must be 0 (source) or 1 (destination)")
    mv = _rw(buf)
    ihl = _ip_hdr(mv, off)
    if ihl == 0:
        raise ValueError("no IPv4 header at offset")
    if _rd16(mv, off + 6) & 0x1FFF:
        raise ValueError("non-first fragment has no L4 header")
    end = min(off + _rd16(mv, off + 2), len(mv))
    l4 = off + ihl
    proto = mv[off + 9]
    if proto in (6, 17):
        if l4 + (18 if proto == 6 else 8) > end:
            raise ValueError("truncated L4 header")
        pos = l4 + 2 * which
        csum = l4 + (16 if proto == 6 else 6)
    elif proto == 1:
        if which != 0:
            raise ValueError("ICMP has only an identifier (which=0)")
        if l4 + 8 > end or mv[l4] not in (0, 8):
            raise ValueError("not an ICMP echo request/reply")
        pos = l4 + 4
        csum = l4 + 2
    else:
        raise ValueError(f"protocol {proto} has no ports")
    old = _rd16(mv, pos)
    _H.pack_into(mv, pos, new_port)
    _fix(mv, csum, ~old & 0xFFFF, new_port, proto == 17)


def _ip_header(total_length: int, ident: int, flags_frag: int, ttl: int, proto: int,
               src: int, dst: int, tos: int) -> bytes:
    h = bytearray(_IP_HDR.pack(0x45, tos, total_length, ident, flags_frag, ttl, proto, 0, src, dst))
    _H.pack_into(h, 10, ~_fold(_acc(h, 0, 20)) & 0xFFFF)
    return bytes(h)


def ipv4_build_header(total_length: int, ident: int, flags_frag: int, ttl: int, proto: int,
                      src: int, dst: int, tos: int = 0) -> bytes:
    """20-byte IPv4 header (no options) with a correct checksum."""
    return _ip_header(_cu(total_length, 16), _cu(ident, 16), _cu(flags_frag, 16), _cu(ttl, 8),
                      _cu(proto, 8), _cu(src, 32), _cu(dst, 32), _cu(tos, 8))


def _pseudo(src: int, dst: int, proto: int, length: int) -> int:
    return _pos32(src) + _pos32(dst) + proto + length


def udp_checksum(src: int, dst: int, udp_segment: bytes | bytearray | memoryview) -> int:
    """UDP checksum over pseudo header + segment (its checksum field read as 0); 0 -> 0xFFFF."""
    src = _cu(src, 32)
    dst = _cu(dst, 32)
    mv = _ro(udp_segment)
    n = len(mv)
    if n < 8 or n > 0xFFFF:
        raise ValueError("UDP segment must be 8..65535 bytes")
    acc = _acc(mv, 0, n, _pseudo(src, dst, 17, n)) - _rd16(mv, 6)
    c = ~_fold(acc) & 0xFFFF
    return c or 0xFFFF


def vxlan_encap(inner_frame: bytes | bytearray | memoryview, outer_src_mac: int, outer_dst_mac: int,
                src_ip: int, dst_ip: int, sport: int, dport: int, vni: int, ident: int,
                ttl: int = 64) -> bytes:
    """Outer Ethernet + IPv4 + UDP (checksummed) + VXLAN header around inner_frame."""
    smac = _cu(outer_src_mac, 64)
    dmac = _cu(outer_dst_mac, 64)
    src_ip = _cu(src_ip, 32)
    dst_ip = _cu(dst_ip, 32)
    sport = _cu(sport, 16)
    dport = _cu(dport, 16)
    vni = _cu(vni, 32)
    ident = _cu(ident, 16)
    ttl = _cu(ttl, 8)
    if smac >> 48 or dmac >> 48:
        raise ValueError("MACs must be 48-bit values")
    if vni >> 24:
        raise ValueError("vni must be a 24-bit value")
    inner = bytes(_ro(inner_frame))
    if len(inner) + 36 > 0xFFFF:
        raise ValueError("inner frame too large")
    ulen = len(inner) + 16
    udp = bytearray(struct.pack("!HHHHII", sport, dport, ulen, 0, 0x08000000, vni << 8)) + inner
    c = ~_fold(_acc(udp, 0, ulen, _pseudo(src_ip, dst_ip, 17, ulen))) & 0xFFFF
    _H.pack_into(udp, 6, c or 0xFFFF)
    eth = dmac.to_bytes(6, "big") + smac.to_bytes(6, "big") + b"\x08\x00"
    return eth + _ip_header(20 + ulen, ident, 0, ttl, 17, src_ip, dst_ip, 0) + bytes(udp)


def vxlan_decap(frame: bytes | bytearray | memoryview, off: int = 14) -> tuple[int, int] | None:
    """(vni, inner_frame_offset) for an unfragmented IPv4/UDP/VXLAN packet at off, else None."""
    off = _cs(off, 64)
    if off < 0:
        raise ValueError("negative offset")
    mv = _ro(frame)
    ihl = _ip_hdr(mv, off)
    if ihl == 0 or mv[off + 9] != 17 or _rd16(mv, off + 6) & 0x3FFF:
        return None
    tot = _rd16(mv, off + 2)
    if tot < ihl + 30 or off + tot > len(mv):
        return None
    l4 = off + ihl
    ulen = _rd16(mv, l4 + 4)
    if ulen < 30 or ulen > tot - ihl or not mv[l4 + 8] & 0x08:
        return None
    return _I.unpack_from(mv, l4 + 12)[0] >> 8, l4 + 16


def ipip_encap(inner_ip_packet: bytes | bytearray | memoryview, src_ip: int, dst_ip: int, ident: int,
               ttl: int = 64, tos: int = 0, df: int = -1) -> bytes:
    """Outer IPv4 header (proto 4) + inner packet; DF copied from inner unless df is 0/1."""
    src_ip = _cu(src_ip, 32)
    dst_ip = _cu(dst_ip, 32)
    ident = _cu(ident, 16)
    ttl = _cu(ttl, 8)
    tos = _cu(tos, 8)
    df = _cs(df, 32)
    inner = bytes(_ro(inner_ip_packet))
    n = len(inner)
    if n < 20 or inner[0] >> 4 != 4:
        raise ValueError("inner packet is not IPv4")
    if n + 20 > 0xFFFF:
        raise ValueError("inner packet too large")
    flags = ((inner[6] << 8) & 0x4000) if df < 0 else (0x4000 if df else 0)
    return _ip_header(n + 20, ident, flags, ttl, 4, src_ip, dst_ip, tos) + inner


# ---------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------

_M32 = 0xFFFFFFFF


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _jhash4(k0: int, k1: int, k2: int, k3: int, initval: int) -> int:
    """Linux jhash2() over four 32-bit words."""
    a = b = c = (0xDEADBEEF + 16 + initval) & _M32
    a = (a + k0) & _M32
    b = (b + k1) & _M32
    c = (c + k2) & _M32
    # __jhash_mix
    a = ((a - c) & _M32) ^ _rol32(c, 4)
    c = (c + b) & _M32
    b = ((b - a) & _M32) ^ _rol32(a, 6)
    a = (a + c) & _M32
    c = ((c - b) & _M32) ^ _rol32(b, 8)
    b = (b + a) & _M32
    a = ((a - c) & _M32) ^ _rol32(c, 16)
    c = (c + b) & _M32
    b = ((b - a) & _M32) ^ _rol32(a, 19)
    a = (a + c) & _M32
    c = ((c - b) & _M32) ^ _rol32(b, 4)
    b = (b + a) & _M32
    a = (a + k3) & _M32
    # __jhash_final
    c ^= b
    c = (c - _rol32(b, 14)) & _M32
    a ^= c
    a = (a - _rol32(c, 11)) & _M32
    b ^= a
    b = (b - _rol32(a, 25)) & _M32
    c ^= b
    c = (c - _rol32(b, 16)) & _M32
    a ^= c
    a = (a - _rol32(c, 4)) & _M32
    b ^= a
    b = (b - _rol32(a, 14)) & _M32
    c ^= b
    c = (c - _rol32(b, 24)) & _M32
    return c


def flow_hash(src: int, dst: int, proto: int, sport: int, dport: int, seed: int) -> int:
    """Direction-independent 32-bit jhash of a 5-tuple (endpoints sorted first)."""
    src = _cu(src, 32)
    dst = _cu(dst, 32)
    proto = _cu(proto, 8)
    sport = _cu(sport, 16)
    dport = _cu(dport, 16)
    s = index(seed) & _M32
    if (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    return _jhash4(src, dst, (sport << 16) | dport, proto, s)


def vxlan_source_port(hash32: int, low: int = 32768, high: int = 60999) -> int:
    """Linux udp_flow_src_port(): scale a 32-bit hash into [low, high)."""
    hash32 = _cu(hash32, 32)
    low = _cu(low, 16)
    high = _cu(high, 16)
    if high < low:
        raise ValueError("high must be >= low")
    return ((hash32 * (high - low)) >> 32) + low


# ---------------------------------------------------------------------------
# connection tracking
# ---------------------------------------------------------------------------

CtTuple = tuple[int, int, int, int, int]
_CT_REC = struct.Struct("=IIHHB3x")  # find_batch record: src, dst, sport, dport, proto, pad
_M64 = (1 << 64) - 1
# fields of an entry list
_CT_ORIG, _CT_REPLY, _CT_STATE, _CT_STATUS, _CT_EXPIRES, _CT_MARK = range(6)
_CT_HKEY, _CT_TOKEN = 10, 11  # its heap item's key (a lower bound of expires) and token


def _ct_tuple(t: object) -> CtTuple:
    """Validated (src, dst, proto, sport, dport) made of plain ints, converted like the compiled module.

    Each field converts like a C int64 (TypeError for non-ints, OverflowError beyond int64),
    then ValueError outside its own range.
    """
    src, dst, proto, sport, dport = t  # type: ignore[misc]
    src, dst, proto, sport, dport = (_cs(src, 64), _cs(dst, 64), _cs(proto, 64), _cs(sport, 64),
                                     _cs(dport, 64))
    if not (0 <= src <= 0xFFFFFFFF and 0 <= dst <= 0xFFFFFFFF):
        raise ValueError("tuple addresses must be in 0..2**32-1")
    if not 0 <= proto <= 0xFF:
        raise ValueError("tuple protocol must be in 0..255")
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise ValueError("tuple ports must be in 0..65535")
    return (src, dst, proto, sport, dport)


def _ct_check(state: int, status: int, expires: float) -> None:
    """ValueError unless state fits int32, status uint32 and expires is not NaN (it orders the heap)."""
    if not -0x80000000 <= state <= 0x7FFFFFFF:
        raise ValueError("state must fit in int32")
    if not 0 <= status <= 0xFFFFFFFF:
        raise ValueError("status must be in 0..2**32-1")
    if expires != expires:
        raise ValueError("expires must not be NaN")


def pack_tuples(tuples: Iterable[CtTuple]) -> bytes:
    """Pack (src, dst, proto, sport, dport) tuples into =IIHHB3x records for find_batch."""
    out = bytearray()
    for t in list(tuples):
        src, dst, proto, sport, dport = _ct_tuple(t)
        out += _CT_REC.pack(src, dst, sport, dport, proto)
    return bytes(out)


class ConntrackTable:
    """Connection-tracking entries (as nf_conntrack keeps them), found by either direction's tuple.

    An entry holds its original and reply tuples (after NAT they differ in more than the
    swap), the caller's state/status/mark, an expiry time and per-direction packet/byte
    counters.  The state machine lives elsewhere; this table stores and finds.

    One dict maps every tuple to id*2+direction, another maps ids to entry lists.  Expiry
    uses a heapq of (key, token, id) items with lazy deletion: an item is current while its
    token is its entry's; a later expiry leaves the item in place (its key stays a lower
    bound, fixed up when it reaches the top) and an earlier one pushes a new item.  Freed
    ids are reused last-freed-first; an empty table restarts ids at 0, like the compiled one.
    """

    __slots__ = ("_by_tuple", "_e", "_free", "_next", "_heap", "_token")

    def __init__(self) -> None:
        self._by_tuple: dict[CtTuple, int] = {}  # tuple -> id * 2 + direction
        # id -> [orig, reply, state, status, expires, mark, pkts_o, bytes_o, pkts_r, bytes_r, hkey, token]
        self._e: dict[int, list] = {}
        self._free: list[int] = []
        self._next = 0
        self._heap: list[tuple[float, int, int]] = []
        self._token = 0

    def _push(self, ent: list, id: int, key: float) -> None:
        """Make (key, new token, id) the entry's heap item; rebuild the heap when mostly stale."""
        self._token += 1
        ent[_CT_HKEY] = key
        ent[_CT_TOKEN] = self._token
        heapq.heappush(self._heap, (key, self._token, id))
        if len(self._heap) > 2 * len(self._e) + 64:
            self._heap = [(e[_CT_HKEY], e[_CT_TOKEN], i) for i, e in self._e.items()]
            heapq.heapify(self._heap)

    def _settle_top(self) -> bool:
        """Drop stale items and raise lagging keys at the top; False if the heap is empty."""
        heap = self._heap
        while heap:
            key, token, id = heap[0]
            ent = self._e.get(id)
            if ent is None or ent[_CT_TOKEN] != token:
                heapq.heappop(heap)
            elif ent[_CT_EXPIRES] > key:
                ent[_CT_HKEY] = ent[_CT_EXPIRES]
                heapq.heapreplace(heap, (ent[_CT_EXPIRES], token, id))
            else:
                return True
        return False

    def _unlink(self, id: int) -> None:
        ent = self._e.pop(id)
        del self._by_tuple[ent[_CT_ORIG]]
        del self._by_tuple[ent[_CT_REPLY]]
        self._free.append(id)

    def _after_remove(self) -> None:
        """An empty table starts afresh: ids from 0, new (small) containers."""
        if not self._e:
            self._by_tuple = {}
            self._e = {}
            self._free = []
            self._heap = []
            self._next = 0

    def _ent(self, id: int) -> list:
        ent = self._e.get(id)
        if ent is None:
            raise KeyError(id)
        return ent

    def create(self, orig: CtTuple, reply: CtTuple, state: int, status: int, expires: float,
               mark: int = 0) -> int:
        """Add an entry; its new id, or -1 (nothing stored) when either tuple is already in use.

        Arguments convert in order (ints like operator.index, then ValueError for a value
        out of range): state int32, status and mark uint32, expires any float but NaN.
        """
        expires = _cf(expires)  # a C double parameter: converted before the body runs
        o = _ct_tuple(orig)
        r = _ct_tuple(reply)
        state = _cs(state, 64)
        status = _cs(status, 64)
        mark = _cs(mark, 64)
        _ct_check(state, status, expires)
        if not 0 <= mark <= 0xFFFFFFFF:
            raise ValueError("mark must be in 0..2**32-1")
        if o == r:
            raise ValueError("orig and reply tuples must differ")
        if o in self._by_tuple or r in self._by_tuple:
            return -1
        if self._free:
            id = self._free.pop()
        else:
            id = self._next
            self._next += 1
        ent = [o, r, state, status, expires, mark, 0, 0, 0, 0, expires, 0]
        self._e[id] = ent
        self._by_tuple[o] = 2 * id
        self._by_tuple[r] = 2 * id + 1
        self._push(ent, id, expires)
        return id

    def find(self, t: CtTuple) -> tuple[int, int]:
        """(id, direction) of the entry having tuple t (0 = original, 1 = reply), or (-1, 0).

        Expired entries are found until expire() removes them.
        """
        ref = self._by_tuple.get(_ct_tuple(t))
        return (-1, 0) if ref is None else (ref >> 1, ref & 1)

    def in_use(self, t: CtTuple) -> bool:
        """True when t is any entry's original or reply tuple (e.g. to pick a free NAT port)."""
        return _ct_tuple(t) in self._by_tuple

    def find_batch(self, keys: object) -> array:
        """id*2 + direction (or -1) for each 16-byte =IIHHB3x record in a buffer; array('q').

        Any C-contiguous buffer whose size is a multiple of 16 bytes is accepted; the
        3 pad bytes of a record are ignored.
        """
        if type(keys) is not bytes and type(keys) is not bytearray:
            mv = memoryview(keys)  # type: ignore[arg-type]
            if not mv.c_contiguous:
                raise ValueError("buffer must be C-contiguous")
            keys = mv.tobytes()
        if len(keys) % 16:  # type: ignore[arg-type]
            raise ValueError("buffer length must be a multiple of 16 (=IIHHB3x records)")
        get = self._by_tuple.get
        out = array("q")
        for src, dst, sport, dport, proto in _CT_REC.iter_unpack(keys):  # type: ignore[arg-type]
            ref = get((src, dst, proto, sport, dport))
            out.append(-1 if ref is None else ref)
        return out

    def get(self, id: int) -> tuple:
        """(orig, reply, state, status, expires, mark, packets_orig, bytes_orig, packets_reply,
        bytes_reply) of an entry; KeyError for an unknown id."""
        return tuple(self._ent(_cs(id, 64))[:10])

    def update(self, id: int, state: int, status: int, expires: float) -> None:
        """Set an entry's state, status and expiry time; KeyError for an unknown id."""
        expires = _cf(expires)
        id = _cs(id, 64)
        state = _cs(state, 64)
        status = _cs(status, 64)
        _ct_check(state, status, expires)
        ent = self._ent(id)
        ent[_CT_STATE] = state
        ent[_CT_STATUS] = status
        ent[_CT_EXPIRES] = expires
        if expires < ent[_CT_HKEY]:
            self._push(ent, id, expires)

    def set_mark(self, id: int, mark: int) -> None:
        """Set an entry's 32-bit mark; KeyError for an unknown id."""
        id = _cs(id, 64)
        mark = _cs(mark, 64)
        if not 0 <= mark <= 0xFFFFFFFF:
            raise ValueError("mark must be in 0..2**32-1")
        self._ent(id)[_CT_MARK] = mark

    def account(self, id: int, direction: int, nbytes: int) -> None:
        """Count one packet of nbytes in a direction (0 original, 1 reply); counters wrap at 2**64."""
        id = _cs(id, 64)
        direction = _cs(direction, 64)
        nbytes = _cs(nbytes, 64)
        if direction not in (0, 1):
            raise ValueError("direction must be 0 (original) or 1 (reply)")
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        ent = self._ent(id)
        i = 6 + 2 * direction
        ent[i] = (ent[i] + 1) & _M64
        ent[i + 1] = (ent[i + 1] + nbytes) & _M64

    def delete(self, id: int) -> bool:
        """Remove an entry; True if it existed."""
        id = _cs(id, 64)
        if id not in self._e:
            return False
        self._unlink(id)
        self._after_remove()
        return True

    def expire(self, now: float) -> list[int]:
        """Remove every entry with expires <= now; their ids, ascending."""
        now = _cf(now)
        heap = self._heap
        gone = []
        while self._settle_top() and heap[0][0] <= now:
            gone.append(heapq.heappop(heap)[2])
        gone.sort()
        for id in gone:
            self._unlink(id)
        if gone:
            self._after_remove()
        return gone

    def next_expiry(self) -> float:
        """The earliest expiry time among entries (inf when empty), for one timer per table."""
        return self._heap[0][0] if self._settle_top() else float("inf")

    def ids(self) -> list[int]:
        """Live entry ids, ascending."""
        return sorted(self._e)

    def __len__(self) -> int:
        return len(self._e)

    def memory_bytes(self) -> int:
        """Approximate bytes held: the dicts, lists and heap, each entry list, tuple and heap item."""
        total = object.__sizeof__(self) + sum(
            sys.getsizeof(c) for c in (self._by_tuple, self._e, self._free, self._heap))
        for ent in self._e.values():
            total += sys.getsizeof(ent) + sys.getsizeof(ent[_CT_ORIG]) + sys.getsizeof(ent[_CT_REPLY])
        return total + len(self._heap) * sys.getsizeof((0.0, 0, 0))

    def __sizeof__(self) -> int:
        return self.memory_bytes()

    def __repr__(self) -> str:
        return f"<ConntrackTable entries={len(self._e)}>"


@dataclass(slots=True)
class Record:
    """One captured frame (emu.pcap); `comments` may still grow while the frame's hop is processed."""

    time: float
    ifname: str  # capture point name: netns/ifname
    frame: bytes
    direction: str
    comments: list[str]
    linktype: int = 1
    pid: int = 0  # the frame id its decisions are recorded under


class IpIdent:
    """A stack's IPv4 identification counter (the next datagram gets value + 1)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value & 0xFFFF

    def next(self) -> int:
        self.value = (self.value + 1) & 0xFFFF
        return self.value


class LinkCounters:
    """A link's rx/tx counters (`ip -s link`)."""

    __slots__ = ("rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes", "tx_dropped")

    def __init__(self) -> None:
        for k in self.__slots__:
            setattr(self, k, 0)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinkCounters) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return "LinkCounters(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


class UdpSink:
    """A UDP socket that only counts what it receives (the receiving end of benchmarks)."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

    def __call__(self, src: int, sport: int, dst: int, dport: int, payload: bytes, pid: int) -> None:
        self.packets += 1
        self.bytes += len(payload)


def flow_key(uid: int, frame: bytes) -> bytes | None:
    """What decides a frame's path (emu.net.flowcache): the ingress `uid`, the frame's length, Ethernet
    header and the IPv4/L4 fields any table looks at (not the IP ID or checksums, which a program carries
    through). None: not cached (not IPv4 without options, a fragment, not UDP/TCP/ICMP, truncated)."""
    if len(frame) < 34 or frame[12] != 8 or frame[13] != 0 or frame[14] != 0x45 or frame[20] & 0x3F or frame[21]:
        return None
    head = uid.to_bytes(4, "little") + len(frame).to_bytes(2, "little") + frame[0:18] + frame[20:24] + frame[26:34]
    proto = frame[23]
    if proto == 17:
        return head + frame[34:40] if len(frame) >= 42 else None
    if proto == 6:
        return head + frame[34:38] + frame[46:48] if len(frame) >= 54 else None
    if proto == 1:
        return head + frame[34:36] + frame[38:40] if len(frame) >= 42 else None
    return None


# --- the flow cache's executor (emu.net.flowcache compiles the programs) -----------------------------
_RX, _TX, _WIRE, _STRIP, _TRIM, _PUSH, _TTL, _NAT, _VXLAN, _FDB, _NEIGH, _CT, _RULE, _SINK, _NOTE, _HANDOFF = range(16)
_NUD_REACHABLE, _NUD_STALE = 0x02, 0x04
_NUD_SEND = 0x02 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE (if fresh), DELAY, PROBE, NOARP, PERMANENT


class FlowExec:
    """Runs compiled flow programs: validate every step at its virtual time, then apply them all."""

    def __init__(self, lab, record_cls) -> None:  # noqa: ANN001
        self.lab = lab
        self.record_cls = record_cls
        self.staged = 0  # frames run in staged vectors: none here, every frame goes through its steps in turn

    def compile(self, ops: list) -> list:
        """The executor's form of a program (here: the steps themselves, after a sanity check)."""
        for op in ops:
            if not 0 <= op[0] <= _HANDOFF:
                raise ValueError(f"unknown step {op[0]}")
        return list(ops)

    def _valid(self, ops: list, frame: bytes, now: float, limit: float, horizon: float) -> float:
        """The time the journey ends if every step may run, else -1.0."""
        if inet_checksum(frame, 14, 20) != 0:
            return -1.0
        if frame[23] == 17 and frame[40:42] != b"\0\0" and any(op[0] == _SINK for op in ops):
            ulen = int.from_bytes(frame[38:40], "big")
            src, dst = int.from_bytes(frame[26:30], "big"), int.from_bytes(frame[30:34], "big")
            seg = frame[34:34 + ulen]
            if udp_checksum(src, dst, seg[:6] + b"\0\0" + seg[8:]) != int.from_bytes(frame[40:42], "big"):
                return -1.0
        for op in ops:
            code = op[0]
            if code == _WIRE:
                now += op[1]
            elif code == _FDB:
                if op[1].lookup(op[2], 0, now) != op[3]:
                    return -1.0
            elif code == _NEIGH:
                e = op[1].get(op[2])
                if e is None or e[0] != op[3] or not e[1] & _NUD_SEND:
                    return -1.0
                if e[1] == _NUD_REACHABLE and now - e[2] > op[4]:
                    return -1.0
            elif code == _CT:
                if now > op[8]:
                    return -1.0
            elif code == _HANDOFF:
                break
        return now if now < limit and now <= horizon else -1.0

    def send(self, progs: list, templates: list, sent: Any, start: int, total: int, t0: float, interval: float,
             limit: float, final: float, vector: bool = True) -> int:
        """Generator frames start..total-1 (frame i: flow i mod n, IP ID template + sent[flow], at t0 + i * interval)
        while each has a program, ends before `limit` (the next clock event) and by the time the next frame
        arrives (the last one: by `final`); returns how many ran. (The compiled executor runs `vector`s of
        frames stage by stage; here every frame goes through all its steps in turn, with the same result.)"""
        lab, nflows = self.lab, len(templates)
        for i in range(start, total):
            k = i % nflows
            ops = progs[k]
            if ops is None:
                return i - start
            frame = stamp_frames(templates[k], 1, int.from_bytes(templates[k][18:20], "big") + sent[k])
            now = t0 + i * interval
            until = t0 + (i + 1) * interval if i + 1 < total else final
            if self._valid(ops, bytes(frame), now, limit, until) < 0:
                return i - start
            sent[k] += 1
            lab._pid += 1
            self._apply(ops, frame, lab._pid, now, None, until,
                        lab.trace.enabled or ops[-1][0] == _HANDOFF)
            if ops[-1][0] == _HANDOFF:
                return i - start + 1  # the slow path may have scheduled events: the caller looks again
        return total - start

    def run(self, ops: list, frame: bytes, pid: int, now: float, limit: float, horizon: float) -> float:
        """Carries `frame` (arriving now) through the program if its journey ends before `limit` (the next
        clock event) and by `horizon`; returns the journey's end time, or -1.0 (nothing done)."""
        end = self._valid(ops, frame, now, limit, horizon)
        if end >= 0:
            self._apply(ops, bytearray(frame), pid, now, None, horizon)
        return end

    def dry_run(self, ops: list, frame: bytes) -> list[bytes]:
        """The bytes at every RX and TX step, with no side effect (checks a new program)."""
        seen: list[bytes] = []
        self._apply(ops, bytearray(frame), 0, 0.0, seen)
        return seen

    def _apply(self, ops: list, buf: bytearray, pid: int, now: float, seen: list | None,
               horizon: float = -1.0, hops: bool = True) -> None:
        lab = self.lab
        for op in ops:
            code = op[0]
            if code == _RX or code == _TX:
                if seen is not None:
                    seen.append(bytes(buf))
                    continue
                if op[6] is not None and hops:
                    lab.new_hop(pid, op[6])
                c = op[1]
                if code == _RX:
                    c.rx_packets += 1
                    c.rx_bytes += len(buf)
                else:
                    c.tx_packets += 1
                    c.tx_bytes += len(buf)
                cap = op[2]
                if cap is not None:
                    rec = self.record_cls(now, cap.name, bytes(buf), "in" if code == _RX else "out", op[4], op[5], pid)
                    cap.records.append(rec)
                    lab._records.append(rec)
            elif code == _WIRE:
                now += op[1]
            elif code == _STRIP:
                del buf[:op[1]]
            elif code == _TRIM:
                del buf[op[1]:]
            elif code == _PUSH:
                buf[0:0] = op[1]
            elif code == _TTL:
                ttl_decrement(buf, op[1])
            elif code == _NAT:
                if op[1]:
                    set_l4_port(buf, 0, op[2], op[3])
                else:
                    set_ipv4_addr(buf, 0, op[2], op[3])
            elif code == _VXLAN:
                ident = op[8] if seen is not None else op[7].ip_ident.next()
                buf[:] = vxlan_encap(buf, 0, 0, op[1], op[2], op[3], op[4], op[5], ident, op[6])[14:]
            elif seen is not None:
                continue
            elif code == _FDB:
                if op[4]:
                    op[1].learn(op[2], 0, op[3], now)
            elif code == _CT:
                op[1].update(op[2], op[5], op[6], now + op[4])
                op[1].account(op[2], op[3], op[7])
            elif code == _RULE:
                op[1].pkts += 1
                op[1].bytes += op[2]
            elif code == _SINK:
                op[1].packets += 1
                op[1].bytes += op[2]
            elif code == _NOTE:
                if lab.trace.enabled:
                    lab.record(op[6](now, op[1], op[2], op[3], op[4], op[5]), pid)
            elif code == _HANDOFF:
                # The slow path goes on at `now`, within the same horizon (later programs may run too).
                clock = lab.clock
                before, outer = clock.now, clock.horizon
                clock.now, clock.horizon = now, horizon
                try:
                    op[1].rx(bytes(buf), pid)
                finally:
                    clock.now, clock.horizon = before, outer
                return
