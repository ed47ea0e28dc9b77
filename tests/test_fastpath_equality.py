"""The fast path changes nothing anyone can observe: 500 random labs, each run with it off and on.

tests/randlab.py draws one lab per seed (two hosts on a veth, hosts on a bridge, a routed chain,
a Flannel VXLAN overlay, a NAT node with DNAT, MASQUERADE and filter rules), its traffic (bursts
of UDP, ICMP echo and TCP frames, some overlapping in flight; pauses that age ARP, FDB and
conntrack entries; mid-run changes of routes, links, neighbours and rules) and its captures. Each
seed runs on `Lab(seed, fastpath=False)` and `Lab(seed, fastpath=True)`, and every snapshot the
plan takes (after building, sometimes between bursts, at the end: each namespace's `ip`, `bridge`,
`iptables-save -c` and `conntrack -L` views, sockets, table timestamps, drops, the clock, frame
ids, capture records and the pcapng bytes) must be equal, and so must what the mid-run commands
answered. A failure shows the first differing key as a diff, then the plan to reproduce it.
"""

from __future__ import annotations

import collections
import difflib

import pytest

from emu.traffic import udp_frame
from tests.randlab import FAMILIES, Outcome, Plan, delivered, execute, first_difference, make_plan, snapshot

SEEDS = range(500)
TWIN_SEEDS = range(0, 500, 10)  # again on the pure-Python tables, whose executor is the C one's twin
_seen: dict[int, tuple[str, int]] = {}  # seed -> (family, datagrams its sinks got) of the slow-path run
_carried: dict[int, int] = {}  # seed -> frames the fast path carried


def mismatch(a: Outcome, b: Outcome, names: tuple[str, str] = ("fast path off", "fast path on")) -> str | None:
    """The first difference between two runs of one plan, readable; None when they are the same."""
    assert [label for label, _ in a.snapshots] == [label for label, _ in b.snapshots]
    for (label, x), (_, y) in zip(a.snapshots, b.snapshots, strict=True):
        problem = first_difference(x, y, f"snapshot {label!r}: ", names)
        if problem is not None:
            return problem
    if a.log != b.log:
        return "the mid-run changes answered differently:\n" + "\n".join(
            difflib.unified_diff(a.log, b.log, names[0], names[1], lineterm=""))
    return None


def slow_run(seed: int, plan: Plan) -> Outcome:
    out = execute(plan, fastpath=False)
    assert not out.lab.use_fastpath
    _seen[seed] = (plan.family, delivered(out.lab))
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_path_changes_nothing(seed: int) -> None:
    plan = make_plan(seed)
    slow = slow_run(seed, plan)
    fast = execute(plan, fastpath=True)
    assert fast.lab.use_fastpath
    _carried[seed] = fast.lab.flows.hits  # type: ignore[union-attr]
    problem = mismatch(slow, fast)
    assert problem is None, f"{problem}\n\n{plan.describe()}"


@pytest.mark.parametrize("seed", TWIN_SEEDS)
def test_fast_path_changes_nothing_on_the_python_tables(seed: int) -> None:
    plan = make_plan(seed)
    slow = execute(plan, fastpath=False, pure_python=True)
    fast = execute(plan, fastpath=True, pure_python=True)
    assert fast.lab.use_fastpath and not slow.lab.use_fastpath
    problem = mismatch(slow, fast)
    assert problem is None, f"{problem}\n\n{plan.describe()}"


def _first_seed_of_each_family() -> list[int]:
    seeds: dict[str, int] = {}
    for seed in SEEDS:
        seeds.setdefault(make_plan(seed).family, seed)
        if len(seeds) == len(FAMILIES):
            break
    return sorted(seeds.values())


@pytest.mark.parametrize("seed", _first_seed_of_each_family())
def test_same_seed_same_run(seed: int) -> None:
    """Determinism: a plan is a function of its seed, and so is everything a run of it shows."""
    plan = make_plan(seed)
    assert make_plan(seed) == plan
    first = execute(plan, fastpath=True)
    second = execute(make_plan(seed), fastpath=True)
    problem = mismatch(first, second, ("first run", "second run"))
    assert problem is None, f"{problem}\n\n{plan.describe()}"


def test_snapshots_see_a_single_extra_frame() -> None:
    """The comparison is not blind: one more frame, at the same virtual time, shows in the frame ids
    and in the counters `ip -s link` prints where it came in."""
    plan = make_plan(SEEDS[0])
    lab = execute(plan, fastpath=False).lab
    before = snapshot(lab)
    flow = plan.flows[0]
    ns, ifname = flow.inject
    link = lab[ns].link(ifname)
    lab.inject(link, udp_frame(lab[flow.src_mac.ns].link(flow.src_mac.ifname).mac, link.mac, flow.src, flow.dst,
                               flow.sport, flow.dport))
    after = snapshot(lab)
    changed = {k for k in before if before[k] != after.get(k)}
    assert {"frame ids", f"{ns}$ ip -s -d link show"} <= changed, changed
    assert first_difference(before, after) is not None


def test_the_generator_makes_varied_labs_that_deliver() -> None:
    families: collections.Counter[str] = collections.Counter()
    delivering = 0
    for seed in SEEDS:
        if seed not in _seen:
            slow_run(seed, make_plan(seed))
        family, packets = _seen[seed]
        families[family] += 1
        delivering += packets > 0
    assert set(families) == set(FAMILIES), families
    assert min(families.values()) >= 50, families
    assert delivering >= 400, f"only {delivering} of {len(SEEDS)} labs delivered a datagram to a sink"
    # what the traffic and the schedules hold, over all seeds
    seen: collections.Counter[str] = collections.Counter()
    for plan in map(make_plan, SEEDS):
        seen.update({f"flow {f.kind}" for f in plan.flows})
        seen.update({"ttl below 64" for f in plan.flows if f.ttl < 64})
        seen.update({"payload over 1400 B" for f in plan.flows if f.size > 1400})
        for step in plan.steps:
            op = step[0]
            if op == "pause":
                seen["pause past 300 s (FDB ageing)" if step[1] > 300 else
                     "pause past 30 s (conntrack, ARP)" if step[1] > 30 else "short pause"] += 1
            elif op == "send":
                seen["frames closer than a veth's latency" if step[1].interval < 5e-6 else
                     "frames seconds apart" if step[1].interval > 0.1 else "send"] += 1
            elif op in ("change", "capture_all", "capture"):
                seen[op] += 1
            elif op == "netns" and step[1].startswith("src"):
                seen["client namespace"] += 1
        if not any(s[0].startswith("capture") for s in plan.steps):
            seen["no capture"] += 1
    wanted = ["flow udp", "flow icmp", "flow tcp", "ttl below 64", "payload over 1400 B", "short pause",
              "pause past 30 s (conntrack, ARP)", "pause past 300 s (FDB ageing)", "frames closer than a veth's latency",
              "frames seconds apart", "change", "capture_all", "capture", "client namespace", "no capture"]
    assert all(seen[w] >= 20 for w in wanted), {w: seen[w] for w in wanted}


def test_the_fast_path_carries_frames_in_most_labs() -> None:
    """Equality means something only where the fast path took part: most labs must give it frames."""
    for seed in SEEDS:
        if seed not in _carried:
            lab = execute(make_plan(seed), fastpath=True).lab
            _carried[seed] = lab.flows.hits  # type: ignore[union-attr]
    busy = sum(1 for n in _carried.values() if n > 0)
    assert busy >= len(SEEDS) // 2, f"the fast path carried frames in only {busy} of {len(SEEDS)} labs"
