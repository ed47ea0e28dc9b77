"""A traffic generator: frame templates built once per flow with Scapy, stamped per frame, injected in batches.

Every frame arrives at one interface as if from its wire (`link.rx`). Frames of a flow differ
only in the IPv4 identification (and so the header checksum), which the stamper sets. The same
virtual timeline drives the slow path and the fast path: frame i arrives at `start + i * interval`.
"""

from __future__ import annotations

from array import array

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from emu.net.addr import int2mac
from emu.net.lab import Lab


def _mac(m: int | str) -> str:
    return int2mac(m) if isinstance(m, int) else m


def udp_frame(src_mac: int | str, dst_mac: int | str, src: str, dst: str, sport: int, dport: int,
              payload: bytes = b"", *, ttl: int = 64, ip_id: int = 1) -> bytes:
    """An Ethernet/IPv4/UDP frame (Scapy fills lengths and checksums); padded to 60 bytes as on a wire."""
    pkt = Ether(src=_mac(src_mac), dst=_mac(dst_mac)) / IP(src=src, dst=dst, ttl=ttl, id=ip_id, flags="DF") / \
        UDP(sport=sport, dport=dport) / payload
    return bytes(pkt).ljust(60, b"\0")


def tcp_frame(src_mac: int | str, dst_mac: int | str, src: str, dst: str, sport: int, dport: int,
              flags: str = "A", payload: bytes = b"", *, seq: int = 1000, ack: int = 0, ttl: int = 64,
              ip_id: int = 1) -> bytes:
    pkt = Ether(src=_mac(src_mac), dst=_mac(dst_mac)) / IP(src=src, dst=dst, ttl=ttl, id=ip_id, flags="DF") / \
        TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / payload
    return bytes(pkt).ljust(60, b"\0")


def icmp_frame(src_mac: int | str, dst_mac: int | str, src: str, dst: str, ident: int, seq: int = 1,
               payload: bytes = b"", *, ttl: int = 64, ip_id: int = 1) -> bytes:
    pkt = Ether(src=_mac(src_mac), dst=_mac(dst_mac)) / IP(src=src, dst=dst, ttl=ttl, id=ip_id) / \
        ICMP(type=8, id=ident, seq=seq) / payload
    return bytes(pkt).ljust(60, b"\0")


class Generator:
    """Sends frames of several flows (round robin) into `netns/ifname` on the lab's virtual clock."""

    def __init__(self, lab: Lab, netns: str, ifname: str, frames: list[bytes]) -> None:
        if not frames:
            raise ValueError("a generator needs at least one frame template")
        self.lab = lab
        self.link = lab[netns].link(ifname)
        self.templates = [bytes(f) for f in frames]
        self.sent = array("q", [0] * len(frames))  # frames sent per flow: the IP ID offset of the next one
        self._keys: list[bytes | None] | None = None
        self._progs: list[object] | None = None  # each flow's compiled program, as of lab version _version
        self._version = -1

    def stamp(self, flow: int) -> bytes:
        """The next frame of `flow`: its template with IP ID + n and the header checksum fixed."""
        tpl = self.templates[flow]
        n = self.sent[flow]
        self.sent[flow] += 1
        if len(tpl) >= 34 and tpl[12:14] == b"\x08\x00" and tpl[14] >> 4 == 4:
            return bytes(self.lab.tables.stamp_frames(tpl, 1, (int.from_bytes(tpl[18:20], "big") + n) & 0xFFFF))
        return tpl

    def send(self, count: int, *, interval: float = 1e-4, start: float | None = None, drain: float = 0.01,
             batch: bool = True, vector: bool = True) -> int:
        """Frame i (of flow i mod n) arrives at start + i * interval; runs the clock `drain` past the last.
        `batch`: runs of frames go to the flow cache in one call (else one Python call per frame);
        `vector`: in a batch, frames go stage by stage in vectors (else each through all its steps in turn)."""
        clock = self.lab.clock
        t0 = clock.now if start is None else start
        n = len(self.templates)
        final = t0 + max(count - 1, 0) * interval + drain
        i = 0
        while i < count:
            clock.run_until(t0 + i * interval)  # what is due before frame i arrives (as the slow path would)
            done = self._fast(i, count, t0, interval, final, vector) if batch else 0
            i += done
            if i >= count:
                break
            if done:
                continue
            # Until the next frame arrives nothing looks: a program may carry this one if it is done by then.
            self.lab.inject(self.link, self.stamp(i % n), horizon=t0 + (i + 1) * interval if i + 1 < count else final)
            if self._progs is not None:
                self._progs[i % n] = self._program(i % n)  # the slow path may have compiled it
            i += 1
        clock.run_until(final)
        return count

    def _fast(self, start: int, total: int, t0: float, interval: float, final: float, vector: bool) -> int:
        """Runs frames start.. through the flow cache's programs in one C call while it can."""
        flows = self.lab.flows
        if flows is None:
            return 0
        if self._keys is None:
            uid = flows.uid(self.link)
            self._keys = [self.lab.tables.flow_key(uid, t) for t in self.templates]
        if self._progs is None or self._version != self.lab.version:
            self._version = self.lab.version
            self._progs = [self._program(k) for k in range(len(self._keys))]
        if self._progs[start % len(self._progs)] is None:
            return 0
        nxt = self.lab.clock.next_time()
        done = flows.exec.send(self._progs, self.templates, self.sent, start, total, t0, interval,
                               float("inf") if nxt is None else nxt, final, vector)
        flows.hits += done
        return done

    def _program(self, k: int) -> object:
        """Flow k's current compiled program, or None (also for one that hands off to the slow path: such
        frames go one by one through the flow cache, which now and then records them again)."""
        flows, key = self.lab.flows, self._keys[k] if self._keys else None
        prog = flows.programs.get(key) if flows is not None and key is not None else None
        ok = prog is not None and prog.version == self.lab.version and not prog.partial
        return prog.compiled if ok else None
