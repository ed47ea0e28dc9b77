"""Templated frame generation: build one frame once, then copy it and stamp each copy's IPv4 ID.

`stamp_frames` writes `count` frames back to back into one preallocated bytearray and fixes
each IP header checksum incrementally (RFC 1624, the data plane's `csum_replace2`), so a frame
costs two small writes instead of a Scapy build.  The interface is the one a compiled version
would have; `udp_template` builds the template with the same helpers (no Scapy), and equals
Scapy's `Ether()/IP()/UDP()/payload` bytes for the same fields.
"""

from __future__ import annotations

import struct

from emu import fastpath

ETH_LEN = 14
_ID = struct.Struct(">H")


def udp_template(*, src_mac: int, dst_mac: int, src_ip: int, dst_ip: int, sport: int, dport: int,
                 payload: bytes = b"", ttl: int = 64, ident: int = 0, tos: int = 0) -> bytes:
    """An Ethernet/IPv4/UDP frame (no options, DF clear, UDP checksum set) to stamp copies of."""
    fp = fastpath.load()
    udp = bytearray(struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload)
    _ID.pack_into(udp, 6, fp.udp_checksum(src_ip, dst_ip, udp))
    ip = fp.ipv4_build_header(20 + len(udp), ident, 0, ttl, 17, src_ip, dst_ip, tos)
    eth = dst_mac.to_bytes(6, "big") + src_mac.to_bytes(6, "big") + b"\x08\x00"
    return eth + ip + bytes(udp)


def stamp_frames(template: bytes, count: int, first_ip_id: int) -> bytearray:
    """`count` copies of an Ethernet/IPv4 `template` back to back, copy i with IP ID first_ip_id + i
    (mod 2**16) and its header checksum updated; only the IP header changes (the UDP/TCP checksum
    does not cover the ID)."""
    size = len(template)
    if size < ETH_LEN + 20 or template[12:14] != b"\x08\x00" or template[ETH_LEN] >> 4 != 4:
        raise ValueError("template must be an Ethernet frame carrying an IPv4 header")
    if count < 0:
        raise ValueError("count must be >= 0")
    buf = bytearray(template) * count
    put = _ID.pack_into
    fix = fastpath.load().csum_replace2
    id_off, csum_off = ETH_LEN + 4, ETH_LEN + 10
    old = int.from_bytes(template[id_off:id_off + 2], "big")
    off = 0
    for ident in range(first_ip_id, first_ip_id + count):
        new = ident & 0xFFFF
        put(buf, off + id_off, new)
        fix(buf, off + csum_off, old, new)
        off += size
    return buf
