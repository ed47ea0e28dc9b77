"""Named trace points and drop reasons: what happened to a frame, at which hop, and why."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Drop(str, enum.Enum):
    """Why a frame went no further (ns-3's drop-reason idea, kernel vocabulary)."""

    NO_ROUTE = "NO_ROUTE"
    BLACKHOLE = "BLACKHOLE"
    UNREACHABLE = "UNREACHABLE"
    PROHIBIT = "PROHIBIT"
    TTL_EXPIRED = "TTL_EXPIRED"
    NO_NEIGH = "NO_NEIGH"
    FILTERED = "FILTERED"
    NO_LISTENER = "NO_LISTENER"
    MALFORMED = "MALFORMED"
    BAD_CHECKSUM = "BAD_CHECKSUM"
    IFACE_DOWN = "IFACE_DOWN"
    NOT_FOR_US = "NOT_FOR_US"
    FORWARDING_OFF = "FORWARDING_OFF"
    FRAG_NEEDED = "FRAG_NEEDED"
    RP_FILTER = "RP_FILTER"
    MARTIAN = "MARTIAN"
    UNSUPPORTED = "UNSUPPORTED"
    NO_CARRIER = "NO_CARRIER"
    REASM_TIMEOUT = "REASM_TIMEOUT"
    HAIRPIN = "HAIRPIN"
    ARP_IGNORED = "ARP_IGNORED"
    QUEUE_FULL = "QUEUE_FULL"


@dataclass(frozen=True)
class Decision:
    """One step of one frame: where (namespace, interface), which point, what matched, what was done."""

    time: float
    netns: str
    ifname: str
    point: str  # rx, tx, bridge, route, neigh, arp, deliver, forward, drop, encap, decap, icmp
    detail: str
    drop: Drop | None = None

    def render(self) -> str:
        where = f"{self.netns}/{self.ifname}" if self.ifname else self.netns
        tail = f" [drop: {self.drop.value}]" if self.drop else ""
        return f"{self.time:10.6f}  {where:<24} {self.point:<8} {self.detail}{tail}"


@dataclass
class Trace:
    """Decisions recorded in order; `enabled` off keeps only counters."""

    enabled: bool = True
    limit: int = 200_000
    decisions: list[Decision] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)

    def add(self, d: Decision) -> bool:
        """Counts a drop; keeps the decision while enabled and under `limit` (True if kept)."""
        if d.drop is not None:
            self.drops[d.drop.value] = self.drops.get(d.drop.value, 0) + 1
        if self.enabled and len(self.decisions) < self.limit:
            self.decisions.append(d)
            return True
        return False

    def clear(self) -> None:
        self.decisions.clear()

    def render(self, decisions: list[Decision] | None = None) -> str:
        return "\n".join(d.render() for d in (self.decisions if decisions is None else decisions))


def render_journey(decisions: list[Decision]) -> str:
    """One frame's journey grouped by namespace, in the manner of `ovs-appctl ofproto/trace`."""
    if not decisions:
        return "no decisions recorded for this frame\n"
    out: list[str] = []
    ns = None
    for d in decisions:
        if d.netns != ns:
            ns = d.netns
            out.append(f"{d.netns}  (t={d.time * 1000:.3f} ms)")
        tail = f"  -> DROP {d.drop.value}" if d.drop else ""
        out.append(f"    {d.ifname or '-':<12} {d.point:<8} {d.detail}{tail}")
    last = decisions[-1]
    drops = [d for d in decisions if d.drop is not None]
    if drops:
        end = drops[-1]
        out.append(f"\nFinal: dropped at {end.netns}/{end.ifname or '-'}: {end.drop.value} ({end.detail})")  # type: ignore[union-attr]
    elif any(d.point == "deliver" for d in decisions):
        where = [d for d in decisions if d.point == "deliver"][-1]
        out.append(f"\nFinal: delivered in {where.netns} ({where.detail})")
    else:
        out.append(f"\nFinal: last seen at {last.netns}/{last.ifname or '-'} ({last.point})")
    return "\n".join(out) + "\n"
