"""Network configurations: one plugin's config or a conflist, parsed and checked as libcni does,
and the node's default network picked from /etc/cni/net.d as kubelet (containerd's go-cni) does.

A single config (`{"type": ...}`) becomes a list of one plugin (libcni's ConfListFromConf). Errors
are CniErrors: 6 when the JSON does not parse, 7 when a field is missing or wrong, 1 when the
cniVersion is not one the runtime speaks.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu.cni import gojson
from emu.cni.errors import DECODING_FAILURE, INCOMPATIBLE_CNI_VERSION, INVALID_NETWORK_CONFIG, CniError
from emu.cni.result import SUPPORTED_VERSIONS, parse_version

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

CONF_DIR = "/etc/cni/net.d"
CONF_EXTENSIONS = (".conf", ".conflist", ".json")
_VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass
class NetworkList:
    """libcni's NetworkConfigList: the list's name and version, and each plugin's raw config."""

    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    raw: dict[str, Any]
    disable_check: bool = False
    disable_gc: bool = False
    source: str = ""  # the file it came from, if any
    data: bytes = field(default=b"", repr=False)

    @property
    def types(self) -> list[str]:
        return [str(p.get("type")) for p in self.plugins]


def _err(code: int, msg: str, details: str = "") -> CniError:
    return CniError(code, msg, details)


def _decode(data: bytes | str | dict[str, Any], what: str) -> tuple[dict[str, Any], bytes]:
    if isinstance(data, dict):
        return json.loads(json.dumps(data)), gojson.marshal(data).encode()
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        obj = gojson.unmarshal(raw)
    except ValueError as exc:
        raise _err(DECODING_FAILURE, f"error parsing {what}: {exc}") from None
    if not isinstance(obj, dict):
        raise _err(DECODING_FAILURE, f"error parsing {what}: json: cannot unmarshal {gojson.json_kind(obj)} into Go "
                   "value of type map[string]interface {}")
    return obj, raw


def _pick_version(obj: dict[str, Any]) -> str:
    """cniVersion, or the highest supported entry of spec 1.1's `cniVersions`; code 1 if unsupported."""
    versions = obj.get("cniVersions")
    if versions is not None:
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise _err(INVALID_NETWORK_CONFIG, "error parsing configuration list: invalid cniVersions type")
        usable = [v for v in versions if v in SUPPORTED_VERSIONS]
        if not usable:
            raise _err(INCOMPATIBLE_CNI_VERSION, "incompatible CNI versions",
                       f"config supports {gojson.quote_list(versions)}, runtime supports "
                       f"{gojson.quote_list(SUPPORTED_VERSIONS)}")
        return max(usable, key=parse_version)
    version = obj.get("cniVersion", "")
    if not isinstance(version, str):
        raise _err(INVALID_NETWORK_CONFIG, f"error parsing configuration list: invalid cniVersion type "
                   f"{_go_type(version)}")
    if version and version not in SUPPORTED_VERSIONS:
        raise _err(INCOMPATIBLE_CNI_VERSION, "incompatible CNI versions",
                   f"config is {gojson.quote(version)}, runtime supports {gojson.quote_list(SUPPORTED_VERSIONS)}")
    return version


def _go_type(v: Any) -> str:
    return {bool: "bool", int: "float64", float: "float64", str: "string", list: "[]interface {}",
            dict: "map[string]interface {}"}.get(type(v), "<nil>")


def _check_plugin(i: int, plugin: Any) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise _err(DECODING_FAILURE, f"failed to parse plugin config {i}: error parsing configuration: json: "
                   f"cannot unmarshal {gojson.json_kind(plugin)} into Go value of type types.NetConf")
    err = gojson.check_fields(plugin, {"type": "string", "name": "string", "cniVersion": "string",
                                       "capabilities": "map", "ipam": "map", "dns": "map"}, "NetConf")
    if err:
        raise _err(DECODING_FAILURE, f"failed to parse plugin config {i}: error parsing configuration: {err}")
    if not plugin.get("type"):
        raise _err(INVALID_NETWORK_CONFIG, f"failed to parse plugin config {i}: error parsing configuration: "
                   "missing 'type'")
    return plugin


def validate_name(name: str) -> None:
    """utils.ValidateNetworkName."""
    if name == "":
        raise _err(INVALID_NETWORK_CONFIG, "missing network name:")
    if not _VALID_NAME.match(name):
        raise _err(INVALID_NETWORK_CONFIG, "invalid characters found in network name", name)


def parse_conflist(data: bytes | str | dict[str, Any], source: str = "") -> NetworkList:
    """libcni.ConfListFromBytes."""
    obj, raw = _decode(data, "configuration list")
    if "name" not in obj:
        raise _err(INVALID_NETWORK_CONFIG, "error parsing configuration list: no name")
    name = obj["name"]
    if not isinstance(name, str):
        raise _err(INVALID_NETWORK_CONFIG, f"error parsing configuration list: invalid name type {_go_type(name)}")
    version = _pick_version(obj)
    flags = {}
    for key in ("disableCheck", "disableGC"):
        v = obj.get(key, False)
        if isinstance(v, str) and v.lower() in ("true", "false"):
            v = v.lower() == "true"
        if not isinstance(v, bool):
            raise _err(INVALID_NETWORK_CONFIG, f"error parsing configuration list: invalid {key} type {_go_type(v)}")
        flags[key] = v
    if "plugins" not in obj:
        raise _err(INVALID_NETWORK_CONFIG, "error parsing configuration list: no 'plugins' key")
    plugins = obj["plugins"]
    if not isinstance(plugins, list):
        raise _err(INVALID_NETWORK_CONFIG, f"error parsing configuration list: invalid 'plugins' type "
                   f"{_go_type(plugins)}")
    if not plugins:
        raise _err(INVALID_NETWORK_CONFIG, "error parsing configuration list: no plugins in list")
    checked = [_check_plugin(i, p) for i, p in enumerate(plugins)]
    validate_name(name)
    return NetworkList(name, version, checked, obj, flags["disableCheck"], flags["disableGC"], source, raw)


def parse_conf(data: bytes | str | dict[str, Any], source: str = "") -> NetworkList:
    """libcni.ConfFromBytes then ConfListFromConf: one plugin's config as a list of one."""
    obj, _raw = _decode(data, "configuration")
    plugin = dict(obj)
    err = gojson.check_fields(plugin, {"type": "string", "name": "string", "cniVersion": "string"}, "NetConf")
    if err:
        raise _err(DECODING_FAILURE, f"error parsing configuration: {err}")
    if not plugin.get("type"):
        raise _err(INVALID_NETWORK_CONFIG, "error parsing configuration: missing 'type'")
    return parse_conflist({"name": plugin.get("name", ""), "cniVersion": plugin.get("cniVersion", ""),
                           "plugins": [plugin]}, source)


def parse_network(data: bytes | str | dict[str, Any], source: str = "") -> NetworkList:
    """A conflist (it has `plugins`) or a single plugin's config."""
    if isinstance(data, NetworkList):
        return data
    obj, _raw = _decode(data, "configuration")
    if "plugins" in obj:
        return parse_conflist(data, source)
    return parse_conf(data, source)


def conf_files(node: Namespace, conf_dir: str = CONF_DIR) -> list[str]:
    """libcni.ConfFiles: the node's config files with a CNI extension, in lexical order."""
    prefix = conf_dir.rstrip("/") + "/"
    names = [p for p in node.files if p.startswith(prefix) and "/" not in p[len(prefix):]]
    return sorted(p for p in names if posixpath.splitext(p)[1] in CONF_EXTENSIONS)


def load_default_network(node: Namespace, conf_dir: str = CONF_DIR) -> NetworkList:
    """The first valid network in the node's conf dir, as kubelet/containerd pick it: files in
    lexical order, `.conflist` read as a list, `.conf`/`.json` as one plugin; invalid ones skipped."""
    problems = []
    for path in conf_files(node, conf_dir):
        try:
            text = node.files[path]
            if path.endswith(".conflist"):
                return parse_conflist(text, path)
            return parse_conf(text, path)
        except CniError as exc:
            problems.append(f"{path}: {exc}")
    details = "; ".join(problems)
    raise _err(INVALID_NETWORK_CONFIG, f"no valid networks found in {conf_dir}", details)
