"""CNI versions and results: parsing any spec version's result, and printing one as a plugin does.

Inside the package a result is one layout (the 1.x one): `{"cniVersion", "interfaces": [{name,
mac, sandbox}], "ips": [{interface, address, gateway}], "routes": [{dst, gw}], "dns": {...}}`,
with absent fields left out. `to_version` converts it to the layout of a spec version in the
field order and with the omissions of libcni's Go types (0.3.x/0.4.0 add `"version": "4"` to each
IP; 0.1.0/0.2.0 use `ip4`/`ip6`); `result_text` is what `types.PrintResult` writes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from emu.cni import gojson
from emu.cni.errors import DECODING_FAILURE, INCOMPATIBLE_CNI_VERSION, CniError

# What the emulated plugins accept: the real 1.1.1 plugins' list plus spec 1.1 (GC, STATUS).
SUPPORTED_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
CURRENT = "1.1.0"  # the highest spec version implemented (libcni's ImplementedSpecVersion)
RESULT_VERSIONS_04 = ("0.3.0", "0.3.1", "0.4.0")
RESULT_VERSIONS_02 = ("0.1.0", "0.2.0")
RESULT_VERSIONS_1 = ("1.0.0", "1.1.0")


def _atoi(part: str, which: str) -> int:
    digits = part[1:] if part[:1] in "+-" else part
    if not digits or not digits.isascii() or not digits.isdigit():
        q = gojson.quote(part)
        raise ValueError(f"failed to convert {which} version part {q}: strconv.Atoi: parsing {q}: invalid syntax")
    return int(part)


def parse_version(version: str) -> tuple[int, int, int]:
    """libcni's version.ParseVersion, with its error texts (ValueError)."""
    if version == "":
        return (0, 1, 0)
    parts = version.split(".")
    if len(parts) >= 4:
        raise ValueError(f"invalid version {gojson.quote(version)}: too many parts")
    major = _atoi(parts[0], "major")
    minor = _atoi(parts[1], "minor") if len(parts) >= 2 else 0
    micro = _atoi(parts[2], "micro") if len(parts) >= 3 else 0
    return (major, minor, micro)


def version_gte(a: str, b: str) -> bool:
    """version.GreaterThanOrEqualTo; raises CniError(6) for an unparsable version."""
    try:
        return parse_version(a) >= parse_version(b)
    except ValueError as exc:
        raise CniError(DECODING_FAILURE, str(exc)) from None


def check_supported(version: str, supported: list[str] | None = None) -> None:
    """skel's version reconciliation: code 1 with libcni's details when the plugin lacks `version`."""
    supported = SUPPORTED_VERSIONS if supported is None else supported
    if version not in supported:
        listed = " ".join(gojson.quote(v) for v in supported)
        raise CniError(INCOMPATIBLE_CNI_VERSION, "incompatible CNI versions",
                       f"config is {gojson.quote(version)}, plugin supports [{listed}]")


# --- parsing -----------------------------------------------------------------------------------------
def _cidr(text: Any, what: str) -> str:
    try:
        iface = ipaddress.ip_interface(str(text))
    except ValueError:
        raise CniError(DECODING_FAILURE, f"invalid CIDR address: {text}") from None
    if "/" not in str(text):
        raise CniError(DECODING_FAILURE, f"invalid CIDR address: {text}")
    del what
    return f"{iface.ip}/{iface.network.prefixlen}"


def _ip(text: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(text)))
    except ValueError:
        raise CniError(DECODING_FAILURE, f"invalid IP address: {text}") from None


def _route(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": _cidr(r.get("dst"), "dst")}
    if r.get("gw"):
        out["gw"] = _ip(r["gw"])
    for key in ("mtu", "advmss", "priority", "table", "scope"):
        if r.get(key) is not None:
            out[key] = r[key]
    return out


def _dns(d: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        return out
    for key in ("nameservers", "domain", "search", "options"):
        if d.get(key):
            out[key] = d[key]
    return out


def parse_result(obj: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """A result of any spec version (as a dict) in the package's one layout."""
    if not isinstance(obj, dict):
        raise CniError(DECODING_FAILURE, "result is not a JSON object")
    ver = str(obj.get("cniVersion") or version or "0.1.0")
    cur: dict[str, Any] = {"cniVersion": ver}
    if ver in RESULT_VERSIONS_02 or ("ip4" in obj or "ip6" in obj) and "ips" not in obj:
        ips, routes = [], []
        for key in ("ip4", "ip6"):
            cfg = obj.get(key)
            if not isinstance(cfg, dict):
                continue
            ip: dict[str, Any] = {"address": _cidr(cfg.get("ip"), "ip")}
            if cfg.get("gateway"):
                ip["gateway"] = _ip(cfg["gateway"])
            ips.append(ip)
            routes += [_route(r) for r in cfg.get("routes") or []]
        if ips:
            cur["ips"] = ips
        if routes:
            cur["routes"] = routes
        cur["dns"] = _dns(obj.get("dns"))
        return cur
    if obj.get("interfaces"):
        ifaces = []
        for it in obj["interfaces"]:
            d: dict[str, Any] = {"name": str(it.get("name", ""))}
            for key in ("mac", "mtu", "sandbox", "socketPath", "pciID"):
                if it.get(key):
                    d[key] = it[key]
            ifaces.append(d)
        cur["interfaces"] = ifaces
    if obj.get("ips"):
        ips = []
        for it in obj["ips"]:
            d = {}
            if it.get("interface") is not None:
                d["interface"] = int(it["interface"])
            d["address"] = _cidr(it.get("address"), "address")
            if it.get("gateway"):
                d["gateway"] = _ip(it["gateway"])
            ips.append(d)
        cur["ips"] = ips
    if obj.get("routes"):
        cur["routes"] = [_route(r) for r in obj["routes"]]
    cur["dns"] = _dns(obj.get("dns"))
    return cur


# --- printing ----------------------------------------------------------------------------------------
def _family(cidr: str) -> str:
    return "6" if ":" in cidr else "4"


def _route_out(r: dict[str, Any], version: str) -> dict[str, Any]:
    out = {"dst": r["dst"]}
    if r.get("gw"):
        out["gw"] = r["gw"]
    if version in RESULT_VERSIONS_1 and version != "1.0.0":
        for key in ("mtu", "advmss", "priority", "table", "scope"):
            if r.get(key) is not None:
                out[key] = r[key]
    return out


def to_version(cur: dict[str, Any], version: str, *, layout: str | None = None) -> dict[str, Any]:
    """`cur` in the layout of spec `version` (types.Result.GetAsVersion), ready to marshal.

    `layout` prints the fields of another version's Go type under `version` (the loopback plugin
    builds a 1.0 result and stamps the config's version on it, so its 0.3.1 output has no
    `"version"` fields)."""
    shape = layout or version
    if shape not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_CNI_VERSION, f"unsupported CNI result version {gojson.quote(version)}")
    out: dict[str, Any] = {"cniVersion": version}
    if shape in RESULT_VERSIONS_02:
        for fam, key in (("4", "ip4"), ("6", "ip6")):
            ip = next((i for i in cur.get("ips", []) if _family(i["address"]) == fam), None)
            if ip is None:
                continue
            cfg: dict[str, Any] = {"ip": ip["address"]}
            if ip.get("gateway"):
                cfg["gateway"] = ip["gateway"]
            routes = [_route_out(r, shape) for r in cur.get("routes", []) if _family(r["dst"]) == fam]
            if routes:
                cfg["routes"] = routes
            out[key] = cfg
        out["dns"] = dict(cur.get("dns") or {})
        return out
    if cur.get("interfaces"):
        ifaces = []
        for it in cur["interfaces"]:
            d = {"name": it["name"]}
            keys = ("mac", "mtu", "sandbox", "socketPath", "pciID") if shape == "1.1.0" else ("mac", "sandbox")
            for key in keys:
                if it.get(key):
                    d[key] = it[key]
            ifaces.append(d)
        out["interfaces"] = ifaces
    if cur.get("ips"):
        ips = []
        for it in cur["ips"]:
            d = {}
            if shape in RESULT_VERSIONS_04:
                d["version"] = _family(it["address"])
            if it.get("interface") is not None:
                d["interface"] = it["interface"]
            d["address"] = it["address"]
            if it.get("gateway"):
                d["gateway"] = it["gateway"]
            ips.append(d)
        out["ips"] = ips
    if cur.get("routes"):
        out["routes"] = [_route_out(r, shape) for r in cur["routes"]]
    out["dns"] = {k: cur["dns"][k] for k in ("nameservers", "domain", "search", "options")
                  if (cur.get("dns") or {}).get(k)}
    return out


def result_text(cur: dict[str, Any], version: str, *, layout: str | None = None) -> str:
    """What `types.PrintResult(result, version)` writes on stdout (no trailing newline)."""
    return gojson.marshal_indent(to_version(cur, version, layout=layout))
