"""IPv4 and MAC address conversions between text and the integers the tables use."""

from __future__ import annotations

import ipaddress
import socket
import struct

BROADCAST_MAC = 0xFFFFFFFFFFFF


def ip2int(text: str) -> int:
    """Dotted quad to int; raises ValueError on anything else (no shorthand like `10.1`)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        raise ValueError(f"invalid IPv4 address {text!r}")
    return struct.unpack("!I", socket.inet_aton(text))[0]


def int2ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", value))


def mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


def parse_prefix(text: str, *, strict: bool = True) -> tuple[int, int]:
    """`10.0.0.0/24`, `10.0.0.1` (a /32) or `default` to (network, prefixlen).

    With `strict`, host bits beyond the prefix length raise ValueError("host bits").
    """
    if text in ("default", "all", "any"):
        return 0, 0
    addr, _, plen_text = text.partition("/")
    ip = ip2int(addr)
    if plen_text:
        if not plen_text.isdigit() or int(plen_text) > 32:
            raise ValueError(f"invalid prefix {text!r}")
        plen = int(plen_text)
    else:
        plen = 32
    if ip & ~mask(plen) & 0xFFFFFFFF:
        if strict:
            raise ValueError("host bits")
        ip &= mask(plen)
    return ip, plen


def prefix_str(network: int, plen: int) -> str:
    if plen == 0 and network == 0:
        return "default"
    return int2ip(network) if plen == 32 else f"{int2ip(network)}/{plen}"


def mac2int(text: str) -> int:
    parts = text.split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"invalid MAC address {text!r}")
    return int("".join(p.zfill(2) for p in parts), 16)


def int2mac(value: int) -> str:
    raw = value.to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(value: int) -> bytes:
    return value.to_bytes(6, "big")


def is_multicast_mac(value: int) -> bool:
    return bool((value >> 40) & 1)


def in_subnet(ip: int, network: int, plen: int) -> bool:
    return (ip & mask(plen)) == network


def network_of(ip: int, plen: int) -> int:
    return ip & mask(plen)


def broadcast_of(ip: int, plen: int) -> int:
    return (ip | ~mask(plen)) & 0xFFFFFFFF


def is_valid_interface(text: str) -> bool:
    try:
        ipaddress.IPv4Interface(text)
    except ValueError:
        return False
    return True
