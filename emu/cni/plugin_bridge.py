"""The `bridge` plugin (containernetworking-plugins v1.1.1) on emulated namespaces.

ADD, in the real plugin's order: ensure the bridge (default `cni0`, created up with a random MAC
and the config's mtu); make the veth pair from inside the pod (pod end `eth0`, host end
`veth` + 8 hex chars, up), attach the host end to the bridge and set its hairpin flag; run IPAM;
in the pod put the addresses on eth0, bring it up and add the routes (with isDefaultGateway a
default route via the gateway joins the result's routes); with isGateway put the gateway address
on the bridge, pin the bridge's MAC to the one it had before the first port came (as the plugin's
ensureAddr does) and turn on ip_forward; with ipMasq add the per-container `CNI-…` chain to nat
POSTROUTING. The result lists [bridge, host veth, pod eth0] and puts every IP on interface 2.

DEL deletes the pod's interface (its veth peer goes with it), releases the IPAM lease and removes
the masquerade chain; the bridge and its address stay. A second DEL finds nothing and succeeds.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from emu.cni import gojson
from emu.cni.args import load_args
from emu.cni.errors import CniError, fail
from emu.cni.netops import (
    ATTACH,
    HOST_ROUTES,
    addr_add,
    configure_iface,
    del_link_by_name_addr,
    enable_ip_forward,
    format_chain_name,
    format_comment,
    netns_or_error,
    setup_ip_masq,
    setup_veth,
    sysctl,
    teardown_ip_masq,
)
from emu.cni.result import SUPPORTED_VERSIONS, parse_result, result_text
from emu.cni.skel import CmdArgs, NetnsNotFound
from emu.net.bridge import Bridge
from emu.net.errors import NetError
from emu.net.link import Veth

DEFAULT_BRIDGE = "cni0"
FIELDS = {"bridge": "string", "isGateway": "bool", "isDefaultGateway": "bool", "forceAddress": "bool",
          "ipMasq": "bool", "mtu": "int", "hairpinMode": "bool", "promiscMode": "bool", "vlan": "int",
          "name": "string", "type": "string", "cniVersion": "string", "ipam": "struct:types.IPAM",
          "dns": "struct:types.DNS"}


def load_netconf(args: CmdArgs) -> dict[str, Any]:
    """loadNetConf: defaults, Go's type errors, the MAC from CNI_ARGS / args / runtimeConfig."""
    conf = args.conf()
    err = gojson.check_fields(conf, FIELDS, "NetConf")
    if err:
        raise fail(f"failed to load netconf: {err}")
    n: dict[str, Any] = {
        "name": gojson.get(conf, "name", ""), "cniVersion": gojson.get(conf, "cniVersion", ""),
        "bridge": gojson.get(conf, "bridge") or DEFAULT_BRIDGE,
        "mtu": int(gojson.get(conf, "mtu") or 0), "vlan": int(gojson.get(conf, "vlan") or 0),
        "ipam": gojson.get(conf, "ipam") or {}, "dns": gojson.get(conf, "dns") or {},
        "prevResult": gojson.get(conf, "prevResult"),
    }
    for key in ("isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "hairpinMode", "promiscMode"):
        n[key] = bool(gojson.get(conf, key) or False)
    if n["vlan"] < 0 or n["vlan"] > 4094:
        raise fail(f"invalid VLAN ID {n['vlan']} (must be between 0 and 4094)")
    mac = load_args(args.args, known=("MAC",)).get("MAC", "") if args.args else ""
    cni_args = (gojson.get(conf, "args") or {}).get("cni") if isinstance(gojson.get(conf, "args"), dict) else None
    if isinstance(cni_args, dict) and cni_args.get("mac"):
        mac = str(cni_args["mac"])
    runtime = gojson.get(conf, "runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("mac"):
        mac = str(runtime["mac"])
    n["mac"] = mac
    return n


def _dns_set(dns: dict[str, Any]) -> bool:
    return bool(dns.get("nameservers") or dns.get("search") or dns.get("options") or dns.get("domain"))


class BridgePlugin:
    """The `bridge` plugin."""

    name = "bridge"
    supported_versions = SUPPORTED_VERSIONS

    # --- ADD -------------------------------------------------------------------------------------
    def _ensure_bridge(self, args: CmdArgs, n: dict[str, Any]) -> Bridge:
        node, host = args.host.node, args.host
        name = n["bridge"]
        br = node.links.get(name)
        if br is None:
            try:
                br = node.link_add(name, "bridge", mtu=n["mtu"] or None)
            except NetError as exc:
                raise fail(f"failed to create bridge {gojson.quote(name)}: could not add {gojson.quote(name)}: "
                           f"{exc.message}") from None
            host.note(self.name, node, name, f"bridge {name} created (mtu {br.mtu}, mac {br.mac_str})")
        if not isinstance(br, Bridge):
            raise fail(f"failed to create bridge {gojson.quote(name)}: {gojson.quote(name)} already exists but is "
                       "not a bridge")
        if n["promiscMode"]:
            node.link_set(br.ifname, promisc=True)
        if not br.up:
            node.link_set(name, up=True)
            host.note(self.name, node, name, f"bridge {name} up")
        return br

    def _ensure_addr(self, args: CmdArgs, br: Bridge, gw: str, force: bool, mac: str) -> None:
        """ensureAddr: the gateway address on the bridge; the bridge's MAC pinned to `mac` (the
        one it had when the plugin looked it up, before this ADD's port could change it)."""
        node, host = args.host.node, args.host
        want = ipaddress.ip_interface(gw)
        for a in list(br.addrs):
            have = ipaddress.ip_interface(f"{ipaddress.ip_address(a.local)}/{a.plen}")
            if have == want:
                return
            if force:
                node.addr_del(br.ifname, str(have))
                host.note(self.name, node, br.ifname, f"forceAddress: removed {have} from {br.ifname}")
            else:
                raise fail(f"failed to set bridge addr: {gojson.quote(br.ifname)} already has an IP address "
                           f"different from {want}")
        try:
            addr_add(node, br.ifname, str(want))
        except NetError as exc:
            if "exists" not in exc.message and "already assigned" not in exc.message:
                raise fail(f"failed to set bridge addr: could not add IP address to {gojson.quote(br.ifname)}: "
                           f"{exc.message}") from None
        node.link_set(br.ifname, mac=mac)
        host.note(self.name, node, br.ifname, f"host route: gateway {want} on {br.ifname}, so the kernel routes "
                  f"{want.network} dev {br.ifname}; bridge MAC pinned to {mac}", HOST_ROUTES)

    def cmd_add(self, args: CmdArgs) -> str:
        n = load_netconf(args)
        host = args.host
        node = host.node
        layer3 = bool(n["ipam"].get("type"))
        if n["isDefaultGateway"]:
            n["isGateway"] = True
        if n["hairpinMode"] and n["promiscMode"]:
            raise fail("cannot set hairpin mode and promiscuous mode at the same time.")
        br = self._ensure_bridge(args, n)
        br_iface = {"name": br.ifname, "mac": br.mac_str}
        br_mac = br.mac_str
        pod = netns_or_error(host, args.netns)
        host_iface, cont_iface = setup_veth(host, self.name, pod, args.ifname, n["mtu"], n["mac"])
        cont_iface["sandbox"] = args.netns
        veth = host_iface["name"]
        try:
            node.link_set(veth, master=br.ifname)
        except NetError as exc:
            raise fail(f"failed to connect {gojson.quote(veth)} to bridge {br.ifname}: {exc.message}") from None
        node.link_set(veth, hairpin=n["hairpinMode"])
        host.note(self.name, node, veth, f"attach: {veth} master {br.ifname}, hairpin "
                  f"{'on' if n['hairpinMode'] else 'off'}", ATTACH)
        result: dict[str, Any] = {"cniVersion": "1.1.0", "interfaces": [br_iface, host_iface, cont_iface]}
        if layer3:
            ipam_type = n["ipam"]["type"]
            ipam_result = host.delegate(ipam_type, "ADD", args)
            assert ipam_result is not None
            try:
                self._layer3(args, n, pod, br, br_mac, result, ipam_result)
            except CniError:
                try:
                    host.delegate(ipam_type, "DEL", args)
                except CniError:
                    pass
                raise
        else:
            pod.link_set(args.ifname, up=True)
            host.note(self.name, pod, args.ifname, f"pod end: {args.ifname} up (no IPAM: layer 2 only)")
        link = node.links.get(veth)
        if not isinstance(link, Veth) or link.operstate != "UP":
            raise fail(f"bridge port in error state: {link.operstate if link else 'unknown'}")
        host_iface["mac"] = link.mac_str
        br_iface["mac"] = br.mac_str
        if _dns_set(n["dns"]):
            result["dns"] = {k: n["dns"][k] for k in ("nameservers", "domain", "search", "options")
                             if n["dns"].get(k)}
        return result_text(result, n["cniVersion"] or "0.1.0")

    def _layer3(self, args: CmdArgs, n: dict[str, Any], pod: Any, br: Bridge, br_mac: str,
                result: dict[str, Any], ipam_result: dict[str, Any]) -> None:
        host = args.host
        result["ips"] = [dict(ip) for ip in ipam_result.get("ips", [])]
        if ipam_result.get("routes"):
            result["routes"] = [dict(r) for r in ipam_result["routes"]]
        result["dns"] = dict(ipam_result.get("dns") or {})
        if not result["ips"]:
            raise fail("IPAM plugin returned missing IP config")
        gws: list[str] = []
        default_found = False
        for ipc in result["ips"]:
            iface = ipaddress.ip_interface(ipc["address"])
            ipc["interface"] = 2
            if not ipc.get("gateway") and n["isGateway"]:
                ipc["gateway"] = str(iface.network.network_address + 1)
            if n["isDefaultGateway"] and iface.version == 4 and not default_found:
                default_found = any(r.get("gw") and r["dst"] == "0.0.0.0/0" for r in result.get("routes", []))
                if not default_found:
                    result.setdefault("routes", []).append({"dst": "0.0.0.0/0", "gw": ipc.get("gateway")})
                    default_found = True
            if n["isGateway"]:
                gws.append(f"{ipc['gateway']}/{iface.network.prefixlen}")
        sysctl(pod, f"net.ipv4.conf.{args.ifname}.arp_notify", "1")
        configure_iface(host, self.name, pod, args.ifname, result)
        if n["isGateway"]:
            for gw in gws:
                self._ensure_addr(args, br, gw, n["forceAddress"], br_mac)
            if gws:
                enable_ip_forward(host, self.name)
        if n["ipMasq"]:
            chain = format_chain_name(n["name"], args.container_id)
            comment = format_comment(n["name"], args.container_id)
            for ipc in result["ips"]:
                setup_ip_masq(host, self.name, ipc["address"], chain, comment)

    # --- DEL -------------------------------------------------------------------------------------
    def cmd_del(self, args: CmdArgs) -> str:
        n = load_netconf(args)
        host = args.host
        layer3 = bool(n["ipam"].get("type"))

        def ipam_del() -> None:
            if layer3:
                host.delegate(n["ipam"]["type"], "DEL", args)

        if not args.netns:
            ipam_del()
            return ""
        try:
            pod = host.netns(args.netns)
        except NetnsNotFound:
            ipam_del()
            return ""
        ipnets = del_link_by_name_addr(pod, args.ifname)
        if ipnets is not None:
            host.note(self.name, pod, args.ifname, f"deleted {args.ifname} and its veth peer (addresses "
                      f"{', '.join(ipnets) or 'none'})")
        ipam_del()
        if layer3 and n["ipMasq"]:
            chain = format_chain_name(n["name"], args.container_id)
            comment = format_comment(n["name"], args.container_id)
            for cidr in ipnets or []:
                teardown_ip_masq(host, self.name, cidr, chain, comment)
        return ""

    # --- GC and STATUS (spec 1.1) ----------------------------------------------------------------
    def cmd_gc(self, args: CmdArgs) -> str:
        return ipam_passthrough(args, "GC")

    def cmd_status(self, args: CmdArgs) -> str:
        return ipam_passthrough(args, "STATUS")

    # --- CHECK -----------------------------------------------------------------------------------
    def cmd_check(self, args: CmdArgs) -> str:
        n = load_netconf(args)
        host = args.host
        pod = netns_or_error(host, args.netns)
        host.delegate(n["ipam"].get("type", ""), "CHECK", args)
        if n["prevResult"] is None:
            raise fail("Required prevResult missing")
        result = parse_result(n["prevResult"], n["cniVersion"])
        br_map: dict[str, Any] = {}
        cont_map: dict[str, Any] = {}
        for it in result.get("interfaces", []):
            if it["name"] == n["bridge"]:
                br_map = it
            elif it["name"] == args.ifname and it.get("sandbox", "") == args.netns:
                cont_map = it
        br = self._check_bridge(host.node, br_map, n)
        if args.netns != cont_map.get("sandbox", ""):
            raise fail(f"Sandbox in prevResult {cont_map.get('sandbox', '')} doesn't match configured netns: "
                       f"{args.netns}")
        cont = self._check_container(pod, cont_map)
        veth_found = False
        for it in result.get("interfaces", []):
            if it["name"] in (br_map.get("name"), cont_map.get("name")):
                continue
            if self._check_veth(host.node, it, br, cont):
                veth_found = True
                break
        if br is None:
            raise fail(f"CNI created bridge {n['bridge']} in host namespace was not found")
        if cont is None:
            raise fail(f"CNI created interface in container {args.ifname} not found")
        if not veth_found:
            raise fail(f"CNI veth created for bridge {n['bridge']} was not found")
        check_interface_ips(pod, args.ifname, result.get("ips", []))
        check_routes(pod, result.get("routes", []))
        return ""

    @staticmethod
    def _check_bridge(node: Any, intf: dict[str, Any], n: dict[str, Any]) -> Bridge:
        link = _validate_interface(node, intf, in_sandbox=False)
        if not isinstance(link, Bridge):
            raise fail(f"Interface {intf['name']} does not have link type of bridge")
        if intf.get("mac") and intf["mac"] != link.mac_str:
            raise fail(f"Bridge interface {intf['name']} Mac doesn't match: {intf['mac']}")
        promisc = link.promisc
        if promisc != n["promiscMode"]:
            raise fail(f"Bridge interface {intf['name']} configured Promisc Mode {str(n['promiscMode']).lower()} "
                       f"doesn't match current state: {str(promisc).lower()} ")
        return link

    @staticmethod
    def _check_container(pod: Any, intf: dict[str, Any]) -> Veth:
        link = _validate_interface(pod, intf, in_sandbox=True)
        if not isinstance(link, Veth):
            raise fail(f"Error: Container interface {link.ifname} not of type veth")
        if intf.get("mac") and intf["mac"] != link.mac_str:
            raise fail(f"Interface {intf['name']} Mac {intf['mac']} doesn't match container Mac: {link.mac_str}")
        return link

    @staticmethod
    def _check_veth(node: Any, intf: dict[str, Any], br: Bridge, cont: Veth) -> bool:
        link = _validate_interface(node, intf, in_sandbox=False)
        if not isinstance(link, Veth):
            return False
        if link.peer is not cont or link.master is not br:
            return False
        if intf.get("mac") and intf["mac"] != link.mac_str:
            raise fail(f"Interface {intf['name']} Mac doesn't match: {intf['mac']} not found")
        return True


def ipam_passthrough(args: CmdArgs, command: str) -> str:
    """GC and STATUS of a plugin with nothing of its own to collect or report: its IPAM's."""
    ipam = args.conf().get("ipam")
    ipam_type = str(ipam.get("type", "")) if isinstance(ipam, dict) else ""
    if ipam_type:
        args.host.delegate(ipam_type, command, args)
    return ""


def _validate_interface(ns: Any, intf: dict[str, Any], *, in_sandbox: bool) -> Any:
    if not intf.get("name"):
        raise fail("Interface name missing ")
    link = ns.links.get(intf["name"])
    if link is None:
        raise fail(f"Interface name {intf['name']} not found")
    if in_sandbox and not intf.get("sandbox"):
        raise fail(f"Interface {intf['name']} is expected to be in a sandbox")
    if not in_sandbox and intf.get("sandbox"):
        raise fail(f"Interface {intf['name']} should not be in sandbox")
    return link


def check_interface_ips(pod: Any, ifname: str, ips: list[dict[str, Any]]) -> None:
    """ip.ValidateExpectedInterfaceIPs: each address is on the interface, and its subnet has a route."""
    for ipc in ips:
        link = pod.links.get(ifname)
        if link is None:
            raise fail(f"Cannot find container link {ifname}")
        want = ipaddress.ip_interface(ipc["address"])
        if not any(int(want.ip) == a.local and want.network.prefixlen == a.plen for a in link.addrs):
            raise fail(f"Failed to match addr {want} on interface {ifname}")
        net = want.network
        if not any(r.dst == int(net.network_address) and r.plen == net.prefixlen for r in _routes(pod)):
            raise fail(f"Failed to find Gateway {ipc.get('gateway', '<nil>')} for interface {ifname}")


def check_routes(pod: Any, routes: list[dict[str, Any]]) -> None:
    """ip.ValidateExpectedRoute (v1.1.1): each route of the result must be in the pod's main table
    with the same gateway, a route without `gw` included (so an IPAM route that the plugin sent
    via the default gateway fails the check, as it does for the real plugin); a default route
    matches any default route."""
    for r in routes:
        net = ipaddress.ip_network(r["dst"], strict=False)
        gw = int(ipaddress.ip_address(r["gw"])) if r.get("gw") else None
        found = any(x.dst == int(net.network_address) and x.plen == net.prefixlen
                    and (net.prefixlen == 0 or x.gateway == gw) for x in _routes(pod))
        if not found:
            mask = f"{int(net.netmask):08x}" if net.version == 4 else f"{int(net.netmask):032x}"
            raise fail(f"Expected Route {{Dst:{{IP:{net.network_address} Mask:{mask}}} GW:{r.get('gw') or '<nil>'}}} "
                       "not found in routing table")


def _routes(ns: Any) -> list[Any]:
    from emu.net.route import TABLE_MAIN

    return list(ns.fib[TABLE_MAIN].routes())

