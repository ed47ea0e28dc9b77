"""The host-local IPAM plugin: ranges, round-robin allocation and its on-disk store.

As containernetworking-plugins' host-local: the state of network NAME lives in
`<dataDir>/<NAME>/` (dataDir defaults to /var/lib/cni/networks), one file per allocated IP,
named by the IP and holding `<containerID>\\r\\n<ifname>` (no trailing newline), a
`last_reserved_ip.<range set index>` file with the last IP handed out, and an empty `lock`.
Here the files are entries of the node namespace's `files` dict, keyed by path, so
`node.run("cat /var/lib/cni/networks/cbr0/10.244.1.2")` shows them.

A range's gateway defaults to the first address of the subnet, its start to the first address and
its end to the last usable one (.254 of a /24); the gateway is skipped, so the first pod gets .2.
Allocation goes round-robin: it starts after the last reserved IP, wraps at the range end (and
across range sets' ranges) and fails with host-local's message when it comes back where it began.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.cni import gojson
from emu.cni.args import load_args
from emu.cni.errors import CniError, fail
from emu.cni.result import SUPPORTED_VERSIONS, parse_result, result_text, version_gte
from emu.cni.skel import CmdArgs

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LINE_BREAK = "\r\n"
LAST_IP_PREFIX = "last_reserved_ip."
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- configuration --------------------------------------------------------------------------------
def _parse_ipnet(text: Any) -> tuple[IPAddr, IPNet]:
    """types.IPNet's UnmarshalJSON (net.ParseCIDR): the address as written, and its network."""
    try:
        iface = ipaddress.ip_interface(str(text))
        if "/" not in str(text):
            raise ValueError
    except ValueError:
        raise fail(f"invalid CIDR address: {text}") from None
    return iface.ip, iface.network


def _parse_ip(text: Any, what: str) -> IPAddr:
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        raise fail(f"invalid {what} {gojson.quote(str(text))}") from None


@dataclass
class Range:
    """allocator.Range after Canonicalize."""

    subnet: IPNet
    start: IPAddr
    end: IPAddr
    gateway: IPAddr

    def contains(self, ip: IPAddr) -> bool:
        return ip.version == self.subnet.version and ip in self.subnet and self.start <= ip <= self.end

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"

    def overlaps(self, other: Range) -> bool:
        return (self.subnet.version == other.subnet.version
                and (self.contains(other.start) or self.contains(other.end)
                     or other.contains(self.start) or other.contains(self.end)))


def decode_range(raw: Any) -> None:
    """What json.Unmarshal into allocator.Range rejects, before any range is looked at."""
    if not isinstance(raw, dict):
        raise fail(f"json: cannot unmarshal {gojson.json_kind(raw)} into Go value of type allocator.Range")
    if raw.get("subnet") not in (None, ""):
        _parse_ipnet(raw["subnet"])
    for key in ("rangeStart", "rangeEnd", "gateway"):
        if raw.get(key) not in (None, ""):
            try:
                ipaddress.ip_address(str(raw[key]))
            except ValueError:
                raise fail(f"invalid IP address: {raw[key]}") from None


def canonical_range(raw: dict[str, Any]) -> Range:
    """Range.Canonicalize, with its error messages."""
    if raw.get("subnet") in (None, ""):
        raise fail("IPNet IP and Mask version mismatch")
    ip, subnet = _parse_ipnet(raw["subnet"])
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise fail(f"Network {ip}/{subnet.prefixlen} too small to allocate from")
    if ip != subnet.network_address:
        raise fail(f"Network has host bits set. For a subnet mask of length {subnet.prefixlen} the network "
                   f"address is {subnet.network_address}")
    first = subnet.network_address + 1
    gateway = _parse_ip(raw["gateway"], "gateway") if raw.get("gateway") else first
    start = first
    if raw.get("rangeStart"):
        start = _parse_ip(raw["rangeStart"], "rangeStart")
        if not (start.version == subnet.version and start in subnet):
            raise fail(f"RangeStart {start} not in network {subnet}")
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    end = last
    if raw.get("rangeEnd"):
        end = _parse_ip(raw["rangeEnd"], "rangeEnd")
        if not (end.version == subnet.version and end in subnet and end >= start):
            raise fail(f"RangeEnd {end} not in network {subnet}")
    return Range(subnet, start, end, gateway)


def canonical_range_set(raw: list[Any]) -> list[Range]:
    if not raw:
        raise fail("empty range set")
    ranges = [canonical_range(r) for r in raw]
    if len({r.subnet.version for r in ranges}) > 1:
        raise fail("mixed address families")
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            if a.overlaps(b):
                raise fail(f"subnets {a} and {b} overlap")
    return ranges


def range_set_str(rs: list[Range]) -> str:
    return ",".join(str(r) for r in rs)


@dataclass
class IPAMConfig:
    name: str
    cni_version: str
    ranges: list[list[Range]]
    routes: list[dict[str, Any]]
    data_dir: str
    resolv_conf: str
    requested: list[IPAddr]
    valid_attachments: list[tuple[str, str]]


def load_ipam_config(stdin: bytes, env_args: str) -> IPAMConfig:
    """allocator.LoadIPAMConfig: the `ipam` section, legacy single range, CNI_ARGS IP=, runtimeConfig ips."""
    try:
        conf = gojson.unmarshal(stdin)
    except ValueError as exc:
        raise fail(str(exc)) from None
    ipam = conf.get("ipam") if isinstance(conf, dict) else None
    if not isinstance(ipam, dict):
        raise fail("IPAM config missing 'ipam' key")
    err = gojson.check_fields(ipam, {"dataDir": "string", "resolvConf": "string", "type": "string",
                                     "ranges": "slice", "routes": "slice"}, "Net.ipam")
    if err:
        raise fail(err)
    requested: list[IPAddr] = []
    if env_args:
        kv = load_args(env_args, known=("IP",))
        for item in (kv.get("IP") or "").split(",") if kv.get("IP") else []:
            try:
                requested.append(ipaddress.ip_address(item.strip()))
            except ValueError:
                raise fail(f"invalid IP {gojson.quote(item.strip())}") from None
    cni_args = (conf.get("args") or {}).get("cni") if isinstance(conf.get("args"), dict) else None
    if isinstance(cni_args, dict):
        requested += [_parse_ip(ip, "IP") for ip in cni_args.get("ips") or []]
    runtime = conf.get("runtimeConfig") if isinstance(conf.get("runtimeConfig"), dict) else {}
    for ip in runtime.get("ips") or []:
        requested.append(_parse_ipnet(ip)[0] if "/" in str(ip) else _parse_ip(ip, "IP"))
    raw_sets: list[Any] = []
    if ipam.get("subnet"):
        raw_sets.append([{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}])
    raw_sets = list(runtime.get("ipRanges") or []) + raw_sets + list(ipam.get("ranges") or [])
    for rs in raw_sets:
        if not isinstance(rs, list):
            raise fail(f"json: cannot unmarshal {gojson.json_kind(rs)} into Go value of type allocator.RangeSet")
        for r in rs:
            decode_range(r)
    if not raw_sets:
        raise fail("no IP ranges specified")
    ranges = []
    for i, rs in enumerate(raw_sets):
        try:
            ranges.append(canonical_range_set(rs))
        except CniError as exc:
            raise fail(f"invalid range set {i}: {exc.msg}") from None
    version = str(conf.get("cniVersion") or "")
    fams = [rs[0].subnet.version for rs in ranges]
    if (fams.count(4) > 1 or fams.count(6) > 1) and not version_gte(version or "0.1.0", "0.3.0"):
        raise fail(f"CNI version {version} does not support more than 1 address per family")
    for i, a in enumerate(ranges):
        for j, b in enumerate(ranges[i + 1:], i + 1):
            if any(x.overlaps(y) for x in a for y in b):
                raise fail(f"range set {i} overlaps with {j}")
    routes = []
    for r in ipam.get("routes") or []:
        routes.append(parse_result({"cniVersion": "1.0.0", "routes": [r]})["routes"][0])
    valid = [(str(a.get("containerID", "")), str(a.get("ifname", "")))
             for a in conf.get("cni.dev/valid-attachments") or conf.get("cni.dev/attachments") or []
             if isinstance(a, dict)]
    return IPAMConfig(str(conf.get("name") or ""), version, ranges, routes,
                      str(ipam.get("dataDir") or DEFAULT_DATA_DIR), str(ipam.get("resolvConf") or ""),
                      requested, valid)


# --- the store: files in the node's namespace --------------------------------------------------------
class Store:
    """disk.Store over `node.files`: `<dataDir>/<network>/<ip>`, `last_reserved_ip.N`, `lock`."""

    def __init__(self, node: Namespace, network: str, data_dir: str) -> None:
        self.node = node
        self.dir = posixpath.normpath(posixpath.join(data_dir, network))
        self.node.files.setdefault(posixpath.join(self.dir, "lock"), "")

    def _path(self, name: str) -> str:
        return posixpath.join(self.dir, name)

    def _walk(self) -> Iterator[tuple[str, str]]:
        """(path, content) of the files under the directory, in lexical order as filepath.Walk."""
        prefix = self.dir + "/"
        for path in sorted(p for p in self.node.files if p.startswith(prefix)):
            yield path, self.node.files[path]

    def reserve(self, cid: str, ifname: str, ip: IPAddr, range_id: str) -> bool:
        path = self._path(str(ip))
        if path in self.node.files:
            return False
        self.node.files[path] = cid.strip() + LINE_BREAK + ifname
        self.node.files[self._path(LAST_IP_PREFIX + range_id)] = str(ip)
        return True

    def last_reserved_ip(self, range_id: str) -> IPAddr | None:
        text = self.node.files.get(self._path(LAST_IP_PREFIX + range_id))
        try:
            return ipaddress.ip_address(text.strip()) if text is not None else None
        except ValueError:
            return None

    def get_by_id(self, cid: str, ifname: str) -> list[IPAddr]:
        match = cid.strip() + LINE_BREAK + ifname
        out = []
        for path, data in self._walk():
            if data.strip() == match:
                try:
                    out.append(ipaddress.ip_address(posixpath.basename(path)))
                except ValueError:
                    continue
        return out

    def find_by_id(self, cid: str, ifname: str) -> bool:
        match = cid.strip() + LINE_BREAK + ifname
        return any(data.strip() == match for _p, data in self._walk())

    def release_by_id(self, cid: str, ifname: str) -> list[str]:
        """Removes this attachment's files (then, for old stores, files holding only the id)."""
        match = cid.strip() + LINE_BREAK + ifname
        gone = [p for p, data in self._walk() if data.strip() == match]
        if not gone:
            gone = [p for p, data in self._walk() if data.strip() == cid.strip()]
        for p in gone:
            del self.node.files[p]
        return gone

    def gc(self, valid: set[tuple[str, str]]) -> list[str]:
        """Removes the IP files of attachments that are not in `valid` (spec 1.1 GC)."""
        gone = []
        for path, data in list(self._walk()):
            name = posixpath.basename(path)
            if name == "lock" or name.startswith(LAST_IP_PREFIX):
                continue
            cid, _, ifname = data.partition(LINE_BREAK)
            if (cid.strip(), ifname.strip()) not in valid:
                del self.node.files[path]
                gone.append(path)
        return gone


# --- the allocator ---------------------------------------------------------------------------
class Allocator:
    """allocator.IPAllocator for one range set."""

    def __init__(self, rangeset: list[Range], store: Store, index: int) -> None:
        self.rangeset = rangeset
        self.store = store
        self.range_id = str(index)

    def range_for(self, ip: IPAddr) -> Range:
        for r in self.rangeset:
            if r.contains(ip):
                return r
        raise fail(f"{ip} not in range set {range_set_str(self.rangeset)}")

    def _iter(self) -> Iterator[tuple[IPAddr, Range]]:
        """RangeIter: from the address after the last reserved one (or the first range's start),
        through every range, skipping gateways, until it is back where it started."""
        rs = self.rangeset
        last = self.store.last_reserved_ip(self.range_id)
        idx, cur, start = 0, None, None
        if last is not None and any(r.contains(last) for r in rs):
            idx = next(i for i, r in enumerate(rs) if r.contains(last))
            cur = last
        while True:
            r = rs[idx]
            if cur is None:
                cur = r.start
                start = cur
            elif cur == r.end:
                idx = (idx + 1) % len(rs)
                r = rs[idx]
                cur = r.start
                if start is not None and cur == start:
                    return
            else:
                cur = cur + 1
                if start is not None and cur == start:
                    return
            if start is None:
                start = cur
            if cur == r.gateway:
                continue
            yield cur, r

    def get(self, cid: str, ifname: str, requested: IPAddr | None) -> dict[str, Any]:
        if requested is not None:
            r = self.range_for(requested)
            if requested == r.gateway:
                raise fail(f"requested ip {requested} is subnet's gateway")
            if not self.store.reserve(cid, ifname, requested, self.range_id):
                raise fail(f"requested IP address {requested} is not available in range set "
                           f"{range_set_str(self.rangeset)}")
            return {"address": f"{requested}/{r.subnet.prefixlen}", "gateway": str(r.gateway)}
        for ip in self.store.get_by_id(cid, ifname):
            if any(r.contains(ip) for r in self.rangeset):
                raise fail(f"{ip} has been allocated to {cid}, duplicate allocation is not allowed")
        for ip, r in self._iter():
            if self.store.reserve(cid, ifname, ip, self.range_id):
                return {"address": f"{ip}/{r.subnet.prefixlen}", "gateway": str(r.gateway)}
        raise fail(f"no IP addresses available in range set: {range_set_str(self.rangeset)}")


def _resolv_conf(node: Namespace, path: str) -> dict[str, Any]:
    """parseResolvConf: nameserver, domain, search and options lines of a file on the node."""
    try:
        text = node.read_file(path)
    except FileNotFoundError:
        raise fail(f"open {path}: no such file or directory") from None
    dns: dict[str, Any] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        key, rest = fields[0], fields[1:]
        if key == "nameserver" and rest:
            dns.setdefault("nameservers", []).append(rest[0])
        elif key == "domain" and rest:
            dns["domain"] = rest[0]
        elif key == "search":
            dns["search"] = rest
        elif key == "options":
            dns.setdefault("options", []).extend(rest)
    return dns


class HostLocal:
    """The `host-local` plugin."""

    name = "host-local"
    supported_versions = SUPPORTED_VERSIONS

    def cmd_add(self, args: CmdArgs) -> str:
        conf = load_ipam_config(args.stdin, args.args)
        host = args.host
        result: dict[str, Any] = {"cniVersion": "1.1.0"}
        dns = _resolv_conf(host.node, conf.resolv_conf) if conf.resolv_conf else {}
        store = Store(host.node, conf.name, conf.data_dir)
        done: list[Allocator] = []
        requested = list(conf.requested)
        ips = []
        for idx, rangeset in enumerate(conf.ranges):
            alloc = Allocator(rangeset, store, idx)
            want = next((ip for ip in requested if any(r.contains(ip) for r in rangeset)), None)
            if want is not None:
                requested.remove(want)
            try:
                ip = alloc.get(args.container_id, args.ifname, want)
            except CniError as exc:
                for a in done:
                    a.store.release_by_id(args.container_id, args.ifname)
                raise fail(f"failed to allocate for range {idx}: {exc.msg}") from None
            done.append(alloc)
            ips.append(ip)
            host.note(self.name, host.node, "", f"reserved {ip['address']} (gateway {ip['gateway']}) for "
                      f"{args.container_id}/{args.ifname} in {store.dir}")
        if requested:
            for a in done:
                a.store.release_by_id(args.container_id, args.ifname)
            raise fail("failed to allocate all requested IPs: " + " ".join(str(ip) for ip in requested))
        result["ips"] = ips
        if conf.routes:
            result["routes"] = conf.routes
        result["dns"] = dns
        return result_text(result, conf.cni_version or "0.1.0")

    def cmd_del(self, args: CmdArgs) -> str:
        conf = load_ipam_config(args.stdin, args.args)
        store = Store(args.host.node, conf.name, conf.data_dir)
        for _rangeset in conf.ranges:
            for path in store.release_by_id(args.container_id, args.ifname):
                args.host.note(self.name, args.host.node, "", f"released {posixpath.basename(path)} of "
                               f"{args.container_id}/{args.ifname}")
        return ""

    def cmd_check(self, args: CmdArgs) -> str:
        conf = load_ipam_config(args.stdin, args.args)
        store = Store(args.host.node, conf.name, conf.data_dir)
        if not store.find_by_id(args.container_id, args.ifname):
            raise fail(f"host-local: Failed to find address added by container {args.container_id}")
        return ""

    def cmd_gc(self, args: CmdArgs) -> str:
        conf = load_ipam_config(args.stdin, args.args)
        store = Store(args.host.node, conf.name, conf.data_dir)
        for path in store.gc(set(conf.valid_attachments)):
            args.host.note(self.name, args.host.node, "", f"gc: released {posixpath.basename(path)}")
        return ""

    def cmd_status(self, args: CmdArgs) -> str:
        load_ipam_config(args.stdin, args.args)
        return ""
