"""The `portmap` plugin (containernetworking-plugins v1.1.1, iptables mode): hostPort -> pod DNAT.

A chained plugin: it takes the pod's IPv4 address from prevResult and the mappings from
`runtimeConfig.portMappings` (the runtime fills it when the config has `"capabilities":
{"portMappings": true}`). In the node's nat table it keeps three shared chains and one per pod:

    PREROUTING, OUTPUT  -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    POSTROUTING (first) -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
    CNI-HOSTPORT-DNAT   -p tcp -m comment --comment "dnat name: ... id: ..." -m multiport --dports 8080 -j CNI-DN-<hash>
    CNI-DN-<hash>       -s POD_SUBNET -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK   (hairpin)
                        -s 127.0.0.1 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK    (localhost)
                        -p tcp --dport 8080 -j DNAT --to-destination POD_IP:80
    CNI-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000
    CNI-HOSTPORT-MASQ   -m mark --mark 0x2000/0x2000 -j MASQUERADE

and sets route_localnet on the interface that routes to the pod. It passes prevResult through.
CHECK verifies the IPv4 chain (the emulated node has no ip6tables; the real 1.1.1 plugin's CHECK
also looks at ip6tables and fails there when IPv6 is off).
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import Any

from emu.cni import gojson
from emu.cni.errors import fail
from emu.cni.netops import Iptables, format_chain_name, sysctl
from emu.cni.result import SUPPORTED_VERSIONS, parse_result, result_text
from emu.cni.skel import CmdArgs

TOP_DNAT = "CNI-HOSTPORT-DNAT"
SETMARK = "CNI-HOSTPORT-SETMARK"
MARK_MASQ = "CNI-HOSTPORT-MASQ"
OLD_SNAT = "CNI-HOSTPORT-SNAT"
DEFAULT_MARK_BIT = 13


class Chain:
    """portmap's chain: its rules and the entry rules that jump to it from other chains."""

    def __init__(self, name: str, rules: list[list[str]] | None = None, entry_chains: tuple[str, ...] = (),
                 entry_rules: list[list[str]] | None = None, prepend: bool = False) -> None:
        self.name = name
        self.rules = rules or []
        self.entry_chains = entry_chains
        self.entry_rules = entry_rules or []
        self.prepend = prepend

    def setup(self, ipt: Iptables) -> None:
        ipt.ensure_chain("nat", self.name)
        for rule in self.rules:
            ipt.insert_unique("nat", self.name, False, rule)
        for entry in self.entry_chains:
            for rule in self.entry_rules:
                ipt.insert_unique("nat", entry, self.prepend, [*rule, "-j", self.name])

    def teardown(self, ipt: Iptables) -> None:
        ipt.clear_chain("nat", self.name)
        for entry in self.entry_chains:
            if not ipt.chain_exists("nat", entry):
                continue
            for line in ipt.list_rules("nat", entry)[1:]:
                if line.endswith("-j " + self.name):
                    ipt.delete_rule("nat", entry, shlex.split(line)[2:])
        ipt.delete_chain("nat", self.name)

    def check(self, ipt: Iptables) -> None:
        if not ipt.chain_exists("nat", self.name):
            raise fail(f"chain {self.name} not found in iptables table nat")
        for rule in reversed(self.rules):
            if not ipt.exists("nat", self.name, rule):
                raise fail(f"rule {_go_rules(self.rules)} in chain {self.name} not found in table nat")
        for entry in self.entry_chains:
            for rule in reversed(self.entry_rules):
                if not ipt.exists("nat", entry, [*rule, "-j", self.name]):
                    raise fail(f"rule {_go_rules(self.entry_rules)} in chain {entry} not found in table nat")


def _go_rules(rules: list[list[str]]) -> str:
    return "[" + " ".join("[" + " ".join(r) + "]" for r in rules) + "]"


def parse_config(args: CmdArgs) -> dict[str, Any]:
    conf = args.conf()
    err = gojson.check_fields(conf, {"snat": "bool", "masqAll": "bool", "markMasqBit": "int",
                                     "externalSetMarkChain": "string", "conditionsV4": "[]string",
                                     "name": "string", "cniVersion": "string"}, "PortMapConf")
    if err:
        raise fail(f"failed to parse config: {err}")
    prev = conf.get("prevResult")
    result = parse_result(prev, str(conf.get("cniVersion") or "")) if prev is not None else None
    snat = conf.get("snat")
    if conf.get("markMasqBit") is not None and conf.get("externalSetMarkChain") is not None:
        raise fail("failed to parse config: Cannot specify externalSetMarkChain and markMasqBit")
    bit = int(conf["markMasqBit"]) if conf.get("markMasqBit") is not None else DEFAULT_MARK_BIT
    if not 0 <= bit <= 31:
        raise fail("failed to parse config: MasqMarkBit must be between 0 and 31")
    runtime = conf.get("runtimeConfig") if isinstance(conf.get("runtimeConfig"), dict) else {}
    maps = [dict(m) for m in runtime.get("portMappings") or []]
    for m in maps:
        if int(m.get("containerPort") or 0) <= 0:
            raise fail(f"failed to parse config: Invalid container port number: {int(m.get('containerPort') or 0)}")
        if int(m.get("hostPort") or 0) <= 0:
            raise fail(f"failed to parse config: Invalid host port number: {int(m.get('hostPort') or 0)}")
    cont_ip = None
    if result is not None:
        for ipc in result.get("ips", []):
            if ":" in ipc["address"] or cont_ip is not None:
                continue
            idx = ipc.get("interface")
            ifaces = result.get("interfaces", [])
            if idx is not None and 0 <= idx < len(ifaces) and (
                    ifaces[idx]["name"] != args.ifname or not ifaces[idx].get("sandbox")):
                continue
            cont_ip = ipc["address"]
    return {"name": str(conf.get("name", "")), "cniVersion": str(conf.get("cniVersion") or ""),
            "prevResult": result, "snat": True if snat is None else bool(snat), "masqAll": bool(conf.get("masqAll")),
            "markBit": bit, "externalSetMarkChain": conf.get("externalSetMarkChain"),
            "conditionsV4": conf.get("conditionsV4") or [], "portMappings": maps, "contIPv4": cont_ip}


def dnat_chain(conf: dict[str, Any], container_id: str, cont_ip: str) -> Chain:
    """genDnatChain + fillDnatRules."""
    name = conf["name"]
    chain = Chain(format_chain_name(name, container_id, "DN-"), entry_chains=(TOP_DNAT,))
    comment = f"dnat name: {gojson.quote(name)} id: {gojson.quote(container_id)}"
    setmark = conf["externalSetMarkChain"] or SETMARK
    by_proto: dict[str, list[int]] = {}
    for m in conf["portMappings"]:
        by_proto.setdefault(str(m.get("protocol") or ""), []).append(int(m["hostPort"]))
    for proto in sorted(by_proto):
        ports = [str(p) for p in by_proto[proto]]
        for i in range(0, len(ports), 15):
            rule = ["-m", "comment", "--comment", comment, "-m", "multiport", "-p", proto,
                    "--destination-ports", ",".join(ports[i:i + 15])]
            chain.entry_rules.append(rule + list(conf["conditionsV4"]))
    iface = ipaddress.ip_interface(cont_ip)
    for m in conf["portMappings"]:
        base = ["-p", str(m.get("protocol") or ""), "--dport", str(int(m["hostPort"]))]
        host_ip = str(m.get("hostIP") or "")
        if host_ip:
            try:
                hip = ipaddress.ip_address(host_ip)
            except ValueError:
                continue
            if hip.version != 4:
                continue
            if not hip.is_unspecified:
                base += ["-d", host_ip]
        if conf["snat"]:
            chain.rules.append(base + ["-s", "0.0.0.0/0" if conf["masqAll"] else str(iface), "-j", setmark])
            if not conf["masqAll"]:
                chain.rules.append(base + ["-s", "127.0.0.1", "-j", setmark])
        chain.rules.append(base + ["-j", "DNAT", "--to-destination", f"{iface.ip}:{int(m['containerPort'])}"])
    return chain


def _mark_def(bit: int) -> str:
    return f"{1 << bit:#x}/{1 << bit:#x}"


class Portmap:
    """The `portmap` plugin."""

    name = "portmap"
    supported_versions = SUPPORTED_VERSIONS

    def cmd_add(self, args: CmdArgs) -> str:
        conf = parse_config(args)
        if conf["prevResult"] is None:
            raise fail("must be called as chained plugin")
        if conf["portMappings"] and conf["contIPv4"]:
            self._forward(args, conf)
        return result_text(conf["prevResult"], conf["cniVersion"] or "0.1.0")

    def _forward(self, args: CmdArgs, conf: dict[str, Any]) -> None:
        host = args.host
        node = host.node
        ipt = Iptables(node)
        cont_ip = conf["contIPv4"]
        if conf["snat"]:
            if conf["externalSetMarkChain"] is None:
                mark = _mark_def(conf["markBit"])
                Chain(SETMARK, rules=[["-m", "comment", "--comment", "CNI portfwd masquerade mark", "-j", "MARK",
                                       "--set-xmark", mark]]).setup(ipt)
                Chain(MARK_MASQ, rules=[["-m", "mark", "--mark", mark, "-j", "MASQUERADE"]],
                      entry_chains=("POSTROUTING",),
                      entry_rules=[["-m", "comment", "--comment", "CNI portfwd requiring masquerade"]],
                      prepend=True).setup(ipt)
            ip = ipaddress.ip_interface(cont_ip).ip
            route = node.route_lookup(int(ip))
            if route is not None and route.dev:
                sysctl(node, f"net.ipv4.conf.{route.dev}.route_localnet", "1")
                host.note(self.name, node, route.dev, f"net.ipv4.conf.{route.dev}.route_localnet=1")
        Chain(TOP_DNAT, entry_chains=("PREROUTING", "OUTPUT"),
              entry_rules=[["-m", "addrtype", "--dst-type", "LOCAL"]]).setup(ipt)
        chain = dnat_chain(conf, args.container_id, cont_ip)
        chain.setup(ipt)
        for m in conf["portMappings"]:
            where = f"{m.get('hostIP')}:" if m.get("hostIP") else ""
            host.note(self.name, node, "", f"hostPort {where}{m['hostPort']}/{m.get('protocol')} -> "
                      f"{cont_ip.split('/')[0]}:{m['containerPort']} ({chain.name})")

    def cmd_del(self, args: CmdArgs) -> str:
        conf = parse_config(args)
        if not conf["portMappings"]:
            return ""
        ipt = Iptables(args.host.node)
        dn = Chain(format_chain_name(conf["name"], args.container_id, "DN-"), entry_chains=(TOP_DNAT,))
        dn.teardown(ipt)
        Chain(format_chain_name(conf["name"], args.container_id, "SN-"), entry_chains=(OLD_SNAT,)).teardown(ipt)
        args.host.note(self.name, args.host.node, "", f"removed {dn.name}")
        return ""

    def cmd_check(self, args: CmdArgs) -> str:
        conf = parse_config(args)
        if conf["prevResult"] is None:
            raise fail("Required prevResult missing")
        if not conf["portMappings"] or not conf["contIPv4"]:
            return ""
        ipt = Iptables(args.host.node)
        chain = dnat_chain(conf, args.container_id, conf["contIPv4"])
        if not ipt.chain_exists("nat", chain.name):
            return ""
        try:
            chain.check(ipt)
        except Exception as exc:
            raise fail(f"could not check ipv4 dnat: {getattr(exc, 'msg', exc)}") from None
        return ""
