"""The flow cache: what the slow path did to one frame of a flow, compiled into a program for the next ones.

Like Open vSwitch's megaflows: the first frames of a flow take the slow path (`emu.net.stack`,
`bridge`, `tunnel`, `netfilter`), which reports each step to a `Recorder`: counters and captures
at every interface, wire delays, MAC/TTL/NAT rewrites, VXLAN encap and decap, FDB and neighbour
entries used, conntrack entries refreshed, iptables counters, decisions for the trace. If the
journey was a plain chain (no ARP, no timer, no random draw, no new frame, no table change), the
steps become a program keyed by the ingress interface and the frame's header fields. Later frames
of the flow run it (`emu._fastpath.FlowExec` in C, `_fastpath_py.FlowExec` as its twin) as long
as the lab's version is unchanged, the entries it used are still valid at the virtual times they
are used, and no clock event falls inside the frame's journey. A step the recorder does not know
ends the program early: the frame is handed back to the slow path at the last interface before it
(a "handoff"), so every program is a prefix of what the slow path does.

The invariant, checked by tests: with the fast path on or off, captures hold the same bytes,
timestamps and comments, and every table and counter ends the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, Record

if TYPE_CHECKING:
    from emu.net.lab import Lab
    from emu.net.link import Link
    from emu.trace import Decision

# Program steps. Each is a tuple (OP, args...); the executors in emu._fastpath(_py) interpret them.
RX, TX, WIRE, STRIP, TRIM, PUSH, TTL, NAT, VXLAN, FDB, NEIGH, CT, RULE, SINK, NOTE, HANDOFF = range(16)
MAX_PROGRAMS = 1 << 20


@dataclass
class Program:
    """A compiled journey: its steps, the lab version it was compiled at, and its compiled form."""

    key: bytes
    version: int
    ops: list[tuple[Any, ...]]
    compiled: Any = None  # the executor's own form (FlowExec.compile)
    runs: int = 0
    partial: bool = False  # ends in a handoff: re-recorded now and then, in case the full journey compiles now
    retry: int = 16


@dataclass
class Recorder:
    """Collects the steps of one frame's slow-path journey (only frame `pid`'s)."""

    lab: Lab
    pid: int
    key: bytes
    frame: bytes
    ops: list[tuple[Any, ...]] = field(default_factory=list)
    seen: list[tuple[int, bytes]] = field(default_factory=list)  # (op index, bytes at that RX/TX)
    records: list[tuple[int, Record]] = field(default_factory=list)
    entries: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)  # handoff points: (op index, guards)
    inflight: int = 0
    depth: int = 0
    encaps: int = 0  # tunnel headers this journey added and has not removed yet
    wires: int = 0
    failed: int = -1  # op index where the first unknown step happened
    why: str = ""
    start: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        self.start = self.guards()

    def guards(self) -> tuple[Any, ...]:
        """What must not change during a cacheable journey (checked at each handoff point and the end)."""
        lab = self.lab
        return lab.version, lab._pid, lab.clock._seq - self.wires, hash(lab.clock.rng.getstate())

    # --- reports from the slow path --------------------------------------------------------------
    def fail(self, why: str) -> None:
        if self.failed < 0:
            self.failed, self.why = len(self.ops), why

    def op(self, *op: Any) -> None:
        self.ops.append(op)

    def rx(self, link: Link, frame: bytes, rec: Record | None, *, entry: bool) -> None:
        """A frame received on `link` (entry: through Link.rx, where the slow path could take over)."""
        if entry:
            self.entries.append((len(self.ops), self.guards()))
        self._observe(RX, link, frame, rec)

    def tx(self, link: Link, frame: bytes, rec: Record | None) -> None:
        self._observe(TX, link, frame, rec)

    def _observe(self, kind: int, link: Link, frame: bytes, rec: Record | None) -> None:
        i = len(self.ops)
        self.seen.append((i, bytes(frame)))
        if rec is not None:
            self.records.append((i, rec))
        cap = self.lab.captures.get((link.ns.name, link.ifname)) if rec is not None else None
        self.ops.append((kind, link.counters, cap, link))

    def fdb(self, table: Any, mac: int, port: int, *, learn: bool, ok: bool) -> None:
        """An FDB entry used (learn: refreshed as a source); not ok: learned, moved or missed (flooded)."""
        if not ok:
            self.fail("fdb learned or moved" if learn else "fdb miss")
        self.ops.append((FDB, table, mac, port, learn))

    def encap(self, *op: Any) -> None:
        self.encaps += 1
        self.ops.append(op)

    def decap(self, n: int) -> None:
        """A tunnel header removed: only one this journey added (the key says nothing of what a packet
        that came in encapsulated carries inside)."""
        if self.encaps == 0:
            self.fail("decapsulates the frame it came in as")
        self.encaps -= 1
        self.ops.append((STRIP, n))

    def wire(self, delay: float) -> None:
        self.wires += 1
        self.inflight += 1
        if self.inflight > 1:
            self.fail("frame copied to several links")
        self.ops.append((WIRE, delay))

    def note(self, d: Decision) -> None:
        if d.drop is not None:
            self.fail(f"drop {d.drop.value}")
        self.ops.append((NOTE, d.netns, d.ifname, d.point, d.detail, d.drop, type(d)))


class FlowCache:
    """The programs of one lab, the recorder of the journey being compiled, and the executor."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.programs: dict[bytes, Program] = {}
        self.rec: Recorder | None = None
        self.exec = lab.tables.FlowExec(lab, Record)
        self.hits = 0
        self.misses = 0
        self.compiled = 0
        self.rejected: dict[str, int] = {}
        # key -> (version, frames to skip before recording it again, next backoff): a journey that could
        # not be compiled is not recorded again at every frame (1, 2, 4 ... 64 frames apart).
        self._backoff: dict[bytes, list[int]] = {}
        self._links = 0
        self._failed_pid = -1

    def uid(self, link: Link) -> int:
        """A small number for `link` in flow keys (given on first use)."""
        u = getattr(link, "_flow_uid", None)
        if u is None:
            self._links += 1
            u = link._flow_uid = self._links  # type: ignore[attr-defined]
        return u

    # --- the entry point: a frame arrives on a link ----------------------------------------------------
    def enter(self, link: Link, frame: bytes, pid: int) -> bool:
        """Called by Link.rx: True when a program carried the frame (the slow path must not)."""
        rec = self.rec
        if rec is not None:
            if rec.pid == pid:
                rec.depth += 1
                if rec.inflight > 0:
                    rec.inflight -= 1
                return False
        lab = self.lab
        key = lab.tables.flow_key(self.uid(link), frame)
        if key is None:
            return False
        prog = self.programs.get(key)
        if prog is not None and prog.version == lab.version and rec is None and prog.partial and \
                prog.runs >= prog.retry:
            prog.runs, prog.retry = 0, min(prog.retry * 2, 4096)
            prog = None  # record this frame's whole journey again (what stopped the program may be gone)
        if prog is not None and prog.version == lab.version:
            clock = lab.clock
            nxt = clock.next_time()
            end = self.exec.run(prog.compiled, frame, pid, clock.now, float("inf") if nxt is None else nxt,
                                clock.horizon)
            if end >= 0:
                # The slow path's last event of this journey would have left the clock there.
                clock.now = max(clock.now, end)
                prog.runs += 1
                self.hits += 1
                return True
        self.misses += 1
        if rec is None and pid != self._failed_pid:  # not the rest of a journey that could not compile
            back = self._backoff.get(key)
            if back is not None and back[0] == lab.version and back[1] > 0:
                back[1] -= 1
                self._failed_pid = pid
                return False
            rec = self.rec = lab.rec = Recorder(lab, pid, key, bytes(frame))
            rec.depth = 1
        return False

    def leave(self, pid: int) -> None:
        """Link.rx returns: when the recorded journey has nothing left in flight, compile it."""
        rec = self.rec
        if rec is None or rec.pid != pid:
            return
        rec.depth -= 1
        if rec.depth == 0 and rec.inflight == 0:
            self.rec = self.lab.rec = None
            self._finish(rec)

    # --- compiling ------------------------------------------------------------------------------------
    def _reject(self, rec: Recorder, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1
        self._failed_pid = rec.pid
        back = self._backoff.get(rec.key)
        step = 1 if back is None or back[0] != rec.start[0] else min(back[2] * 2, 64)
        if len(self._backoff) >= MAX_PROGRAMS:
            self._backoff.clear()
        self._backoff[rec.key] = [rec.start[0], step, step]

    def _finish(self, rec: Recorder) -> None:
        start = rec.start
        end = len(rec.ops)
        if rec.failed >= 0 or rec.guards() != start:
            # Keep the longest prefix that ends at a handoff point with every guard unchanged.
            limit = rec.failed if rec.failed >= 0 else len(rec.ops)
            ok = [i for i, g in rec.entries if i <= limit and g == start]
            end = max(ok) if ok else 0
            if end == 0:
                self._reject(rec, rec.why or "lab changed during the journey")
                return
        ops = list(rec.ops[:end])
        if end < len(rec.ops):
            link = rec.ops[end][3]
            ops.append((HANDOFF, link))
        comments = {i: list(r.comments) for i, r in rec.records if i < end}
        ops = [self._with_comments(op, comments.get(i)) for i, op in enumerate(ops)]
        seen = [(i, b) for i, b in rec.seen if i < end]
        prog = Program(rec.key, start[0], ops, partial=end < len(rec.ops))
        old = self.programs.get(rec.key)
        if old is not None and old.partial and prog.partial:
            prog.retry = old.retry
        try:
            prog.compiled = self.exec.compile(ops)
            got = self.exec.dry_run(prog.compiled, rec.frame)
        except ValueError as exc:
            self._reject(rec, f"not compilable: {exc}")
            return
        if got != [b for _, b in seen]:
            self._reject(rec, "dry run differs from the slow path")
            return
        if len(self.programs) >= MAX_PROGRAMS:
            self.programs.clear()
        self.programs[rec.key] = prog
        self._backoff.pop(rec.key, None)
        self.compiled += 1

    @staticmethod
    def _with_comments(op: tuple[Any, ...], comments: list[str] | None) -> tuple[Any, ...]:
        if op[0] in (RX, TX):
            kind, counters, cap, link = op
            # The namespace whose capture comments a new hop starts (None: a bridge port, or a TX).
            fresh = link.ns.name if kind == RX and link.master is None else None
            return (kind, counters, cap if comments is not None else None, link, comments,
                    LINKTYPE_RAW if link.l3 else LINKTYPE_ETHERNET, fresh)
        return op

    def stats(self) -> dict[str, Any]:
        return {"programs": len(self.programs), "hits": self.hits, "misses": self.misses,
                "compiled": self.compiled, "staged": self.exec.staged, "rejected": dict(self.rejected)}
