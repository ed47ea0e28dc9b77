"""The `flannel` meta-plugin (flannel-io/cni-plugin v1.4.0-flannel1): flannel's subnet, a delegate does the work.

ADD reads the node's /run/flannel/subnet.env (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU,
FLANNEL_IPMASQ; `subnetFile` in the config), then builds the delegate's config from `delegate`:
name = the network's name, type default `bridge`, `ipMasq` default = not FLANNEL_IPMASQ (flanneld
masquerades already), `mtu` default FLANNEL_MTU, for a bridge `isGateway` default true, the list's
cniVersion, and `ipam` = host-local over the node's subnet (`ranges [[{"subnet": "10.244.1.0/24"}]]`)
with routes += the whole flannel network. It saves that config (json.Marshal of a map: sorted keys,
compact) as `<dataDir>/<containerID>` (default /var/lib/cni/flannel) in the node, for DEL, and
delegates ADD, printing the delegate's result. DEL reads the saved config back, delegates DEL and
removes the file; with no saved config there is nothing to do. CHECK does nothing (as upstream).

The kube-flannel conflist gives `delegate: {hairpinMode: true, isDefaultGateway: true}`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from emu.cni import gojson
from emu.cni.errors import fail
from emu.cni.result import SUPPORTED_VERSIONS, result_text
from emu.cni.skel import CmdArgs

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
FIELDS = {"cniVersion": "string", "name": "string", "type": "string", "ipam": "map", "subnetFile": "string",
          "dataDir": "string", "delegate": "map", "runtimeConfig": "map"}


def _netconf(args: CmdArgs) -> dict[str, Any]:
    """loadFlannelNetConf: subnetFile and dataDir defaults, Go's type errors."""
    conf = args.conf()
    err = gojson.check_fields(conf, FIELDS, "main.NetConf")
    if err:
        raise fail(f"failed to load netconf: {err}")
    return {
        "name": gojson.get(conf, "name", ""),
        "cniVersion": gojson.get(conf, "cniVersion", ""),
        "ipam": gojson.get(conf, "ipam"),
        "subnetFile": gojson.get(conf, "subnetFile") or DEFAULT_SUBNET_FILE,
        "dataDir": gojson.get(conf, "dataDir") or DEFAULT_DATA_DIR,
        "delegate": gojson.get(conf, "delegate"),
        "runtimeConfig": gojson.get(conf, "runtimeConfig"),
    }


def _parse_cidr(text: str) -> str:
    """net.ParseCIDR's network, as `%s` prints an *net.IPNet; Go's error message otherwise."""
    try:
        return str(ipaddress.ip_interface(text).network)
    except ValueError:
        raise fail(f"loadFlannelSubnetEnv failed: invalid CIDR address: {text}") from None


def load_subnet_env(args: CmdArgs, path: str) -> dict[str, Any]:
    """loadFlannelSubnetEnv, reading the file from the node's filesystem."""
    try:
        text = args.host.node.read_file(path)
    except FileNotFoundError:
        raise fail(f"loadFlannelSubnetEnv failed: open {path}: no such file or directory") from None
    env: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "FLANNEL_NETWORK":
            env["nw"] = _parse_cidr(value)
        elif key == "FLANNEL_SUBNET":
            env["sn"] = _parse_cidr(value)
        elif key == "FLANNEL_MTU":
            if not value.isdigit():
                raise fail(f'loadFlannelSubnetEnv failed: strconv.ParseUint: parsing "{value}": invalid syntax')
            env["mtu"] = int(value)
        elif key == "FLANNEL_IPMASQ":
            env["ipmasq"] = value == "true"
    missing = []
    if "nw" not in env:
        missing += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
    if "sn" not in env:
        missing += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]
    if "mtu" not in env:
        missing.append("FLANNEL_MTU")
    if "ipmasq" not in env:
        missing.append("FLANNEL_IPMASQ")
    if missing:
        raise fail(f"loadFlannelSubnetEnv failed: {path} is missing {', '.join(missing)}")
    return env


def delegate_conf(n: dict[str, Any], fenv: dict[str, Any]) -> dict[str, Any]:
    """doCmdAdd: the delegate's config (getDelegateIPAM for its ipam)."""
    d = dict(n["delegate"] or {})
    d["name"] = n["name"]
    d.setdefault("type", "bridge")
    if "ipMasq" not in d:
        d["ipMasq"] = not fenv["ipmasq"]  # if flannel is not doing ipmasq, we should
    if "mtu" not in d:
        d["mtu"] = fenv["mtu"]
    if d["type"] == "bridge" and "isGateway" not in d:
        d["isGateway"] = True
    if n["cniVersion"]:
        d["cniVersion"] = n["cniVersion"]
    ipam = dict(n["ipam"] or {})
    ipam.setdefault("type", "host-local")
    ipam["ranges"] = [[{"subnet": fenv["sn"]}]]
    routes = []
    if isinstance(ipam.get("routes"), list):
        routes = [r for r in ipam["routes"] if isinstance(r, dict)]
    routes.append({"dst": fenv["nw"]})
    ipam["routes"] = routes
    d["ipam"] = ipam
    return d


class FlannelPlugin:
    """The `flannel` CNI plugin."""

    name = "flannel"
    supported_versions = SUPPORTED_VERSIONS

    def cmd_add(self, args: CmdArgs) -> str:
        n = _netconf(args)
        fenv = load_subnet_env(args, n["subnetFile"])
        delegate = n["delegate"]
        if delegate is None:
            n["delegate"] = {}
        else:
            if "type" in delegate and not isinstance(delegate["type"], str):
                raise fail("'delegate' dictionary, if present, must have (string) 'type' field")
            if "name" in delegate:
                raise fail("'delegate' dictionary must not have 'name' field, it'll be set by flannel")
            if "ipam" in delegate:
                raise fail("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel")
        if n["runtimeConfig"] is not None:
            n["delegate"] = dict(n["delegate"])
            n["delegate"]["runtimeConfig"] = n["runtimeConfig"]
        conf = delegate_conf(n, fenv)
        data = gojson.marshal(conf, sort_keys=True)
        node = args.host.node
        node.write_file(f"{n['dataDir'].rstrip('/')}/{args.container_id}", data)
        args.host.note(self.name, node, "", f"delegate {conf['type']} over {fenv['sn']} (routes += {fenv['nw']}, "
                       f"mtu {conf['mtu']}); saved {n['dataDir'].rstrip('/')}/{args.container_id}")
        try:
            result = args.host.delegate(str(conf["type"]), "ADD", args, data.encode())
        except Exception as exc:
            if type(exc).__name__ == "CniError" and not str(getattr(exc, "msg", "")).startswith("failed to delegate"):
                exc.msg = f"failed to delegate add: {exc.msg}"  # type: ignore[attr-defined]
            raise
        assert result is not None
        return result_text(result, str(conf.get("cniVersion") or "0.1.0"))

    def cmd_del(self, args: CmdArgs) -> str:
        n = _netconf(args)
        path = f"{n['dataDir'].rstrip('/')}/{args.container_id}"
        node = args.host.node
        try:
            data = node.read_file(path)
        except FileNotFoundError:
            return ""  # per spec: already gone is not an error
        try:
            saved = gojson.unmarshal(data)
        except ValueError:
            return ""  # "failed to parse netconf": the interface stays until the node reboots
        if not isinstance(saved, dict) or not isinstance(saved.get("type"), str):
            return ""
        if n["runtimeConfig"] is not None:
            saved["runtimeConfig"] = n["runtimeConfig"]
            data = gojson.marshal(saved, sort_keys=True)
        args.host.delegate(saved["type"], "DEL", args, data.encode())
        node.files.pop(path, None)
        args.host.note(self.name, node, "", f"delegate {saved['type']} DEL; removed {path}")
        return ""

    def cmd_check(self, args: CmdArgs) -> str:
        return ""
