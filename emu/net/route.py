"""Routes and routing tables with the kernel's lookup rules (longest prefix, then first by metric)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from types import ModuleType

from emu.net.addr import int2ip, mask, prefix_str

# rtnetlink scopes (include/uapi/linux/rtnetlink.h); lower is wider.
SCOPE_UNIVERSE, SCOPE_LINK, SCOPE_HOST = 0, 253, 254
SCOPE_NAMES = {SCOPE_UNIVERSE: "global", SCOPE_LINK: "link", SCOPE_HOST: "host"}
SCOPE_BY_NAME = {"global": 0, "universe": 0, "link": SCOPE_LINK, "host": SCOPE_HOST}

UNICAST, LOCAL, BROADCAST = "unicast", "local", "broadcast"
BLACKHOLE, UNREACHABLE, PROHIBIT, THROW = "blackhole", "unreachable", "prohibit", "throw"
ROUTE_TYPES = (UNICAST, LOCAL, BROADCAST, BLACKHOLE, UNREACHABLE, PROHIBIT, THROW)
REJECT_TYPES = (BLACKHOLE, UNREACHABLE, PROHIBIT, THROW)

# What `ip route get` answers for a reject route (fib_props in net/ipv4/fib_semantics.c).
LOOKUP_ERRORS = {
    BLACKHOLE: "Invalid argument",
    UNREACHABLE: "No route to host",
    PROHIBIT: "Permission denied",
    THROW: "Network is unreachable",
    None: "Network is unreachable",
}

# /etc/iproute2/rt_protos: what `proto N` prints as.
PROTO_NAMES = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
               11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 18: "keepalived",
               42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp"}
PROTO_BY_NAME = {v: k for k, v in PROTO_NAMES.items()}


def proto_name(text: str) -> str | None:
    """A `proto` argument as iproute2 stores it: a known name, or the number; None if invalid."""
    if text in PROTO_BY_NAME:
        return text
    if text.isdigit() and int(text) <= 255:
        return PROTO_NAMES.get(int(text), text)
    if text.lower().startswith("0x"):
        try:
            n = int(text, 16)
        except ValueError:
            return None
        return PROTO_NAMES.get(n, str(n)) if n <= 255 else None
    return None


TABLE_LOCAL, TABLE_MAIN = 255, 254
TABLE_NAMES = {TABLE_LOCAL: "local", TABLE_MAIN: "main"}


@dataclass(frozen=True)
class Route:
    """One fib alias: what `ip route add` stores. `dev` is an ifname, `gateway` an int or None."""

    dst: int
    plen: int
    type: str = UNICAST
    dev: str | None = None
    gateway: int | None = None
    metric: int = 0
    proto: str = "boot"
    scope: int = SCOPE_UNIVERSE
    prefsrc: int | None = None
    onlink: bool = False
    table: int = TABLE_MAIN
    nh_host: bool = False  # the gateway is one of our addresses: nexthop scope host, no rt_gw4

    @property
    def nexthop_gateway(self) -> int | None:
        """The gateway a packet is sent to (rt_set_nexthop uses it only at link scope)."""
        return None if self.nh_host else self.gateway

    @property
    def prefix(self) -> str:
        return prefix_str(self.dst, self.plen)

    def describe(self) -> str:
        """Short form for traces and pcap comments, in `ip route` words."""
        parts = [] if self.type == UNICAST else [self.type]
        parts.append(self.prefix)
        if self.gateway is not None:
            parts.append(f"via {int2ip(self.gateway)}")
        if self.dev:
            parts.append(f"dev {self.dev}")
        if self.onlink:
            parts.append("onlink")
        if self.metric:
            parts.append(f"metric {self.metric}")
        return " ".join(parts)

    def with_(self, **changes: object) -> Route:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class FibTable:
    """One routing table: per-prefix lists of aliases in the kernel's order, indexed by an LpmTable."""

    tables: ModuleType
    id: int = TABLE_MAIN
    buckets: dict[tuple[int, int], list[Route]] = field(default_factory=dict)
    version: int = 0

    def __post_init__(self) -> None:
        self.lpm = self.tables.LpmTable()
        self._ids: dict[tuple[int, int], int] = {}
        self._keys: list[tuple[int, int] | None] = []
        self._free: list[int] = []
        self._plens: Counter[int] = Counter()

    def _bucket_id(self, key: tuple[int, int]) -> int:
        if key in self._ids:
            return self._ids[key]
        bid = self._free.pop() if self._free else len(self._keys)
        if bid == len(self._keys):
            self._keys.append(key)
        else:
            self._keys[bid] = key
        self._ids[key] = bid
        self.lpm.insert(key[0], key[1], bid)
        return bid

    def insert(self, route: Route, *, append: bool = False) -> None:
        """Inserts in the kernel's order: by metric, after equal metrics (fib_insert_alias)."""
        key = (route.dst, route.plen)
        self._bucket_id(key)
        bucket = self.buckets.setdefault(key, [])
        pos = len(bucket)
        for i, r in enumerate(bucket):
            if r.metric > route.metric or (not append and r.metric == route.metric):
                pos = i
                break
        bucket.insert(pos, route)
        self._plens[route.plen] += 1
        self.version += 1

    def remove(self, route: Route) -> None:
        key = (route.dst, route.plen)
        bucket = self.buckets[key]
        bucket.remove(route)
        self._plens[route.plen] -= 1
        if not self._plens[route.plen]:
            del self._plens[route.plen]
        if not bucket:
            del self.buckets[key]
            bid = self._ids.pop(key)
            self._keys[bid] = None
            self._free.append(bid)
            self.lpm.remove(key[0], key[1])
        self.version += 1

    def find(self, dst: int, plen: int) -> list[Route]:
        return self.buckets.get((dst, plen), [])

    def lookup(self, addr: int, scope: int = SCOPE_UNIVERSE, oif: str | None = None) -> Route | None:
        """fib_table_lookup: longest prefix, then the first alias (lowest metric), whatever its type.

        With a `scope` or an `oif`, aliases of narrower scope or on another device are skipped and
        the search backtracks to shorter prefixes, as the kernel does for next-hop validation."""
        if scope == SCOPE_UNIVERSE and oif is None:
            bid = self.lpm.lookup(addr)
            if bid < 0:
                return None
            key = self._keys[bid]
            assert key is not None
            return self.buckets[key][0]
        for plen in sorted(self._plens, reverse=True):
            for r in self.buckets.get((addr & mask(plen), plen), ()):
                if r.scope < scope:
                    continue
                if r.type in REJECT_TYPES:
                    return r
                if oif is not None and r.dev != oif:
                    continue
                return r
        return None

    def routes(self) -> list[Route]:
        """All aliases in `ip route show` order: by prefix address, longer prefixes first on a tie."""
        out: list[Route] = []
        for key in sorted(self.buckets, key=lambda k: (k[0], -k[1])):
            out.extend(self.buckets[key])
        return out

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())
