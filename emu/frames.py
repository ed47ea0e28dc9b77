"""Frame building and decoding with Scapy: the one module that imports it.

The data plane moves `bytes`; Scapy builds the frames the kernel originates rarely (ARP) and
the ones users inject, and decodes frames for people (summaries, tests).
"""

from __future__ import annotations

from scapy.config import conf

conf.verb = 0
conf.ipv6_enabled = False

from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402

from emu.net.addr import int2ip, int2mac  # noqa: E402

__all__ = ["ARP", "ICMP", "IP", "TCP", "UDP", "VXLAN", "Ether", "Raw", "Packet", "arp", "decode", "summary"]


def arp(op: int, src_mac: int, src_ip: int, dst_ip: int, *, eth_dst: int = 0xFFFFFFFFFFFF,
        target_mac: int = 0) -> bytes:
    """An ARP request (op 1) or reply (op 2) in an Ethernet frame: 42 bytes, unpadded, as a veth carries it."""
    frame = Ether(dst=int2mac(eth_dst), src=int2mac(src_mac), type=0x0806) / ARP(
        op=op, hwsrc=int2mac(src_mac), psrc=int2ip(src_ip), hwdst=int2mac(target_mac), pdst=int2ip(dst_ip)
    )
    return bytes(frame)


def decode(frame: bytes, *, l3: bool = False) -> Packet:
    """Scapy's view of a frame (IP when `l3`), with UDP 8472 decoded as VXLAN like `-d udp.port==8472,vxlan`."""
    return IP(frame) if l3 else Ether(frame)


def summary(frame: bytes, *, l3: bool = False) -> str:
    return decode(frame, l3=l3).summary()


from scapy.packet import bind_layers  # noqa: E402

bind_layers(UDP, VXLAN, dport=8472)
