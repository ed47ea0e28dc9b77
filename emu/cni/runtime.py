"""The container runtime's side of CNI (what libcni does for kubelet/containerd), in process.

    rt = Runtime(lab, node)
    res = rt.add(conflist, "ctr1", pod_ns, "eth0", args="IgnoreUnknown=1;K8S_POD_NAME=web")
    rt.check(conflist, "ctr1", pod_ns)
    rt.delete(conflist, "ctr1", pod_ns)

ADD runs the list's plugins in order, each getting the list's name and cniVersion, its
`runtimeConfig` from the capability args it declares, and the previous plugin's result as
`prevResult`; the last result is cached per (network, container ID, ifname) in the node's
`/var/lib/cni/results/`, as libcni does. DEL runs the plugins in reverse with the cached result and
drops the cache entry; CHECK (0.4.0+) runs them with it. GC (spec 1.1) deletes the cached
attachments that are not in the valid list, then asks 1.1.0 plugins to collect their own leftovers;
STATUS asks 1.1.0 plugins whether they can serve ADDs.

Every operation is one `Call` with its own pid: `rt.last_call.steps` lists what the plugins did
(the five steps of a pod ADD are tagged), and `lab.decisions(rt.last_call.pid)` holds the same
notes in the lab's trace. Plugins are executed through the same environment-and-stdin protocol as
real binaries (`rt.invoke` exposes it), so CNI_PATH is informational: the registry is the path.

Where this runtime departs from libcni: CHECK of an attachment with no cached result fails with
code 3 (unknown container) instead of running the plugins without a prevResult.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu.cni import gojson
from emu.cni.args import split_args
from emu.cni.cache import CACHE_DIR, ResultCache
from emu.cni.config import CONF_DIR, NetworkList, load_default_network, parse_network, validate_name
from emu.cni.errors import DECODING_FAILURE, INCOMPATIBLE_CNI_VERSION, UNKNOWN_CONTAINER, CniError
from emu.cni.registry import default_registry
from emu.cni.result import parse_result, to_version, version_gte
from emu.cni.skel import Call, Host, Plugin, netns_path, validate_container_id, validate_ifname

if TYPE_CHECKING:
    from emu.net.lab import Lab
    from emu.net.namespace import Namespace

DEFAULT_CNI_PATH = "/opt/cni/bin"


@dataclass
class RuntimeConf:
    """libcni.RuntimeConf: one attachment of a container to a network."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)

    @property
    def args_text(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args)


def _plugin_desc(plugin: dict[str, Any]) -> str:
    out = f"type={gojson.quote(str(plugin.get('type', '')))}"
    if plugin.get("name"):
        out += f" name={gojson.quote(str(plugin['name']))}"
    return out


class Runtime:
    """A node's CNI runtime: runs the registry's plugins against the lab's namespaces."""

    def __init__(self, lab: Lab, node: Namespace, *, cni_path: str | Iterable[str] = DEFAULT_CNI_PATH,
                 cache_dir: str = CACHE_DIR, conf_dir: str = CONF_DIR,
                 registry: dict[str, Plugin] | None = None) -> None:
        self.lab = lab
        self.node = node
        self.path = cni_path if isinstance(cni_path, str) else ":".join(cni_path)
        self.registry = registry if registry is not None else default_registry()
        self.cache = ResultCache(node, cache_dir)
        self.conf_dir = conf_dir
        self.calls: list[Call] = []

    # --- calls and the plugin protocol -----------------------------------------------------------
    @property
    def last_call(self) -> Call | None:
        return self.calls[-1] if self.calls else None

    def _begin(self, command: str) -> Host:
        call = Call(self.lab.new_pid(), command)
        self.calls.append(call)
        return Host(self.lab, self.node, self.registry, call)

    def env(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
            args: str = "") -> dict[str, str]:
        """The CNI_* environment libcni's invoke.Args sets."""
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
                "CNI_ARGS": args, "CNI_IFNAME": ifname, "CNI_PATH": self.path}

    def exec(self, plugin_type: str, env: dict[str, str], stdin: bytes | str) -> tuple[int, str, str]:
        """Executes one plugin with this environment and stdin: (rc, stdout, stderr), as the binary."""
        return self._begin(env.get("CNI_COMMAND", "")).exec(plugin_type, env, stdin)

    def invoke(self, plugin_type: str, command: str, stdin: bytes | str | dict[str, Any], *,
               container_id: str = "", netns: Namespace | str | None = None, ifname: str = "",
               args: str = "") -> tuple[int, str, str]:
        """`CNI_COMMAND=... plugin < stdin` in the node: (rc, stdout, stderr)."""
        data = gojson.marshal(stdin) if isinstance(stdin, dict) else stdin
        env = self.env(command, container_id, self._netns(netns), ifname, args)
        return self.exec(plugin_type, env, data)

    @staticmethod
    def _netns(sandbox: Namespace | str | None) -> str:
        if sandbox is None:
            return ""
        if isinstance(sandbox, str):
            return sandbox if sandbox.startswith("/") else netns_path(sandbox)
        return netns_path(sandbox.name)

    def _rt(self, container_id: str, sandbox: Namespace | str | None, ifname: str, args: str | list[tuple[str, str]],
            capability_args: dict[str, Any] | None) -> RuntimeConf:
        pairs = list(args) if isinstance(args, list) else [tuple(p.split("=", 1)) if "=" in p else (p, "")
                                                           for p in (args.split(";") if args else [])]
        return RuntimeConf(container_id, self._netns(sandbox), ifname, pairs,  # type: ignore[arg-type]
                           dict(capability_args or {}))

    @staticmethod
    def _validate(net: NetworkList, rt: RuntimeConf) -> None:
        validate_container_id(rt.container_id)
        validate_name(net.name)
        validate_ifname(rt.ifname)

    @staticmethod
    def _config(net: NetworkList, plugin: dict[str, Any], prev: dict[str, Any] | None, rt: RuntimeConf | None,
                extra: dict[str, Any] | None = None) -> bytes:
        """buildOneConfig: the plugin's config with the list's name and version, prevResult, and the
        runtimeConfig of the capabilities it declares (marshalled as Go marshals a map)."""
        conf = dict(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev is not None:
            conf["prevResult"] = prev
        if rt is not None:
            caps = plugin.get("capabilities") if isinstance(plugin.get("capabilities"), dict) else {}
            runtime = {k: rt.capability_args[k] for k, on in caps.items() if on and k in rt.capability_args}
            if runtime:
                conf["runtimeConfig"] = runtime
        conf.update(extra or {})
        return gojson.marshal(conf, sort_keys=True).encode()

    def _run(self, host: Host, net: NetworkList, plugin: dict[str, Any], command: str, stdin: bytes,
             rt: RuntimeConf | None, verb: str) -> str:
        env = self.env(command, rt.container_id, rt.netns, rt.ifname, rt.args_text) if rt else self.env(command)
        rc, out, _err = host.exec(str(plugin.get("type")), env, stdin)
        if rc != 0:
            try:
                obj = gojson.unmarshal(out) if out else {}
            except ValueError:
                obj = {"code": 0, "msg": f"netplugin failed but error parsing its diagnostic message {out!r}"}
            err = CniError.from_json(obj if isinstance(obj, dict) else {},
                                     context=f"plugin {_plugin_desc(plugin)} failed ({verb})")
            err.cni_version = net.cni_version or err.cni_version
            raise err
        return out

    def _cached(self, net: NetworkList, rt: RuntimeConf) -> dict[str, Any] | None:
        att = self.cache.get(net.name, rt.container_id, rt.ifname)
        if att is None or att.result is None:
            return None
        return to_version(parse_result(att.result), net.cni_version or "0.1.0")

    # --- the verbs -------------------------------------------------------------------------------
    def network(self) -> NetworkList:
        """The node's default network: the lexically first valid file of its conf dir."""
        return load_default_network(self.node, self.conf_dir)

    def add(self, conf: Any, container_id: str, sandbox: Namespace | str, ifname: str = "eth0",
            args: str | list[tuple[str, str]] = "", capability_args: dict[str, Any] | None = None) -> dict[str, Any]:
        """ADD: the result the last plugin printed (in the list's cniVersion), also cached."""
        net = parse_network(conf)
        rt = self._rt(container_id, sandbox, ifname, args, capability_args)
        host = self._begin("ADD")
        self._validate(net, rt)
        prev: dict[str, Any] | None = None
        for plugin in net.plugins:
            out = self._run(host, net, plugin, "ADD", self._config(net, plugin, prev, rt), rt, "add")
            try:
                obj = gojson.unmarshal(out)
            except ValueError as exc:
                raise CniError(DECODING_FAILURE, f"failed to parse result of {plugin.get('type')}: {exc}") from None
            parse_result(obj, net.cni_version)  # it must be a result
            prev = obj
        assert prev is not None
        self.cache.add(net.name, rt.container_id, rt.ifname, rt.netns, rt.args, rt.capability_args, net.data, prev)
        return prev

    def check(self, conf: Any, container_id: str, sandbox: Namespace | str, ifname: str = "eth0",
              args: str | list[tuple[str, str]] = "", capability_args: dict[str, Any] | None = None) -> None:
        """CHECK (0.4.0 and later): every plugin checks the attachment against the cached result."""
        net = parse_network(conf)
        rt = self._rt(container_id, sandbox, ifname, args, capability_args)
        host = self._begin("CHECK")
        if not version_gte(net.cni_version, "0.4.0"):
            raise CniError(INCOMPATIBLE_CNI_VERSION, f"configuration version {gojson.quote(net.cni_version)} "
                           "does not support the CHECK command")
        if net.disable_check:
            return
        self._validate(net, rt)
        prev = self._cached(net, rt)
        if prev is None:
            raise CniError(UNKNOWN_CONTAINER, "unknown container",
                           f"no cached result for network {gojson.quote(net.name)}, container "
                           f"{gojson.quote(rt.container_id)}, interface {gojson.quote(rt.ifname)}")
        for plugin in net.plugins:
            self._run(host, net, plugin, "CHECK", self._config(net, plugin, prev, rt), rt, "check")

    def delete(self, conf: Any, container_id: str, sandbox: Namespace | str | None = None, ifname: str = "eth0",
               args: str | list[tuple[str, str]] = "", capability_args: dict[str, Any] | None = None) -> None:
        """DEL: the plugins in reverse order (with the cached result from 0.4.0 on); idempotent."""
        net = parse_network(conf)
        rt = self._rt(container_id, sandbox, ifname, args, capability_args)
        host = self._begin("DEL")
        self._validate(net, rt)
        prev = self._cached(net, rt) if version_gte(net.cni_version, "0.4.0") else None
        if not rt.capability_args:
            att = self.cache.get(net.name, rt.container_id, rt.ifname)
            if att is not None:
                rt.capability_args = att.capability_args
        for plugin in reversed(net.plugins):
            self._run(host, net, plugin, "DEL", self._config(net, plugin, prev, rt), rt, "delete")
        self.cache.delete(net.name, rt.container_id, rt.ifname)

    def version(self, conf_or_type: Any) -> dict[str, Any]:
        """VERSION of one plugin type, or {type: version info} for every plugin of a config."""
        if isinstance(conf_or_type, str) and not conf_or_type.lstrip().startswith("{"):
            rc, out, _ = self._begin("VERSION").exec(conf_or_type, self.env("VERSION"), b"")
            obj = gojson.unmarshal(out)
            if rc != 0:
                raise CniError.from_json(obj, context=f"plugin type={gojson.quote(conf_or_type)} failed (version)")
            return obj
        net = parse_network(conf_or_type)
        return {str(p.get("type")): self.version(str(p.get("type"))) for p in net.plugins}

    def status(self, conf: Any) -> None:
        """STATUS (spec 1.1): raises the first plugin's error; configs before 1.1.0 have no STATUS."""
        net = parse_network(conf)
        host = self._begin("STATUS")
        if not version_gte(net.cni_version, "1.1.0"):
            return
        for plugin in net.plugins:
            self._run(host, net, plugin, "STATUS", self._config(net, plugin, None, None), None, "status")

    def gc(self, conf: Any, valid_attachments: Iterable[Any] = ()) -> list[tuple[str, str]]:
        """GC (spec 1.1): DEL of every cached attachment of this network not in `valid_attachments`
        (pairs of container ID and ifname, or `{"containerID", "ifname"}`), then the plugins' GC.
        Returns the attachments deleted."""
        net = parse_network(conf)
        valid = set()
        for a in valid_attachments:
            if isinstance(a, dict):
                valid.add((str(a.get("containerID", "")), str(a.get("ifname", ""))))
            else:
                cid, ifname = a
                valid.add((str(cid), str(ifname)))
        removed, errors = [], []
        if not net.disable_gc:
            for att in self.cache.attachments(net.name):
                if (att.container_id, att.ifname) in valid:
                    continue
                try:
                    self.delete(net, att.container_id, att.netns or None, att.ifname, att.cni_args,
                                att.capability_args)
                    removed.append((att.container_id, att.ifname))
                except CniError as exc:
                    errors.append(exc)
            host = self._begin("GC")
            if version_gte(net.cni_version, "1.1.0"):
                listed = [{"containerID": c, "ifname": i} for c, i in sorted(valid)]
                inject = {"cni.dev/valid-attachments": listed, "cni.dev/attachments": listed}
                for plugin in net.plugins:
                    try:
                        self._run(host, net, plugin, "GC", self._config(net, plugin, None, None, inject), None, "gc")
                    except CniError as exc:
                        errors.append(exc)
        if errors:
            raise errors[0]
        return removed


def cni_args_pairs(args: str) -> list[tuple[str, str]]:
    """`K=V;K2=V2` as pairs (each must have exactly one `=`)."""
    return split_args(args)
