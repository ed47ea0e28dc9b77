"""pcapng output: one interface block per capture point (`netns/ifname`), direction flags, comments.

Scapy's RawPcapNgWriter writes the blocks; files are written under a temporary name and
renamed, so a reader never sees half a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scapy.utils import PcapWriter, RawPcapNgWriter

from emu.fileio import atomic_path

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
DIRECTION = {"in": 1, "out": 2}


@dataclass
class Record:
    """One captured frame; `comments` may still grow while the frame's hop is processed."""

    time: float
    ifname: str  # capture point name: netns/ifname
    frame: bytes
    direction: str
    comments: list[str]
    linktype: int = LINKTYPE_ETHERNET
    pid: int = 0  # the frame id its decisions are recorded under


class _Writer(RawPcapNgWriter):
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


def write_pcap(path: str, records: Iterable[Record], epoch: float, linktype: int) -> int:
    """A classic libpcap file of one capture point (no comments or directions: the format has none)."""
    count = 0
    with atomic_path(path) as tmp:
        writer = PcapWriter(tmp, linktype=linktype, sync=False)
        writer._write_header(None)
        for rec in records:
            writer.write_packet(rec.frame, sec=round((epoch + rec.time) * 1_000_000) / 1_000_000, usec=None)
            count += 1
        writer.close()
    return count


def write_pcapng(path: str, records: Iterable[Record], epoch: float) -> int:
    """Writes records (in time order) atomically; returns how many frames were written."""
    count = 0
    with atomic_path(path) as tmp:
        writer = _Writer(tmp)
        writer.linktype = LINKTYPE_ETHERNET
        writer.sync = False
        writer._write_header(None)
        for rec in records:
            comment = "; ".join(rec.comments) or f"{rec.direction} {rec.ifname}"
            # Whole microseconds: the same virtual time always gives the same bytes.
            sec = round((epoch + rec.time) * 1_000_000) / 1_000_000
            writer._write_packet(rec.frame, rec.linktype, sec=sec, ifname=rec.ifname.encode(),
                                 direction=DIRECTION[rec.direction], comments=[comment.encode()])
            count += 1
        writer.close()
    return count
