"""pcapng output: one interface block per capture point (`netns/ifname`), direction flags, comments.

`PcapNgWriter` packs the blocks with `struct` into a buffered file; its output is byte for byte
what Scapy's RawPcapNgWriter wrote before (kept as the baseline of `emu bench pcap.write`).
Files are written under a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

from scapy.utils import PcapWriter

from emu import fastpath
from emu.fileio import atomic_path

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
DIRECTION = {"in": 1, "out": 2}
SNAPLEN = 262144
TSRESOL = 1_000_000  # microseconds, the pcapng default (no if_tsresol option)

# Section header: type, length 28, byte-order magic, version 1.0, section length -1 (unknown), length.
_SHB = struct.pack("<4sI4sHHqI", b"\x0a\x0d\x0d\x0a", 28, b"\x4d\x3c\x2b\x1a", 1, 0, -1, 28)
_IDB = struct.Struct("<IIHHIHH")  # type 1, length, linktype, reserved, snaplen, opt if_name (2), its length
_EPB = struct.Struct("<IIIIIII")  # type 6, length, interface id, ts high, ts low, captured and original length
_OPT = struct.Struct("<HH")  # option code, value length
_FLAGS_OPT = struct.pack("<HH", 2, 4)  # epb_flags option header; its 32-bit value follows
_FLAGS_TAIL = struct.Struct("<IHHI")  # epb_flags value, opt_endofopt, block total length
_OPTS_TAIL = struct.Struct("<HHI")  # opt_endofopt, block total length
_LEN = struct.Struct("<I")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # by len % 4


# One captured frame: time, ifname (netns/ifname), frame, direction, comments, linktype, pid.
# The compiled data plane's class when it is there (the flow cache makes them in C), else the twin's.
Record = fastpath.load().Record


class PcapNgWriter:
    """Streams a pcapng section to a binary file: an interface block the first time a name is seen,
    then one enhanced packet block per frame (comments, direction flags, microsecond timestamps)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.interfaces: dict[bytes, int] = {}
        f.write(_SHB)

    def interface(self, ifname: bytes, linktype: int) -> int:
        """The id of interface `ifname`, writing its block (with `linktype`) the first time."""
        ifid = self.interfaces.get(ifname)
        if ifid is None:
            ifid = self.interfaces[ifname] = len(self.interfaces)
            pad = _PAD[len(ifname) & 3]
            total = 28 + len(ifname) + len(pad)  # 28: fixed fields, option headers, total length
            self.f.write(b"".join((_IDB.pack(1, total, linktype, 0, SNAPLEN, 2, len(ifname)), ifname, pad,
                                   b"\0\0\0\0", _LEN.pack(total))))
        return ifid

    def write(self, frame: bytes, ifname: bytes, linktype: int, sec: float, direction: int | None = None,
              comments: Iterable[bytes] = ()) -> None:
        """One frame captured at `ifname` at `sec` (seconds since the epoch, kept to the microsecond)."""
        ifid = self.interfaces.get(ifname)
        if ifid is None:
            ifid = self.interface(ifname, linktype)
        ts = int(sec * TSRESOL) if sec else 0  # as Scapy computes it, so the bytes stay the same
        n = len(frame)
        parts = [b"", frame, _PAD[n & 3]]
        size = 32 + n + len(_PAD[n & 3])
        for c in comments:
            k = len(c)
            pad = _PAD[k & 3]
            parts += (_OPT.pack(1, k), c, pad)
            size += 4 + k + len(pad)
        if direction is not None:
            size += 12
            parts += (_FLAGS_OPT, _FLAGS_TAIL.pack(direction & 3, 0, 0, size))
        elif len(parts) > 3:
            size += 4
            parts.append(_OPTS_TAIL.pack(0, 0, size))
        else:
            parts.append(_LEN.pack(size))
        parts[0] = _EPB.pack(6, size, ifid, ts >> 32, ts & 0xFFFFFFFF, n, n)
        self.f.write(b"".join(parts))


def _sec(epoch: float, t: float) -> float:
    """Whole microseconds: the same virtual time always gives the same bytes."""
    return round((epoch + t) * 1_000_000) / 1_000_000


def write_pcap(path: str, records: Iterable[Record], epoch: float, linktype: int) -> int:
    """A classic libpcap file of one capture point (no comments or directions: the format has none)."""
    count = 0
    with atomic_path(path) as tmp:
        writer = PcapWriter(tmp, linktype=linktype, sync=False)
        writer._write_header(None)
        for rec in records:
            writer.write_packet(rec.frame, sec=_sec(epoch, rec.time), usec=None)
            count += 1
        writer.close()
    return count


def write_pcapng(path: str, records: Iterable[Record], epoch: float) -> int:
    """Writes records (in time order) atomically; returns how many frames were written."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=1 << 20) as f:
        writer = PcapNgWriter(f)
        write = writer.write
        names: dict[str, bytes] = {}
        for rec in records:
            name = names.get(rec.ifname)
            if name is None:
                name = names[rec.ifname] = rec.ifname.encode()
            comment = "; ".join(rec.comments) or f"{rec.direction} {rec.ifname}"
            write(rec.frame, name, rec.linktype, _sec(epoch, rec.time), DIRECTION[rec.direction],
                  (comment.encode(),))
            count += 1
    return count
