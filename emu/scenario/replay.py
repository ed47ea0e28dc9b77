"""Reading frames back from pcap and pcapng files for replay, with their relative timing."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from struct import error as struct_error

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapNgReader, RawPcapReader

from emu.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW

SUPPORTED = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IPv4"}


@dataclass(frozen=True)
class Frame:
    time: float  # seconds since the first frame of the file
    data: bytes
    linktype: int
    interface: str | None  # pcapng if_name, when there is one
    direction: str | None  # "in" / "out" from pcapng epb_flags


def _open(path: str) -> RawPcapReader | RawPcapNgReader:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"\x0a\x0d\x0d\x0a":
        return RawPcapNgReader(path)
    if magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return RawPcapReader(path)
    raise ValueError("not a pcap or pcapng file")


def read_frames(path: str) -> list[Frame]:
    """All frames of a file; raises ValueError with a reader-facing message on anything unsupported."""
    log = logging.getLogger("scapy.runtime")
    level = log.level
    log.setLevel(logging.ERROR)  # Scapy warns about cut records; we report them as errors instead
    try:
        return _read(path)
    finally:
        log.setLevel(level)


def _read(path: str) -> list[Frame]:
    try:
        reader = _open(path)
    except (OSError, Scapy_Exception, EOFError) as exc:
        raise ValueError(f"cannot read it as a capture: {exc}") from None
    frames: list[Frame] = []
    first = None
    try:
        for data, meta in reader:
            caplen = getattr(meta, "caplen", None)
            if caplen is not None and len(data) < caplen:
                raise ValueError(f"truncated or corrupt capture: frame {len(frames) + 1} is cut short "
                                 f"({len(data)} of {caplen} bytes)")
            if isinstance(reader, RawPcapNgReader):
                ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
                linktype = meta.linktype
                ifname = getattr(meta, "ifname", None)
                ifname = ifname.decode() if isinstance(ifname, bytes) else ifname
                flags = getattr(meta, "direction", None)
                direction = {1: "in", 2: "out"}.get(flags) if isinstance(flags, int) else None
            else:
                ts = meta.sec + meta.usec / 1_000_000
                linktype, ifname, direction = reader.linktype, None, None
            if linktype not in SUPPORTED:
                if linktype > 0xFFFF:
                    raise ValueError("truncated or corrupt capture: its header is not valid")
                raise ValueError(f"unsupported link type {linktype} (emu replays Ethernet (1) and raw IPv4 (101))")
            first = ts if first is None else first
            frames.append(Frame(ts - first, bytes(data), linktype, ifname, direction))
    except (Scapy_Exception, EOFError, struct_error) as exc:
        raise ValueError(f"truncated or corrupt capture: {exc}") from None
    finally:
        reader.close()
    return frames


def check_file(path: str, shown: str | None = None) -> str | None:
    """Why `path` cannot be replayed, or None (`shown` is how to name the file)."""
    shown = shown or path
    if os.path.isdir(path):
        return f"{shown} is a directory, not a capture"
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return f"no such file: {shown}"
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror}"
    try:
        read_frames(path)
    except ValueError as exc:
        return f"{shown}: {exc}"
    return None

