"""How a plugin is run: the environment and stdin of the CNI protocol, checked as libcni's skel does.

`run_plugin(plugin, env, stdin, host)` is the in-process twin of executing a plugin binary in the
node's network namespace: it reads CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS
and CNI_PATH from `env`, validates them and the config with skel's messages and codes, calls the
plugin's verb, and returns `(rc, stdout, stderr)` exactly as the binary would print them.

`Host` is the node a plugin runs on: the lab, the node's namespace (where the plugin "is"), the
registry standing in for the executables in CNI_PATH, and the trace of the current call (each
netlink-like change a plugin makes is a `Step`, also noted in the lab's trace under the call's pid).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from emu.cni import gojson
from emu.cni.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_CNI_VERSION,
    INTERNAL,
    INVALID_ENVIRONMENT_VARIABLES,
    INVALID_NETWORK_CONFIG,
    UNKNOWN_CONTAINER,
    CniError,
)
from emu.cni.result import SUPPORTED_VERSIONS, check_supported, parse_result, version_gte

if TYPE_CHECKING:
    from emu.net.lab import Lab
    from emu.net.namespace import Namespace

NETNS_DIRS = ("/var/run/netns/", "/run/netns/")
COMMANDS = ("ADD", "CHECK", "DEL", "VERSION", "GC", "STATUS")
_REQUIRED = {
    "CNI_COMMAND": COMMANDS,
    "CNI_CONTAINERID": ("ADD", "CHECK", "DEL"),
    "CNI_NETNS": ("ADD", "CHECK"),
    "CNI_IFNAME": ("ADD", "CHECK", "DEL"),
    "CNI_ARGS": (),
    "CNI_PATH": ("ADD", "CHECK", "DEL", "GC", "STATUS"),
}
_VALID_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def netns_path(name: str) -> str:
    """CNI_NETNS for an emulated namespace, as `ip netns add` makes it."""
    return f"{NETNS_DIRS[0]}{name}"


class NetnsNotFound(CniError):
    """ns.GetNS on a path that does not exist (NSPathNotExistErr)."""

    def __init__(self, path: str) -> None:
        super().__init__(INTERNAL, f"failed to Statfs {gojson.quote(path)}: no such file or directory")


@dataclass
class Step:
    """One change a plugin made, as the trace shows it. `step` is 1-5 for the five steps of a pod
    ADD in the study notes: 1 pod end with its address, 2 host end, 3 pod routes, 4 host routes,
    5 attach to the bridge."""

    plugin: str
    netns: str
    ifname: str
    detail: str
    step: int | None = None

    def __str__(self) -> str:
        tag = f"[step {self.step}] " if self.step else ""
        where = f"{self.netns}/{self.ifname}" if self.ifname else self.netns
        return f"{tag}{self.plugin} @ {where}: {self.detail}"


@dataclass
class Call:
    """One runtime operation (ADD, DEL, CHECK, GC, STATUS) and everything its plugins did."""

    pid: int
    command: str
    steps: list[Step] = field(default_factory=list)
    invocations: list[tuple[str, str, int]] = field(default_factory=list)  # (type, command, rc), as started

    def text(self) -> str:
        return "\n".join(str(s) for s in self.steps)


class Plugin(Protocol):
    name: str
    supported_versions: list[str]

    def cmd_add(self, args: CmdArgs) -> str: ...

    def cmd_del(self, args: CmdArgs) -> str: ...

    def cmd_check(self, args: CmdArgs) -> str: ...


class Host:
    """The node that runs the plugins: its lab, its namespace, the plugin registry and the traced call."""

    def __init__(self, lab: Lab, node: Namespace, registry: dict[str, Plugin], call: Call) -> None:
        self.lab = lab
        self.node = node
        self.registry = registry
        self.call = call

    # --- namespaces -------------------------------------------------------------------------
    def netns(self, path: str) -> Namespace:
        """The namespace behind a CNI_NETNS path, or NetnsNotFound."""
        for prefix in NETNS_DIRS:
            if path.startswith(prefix):
                ns = self.lab.namespaces.get(path[len(prefix):])
                if ns is not None:
                    return ns
        raise NetnsNotFound(path)

    # --- tracing ----------------------------------------------------------------------------------
    def note(self, plugin: str, ns: Namespace, ifname: str, detail: str, step: int | None = None) -> None:
        s = Step(plugin, ns.name, ifname, detail, step)
        self.call.steps.append(s)
        text = f"cni {plugin}: {detail}" if not step else f"cni {plugin} [step {step}]: {detail}"
        ns.note(ns.links.get(ifname), self.call.pid, "cni", text)

    # --- executing plugins ------------------------------------------------------------------
    def exec(self, plugin_type: str, env: dict[str, str], stdin: bytes | str) -> tuple[int, str, str]:
        """Runs plugin `plugin_type` as if exec'ed from CNI_PATH: (rc, stdout, stderr)."""
        plugin = self.registry.get(plugin_type)
        if plugin is None:
            msg = f"failed to find plugin {gojson.quote(plugin_type)} in path {go_path_list(env.get('CNI_PATH', ''))}"
            return 1, gojson.marshal_indent({"code": INTERNAL, "msg": msg}), ""
        slot = len(self.call.invocations)
        self.call.invocations.append((plugin_type, env.get("CNI_COMMAND", ""), -1))
        rc, out, err = run_plugin(plugin, env, stdin, self)
        self.call.invocations[slot] = (plugin_type, env.get("CNI_COMMAND", ""), rc)
        return rc, out, err

    def delegate(self, plugin_type: str, command: str, args: CmdArgs,
                 stdin: bytes | None = None) -> dict[str, Any] | None:
        """pkg/invoke's Delegate{Add,Del,Check}: runs another plugin (IPAM) with this call's
        environment; returns its result (ADD), or raises its error unwrapped."""
        if plugin_type not in self.registry:
            raise CniError(INTERNAL, f"failed to find plugin {gojson.quote(plugin_type)} in path "
                           f"{go_path_list(args.path)}")
        env = dict(args.env)
        env["CNI_COMMAND"] = command
        data = args.stdin if stdin is None else stdin
        rc, out, _err = self.exec(plugin_type, env, data)
        if rc != 0:
            raise plugin_error(out)
        if command != "ADD":
            return None
        try:
            conf_version = decode_version(data)
            return parse_result(gojson.unmarshal(out), conf_version)
        except (ValueError, CniError) as exc:
            raise CniError(DECODING_FAILURE, f"failed to parse {plugin_type} result: {exc}") from None


def go_path_list(cni_path: str) -> str:
    """filepath.SplitList(CNI_PATH) as Go's %s prints a []string."""
    return "[" + " ".join(p for p in cni_path.split(":")) + "]" if cni_path else "[]"


def plugin_error(stdout: str) -> CniError:
    """pkg/invoke's pluginErr: the error a failed plugin printed, as a CniError."""
    if not stdout:
        return CniError(0, "netplugin failed with no error message: exit status 1")
    try:
        obj = gojson.unmarshal(stdout)
    except ValueError as exc:
        return CniError(0, f"netplugin failed but error parsing its diagnostic message {gojson.quote(stdout)}: {exc}")
    return CniError.from_json(obj if isinstance(obj, dict) else {})


@dataclass
class CmdArgs:
    """skel.CmdArgs: what a plugin verb gets."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: str
    stdin: bytes
    host: Host
    env: dict[str, str]

    def conf(self) -> dict[str, Any]:
        """The config on stdin as a JSON object (skel has already checked it parses)."""
        obj = gojson.unmarshal(self.stdin)
        return obj if isinstance(obj, dict) else {}


def decode_version(stdin: bytes | str) -> str:
    """version.ConfigDecoder: the config's cniVersion, "0.1.0" when absent."""
    try:
        obj = gojson.unmarshal(stdin)
    except ValueError as exc:
        raise CniError(DECODING_FAILURE, f"decoding version from network config: {exc}") from None
    if not isinstance(obj, dict):
        raise CniError(DECODING_FAILURE, "decoding version from network config: json: cannot unmarshal "
                       f"{gojson.json_kind(obj)} into Go value of type struct {{ CNIVersion string "
                       '"json:\\"cniVersion\\"" }')
    err = gojson.check_fields(obj, {"cniVersion": "string"}, "")
    if err:
        raise CniError(DECODING_FAILURE, f"decoding version from network config: {err}")
    return gojson.get(obj, "cniVersion") or "0.1.0"


def _validate_config(stdin: bytes) -> None:
    try:
        obj = gojson.unmarshal(stdin)
    except ValueError as exc:
        raise CniError(DECODING_FAILURE, f"error unmarshall network config: {exc}") from None
    if not isinstance(obj, dict):
        raise CniError(DECODING_FAILURE, "error unmarshall network config: json: cannot unmarshal "
                       f"{gojson.json_kind(obj)} into Go value of type struct {{ Name string \"json:\\\"name\\\"\" }}")
    err = gojson.check_fields(obj, {"name": "string"}, "")
    if err:
        raise CniError(DECODING_FAILURE, f"error unmarshall network config: {err}")
    if not gojson.get(obj, "name"):
        raise CniError(INVALID_NETWORK_CONFIG, "missing network name")


def validate_container_id(cid: str) -> None:
    if cid == "":
        raise CniError(UNKNOWN_CONTAINER, "missing containerID")
    if not _VALID_ID.match(cid):
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, "invalid characters in containerID", cid)


def validate_ifname(ifname: str) -> None:
    if not ifname:
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, "interface name is empty")
    if len(ifname) > 15:
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, "interface name is too long",
                       "interface name should be less than 16 characters")
    if ifname in (".", ".."):
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, "interface name contains / or : or whitespace characters")


def _call_verb(fn: Callable[[CmdArgs], str] | None, args: CmdArgs, supported: list[str]) -> str:
    """checkVersionAndCall: decode and reconcile the version, then run; plain errors become 999."""
    check_supported(decode_version(args.stdin), supported)
    if fn is None:
        return ""
    return fn(args) or ""


def _gated(args: CmdArgs, fn: Callable[[CmdArgs], str] | None, supported: list[str], since: str) -> str:
    """CHECK (0.4.0), GC and STATUS (1.1.0): refused for older configs and older plugins."""
    version = decode_version(args.stdin)
    if not version_gte(version, since):
        raise CniError(INCOMPATIBLE_CNI_VERSION, f"config version does not allow {args.command}")
    for plugin_version in supported:
        if version_gte(plugin_version, version):
            return _call_verb(fn, args, supported)
    raise CniError(INCOMPATIBLE_CNI_VERSION, f"plugin version does not allow {args.command}")


def run_plugin(plugin: Plugin, env: dict[str, str], stdin: bytes | str, host: Host) -> tuple[int, str, str]:
    """skel.PluginMain, in process: (rc, stdout, stderr)."""
    data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
    supported = list(getattr(plugin, "supported_versions", SUPPORTED_VERSIONS))
    cmd = env.get("CNI_COMMAND", "")
    missing = [k for k, cmds in _REQUIRED.items() if not env.get(k) and (cmd in cmds or k == "CNI_COMMAND")]
    try:
        if missing:
            if cmd == "":
                about = (f"CNI {plugin.name} plugin (emulated, as containernetworking-plugins v1.1.1)\n"
                         f"CNI protocol versions supported: {', '.join(supported)}\n")
                return 0, "", about
            raise CniError(INVALID_ENVIRONMENT_VARIABLES, f"required env variables [{','.join(missing)}] missing")
        args = CmdArgs(cmd, env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", ""),
                       env.get("CNI_ARGS", ""), env.get("CNI_PATH", ""), b"" if cmd == "VERSION" else data, host,
                       dict(env))
        if cmd != "VERSION":
            _validate_config(args.stdin)
            if cmd in ("ADD", "CHECK", "DEL") or cmd not in COMMANDS:
                validate_container_id(args.container_id)
                validate_ifname(args.ifname)
        if cmd == "ADD":
            out = _call_verb(plugin.cmd_add, args, supported)
        elif cmd == "DEL":
            out = _call_verb(plugin.cmd_del, args, supported)
        elif cmd == "CHECK":
            out = _gated(args, plugin.cmd_check, supported, "0.4.0")
        elif cmd == "GC":
            out = _gated(args, getattr(plugin, "cmd_gc", None), supported, "1.1.0")
        elif cmd == "STATUS":
            out = _gated(args, getattr(plugin, "cmd_status", None), supported, "1.1.0")
        elif cmd == "VERSION":
            out = gojson.marshal({"cniVersion": supported[-1], "supportedVersions": supported}) + "\n"
        else:
            raise CniError(INVALID_ENVIRONMENT_VARIABLES, f"unknown CNI_COMMAND: {cmd}")
    except CniError as exc:
        return 1, gojson.marshal_indent(exc.plugin_json()), ""
    return 0, out, ""
